//! Stage two of routing, for HTTP mode: a request's key is its lowercased
//! `host[:port]` followed by its path (no query), as HAProxy's `base`, and
//! the first map line whose regex matches it wins (`map_reg`).
//!
//! The lines OpenShift writes are answered without running a regex and
//! without scanning the map: `^<host>\.?(:[0-9]+)?<tail>$` and the same
//! after `[^\.]*\.` (one-label wildcard), where the tail is `(/.*)?` (any
//! path) or `/<path>(/.*)?` (that path and what is below it). Such a line
//! can only match a key that starts with its host (or, for a wildcard, whose
//! text after the first `.` starts with its domain), so the table keeps them
//! by host and by domain; a lookup gathers the lines of the key's host and
//! domain and every other (general) line, and tries them in file order with
//! a matcher equivalent to the regex. General lines run their regex.
//! Property-tested against an ordered regex scan.

use std::collections::HashMap;

use regex::Regex;

use super::table::{compile, pattern_error, Entry, PatternError};

/// One map, compiled for request keys.
#[derive(Debug)]
pub(crate) struct RequestTable<V> {
    entries: Vec<Entry<V>>,
    /// How each entry is matched (same index).
    matchers: Vec<Matcher>,
    /// Host of an exact line → its entries, in file order.
    by_host: HashMap<Box<str>, Vec<u32>>,
    /// Domain of a wildcard line → its entries, in file order.
    by_domain: HashMap<Box<str>, Vec<u32>>,
    /// Entries with a regex, in file order: candidates for every key.
    general: Vec<u32>,
}

/// How one line is matched.
#[derive(Debug)]
enum Matcher {
    /// `^<host>\.?(:[0-9]+)?<tail>$`
    Exact {
        host: Box<str>,
        tail: Tail,
    },
    /// `^[^\.]*\.<domain>\.?(:[0-9]+)?<tail>$`
    Wildcard {
        domain: Box<str>,
        tail: Tail,
    },
    Regex(Regex),
}

/// What follows the optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tail {
    /// `(/.*)?`: nothing, or a `/` and anything.
    Any,
    /// `/<path>(/.*)?`: the path, alone or followed by `/` and anything.
    /// `None` in the pattern is regex `.` (any character but a newline).
    Path(Vec<Option<u8>>),
}

impl<V> RequestTable<V> {
    /// Compiles entries (in file order); bad regexes are reported and left out.
    pub(crate) fn build(entries: Vec<Entry<V>>) -> (Self, Vec<PatternError>) {
        let mut table = RequestTable {
            entries: Vec::with_capacity(entries.len()),
            matchers: Vec::with_capacity(entries.len()),
            by_host: HashMap::new(),
            by_domain: HashMap::new(),
            general: Vec::new(),
        };
        let mut errors = Vec::new();
        for entry in entries {
            let index = table.entries.len() as u32;
            let matcher = match recognise(&entry.pattern) {
                Some(m) => m,
                None => match compile(&entry.pattern) {
                    Ok(re) => Matcher::Regex(re),
                    Err(e) => {
                        errors.push(pattern_error(entry.line, e));
                        continue;
                    }
                },
            };
            match &matcher {
                Matcher::Exact { host, .. } => {
                    table.by_host.entry(host.clone()).or_default().push(index)
                }
                Matcher::Wildcard { domain, .. } => table
                    .by_domain
                    .entry(domain.clone())
                    .or_default()
                    .push(index),
                Matcher::Regex(_) => table.general.push(index),
            }
            table.matchers.push(matcher);
            table.entries.push(entry);
        }
        (table, errors)
    }

    /// The first entry that matches `host` (lowercased, with its port if
    /// the request had one) followed by `path` (no query).
    pub(crate) fn lookup(&self, host: &str, path: &str) -> Option<&Entry<V>> {
        let key = format!("{host}{path}");
        self.lookup_key(&key)
    }

    /// The first entry that matches a whole key (`host[:port]` + path).
    pub(crate) fn lookup_key(&self, key: &str) -> Option<&Entry<V>> {
        let empty: &[u32] = &[];
        fn get<'a>(map: &'a HashMap<Box<str>, Vec<u32>>, k: &str) -> &'a [u32] {
            map.get(k).map_or(&[], Vec::as_slice)
        }
        // The key's host ends at the first `:` or `/`; an exact line's host
        // is it, or it without one final dot (`\.?`).
        let host_end = key.find([':', '/']).unwrap_or(key.len());
        let host = &key[..host_end];
        let trimmed = host.strip_suffix('.');
        // A wildcard's domain starts after the key's first dot and ends at
        // the next `:` or `/` (`[^\.]*` cannot pass a dot).
        let (domain, domain_trimmed) = match key.find('.') {
            Some(dot) => {
                let rest = &key[dot + 1..];
                let d = &rest[..rest.find([':', '/']).unwrap_or(rest.len())];
                (Some(d), d.strip_suffix('.'))
            }
            None => (None, None),
        };
        let lists: [&[u32]; 5] = [
            get(&self.by_host, host),
            trimmed.map_or(empty, |h| get(&self.by_host, h)),
            domain.map_or(empty, |d| get(&self.by_domain, d)),
            domain_trimmed.map_or(empty, |d| get(&self.by_domain, d)),
            &self.general,
        ];
        let mut cursors = [0usize; 5];
        loop {
            // The next candidate in file order across the lists.
            let next = (0..lists.len())
                .filter_map(|l| lists[l].get(cursors[l]).map(|&i| (i, l)))
                .min();
            let (index, list) = next?;
            cursors[list] += 1;
            if self.matchers[index as usize].is_match(key) {
                return Some(&self.entries[index as usize]);
            }
        }
    }

    pub(crate) fn entries(&self) -> &[Entry<V>] {
        &self.entries
    }

    /// The pattern written on `line`, for explanations.
    pub(crate) fn pattern_at(&self, line: usize) -> Option<&str> {
        let i = self.entries.binary_search_by_key(&line, |e| e.line).ok()?;
        Some(&self.entries[i].pattern)
    }
}

impl Matcher {
    fn is_match(&self, key: &str) -> bool {
        match self {
            Matcher::Exact { host, tail } => key
                .strip_prefix(&**host)
                .is_some_and(|rest| after_host(rest, tail)),
            Matcher::Wildcard { domain, tail } => key
                .split_once('.')
                .and_then(|(_, rest)| rest.strip_prefix(&**domain))
                .is_some_and(|rest| after_host(rest, tail)),
            Matcher::Regex(re) => re.is_match(key),
        }
    }
}

/// `\.?(:[0-9]+)?<tail>$` against what follows the host. Taking the dot
/// and all the digits is the only way to match: the tail starts with `/`
/// or is empty.
fn after_host(rest: &str, tail: &Tail) -> bool {
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    let rest = match rest.strip_prefix(':') {
        Some(port) => {
            let digits = port.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return false;
            }
            &port[digits..]
        }
        None => rest,
    };
    match tail {
        Tail::Any => rest.is_empty() || rest.starts_with('/'),
        Tail::Path(path) => {
            // Over characters: regex `.` takes one character, not one byte.
            let mut chars = rest.chars();
            let matched = path.iter().all(|atom| match (atom, chars.next()) {
                (Some(b), Some(c)) => c == char::from(*b),
                (None, Some(c)) => c != '\n',
                (_, None) => false,
            });
            matched && matches!(chars.next(), None | Some('/'))
        }
    }
}

/// The matcher for a line OpenShift writes, or `None` for any other text.
fn recognise(pattern: &str) -> Option<Matcher> {
    let body = pattern.strip_prefix('^')?.strip_suffix("(/.*)?$")?;
    let (wildcard, body) = match body.strip_prefix("[^\\.]*\\.") {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let (quoted, path) = body.split_once("\\.?(:[0-9]+)?")?;
    let host = unquote_host(quoted)?;
    let tail = if path.is_empty() {
        Tail::Any
    } else {
        Tail::Path(path_atoms(path)?)
    };
    Some(if wildcard {
        Matcher::Wildcard {
            domain: host.into(),
            tail,
        }
    } else {
        Matcher::Exact {
            host: host.into(),
            tail,
        }
    })
}

/// A regex-quoted host of lowercase letters, digits, `_`, `-` and dots.
fn unquote_host(quoted: &str) -> Option<String> {
    let mut host = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            'a'..='z' | '0'..='9' | '_' | '-' => host.push(c),
            '\\' => match chars.next()? {
                e @ ('.' | '-') => host.push(e),
                _ => return None,
            },
            _ => return None,
        }
    }
    (!host.is_empty() && !host.starts_with('.') && !host.ends_with('.')).then_some(host)
}

/// `/<path>` of plain characters: letters, digits, `/ _ - ~ %`, `\.` and
/// `\-` (literal), `.` (any character). It must start with `/`.
fn path_atoms(path: &str) -> Option<Vec<Option<u8>>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut atoms = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'_' | b'-' | b'~' | b'%' => {
                atoms.push(Some(b))
            }
            b'.' => atoms.push(None),
            b'\\' => match bytes.next()? {
                e @ (b'.' | b'-' | b'/' | b'~' | b'%') => atoms.push(Some(e)),
                _ => return None,
            },
            _ => return None,
        }
    }
    Some(atoms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(patterns: &[&str]) -> RequestTable<usize> {
        let entries = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| Entry {
                line: i + 1,
                pattern: p.to_string(),
                value: i,
            })
            .collect();
        let (table, errors) = RequestTable::build(entries);
        assert!(errors.is_empty(), "{errors:?}");
        table
    }

    fn hit(t: &RequestTable<usize>, key: &str) -> Option<usize> {
        t.lookup_key(key).map(|e| e.value)
    }

    #[test]
    fn openshift_lines_are_recognised() {
        for p in [
            r"^www\.example\.com\.?(:[0-9]+)?(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?/api(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?/a/b\.c/d.e(/.*)?$",
            r"^[^\.]*\.apps\.test\.?(:[0-9]+)?(/.*)?$",
            r"^[^\.]*\.apps\.test\.?(:[0-9]+)?/x(/.*)?$",
        ] {
            assert!(
                !matches!(recognise(p), None | Some(Matcher::Regex(_))),
                "{p}"
            );
        }
        for p in [
            r"^www\.example\.com\.?(:[0-9]+)?/a|b(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?/a?(/.*)?$",
            r"^www\.example\.com(/.*)?$",
            r"^www.example\.com\.?(:[0-9]+)?(/.*)?$",
            r"^www\.example\.com\.?(:[0-9]+)?api(/.*)?$",
        ] {
            assert!(recognise(p).is_none(), "{p}");
        }
    }

    #[test]
    fn longer_paths_first_as_openshift_sorts_them() {
        let t = table(&[
            r"^www\.test\.?(:[0-9]+)?/api/v2(/.*)?$",
            r"^www\.test\.?(:[0-9]+)?/api(/.*)?$",
            r"^www\.test\.?(:[0-9]+)?(/.*)?$",
            r"^[^\.]*\.test\.?(:[0-9]+)?(/.*)?$",
        ]);
        assert_eq!(hit(&t, "www.test/api/v2/users"), Some(0));
        assert_eq!(hit(&t, "www.test:8443/api/v2"), Some(0));
        assert_eq!(hit(&t, "www.test/api/v20"), Some(1));
        assert_eq!(hit(&t, "www.test/apis"), Some(2));
        assert_eq!(hit(&t, "www.test./"), Some(2));
        assert_eq!(hit(&t, "other.test/api"), Some(3));
        assert_eq!(hit(&t, "a.b.test/"), None);
        assert_eq!(hit(&t, "www.test:x/"), None);
    }

    /// Patterns: OpenShift's shapes over a few hosts and paths, plus
    /// general regexes that compete with them.
    fn pattern() -> impl Strategy<Value = String> {
        let host = prop::sample::select(vec!["a", "b", "www", "a.b"]);
        let domain = prop::sample::select(vec!["x.test", "test", "b"]);
        let path = prop::sample::select(vec!["", "/api", "/api/v1", "/a.b", "/a\\.b", "/x/"]);
        (0..6u8, host, domain, path).prop_map(|(kind, h, d, p)| {
            let q = |s: &str| s.replace('.', r"\.");
            match kind {
                0 => format!(r"^{}\.{}\.?(:[0-9]+)?{p}(/.*)?$", q(h), q(d)),
                1 => format!(r"^[^\.]*\.{}\.?(:[0-9]+)?{p}(/.*)?$", q(d)),
                2 => format!(r"^{}\.{}(:[0-9]+)?{p}$", q(h), q(d)),
                3 => format!(r"^.*{}/?$", q(d)),
                4 => format!(r"{}{p}", q(d)),
                _ => format!(r"^[^\.]*\.{}\.?(:[0-9]+)?/.*$", q(d)),
            }
        })
    }

    /// Keys: hosts with and without ports and final dots, dotless hosts
    /// whose path holds the domain, odd ports.
    fn key() -> impl Strategy<Value = String> {
        let host = prop::sample::select(vec![
            "a.x.test",
            "www.x.test",
            "a.b.x.test",
            "a.b.test",
            "b.test",
            "x.test",
            "a.test.",
            "localhost",
            "a.b",
            "www.b",
        ]);
        let port = prop::sample::select(vec!["", ":8443", ":", ":x", ".:80"]);
        let path = prop::sample::select(vec![
            "/",
            "/api",
            "/api/",
            "/api/v1",
            "/api/v10",
            "/apis",
            "/a.b",
            "/aXb",
            "/x/",
            "/x",
            "/.x.test/",
            "/b.x.test/api",
        ]);
        (host, port, path).prop_map(|(h, p, path)| format!("{h}{p}{path}"))
    }

    proptest! {
        /// The table answers exactly as HAProxy's ordered scan of the regexes.
        #[test]
        fn same_answer_as_ordered_scan(
            patterns in prop::collection::vec(pattern(), 1..16),
            keys in prop::collection::vec(key(), 1..16),
        ) {
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let t = table(&refs);
            let naive: Vec<Regex> = patterns.iter().map(|p| Regex::new(p).unwrap()).collect();
            for k in &keys {
                let expected = naive.iter().position(|re| re.is_match(k));
                prop_assert_eq!(hit(&t, k), expected, "key {} patterns {:?}", k, patterns);
            }
        }
    }
}
