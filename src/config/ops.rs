//! The operational part of loading: the stats port (bind, basic auth with
//! a password or a password file) and backends' active health checks.

use super::load::{raw, Context};
use super::problem::Source;

impl Context {
    /// The stats port settings.
    pub(super) fn stats(
        &mut self,
        src: &Source<'_>,
        raw: &raw::RawStats,
    ) -> crate::model::snapshot::StatsConfig {
        let bind = match (raw.enabled, &raw.bind) {
            (Some(false), _) => None,
            (_, None) => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 1936))),
            (_, Some(b)) => match b.get_ref().parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    let m = format!("stats bind `{}` is not IP:port", b.get_ref());
                    self.errors.push(src.problem(b.span(), m));
                    None
                }
            },
        };
        let password = match (&raw.password, &raw.password_file) {
            (Some(p), None) => Some(p.get_ref().clone()),
            (None, Some(f)) => {
                let path = self.base.join(f.get_ref());
                self.files.push(path.clone());
                match std::fs::read_to_string(&path) {
                    Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_string()),
                    Err(e) => {
                        self.errors.push(
                            src.problem(f.span(), format!("cannot read {}: {e}", path.display())),
                        );
                        None
                    }
                }
            }
            (Some(p), Some(_)) => {
                self.errors
                    .push(src.problem(p.span(), "set password or password_file, not both"));
                None
            }
            (None, None) => None,
        };
        let credentials = match (&raw.user, password) {
            (Some(user), Some(password)) => Some(crate::model::snapshot::Credentials {
                user: user.get_ref().clone(),
                password,
            }),
            (None, None) => None,
            (Some(user), None) => {
                self.errors
                    .push(src.problem(user.span(), "stats user without a password"));
                None
            }
            (None, Some(_)) => {
                let span = raw
                    .password
                    .as_ref()
                    .or(raw.password_file.as_ref())
                    .map_or(0..0, |p| p.span());
                self.errors
                    .push(src.problem(span, "stats password without a user"));
                None
            }
        };
        if let (Some(addr), None) = (bind, &credentials) {
            if !addr.ip().is_loopback() {
                let span = raw.bind.as_ref().map_or(0..0, |b| b.span());
                let m = format!("the stats port {addr} serves /metrics and /stats without a password to every address that reaches it: set user and password_file");
                self.warnings.push(src.problem(span, m));
            }
        }
        crate::model::snapshot::StatsConfig { bind, credentials }
    }

    /// A backend's active health check.
    pub(super) fn check(
        &mut self,
        src: &Source<'_>,
        raw: &raw::RawCheck,
    ) -> Option<crate::model::backend::CheckSpec> {
        use crate::model::backend::{CheckKind, CheckSpec};
        let d = CheckSpec::default();
        let expect = match &raw.expect {
            None => (200, 399),
            Some(e) => match parse_range(e.get_ref()) {
                Some(r) => r,
                None => {
                    let m = format!(
                        "expect `{}`: a status or range such as 200 or 200-399",
                        e.get_ref()
                    );
                    self.errors.push(src.problem(e.span(), m));
                    return None;
                }
            },
        };
        let kind = match raw.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
            None | Some((_, "tcp")) => CheckKind::Tcp,
            Some((_, "tls")) => CheckKind::Tls,
            Some((_, "http")) => CheckKind::Http {
                path: raw
                    .path
                    .as_ref()
                    .map_or_else(|| "/".to_string(), |p| p.get_ref().clone()),
                expect,
            },
            Some((k, other)) => {
                self.errors.push(src.problem(
                    k.span(),
                    format!("check kind `{other}`: expected tcp, tls or http"),
                ));
                return None;
            }
        };
        let count = |cx: &mut Self, v: &Option<toml::Spanned<u64>>, fallback: u32| match v {
            None => fallback,
            Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                cx.errors
                    .push(src.problem(n.span(), format!("{} is outside 1..=100", n.get_ref())));
                fallback
            }
        };
        Some(CheckSpec {
            kind,
            interval: self.duration(src, &raw.interval, d.interval),
            timeout: self.duration(src, &raw.timeout, d.timeout),
            rise: count(self, &raw.rise, d.rise),
            fall: count(self, &raw.fall, d.fall),
        })
    }
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high): (u16, u16) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    (100..=599).contains(&low).then_some(())?;
    (low <= high && high <= 599).then_some((low, high))
}
