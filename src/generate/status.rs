//! Route status as the reference reports it: for each Route, Ingress,
//! HTTPRoute and TLSRoute, whether it is admitted and, when it is not,
//! the reference's reason (`HostAlreadyClaimed`, `InvalidHost`,
//! `ExtendedValidationFailed`, …) and message. Written as `status.json`
//! beside the maps, and printed as a table.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::objects::Object;
use super::Report;

/// The kinds that carry routes.
const KINDS: [&str; 4] = ["Route", "Ingress", "HTTPRoute", "TLSRoute"];

/// One object's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Something of it is served.
    pub admitted: bool,
    /// Admitted, but some of its hosts, paths or rules are not.
    pub partial: bool,
    /// Why it (or the part that is not) is not served; empty when all is.
    pub reason: String,
    pub message: String,
    /// What is served differently than asked (each a line).
    pub warnings: Vec<String>,
}

/// The status of every route-carrying object of `objects` that this
/// generation reads (Ingresses of `class` only), in kind, namespace and
/// name order. `served`: the owners (`Kind namespace/name`) of the claims
/// that were admitted.
pub fn statuses(
    objects: &[Object],
    class: Option<&str>,
    served: &HashSet<String>,
    report: &Report,
) -> Vec<Status> {
    let mut out: Vec<Status> = objects
        .iter()
        .filter(|o| KINDS.contains(&o.kind.as_str()) && super::routes::readable(o))
        .filter(|o| o.kind != "Ingress" || super::routes::of_class(o, class))
        .map(|o| status_of(o, served.contains(&o.id()), report))
        .collect();
    out.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    out.dedup_by(|a, b| (&a.kind, &a.namespace, &a.name) == (&b.kind, &b.namespace, &b.name));
    out
}

fn status_of(object: &Object, admitted: bool, report: &Report) -> Status {
    let id = object.id();
    let mine = report.problems.iter().filter(|p| p.object == id);
    let mut refused = None;
    let mut warnings = Vec::new();
    for p in mine {
        let text = if p.field.is_empty() {
            p.message.clone()
        } else {
            format!("{}: {}", p.field, p.message)
        };
        // A second object of the same name is left out, not this one.
        if p.skipped && refused.is_none() && p.reason != "ReadTwice" {
            refused = Some((p.reason, text));
        } else {
            warnings.push(text);
        }
    }
    let (reason, message) = match refused {
        Some((reason, message)) => (reason.to_string(), message),
        None if admitted => (String::new(), String::new()),
        // Nothing refused it, and nothing of it is served (no parent
        // that takes it, no rule served): the warnings say why.
        None => (
            "NotServed".to_string(),
            warnings
                .first()
                .cloned()
                .unwrap_or_else(|| "nothing of it is served".to_string()),
        ),
    };
    Status {
        kind: object.kind.clone(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        admitted,
        partial: admitted && !reason.is_empty(),
        reason,
        message,
        warnings,
    }
}

/// `status.json`: `{"routes": [{kind, namespace, name, admitted, partial,
/// reason, message, warnings}]}`, one object per line for `diff` and
/// `grep`.
pub fn json(statuses: &[Status]) -> Vec<u8> {
    let text = |t: &str| serde_json::Value::from(t).to_string();
    let mut out = String::from("{\"routes\": [\n");
    for (i, s) in statuses.iter().enumerate() {
        let warnings: Vec<String> = s.warnings.iter().map(|w| text(w)).collect();
        let comma = if i + 1 < statuses.len() { "," } else { "" };
        let _ = writeln!(
            out,
            "  {{\"kind\": {}, \"namespace\": {}, \"name\": {}, \"admitted\": {}, \"partial\": {}, \"reason\": {}, \"message\": {}, \"warnings\": [{}]}}{comma}",
            text(&s.kind),
            text(&s.namespace),
            text(&s.name),
            s.admitted,
            s.partial,
            text(&s.reason),
            text(&s.message),
            warnings.join(", ")
        );
    }
    out.push_str("]}\n");
    out.into_bytes()
}

/// A table for the terminal: one row per object, `ADMITTED` true/false
/// and the reason; the counts last.
pub fn table(statuses: &[Status]) -> String {
    let rows: Vec<[String; 4]> = statuses
        .iter()
        .map(|s| {
            let reason = if s.partial {
                format!("partly: {}", s.reason)
            } else if s.admitted && !s.warnings.is_empty() {
                format!("{} warning(s)", s.warnings.len())
            } else {
                s.reason.clone()
            };
            [
                s.kind.clone(),
                format!("{}/{}", s.namespace, s.name),
                s.admitted.to_string(),
                reason,
            ]
        })
        .collect();
    let head = ["KIND", "NAMESPACE/NAME", "ADMITTED", "REASON"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let mut out = String::new();
    for row in std::iter::once(head.map(String::from)).chain(rows) {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    let admitted = statuses.iter().filter(|s| s.admitted).count();
    let _ = writeln!(out, "{admitted} of {} routes admitted", statuses.len());
    out
}
