//! The map files: each line parsed and its value checked against the
//! backends it names, compiled into a table once per configuration (or
//! reused when its file did not change).

use std::path::Path;
use std::sync::Arc;

use crate::config::problem::Problem;
use crate::config::raw::RawMaps;
use crate::model::backend::{Backend, Mode, Termination};
use crate::model::route::map_file;
use crate::model::route::{BackendId, Entry, Map, Routes, Table};

use super::carried::{Names, Reused};
use super::{digest_of, Context, Digest};

/// What a map's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keys {
    /// Server names: a line no name can match is said.
    Sni,
    /// Server names, and requests in HTTP mode (path routes are fine).
    SniOrRequest,
    /// Anything else (`alpn_be`): every line a regex, in file order.
    Other,
}

impl Context {
    /// The map files `[maps]` names, each value checked against the
    /// backends; the request table of the edge map where some backend
    /// serves HTTP (reused with the edge map when that did not change).
    pub(super) fn routes(
        &mut self,
        maps: &RawMaps,
        names: &Names,
        backends: &[Arc<Backend>],
    ) -> Routes {
        let base = self.base.clone();
        let mut routes = Routes {
            passthrough: maps
                .sni_passthrough
                .as_ref()
                .and_then(|p| self.map(&base.join(p.get_ref()), "sni_passthrough", |_, _| Ok(()))),
            tcp_be: maps.tcp_be.as_ref().and_then(|p| {
                self.map(&base.join(p.get_ref()), "tcp_be", |value, _| {
                    backend_of(value, names, backends, &[Termination::Passthrough])
                })
            }),
            edge: maps.edge_reencrypt_be.as_ref().and_then(|p| {
                self.map_for_requests(&base.join(p.get_ref()), "edge_reencrypt_be", |value, _| {
                    let kinds = [Termination::Edge, Termination::Reencrypt];
                    backend_of(value, names, backends, &kinds)
                })
            }),
            edge_requests: None,
            http_be: maps.http_be.as_ref().and_then(|p| {
                self.request_map(&base.join(p.get_ref()), "http_be", |value| {
                    http_backend_of(value, names, backends)
                })
            }),
            alpn: maps.alpn_be.as_ref().and_then(|p| {
                let path = base.join(p.get_ref());
                self.map_keyed(
                    (&path, "alpn_be"),
                    |value, _| whole_connection_backend_of(value, names, backends),
                    Keys::Other,
                )
            }),
            http_redirect: maps.http_redirect.as_ref().and_then(|p| {
                self.request_map(
                    &base.join(p.get_ref()),
                    "http_redirect",
                    |value| match value {
                        "1" => Ok(true),
                        "0" => Ok(false),
                        other => Err(format!("`{other}`: expected 1 (redirect to https) or 0")),
                    },
                )
            }),
        };
        // Requests are routed by Host and path only where some backend
        // serves HTTP: the table is not built (nor kept) otherwise.
        if backends.iter().any(|b| b.mode == Mode::Http) {
            let previous = self.carried.edge_requests.take();
            routes.edge_requests = routes.edge.as_ref().map(|map| match previous {
                // The same compiled edge map: the same request table.
                Some((edge, requests)) if Arc::ptr_eq(&edge, map) => requests,
                _ => {
                    let entries = map.table.to_entries();
                    Arc::new(crate::model::route::request::RequestTable::build(entries).0)
                }
            });
        }
        routes
    }

    /// Reads and compiles one map; `value` turns a line's value into `V`.
    pub(super) fn map<V: Reused>(
        &mut self,
        path: &Path,
        role: &'static str,
        value: impl Fn(&str, usize) -> Result<V, String>,
    ) -> Option<Arc<Map<V>>> {
        self.map_keyed((path, role), value, Keys::Sni)
    }

    /// A map whose lines also route requests (HTTP mode): path routes are
    /// legitimate there, so no warning that they cannot match an SNI.
    pub(super) fn map_for_requests<V: Reused>(
        &mut self,
        path: &Path,
        role: &'static str,
        value: impl Fn(&str, usize) -> Result<V, String>,
    ) -> Option<Arc<Map<V>>> {
        self.map_keyed((path, role), value, Keys::SniOrRequest)
    }

    pub(super) fn map_keyed<V: Reused>(
        &mut self,
        (path, role): (&Path, &'static str),
        value: impl Fn(&str, usize) -> Result<V, String>,
        keys: Keys,
    ) -> Option<Arc<Map<V>>> {
        let text = self.read(path)?;
        let digest = digest_of(&text);
        let valid = |m: &Map<V>, cx: &Self| m.table.values().all(|v| v.same_in(cx));
        if let Some(map) = self.reuse((path, role), digest, valid) {
            return Some(map);
        }
        let mark = self.warnings.len();
        let entries = self.map_entries(path, &text, value);
        let (table, pattern_errors) = match keys {
            Keys::Other => Table::build_regexes(entries),
            Keys::Sni | Keys::SniOrRequest => Table::build(entries),
        };
        self.pattern_problems(path, pattern_errors);
        for &line in table.never_lines().iter().filter(|_| keys == Keys::Sni) {
            let m = "this line cannot match a server name (it needs `/`, `:` or another character host names never hold): it is not used to route connections by SNI".to_string();
            self.warnings.push(Problem::at(path, line, m));
        }
        let map = Arc::new(Map {
            path: path.into(),
            table,
        });
        self.remember((path, role), digest, mark);
        Some(map)
    }

    /// Reads a map whose keys are requests (`host[:port]` + path).
    pub(super) fn request_map<V: Reused>(
        &mut self,
        path: &Path,
        role: &'static str,
        value: impl Fn(&str) -> Result<V, String>,
    ) -> Option<Arc<crate::model::route::RequestMap<V>>> {
        let text = self.read(path)?;
        let digest = digest_of(&text);
        let valid = |m: &crate::model::route::RequestMap<V>, cx: &Self| {
            m.table.entries().iter().all(|e| e.value.same_in(cx))
        };
        if let Some(map) = self.reuse((path, role), digest, valid) {
            return Some(map);
        }
        let mark = self.warnings.len();
        let entries = self.map_entries(path, &text, |v, _| value(v));
        let (table, pattern_errors) = crate::model::route::request::RequestTable::build(entries);
        self.pattern_problems(path, pattern_errors);
        let map = Arc::new(crate::model::route::RequestMap {
            path: path.into(),
            table,
        });
        self.remember((path, role), digest, mark);
        Some(map)
    }

    /// The previous configuration's map of this kind from `path`, if it
    /// was built from the same text and every backend it names is still
    /// the same backend at the same place: compiled once, used as it is
    /// (with the warnings it gave then).
    pub(super) fn reuse<M: std::any::Any + Send + Sync>(
        &mut self,
        (path, role): (&Path, &'static str),
        digest: Digest,
        valid: impl Fn(&M, &Self) -> bool,
    ) -> Option<Arc<M>> {
        let key = (path.to_path_buf(), role);
        let previous = self.carried.maps.get(&key)?;
        if previous.digest != digest {
            return None;
        }
        let map = Arc::clone(&previous.map).downcast::<M>().ok()?;
        if !valid(&map, self) {
            return None;
        }
        let warnings = previous.warnings.clone();
        self.warnings.extend(warnings.iter().cloned());
        self.memo.insert(key, (digest, warnings));
        Some(map)
    }

    /// Notes what a map was built from, for the next load to reuse it.
    pub(super) fn remember(
        &mut self,
        (path, role): (&Path, &'static str),
        digest: Digest,
        mark: usize,
    ) {
        let key = (path.to_path_buf(), role);
        let warnings = self.warnings[mark..].to_vec();
        self.memo.insert(key, (digest, warnings));
    }

    /// A map file's lines with their values, every bad line and value
    /// reported as `file:line`, a warning for each unanchored regex.
    pub(super) fn map_entries<V>(
        &mut self,
        path: &Path,
        text: &str,
        value: impl Fn(&str, usize) -> Result<V, String>,
    ) -> Vec<Entry<V>> {
        let (lines, line_errors) = map_file::parse(text);
        for e in line_errors {
            self.errors.push(Problem::at(path, e.line, e.message));
        }
        let mut entries = Vec::with_capacity(lines.len());
        for l in lines {
            if !l.pattern.starts_with('^') || !l.pattern.ends_with('$') {
                let m = format!(
                    "`{}` is not anchored with ^…$: it matches any name that contains it",
                    l.pattern
                );
                self.warnings.push(Problem::at(path, l.line, m));
            }
            match value(&l.value, l.line) {
                Ok(v) => entries.push(Entry {
                    line: l.line,
                    pattern: l.pattern,
                    value: v,
                }),
                Err(m) => self.errors.push(Problem::at(path, l.line, m)),
            }
        }
        entries
    }

    pub(super) fn pattern_problems(
        &mut self,
        path: &Path,
        errors: Vec<crate::model::route::table::PatternError>,
    ) {
        for e in errors {
            self.errors.push(Problem::at(path, e.line, e.message));
        }
    }
}

pub(super) fn backend_of(
    value: &str,
    names: &Names,
    backends: &[Arc<Backend>],
    kinds: &[Termination],
) -> Result<BackendId, String> {
    let id = *names
        .get(value)
        .ok_or_else(|| format!("backend `{value}` is not defined"))?;
    let termination = backends[id].termination;
    if kinds.contains(&termination) {
        return Ok(id);
    }
    let wanted: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    Err(format!(
        "backend `{value}` is {}, this map needs {}",
        termination.as_str(),
        wanted.join(" or ")
    ))
}

/// An `alpn_be` line's backend: passthrough, so that the server
/// negotiates the protocol the line was chosen for (terminated here, the
/// router's own ALPN would be offered instead, and an HTTP-mode backend
/// would route each request by Host again).
fn whole_connection_backend_of(
    value: &str,
    names: &Names,
    backends: &[Arc<Backend>],
) -> Result<BackendId, String> {
    backend_of(value, names, backends, &[Termination::Passthrough]).map_err(|e| {
        format!("{e}: an alpn_be line hands the whole connection, its ALPN included, to a passthrough backend")
    })
}

/// The backend an `os_http_be.map` value names: plain, edge or re-encrypt,
/// in HTTP mode.
fn http_backend_of(
    value: &str,
    names: &Names,
    backends: &[Arc<Backend>],
) -> Result<BackendId, String> {
    let kinds = [
        Termination::Plain,
        Termination::Edge,
        Termination::Reencrypt,
    ];
    let id = backend_of(value, names, backends, &kinds)?;
    if backends[id].mode == Mode::Http {
        Ok(id)
    } else {
        Err(format!(
            "backend `{value}` is not in HTTP mode (mode = \"http\")"
        ))
    }
}
