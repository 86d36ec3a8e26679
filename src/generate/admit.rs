//! Admission, as the reference's host admitter does it: claims are taken
//! oldest first (creation time, then `namespace/name`), and a claim is
//! refused (`HostAlreadyClaimed`) when an older one holds its host and
//! path. With namespace ownership (the reference's default), a name
//! belongs to the namespace of its oldest claim, whatever the path, and so
//! does every name a wildcard covers: a host under another namespace's
//! older wildcard is refused, and so is a wildcard over another
//! namespace's older host or wildcard. The reference's wildcards cover one
//! label; Gateway API wildcards cover any depth, and a Gateway route with
//! no hostname covers every name: ownership follows what each covers, so
//! no tenant is served a name another holds.

use std::collections::HashMap;

use super::routes::Claim;
use super::Report;

/// The claims admitted from `claims`, the others reported with the
/// claim that holds what they asked for.
pub(crate) fn admit(mut claims: Vec<Claim>, ownership: bool, report: &mut Report) -> Vec<Claim> {
    claims.sort_by(|a, b| (&a.created, &a.owner).cmp(&(&b.created, &b.owner)));
    let mut held = Held::default();
    let mut admitted: Vec<Claim> = Vec::new();
    let mut backends: HashMap<String, String> = HashMap::new();
    for claim in claims {
        let refused = if ownership {
            held.owned_elsewhere(&claim)
        } else {
            None
        };
        if let Some(message) = refused.or_else(|| held.taken(&claim)) {
            report.refuse(&claim.owner, "spec.host", "HostAlreadyClaimed", message);
            continue;
        }
        if let Some(owner) = backends.get(&claim.backend).filter(|o| **o != claim.owner) {
            let m = format!(
                "its backend `{}` is already {owner}'s; not admitted",
                claim.backend
            );
            report.refuse(&claim.owner, "metadata.name", "BackendNameConflict", m);
            continue;
        }
        backends
            .entry(claim.backend.clone())
            .or_insert_with(|| claim.owner.clone());
        held.take(&claim);
        admitted.push(claim);
    }
    admitted
}

/// The names a claim covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Cover {
    /// Its host only.
    Exact,
    /// One label under its domain (a Route's `*.domain`).
    Label,
    /// One label or more under its domain (a Gateway `*.domain`).
    Deep,
    /// Every name (a Gateway route and listener without a hostname).
    All,
}

fn cover(claim: &Claim) -> Cover {
    match (claim.wildcard, claim.deep, claim.host.is_empty()) {
        (false, _, _) => Cover::Exact,
        (true, false, _) => Cover::Label,
        (true, true, false) => Cover::Deep,
        (true, true, true) => Cover::All,
    }
}

/// The namespace a claim's backend lives in.
fn namespace_of(claim: &Claim) -> &str {
    claim.backend.split(':').nth(1).unwrap_or_default()
}

/// What follows a name's first label (`""` for a single label).
fn parent(name: &str) -> Option<&str> {
    if name.is_empty() {
        None
    } else {
        Some(name.split_once('.').map_or("", |(_, rest)| rest))
    }
}

/// A name and every domain above it, nearest first, ending with `""`.
fn suffixes(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(name), |n| parent(n))
}

/// Who holds a name: (namespace, owner, what they claimed).
type Holder = (String, String, String);

/// What the admitted claims hold (each older than the next claim).
#[derive(Default)]
struct Held {
    /// (host, wildcard, path, exact, port 80 only) → owner.
    paths: HashMap<(String, bool, String, bool, bool), String>,
    /// Exact hosts by name; wildcards by (domain, cover): the first holder.
    names: HashMap<(String, Cover), Holder>,
    /// Exact hosts (`false`) and wildcard domains (`true`) by every
    /// domain above them (and their own name, for wildcards).
    below: HashMap<(String, bool), Vec<Holder>>,
    /// Exact hosts by the domain right above them.
    children: HashMap<String, Vec<Holder>>,
}

/// Keeps up to two holders of different namespaces: enough to find one
/// that is not the asker's, whoever asks.
fn remember(holders: &mut Vec<Holder>, holder: &Holder) {
    if holders.len() < 2 && holders.iter().all(|h| h.0 != holder.0) {
        holders.push(holder.clone());
    }
}

impl Held {
    /// Why `claim` is refused by the namespace ownership of what it
    /// covers, if it is.
    fn owned_elsewhere(&self, claim: &Claim) -> Option<String> {
        let ns = namespace_of(claim);
        let other = |h: &&Holder| h.0 != ns;
        let found = |(holder_ns, owner, what): &Holder| {
            format!(
                "{owner} of namespace {holder_ns} holds `{what}`, which covers `{}`; not admitted",
                claim.sni_filter()
            )
        };
        let get = |name: &str, c: Cover| self.names.get(&(name.to_string(), c)).filter(other);
        let host = claim.host.as_str();
        // A wildcard or every-name claim above this one covers it: a
        // one-label wildcard of the domain right above a host (of a
        // wildcard's own domain), a deeper one of any domain above.
        let base = if cover(claim) == Cover::Exact {
            parent(host)
        } else {
            Some(host)
        };
        let above = base
            .and_then(|p| get(p, Cover::Label))
            .or_else(|| {
                base.into_iter()
                    .flat_map(suffixes)
                    .find_map(|s| get(s, Cover::Deep))
            })
            .or_else(|| get("", Cover::All))
            .or_else(|| get(host, Cover::Exact).filter(|_| cover(claim) == Cover::Exact));
        if let Some(holder) = above {
            return Some(if cover(claim) == Cover::Exact && holder.2 == host {
                format!(
                    "host `{host}` belongs to namespace {} (its oldest route is {}); not admitted",
                    holder.0, holder.1
                )
            } else {
                found(holder)
            });
        }
        // A wildcard covers what others hold below it.
        let under = |wild: bool| {
            self.below
                .get(&(host.to_string(), wild))
                .into_iter()
                .flatten()
        };
        let below = match cover(claim) {
            Cover::Exact => None,
            Cover::Label => self.children.get(host).into_iter().flatten().find(other),
            Cover::Deep | Cover::All => under(false).chain(under(true)).find(other),
        };
        below.map(found)
    }

    /// Why `claim` is refused because an older claim has its host and
    /// path, if it is.
    fn taken(&self, claim: &Claim) -> Option<String> {
        let winner = self.paths.get(&Self::key(claim))?;
        let path = if claim.path.is_empty() {
            String::new()
        } else {
            format!(" path `{}`", claim.path)
        };
        Some(format!(
            "host `{}`{path} is already claimed by the older {winner}; not admitted",
            claim.sni_filter()
        ))
    }

    /// Records an admitted claim.
    fn take(&mut self, claim: &Claim) {
        let holder: Holder = (
            namespace_of(claim).to_string(),
            claim.owner.clone(),
            claim.sni_filter(),
        );
        self.paths.insert(Self::key(claim), claim.owner.clone());
        let c = cover(claim);
        self.names
            .entry((claim.host.clone(), c))
            .or_insert_with(|| holder.clone());
        let wildcard = c != Cover::Exact;
        let first = if wildcard {
            Some(claim.host.as_str())
        } else {
            parent(&claim.host)
        };
        for domain in first.into_iter().flat_map(suffixes) {
            remember(
                self.below
                    .entry((domain.to_string(), wildcard))
                    .or_default(),
                &holder,
            );
        }
        if let (false, Some(domain)) = (wildcard, parent(&claim.host)) {
            remember(
                self.children.entry(domain.to_string()).or_default(),
                &holder,
            );
        }
    }

    fn key(claim: &Claim) -> (String, bool, String, bool, bool) {
        (
            claim.host.clone(),
            claim.wildcard,
            claim.path.clone(),
            claim.exact,
            claim.gateway_http,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim of `namespace` for `host` (`*.d`: a Route wildcard, `**.d`:
    /// a Gateway wildcard, `*`: every name), created on `day`.
    fn claim(namespace: &str, name: &str, host: &str, day: u8) -> Claim {
        let (host, wildcard, deep) = match host {
            "*" => ("", true, true),
            h if h.starts_with("**.") => (&h[3..], true, true),
            h if h.starts_with("*.") => (&h[2..], true, false),
            h => (h, false, false),
        };
        Claim {
            created: format!("2026-01-{day:02}"),
            wildcard,
            deep,
            ..Claim::plain(namespace, name, host)
        }
    }

    /// The names of the claims admitted, with ownership on or off.
    fn admitted(claims: Vec<Claim>, ownership: bool) -> Vec<String> {
        let mut report = Report::default();
        let mut names: Vec<String> = admit(claims, ownership, &mut report)
            .into_iter()
            .map(|c| c.owner)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn what_a_wildcard_covers_belongs_to_its_namespace_at_every_depth() {
        // An older Gateway wildcard covers hosts two labels down.
        let got = admitted(
            vec![
                claim("a", "deep", "**.example.test", 1),
                claim("b", "host", "x.y.example.test", 2),
            ],
            true,
        );
        assert_eq!(got, ["Route a/deep"]);
        // An older host two labels down blocks a Gateway wildcard above it,
        // but not a Route wildcard (one label).
        let got = admitted(
            vec![
                claim("b", "host", "x.y.example.test", 1),
                claim("a", "deep", "**.example.test", 2),
                claim("a", "label", "*.example.test", 3),
            ],
            true,
        );
        assert_eq!(got, ["Route a/label", "Route b/host"]);
        // A route for every name is held against every other namespace's
        // names, older or newer; its own namespace's are fine.
        let got = admitted(
            vec![
                claim("a", "every", "*", 1),
                claim("a", "mine", "mine.test", 2),
                claim("b", "host", "shop.test", 3),
                claim("b", "wild", "*.shop.test", 4),
            ],
            true,
        );
        assert_eq!(got, ["Route a/every", "Route a/mine"]);
        let got = admitted(
            vec![
                claim("b", "host", "shop.test", 1),
                claim("a", "every", "*", 2),
            ],
            true,
        );
        assert_eq!(got, ["Route b/host"]);
        // Overlapping wildcards of two namespaces: the older holds.
        let got = admitted(
            vec![
                claim("a", "deep", "**.example.test", 1),
                claim("b", "label", "*.x.example.test", 2),
            ],
            true,
        );
        assert_eq!(got, ["Route a/deep"]);
        // Without the ownership check all of these are admitted.
        let got = admitted(
            vec![
                claim("a", "every", "*", 1),
                claim("b", "host", "shop.test", 2),
            ],
            false,
        );
        assert_eq!(got, ["Route a/every", "Route b/host"]);
    }

    #[test]
    fn the_reference_rules_for_one_label_wildcards_hold() {
        // A host under another namespace's older wildcard; a wildcard over
        // another namespace's older host; a host two labels down is not
        // under a one-label wildcard.
        let got = admitted(
            vec![
                claim("a", "wild", "*.own.test", 1),
                claim("b", "api", "api.own.test", 2),
                claim("b", "deeper", "x.api.own.test", 3),
                claim("c", "held", "x.other.test", 1),
                claim("d", "over", "*.other.test", 2),
            ],
            true,
        );
        assert_eq!(got, ["Route a/wild", "Route b/deeper", "Route c/held"]);
    }
}
