//! A route's annotations as backend settings: the ones Switchyard has a
//! feature for are honoured, every other router annotation is reported,
//! never silently dropped.

use super::objects::{Bad, Object};
use super::Report;

/// How TLS is carried for a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Termination {
    Passthrough,
    Edge,
    Reencrypt,
    /// Plain HTTP on port 80.
    Plain,
}

impl Termination {
    /// The backend name's prefix, as the reference writes it.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Termination::Passthrough => "be_tcp",
            Termination::Edge => "be_edge_http",
            Termination::Reencrypt => "be_secure",
            Termination::Plain => "be_http",
        }
    }
}

/// Backend settings from annotations, as `backends.toml` keys and values
/// (values already TOML-encoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) keys: Vec<(&'static str, String)>,
    /// `router.openshift.io/haproxy.health.check.interval`.
    pub(crate) check_interval: Option<String>,
}

const HAPROXY: &str = "haproxy.router.openshift.io/";
const ROUTER: &str = "router.openshift.io/";
/// Annotations the reference's Ingress controller reads
/// (`route.openshift.io/termination`…): reported, not honoured.
const ROUTE: &str = "route.openshift.io/";

/// A TOML string.
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration as the reference takes it (`30s`, `5m`, or milliseconds
/// when no unit is given).
fn duration(text: &str) -> Result<String, String> {
    let text = text.trim();
    let with_unit = if text.bytes().all(|b| b.is_ascii_digit()) {
        format!("{text}ms")
    } else {
        text.to_string()
    };
    crate::model::duration::parse(&with_unit)
        .map(|_| quoted(&with_unit))
        .map_err(|e| format!("`{text}`: {e}"))
}

fn count(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}`: expected a positive whole number")),
    }
}

impl Settings {
    /// The settings `object`'s annotations ask for, reporting those that
    /// cannot be honoured (unknown, invalid, or not for this termination).
    pub(crate) fn from_annotations(
        object: &Object,
        termination: Termination,
        report: &mut Report,
    ) -> Self {
        let annotations = object.annotations();
        let mut settings = Settings::default();
        let rate_limited = annotations
            .get("haproxy.router.openshift.io/rate-limit-connections")
            .is_some_and(|v| v.trim() == "true");
        for (&key, &value) in &annotations {
            let Some(short) = key
                .strip_prefix(HAPROXY)
                .or_else(|| key.strip_prefix(ROUTER))
                .or_else(|| key.strip_prefix(ROUTE).map(|_| key))
            else {
                continue;
            };
            let on = Annotated {
                termination,
                rate_limited,
            };
            if let Err(message) = settings.annotation(short, value, on) {
                let field = format!("metadata.annotations.{key}");
                report.warn(object, Bad::new(field, message));
            }
        }
        settings
    }

    /// The backend setting one annotation (`short`: its name without the
    /// router's prefix) asks for; `Err` says why it is ignored.
    fn annotation(&mut self, short: &str, value: &str, on: Annotated) -> Result<(), String> {
        let http = on.termination != Termination::Passthrough;
        let (rate_limited, termination) = (on.rate_limited, on.termination);
        let mut set = |k: &'static str, v: String| self.keys.push((k, v));
        match short {
            "balance" => match value.trim() {
                b @ ("source" | "roundrobin" | "leastconn" | "random") => set("balance", quoted(b)),
                other => {
                    return Err(format!(
                        "`{other}`: expected source, roundrobin, leastconn or random"
                    ))
                }
            },
            "timeout" => set("server_timeout", duration(value)?),
            "timeout-tunnel" => set("tunnel_timeout", duration(value)?),
            "ip_whitelist" => set("allow", allow_list(value)?),
            "rate-limit-connections" => {
                if !matches!(value.trim(), "true" | "false") {
                    return Err(format!("`{value}`: expected true or false"));
                }
            }
            "rate-limit-connections.concurrent-tcp" if rate_limited => {
                set("max_connections_per_source", count(value)?.to_string())
            }
            // The reference counts TCP connections over 3 s and HTTP
            // requests over 10 s.
            "rate-limit-connections.rate-tcp" if rate_limited => set(
                "connection_rate_per_source",
                quoted(&format!("{}/3s", count(value)?)),
            ),
            "rate-limit-connections.rate-http" if rate_limited && http => set(
                "http_request_rate_per_source",
                quoted(&format!("{}/10s", count(value)?)),
            ),
            "rate-limit-connections.concurrent-tcp"
            | "rate-limit-connections.rate-tcp"
            | "rate-limit-connections.rate-http"
                if !rate_limited =>
            {
                return Err(
                    "needs haproxy.router.openshift.io/rate-limit-connections: \"true\"; ignored"
                        .into(),
                )
            }
            "hsts_header"
                if termination == Termination::Edge || termination == Termination::Reencrypt =>
            {
                set("hsts", quoted(value.trim()))
            }
            "disable_cookies" if http => {
                if matches!(value.trim(), "true" | "TRUE" | "1") {
                    set("cookie", "false".into());
                }
            }
            "cookie_name" if http => set("cookie_name", quoted(value.trim())),
            "set-forwarded-headers" if http => match value.trim() {
                p @ ("append" | "replace" | "if-none" | "never") => set("forwarded", quoted(p)),
                other => {
                    return Err(format!(
                        "`{other}`: expected append, replace, if-none or never"
                    ))
                }
            },
            "pod-concurrent-connections" => {
                set("max_connections_per_server", count(value)?.to_string())
            }
            "haproxy.health.check.interval" => self.check_interval = Some(duration(value)?),
            "hsts_header"
            | "disable_cookies"
            | "cookie_name"
            | "set-forwarded-headers"
            | "rate-limit-connections.rate-http" => {
                return Err("applies to HTTP routes only; ignored".into())
            }
            _ => return Err("not supported by Switchyard; ignored".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quoted("x\ny"), "\"x\\u000ay\"");
    }

    #[test]
    fn durations_without_a_unit_are_milliseconds() {
        assert_eq!(duration("5s").as_deref(), Ok("\"5s\""));
        assert_eq!(duration("1500").as_deref(), Ok("\"1500ms\""));
        assert!(duration("soon").is_err());
    }
}

/// What an annotation's meaning depends on besides its value.
#[derive(Clone, Copy)]
struct Annotated {
    termination: Termination,
    /// `rate-limit-connections: "true"` is set on the same object.
    rate_limited: bool,
}

/// `ip_whitelist`: space-separated addresses and blocks, as the `allow`
/// list (a bare address is its own /32 or /128).
fn allow_list(value: &str) -> Result<String, String> {
    let mut blocks = Vec::new();
    for word in value.split_whitespace() {
        let block = if word.contains('/') {
            word.to_string()
        } else if word.contains(':') {
            format!("{word}/128")
        } else {
            format!("{word}/32")
        };
        block
            .parse::<crate::model::limits::cidr::Cidr>()
            .map_err(|e| format!("`{word}`: {e}"))?;
        blocks.push(quoted(&block));
    }
    if blocks.is_empty() {
        return Err("no address blocks".into());
    }
    Ok(format!("[{}]", blocks.join(", ")))
}
