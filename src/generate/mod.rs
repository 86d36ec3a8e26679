//! `switchyard generate`: Kubernetes objects in, a configuration
//! directory out, written the way the reference router's controller writes
//! its maps. Pure up to [`write::publish`]: objects are read
//! ([`objects`]), turned into claims of hosts and paths ([`routes`] for
//! Routes and Ingresses, [`gateway`] for the Gateway API), admitted
//! (oldest first), given servers from their EndpointSlices ([`servers`]),
//! and written as files ([`write`]) that replace the directory at once.

pub(crate) mod admit;
pub mod check;
pub(crate) mod gateway;
pub(crate) mod objects;
pub(crate) mod routes;
pub(crate) mod servers;
pub(crate) mod settings;
pub mod status;
pub mod write;

use std::path::PathBuf;

use objects::{Bad, Object};

/// What to write, and how the generated `switchyard.toml` listens.
#[derive(Debug, Clone)]
pub struct Options {
    pub out: PathBuf,
    /// The default certificate's PEM (chain and key).
    pub default_certificate: Option<Vec<u8>>,
    /// Only the maps, backends and certificates (for a hand-written TOML).
    pub maps_only: bool,
    /// Only Ingresses of this class (all when `None`).
    pub ingress_class: Option<String>,
    /// The CA re-encrypt routes without a `destinationCACertificate`
    /// verify their servers against (the cluster's service CA).
    pub service_ca: Option<PathBuf>,
    pub https_bind: String,
    pub http_bind: String,
    pub https_port: u16,
    pub stats_bind: String,
    /// Basic auth on the stats port (user `admin`), from this file.
    pub stats_password_file: Option<PathBuf>,
    /// The reference's strict namespace ownership of hosts and wildcard
    /// domains; off with `--disable-namespace-ownership-check`.
    pub namespace_ownership: bool,
}

/// One problem with one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// `Kind namespace/name`.
    pub object: String,
    pub field: String,
    pub message: String,
    /// The object (or this part of it) was left out of the output.
    pub skipped: bool,
    /// The reference's reason for it (`HostAlreadyClaimed`, `InvalidHost`,
    /// `ExtendedValidationFailed`, …), as `status.json` reports it.
    pub reason: &'static str,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.skipped { "skipped" } else { "warning" };
        if self.field.is_empty() {
            write!(f, "{what}: {}: {}", self.object, self.message)
        } else {
            write!(
                f,
                "{what}: {}: {}: {}",
                self.object, self.field, self.message
            )
        }
    }
}

/// The problems found so far.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    /// The objects (`Kind namespace/name`) something of which is served.
    pub served: std::collections::HashSet<String>,
}

impl Report {
    /// `object` is left out because of `bad`.
    pub(crate) fn skipped(&mut self, object: &Object, bad: Bad) {
        self.push(object.id(), bad, true);
    }

    /// `object` is generated, but `bad` in it is not honoured.
    pub(crate) fn warn(&mut self, object: &Object, bad: Bad) {
        self.push(object.id(), bad, false);
    }

    /// Something about what `owner` will be served with.
    pub fn note(&mut self, owner: &str, message: String) {
        self.problems.push(Problem {
            object: owner.to_string(),
            field: String::new(),
            message,
            skipped: false,
            reason: "",
        });
    }

    /// `owner` is left out for `reason`, named explicitly.
    pub(crate) fn refuse(
        &mut self,
        owner: &str,
        field: &str,
        reason: &'static str,
        message: String,
    ) {
        self.problems.push(Problem {
            object: owner.to_string(),
            field: field.to_string(),
            message,
            skipped: true,
            reason,
        });
    }

    fn push(&mut self, object: String, bad: Bad, skipped: bool) {
        let reason = reason_of(&bad);
        self.problems.push(Problem {
            object,
            field: bad.field,
            message: bad.message,
            skipped,
            reason,
        });
    }

    /// Whether anything was left out.
    pub fn anything_skipped(&self) -> bool {
        self.problems.iter().any(|p| p.skipped)
    }
}

/// Who may read the stats port: with a password file, the bind asked for
/// behind user `admin`; without one, the same port on loopback only (on
/// `hostNetwork` any other address is every node's). Returns the line
/// that says which.
pub fn protect_stats(options: &mut Options) -> String {
    if let Some(file) = &options.stats_password_file {
        return format!(
            "stats: {} with user admin and the password in {}",
            options.stats_bind,
            file.display()
        );
    }
    let port = options
        .stats_bind
        .rsplit_once(':')
        .map_or("1936", |(_, port)| port);
    let loopback = options
        .stats_bind
        .rsplit_once(':')
        .and_then(|(host, _)| {
            host.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .ok()
        })
        .is_some_and(|ip| ip.is_loopback());
    if !loopback {
        options.stats_bind = format!("127.0.0.1:{port}");
    }
    format!(
        "stats: {} only (loopback): no --stats-password-file given",
        options.stats_bind
    )
}

/// The reference's reason for a field's problem: its host validation
/// (`InvalidHost`), its extended validation of certificates, keys and CAs
/// (`ExtendedValidationFailed`), or the object's own validation.
fn reason_of(bad: &Bad) -> &'static str {
    let field = bad.field.as_str();
    let last = field.rsplit('.').next().unwrap_or(field);
    if bad.message.starts_with("read twice") {
        // A second object of a kind and name: the first one read stands.
        "ReadTwice"
    } else if bad.message.contains("no ReferenceGrant") {
        // The Gateway API's reason for a reference it does not allow.
        "RefNotPermitted"
    } else if bad.message.starts_with("InvalidHost")
        || matches!(last, "host" | "hostname" | "hostnames" | "hosts")
    {
        "InvalidHost"
    } else if matches!(
        last,
        "certificate" | "key" | "caCertificate" | "destinationCACertificate" | "secretName"
    ) || field.contains("ertificateRefs")
        || bad.message.starts_with("Secret ")
    {
        "ExtendedValidationFailed"
    } else {
        "ValidationFailed"
    }
}

/// The files for `objects`, and the problems met on the way.
pub fn generate(objects: &[Object], options: &Options) -> (write::Files, Report) {
    let mut report = Report::default();
    let index = routes::Index::new(objects, &mut report);
    let mut claims = routes::routes(&index, &mut report);
    claims.extend(routes::ingresses(
        &index,
        options.ingress_class.as_deref(),
        &mut report,
    ));
    claims.extend(gateway::claims(&index, &mut report));
    let admitted = admit::admit(claims, options.namespace_ownership, &mut report);
    let mut files = write::files(&admitted, &index, options, &mut report);
    // One line per problem, however many listeners or rules met it.
    let mut seen = std::collections::HashSet::new();
    report.problems.retain(|p| seen.insert(p.clone()));
    report.served = admitted.iter().map(|c| c.owner.clone()).collect();
    let class = options.ingress_class.as_deref();
    let statuses = status::statuses(objects, class, &report.served, &report);
    files.insert("status.json".into(), (status::json(&statuses), false));
    (files, report)
}

/// Reads every input (`-` is standard input; a directory, its `.yaml`,
/// `.yml` and `.json` files in name order). Unreadable documents are
/// reported as skipped.
pub fn read_inputs(inputs: &[PathBuf], report: &mut Report) -> Result<Vec<Object>, String> {
    let mut texts = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("standard input: {e}"))?;
            texts.push(("-".to_string(), text));
        } else if input.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| format!("{}: {e}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                })
                .collect();
            names.sort();
            for name in names {
                let text = std::fs::read_to_string(&name)
                    .map_err(|e| format!("{}: {e}", name.display()))?;
                texts.push((name.display().to_string(), text));
            }
        } else {
            let text =
                std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
            texts.push((input.display().to_string(), text));
        }
    }
    let mut objects = Vec::new();
    for (name, text) in texts {
        let (mut found, skipped) = objects::read(&name, &text).map_err(|e| e.to_string())?;
        objects.append(&mut found);
        for message in skipped {
            report.problems.push(Problem {
                object: name.clone(),
                field: String::new(),
                message,
                skipped: true,
                reason: "ValidationFailed",
            });
        }
    }
    Ok(objects)
}
