//! Reads and validates a configuration. Every check that can fail names the
//! file and line; all problems are collected before giving up, so `check`
//! shows the whole list at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::problem::{Problem, Problems, Source};
pub(super) use super::raw;
use super::raw::{RawBackend, RawBackendFile, RawConfig, RawDefaults, RawListener};
use crate::model::backend::{Backend, Forwarded, Mode, Server, ServerState, Termination, Timeouts};
use crate::model::balance::Algorithm;
use crate::model::duration;
use crate::model::route::map_file;
use crate::model::route::{BackendId, Entry, Map, Routes, Table};
use crate::model::snapshot::{HttpSettings, ListenerSpec, Protocol, Snapshot};
use crate::model::wire::client_hello;

/// A configuration that loaded, with the warnings worth showing and what
/// it was built from.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<Problem>,
    /// Kept by whoever reloads, beside the snapshot once it is applied:
    /// [`reload`] reuses what did not change since.
    pub memo: Memo,
}

/// What a loaded snapshot was built from: the digest of the text each
/// compiled map and the backends came from. It belongs to the loader, not
/// to the snapshot: the data path never reads it.
#[derive(Debug, Default)]
pub struct Memo {
    maps: MapMemo,
    backends: Option<Arc<BackendMemo>>,
}

const MAX_WEIGHT: i64 = 256;

/// Loads the configuration rooted at `path`.
pub fn load(path: &Path) -> Result<Loaded, Problems> {
    load_after(path, None)
}

/// Loads a configuration that replaces `previous`: servers that stay (same
/// backend, name and address) keep their live counters, and backends keep
/// their round-robin position. Every map and backend is built anew.
pub fn load_after(path: &Path, previous: Option<&Snapshot>) -> Result<Loaded, Problems> {
    load_with(path, previous.map(|p| Carried::from_previous(p, None)))
}

/// [`load_after`] that also reuses, as they are, the compiled maps and
/// backends whose files are the text `memo` says `previous` was built
/// from. `memo` must be the one loaded with `previous`.
pub fn reload(path: &Path, previous: &Snapshot, memo: &Memo) -> Result<Loaded, Problems> {
    load_with(path, Some(Carried::from_previous(previous, Some(memo))))
}

fn load_with(path: &Path, carried: Option<Carried>) -> Result<Loaded, Problems> {
    let mut cx = Context {
        carried: carried.unwrap_or_default(),
        ..Context::default()
    };
    let snapshot = cx.load(path);
    // Each file's problems in line order, files in the order they were read.
    let order = |p: &Problem| (cx.files.iter().position(|f| *f == p.file), p.line);
    cx.errors.sort_by_key(order);
    cx.warnings.sort_by_key(order);
    match snapshot {
        Some(snapshot) if cx.errors.is_empty() => Ok(Loaded {
            snapshot,
            warnings: cx.warnings,
            memo: Memo {
                maps: cx.memo,
                backends: cx.backends_memo.map(Arc::new),
            },
        }),
        _ => Err(Problems {
            errors: cx.errors,
            warnings: cx.warnings,
        }),
    }
}

/// Problems found so far, and the state carried over from the previous
/// configuration.
#[derive(Default)]
pub(super) struct Context {
    pub(super) errors: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
    pub(super) files: Vec<PathBuf>,
    pub(super) carried: Carried,
    /// What each map was built from (handed back in [`Memo`]).
    memo: MapMemo,
    /// The backend at each id: name, termination, mode (what a map's
    /// values mean).
    kinds: Vec<BackendKind>,
    /// What the backends were built from, when only their files went in.
    backends_memo: Option<BackendMemo>,
    /// `[limits] ipv6_source_prefix`, for the listeners' source limits.
    pub(super) ipv6_source_prefix: u8,
    /// Directory of the main file: relative paths start here.
    pub(super) base: PathBuf,
    /// `[tls] min_version = "1.3"`.
    pub(super) min_tls13: bool,
}

/// Live state of the previous backends by identity, for backends built
/// anew.
#[derive(Default)]
pub(super) struct Live {
    rotations: HashMap<String, Arc<AtomicUsize>>,
    queues: HashMap<String, Arc<crate::model::backend::Queue>>,
    /// Backend traffic and verify-failure counters by backend name.
    traffic: HashMap<
        String,
        (
            Arc<crate::model::counters::Traffic>,
            Arc<std::sync::atomic::AtomicU64>,
        ),
    >,
    servers: HashMap<(String, String, SocketAddr), Arc<ServerState>>,
}

impl Carried {
    /// The previous backends' live state by identity, indexed on first use.
    fn live(&mut self) -> &Live {
        let previous = &self.previous;
        self.live.get_or_insert_with(|| {
            let mut live = Live::default();
            for b in previous {
                live.rotations
                    .insert(b.name.clone(), Arc::clone(&b.rotation));
                if let Some(queue) = &b.queue {
                    live.queues.insert(b.name.clone(), Arc::clone(queue));
                }
                live.traffic.insert(
                    b.name.clone(),
                    (Arc::clone(&b.traffic), Arc::clone(&b.verify_failures)),
                );
                for s in &b.servers {
                    let key = (b.name.clone(), s.name.clone(), s.addr);
                    live.servers.insert(key, Arc::clone(&s.state));
                }
            }
            live
        })
    }
}

/// Live state of the previous configuration, by identity.
#[derive(Default)]
pub(super) struct Carried {
    /// The previous backends, to carry their live state from (indexed by
    /// name only when some backend is built anew: `live`).
    previous: Vec<Arc<Backend>>,
    live: Option<Live>,
    /// The previous compiled maps by file and kind, with what they were
    /// built from.
    maps: HashMap<MapKey, PreviousMap>,
    /// The previous backend at each id.
    kinds: Vec<BackendKind>,
    /// The previous backends with what they were built from.
    backends: Option<(Arc<BackendMemo>, Vec<Arc<Backend>>)>,
    /// The previous request table of the edge map, with that map.
    edge_requests: Option<EdgeRequests>,
    /// TLS termination of each listener, by name (session resumption).
    pub(super) tls: HashMap<String, Arc<crate::tls::ServerSide>>,
}

impl Carried {
    /// The live state of `snapshot`, and with `memo` its reusable parts.
    fn from_previous(snapshot: &Snapshot, memo: Option<&Memo>) -> Self {
        let mut carried = Carried::default();
        for (listener, tls) in snapshot.listeners.iter().zip(&snapshot.tls) {
            if let Some(tls) = tls {
                carried
                    .tls
                    .insert(listener.name.to_string(), Arc::clone(tls));
            }
        }
        carried.kinds = snapshot.backends.iter().map(|b| kind_of(b)).collect();
        carried.previous = snapshot.backends.clone();
        let Some(memo) = memo else {
            return carried;
        };
        carried.backends = memo
            .backends
            .as_ref()
            .map(|built| (Arc::clone(built), snapshot.backends.clone()));
        let routes = &snapshot.routes;
        let memo = &memo.maps;
        let mut keep = |path: &Path, role, map: Arc<dyn std::any::Any + Send + Sync>| {
            let key = (path.to_path_buf(), role);
            if let Some((digest, warnings)) = memo.get(&key) {
                let previous = PreviousMap {
                    digest: *digest,
                    warnings: warnings.clone(),
                    map,
                };
                carried.maps.insert(key, previous);
            }
        };
        if let Some(m) = &routes.passthrough {
            keep(&m.path, "sni_passthrough", m.clone());
        }
        if let Some(m) = &routes.tcp_be {
            keep(&m.path, "tcp_be", m.clone());
        }
        if let Some(m) = &routes.edge {
            keep(&m.path, "edge_reencrypt_be", m.clone());
        }
        if let Some(m) = &routes.http_be {
            keep(&m.path, "http_be", m.clone());
        }
        if let Some(m) = &routes.http_redirect {
            keep(&m.path, "http_redirect", m.clone());
        }
        if let (Some(edge), Some(requests)) = (&routes.edge, &routes.edge_requests) {
            carried.edge_requests = Some((Arc::clone(edge), Arc::clone(requests)));
        }
        carried
    }
}

impl Context {
    fn load(&mut self, path: &Path) -> Option<Snapshot> {
        let text = self.read(path)?;
        let src = Source { path, text: &text };
        let raw: RawConfig = self.parse_toml(&src)?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.base = base_dir.clone();
        let base = base_dir.as_path();
        self.min_tls13 = self.min_tls13(&src, &raw.tls);
        // Read before the backends: their per-source limits group by it.
        self.ipv6_source_prefix = match &raw.limits.ipv6_source_prefix {
            None => 64,
            Some(p) => match u8::try_from(*p.get_ref()) {
                Ok(p) if p <= 128 => p,
                _ => {
                    let m = "ipv6_source_prefix must be 0..=128".to_string();
                    self.error(&src, p.span(), m);
                    64
                }
            },
        };
        let defaults = self.defaults(&src, &raw.defaults);
        let main_digest = digest_of(&text);
        let (backends, names) = match self.reuse_backends(main_digest) {
            Some(reused) => reused,
            None => {
                let (files_mark, warnings_mark) = (self.files.len(), self.warnings.len());
                let mut backends = Vec::new();
                let mut names = Names::default();
                let mut file_digests = Vec::new();
                self.backends(&src, raw.backends, &defaults, &mut backends, &mut names);
                for file in &raw.backend_files {
                    let file_path = base.join(file.get_ref());
                    let Some(text) = self.read(&file_path) else {
                        continue;
                    };
                    file_digests.push((file_path.clone(), digest_of(&text)));
                    let file_src = Source {
                        path: &file_path,
                        text: &text,
                    };
                    if let Some(raw) = self.parse_toml::<RawBackendFile>(&file_src) {
                        self.backends(
                            &file_src,
                            raw.backends,
                            &defaults,
                            &mut backends,
                            &mut names,
                        );
                    }
                }
                // Reusable next time only if the backends were built from
                // these files alone (a CA file they read may change on its
                // own).
                let read = &self.files[files_mark..];
                let alone = read.iter().eq(file_digests.iter().map(|(p, _)| p));
                self.backends_memo = alone.then(|| BackendMemo {
                    main: main_digest,
                    files: file_digests,
                    warnings: self.warnings[warnings_mark..].to_vec(),
                });
                let backends: Vec<Arc<Backend>> = backends.into_iter().map(Arc::new).collect();
                (backends, names)
            }
        };
        self.kinds = backends.iter().map(|b| kind_of(b)).collect();
        let routes = Routes {
            passthrough: raw
                .maps
                .sni_passthrough
                .as_ref()
                .and_then(|p| self.map(&base.join(p.get_ref()), "sni_passthrough", |_, _| Ok(()))),
            tcp_be: raw.maps.tcp_be.as_ref().and_then(|p| {
                self.map(&base.join(p.get_ref()), "tcp_be", |value, _| {
                    backend_of(value, &names, &backends, &[Termination::Passthrough])
                })
            }),
            edge: raw.maps.edge_reencrypt_be.as_ref().and_then(|p| {
                self.map_for_requests(&base.join(p.get_ref()), "edge_reencrypt_be", |value, _| {
                    let kinds = [Termination::Edge, Termination::Reencrypt];
                    backend_of(value, &names, &backends, &kinds)
                })
            }),
            edge_requests: None,
            http_be: raw.maps.http_be.as_ref().and_then(|p| {
                self.request_map(&base.join(p.get_ref()), "http_be", |value| {
                    let id = backend_of(
                        value,
                        &names,
                        &backends,
                        &[
                            Termination::Plain,
                            Termination::Edge,
                            Termination::Reencrypt,
                        ],
                    )?;
                    if backends[id].mode == Mode::Http {
                        Ok(id)
                    } else {
                        Err(format!(
                            "backend `{value}` is not in HTTP mode (mode = \"http\")"
                        ))
                    }
                })
            }),
            http_redirect: raw.maps.http_redirect.as_ref().and_then(|p| {
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
        let mut routes = routes;
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
        let certs = self.certificates(&src, &raw.tls, &raw.maps);
        self.check_terminated_have_certs(&src, &raw.maps, &backends, certs.is_some());
        let buffer_memory = self.buffer_memory(&src, &raw.limits.buffer_memory);
        let (listeners, tls) = self.listeners(&src, &raw.listeners, &names, certs.as_ref());
        let stats = self.stats(&src, &raw.stats);
        let http = HttpSettings {
            timeouts: defaults.timeouts,
            error_page_503: raw.http.error_page_503.as_ref().and_then(|p| {
                let path = base.join(p.get_ref());
                self.files.push(path.clone());
                match std::fs::read(&path) {
                    Ok(page) => Some(bytes::Bytes::from(page)),
                    Err(e) => {
                        let m = format!("error_page_503 `{}`: cannot read: {e}", path.display());
                        self.error(&src, p.span(), m);
                        None
                    }
                }
            }),
        };
        Some(Snapshot {
            http,
            buffer_memory,
            splice: raw.relay.splice.unwrap_or(true),
            listeners,
            tls,
            stats,
            routes,
            backends,
            generation: 0,
            files: self.files.clone(),
            watch: raw.reload.watch.unwrap_or(true),
            close_removed_after: raw
                .reload
                .close_removed_after
                .as_ref()
                .map(|d| self.duration(&src, &Some(d.clone()), Duration::ZERO)),
        })
    }

    /// The previous backends, when the main file and every backend file
    /// are the text they were built from (and nothing else went in): the
    /// same backends, with their live state, and the warnings they gave.
    fn reuse_backends(&mut self, main: Digest) -> Option<BuiltBackends> {
        let (memo, backends) = self.carried.backends.take()?;
        if memo.main != main {
            return None;
        }
        for (path, digest) in &memo.files {
            let text = std::fs::read_to_string(path).ok()?;
            if digest_of(&text) != *digest {
                return None;
            }
        }
        self.files.extend(memo.files.iter().map(|(p, _)| p.clone()));
        self.warnings.extend(memo.warnings.iter().cloned());
        let names = backends
            .iter()
            .enumerate()
            .map(|(id, b)| (b.name.clone(), id))
            .collect();
        self.backends_memo = Some(BackendMemo::clone(&memo));
        Some((backends, names))
    }

    fn read(&mut self, path: &Path) -> Option<String> {
        self.files.push(path.to_path_buf());
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                self.errors.push(Problem {
                    file: path.to_path_buf(),
                    line: None,
                    message: format!("cannot read: {e}"),
                });
                None
            }
        }
    }

    fn parse_toml<T: serde::de::DeserializeOwned>(&mut self, src: &Source<'_>) -> Option<T> {
        match toml::from_str(src.text) {
            Ok(raw) => Some(raw),
            Err(e) => {
                let message = e.message().to_string();
                self.errors.push(match e.span() {
                    Some(span) => src.problem(span, message),
                    None => Problem {
                        file: src.path.to_path_buf(),
                        line: None,
                        message,
                    },
                });
                None
            }
        }
    }

    fn error(&mut self, src: &Source<'_>, span: std::ops::Range<usize>, message: String) {
        self.errors.push(src.problem(span, message));
    }

    fn defaults(&mut self, src: &Source<'_>, raw: &RawDefaults) -> BackendDefaults {
        let fallback = BackendDefaults::default();
        BackendDefaults {
            balance: self
                .opt_parse(src, &raw.balance)
                .unwrap_or(fallback.balance),
            http_balance: self
                .opt_parse(src, &raw.http_balance)
                .unwrap_or(fallback.http_balance),
            timeouts: Timeouts {
                connect: self.duration(src, &raw.connect_timeout, fallback.timeouts.connect),
                server: self.duration(src, &raw.server_timeout, fallback.timeouts.server),
                tunnel: self.duration(src, &raw.tunnel_timeout, fallback.timeouts.tunnel),
                http_request: self.duration(
                    src,
                    &raw.http_request_timeout,
                    fallback.timeouts.http_request,
                ),
                http_keep_alive: self.duration(
                    src,
                    &raw.http_keep_alive_timeout,
                    fallback.timeouts.http_keep_alive,
                ),
                queue: self.duration(src, &raw.queue_timeout, fallback.timeouts.queue),
            },
            retries: self.retries(src, &raw.retries, fallback.retries),
        }
    }

    fn opt_parse<T: std::str::FromStr<Err = String>>(
        &mut self,
        src: &Source<'_>,
        value: &Option<Spanned<String>>,
    ) -> Option<T> {
        let value = value.as_ref()?;
        match value.get_ref().parse() {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(src, value.span(), message);
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        src: &Source<'_>,
        value: &Option<Spanned<String>>,
        fallback: Duration,
    ) -> Duration {
        let Some(value) = value else { return fallback };
        match duration::parse(value.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(src, value.span(), "a timeout of zero is not allowed".into());
                fallback
            }
            Err(message) => {
                self.error(src, value.span(), message);
                fallback
            }
        }
    }

    fn retries(&mut self, src: &Source<'_>, value: &Option<Spanned<u64>>, fallback: u32) -> u32 {
        match value {
            None => fallback,
            Some(v) if *v.get_ref() <= 16 => *v.get_ref() as u32,
            Some(v) => {
                self.error(
                    src,
                    v.span(),
                    format!("retries {} is above 16", v.get_ref()),
                );
                fallback
            }
        }
    }

    fn backends(
        &mut self,
        src: &Source<'_>,
        raws: Vec<RawBackend>,
        defaults: &BackendDefaults,
        out: &mut Vec<Backend>,
        names: &mut Names,
    ) {
        for raw in raws {
            let name = raw.name.get_ref().trim().to_string();
            if name.is_empty() || name.contains(char::is_whitespace) {
                self.error(
                    src,
                    raw.name.span(),
                    format!("backend name `{name}` is empty or has spaces"),
                );
                continue;
            }
            if names.contains_key(&name) {
                self.error(
                    src,
                    raw.name.span(),
                    format!("backend `{name}` is defined twice"),
                );
                continue;
            }
            let backend = self.backend(src, raw, name.clone(), defaults);
            names.insert(name, out.len());
            out.push(backend);
        }
    }

    fn backend(
        &mut self,
        src: &Source<'_>,
        raw: RawBackend,
        name: String,
        defaults: &BackendDefaults,
    ) -> Backend {
        let termination = match &raw.termination {
            None => Termination::Passthrough,
            Some(t) => match t.get_ref().as_str() {
                "passthrough" => Termination::Passthrough,
                "edge" => Termination::Edge,
                "reencrypt" => Termination::Reencrypt,
                "none" => Termination::Plain,
                other => {
                    let m = format!("unknown termination `{other}`: expected passthrough, edge, reencrypt or none");
                    self.error(src, t.span(), m);
                    Termination::Passthrough
                }
            },
        };
        let mode = self.mode(src, &raw, termination);
        let algorithm = self.opt_parse(src, &raw.balance).unwrap_or(match mode {
            Mode::Http => defaults.http_balance,
            Mode::Tcp => defaults.balance,
        });
        let d = &defaults.timeouts;
        let timeouts = Timeouts {
            connect: self.duration(src, &raw.connect_timeout, d.connect),
            server: self.duration(src, &raw.server_timeout, d.server),
            tunnel: self.duration(src, &raw.tunnel_timeout, d.tunnel),
            http_request: self.duration(src, &raw.http_request_timeout, d.http_request),
            http_keep_alive: self.duration(src, &raw.http_keep_alive_timeout, d.http_keep_alive),
            queue: self.duration(src, &raw.queue_timeout, d.queue),
        };
        let retries = self.retries(src, &raw.retries, defaults.retries);
        let servers = self.servers(src, &raw, &name);
        if servers.is_empty() {
            self.warnings.push(src.problem(
                raw.name.span(),
                format!("backend `{name}` has no servers: its connections will be closed"),
            ));
        } else if servers.iter().all(|s| s.weight == 0) {
            self.warnings.push(src.problem(
                raw.name.span(),
                format!(
                    "every server of backend `{name}` has weight 0: its connections will be closed"
                ),
            ));
        }
        let rotation = self
            .carried
            .live()
            .rotations
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let upstream = self.upstream(src, &raw, &name, termination);
        let mut backend = Backend::new(
            name,
            termination,
            algorithm,
            servers,
            timeouts,
            retries,
            rotation,
        );
        if upstream.is_some() {
            backend.extras_mut().upstream = upstream;
        }
        backend.mode = mode;
        backend.cookie = self.cookie(src, &raw, &backend.name, backend.mode);
        if let Some(f) = &raw.forwarded {
            backend.forwarded = match f.get_ref().as_str() {
                "append" => Forwarded::Append,
                "replace" => Forwarded::Replace,
                "if-none" => Forwarded::IfNone,
                "never" => Forwarded::Never,
                other => {
                    let m =
                        format!("forwarded `{other}`: expected append, replace, if-none or never");
                    self.error(src, f.span(), m);
                    Forwarded::Append
                }
            };
        }
        if let Some(h) = &raw.hsts {
            match hyper::header::HeaderValue::from_str(h.get_ref()) {
                Ok(v) if h.get_ref().starts_with("max-age=") => backend.extras_mut().hsts = Some(v),
                _ => {
                    let m = format!("hsts `{}`: expected a header value such as \"max-age=31536000; includeSubDomains\"", h.get_ref());
                    self.error(src, h.span(), m);
                }
            }
        }
        if let Some(version) = &raw.send_proxy {
            if backend.mode == Mode::Http {
                let m = "send_proxy applies to passthrough and mode = \"tcp\" backends: HTTP mode sends X-Forwarded-For".to_string();
                self.error(src, version.span(), m);
            } else {
                backend.send_proxy = self.opt_parse(src, &raw.send_proxy);
            }
        }
        if let Some(allow) = &raw.allow {
            let mut blocks = Vec::new();
            for text in allow {
                match text.get_ref().parse::<crate::model::limits::cidr::Cidr>() {
                    Ok(block) => blocks.push(block),
                    Err(m) => self.error(src, text.span(), format!("allow: {m}")),
                }
            }
            if allow.is_empty() {
                let m =
                    "allow = [] would refuse every client: leave it out to allow all".to_string();
                self.error(src, raw.name.span(), m);
            }
            backend.extras_mut().allow = Some(blocks.into());
        }
        let sources = self
            .source_limits(
                src,
                &raw.max_connections_per_source,
                &raw.connection_rate_per_source,
            )
            .map(|limits| {
                crate::model::limits::sources::Limited::backend(&backend.name, 0, limits)
            });
        if sources.is_some() {
            backend.extras_mut().sources = sources;
        }
        if let Some(rate) = &raw.http_request_rate_per_source {
            if backend.mode == Mode::Http {
                let rate = self.opt_parse::<crate::model::limits::sources::Rate>(
                    src,
                    &raw.http_request_rate_per_source,
                );
                if let Some(rate) = rate {
                    let limits = crate::model::limits::sources::Limits {
                        concurrent: None,
                        rate: Some(rate),
                        ipv6_prefix: self.ipv6_source_prefix,
                    };
                    let limited = crate::model::limits::sources::Limited::backend(
                        &backend.name,
                        REQUEST_SCOPE,
                        limits,
                    );
                    backend.extras_mut().request_rate = Some(limited);
                }
            } else {
                let m = "http_request_rate_per_source applies to HTTP-mode backends: use connection_rate_per_source".to_string();
                self.error(src, rate.span(), m);
            }
        }
        if let Some(max) = &raw.max_connections_per_server {
            match u32::try_from(*max.get_ref()) {
                Ok(n) if n > 0 => backend.max_per_server = Some(n),
                _ => {
                    let m = "max_connections_per_server must be 1..=4294967295".to_string();
                    self.error(src, max.span(), m);
                }
            }
        }
        if raw.max_queue.is_some() || raw.queue_timeout.is_some() {
            if backend.max_per_server.is_none() {
                let m =
                    "max_queue and queue_timeout apply with max_connections_per_server".to_string();
                let span = raw.max_queue.as_ref().map_or_else(
                    || raw.queue_timeout.as_ref().map_or(0..0, |t| t.span()),
                    |q| q.span(),
                );
                self.warnings.push(src.problem(span, m));
            }
            backend.max_queue = self.bounded(
                src,
                &raw.max_queue,
                crate::model::backend::DEFAULT_MAX_QUEUE as u64,
                0..=1 << 20,
            ) as usize;
        }
        if backend.max_per_server.is_some() {
            // The last load's queue; else the one its servers' carried
            // states already wake (the backend was limited before that);
            // else a new one.
            let queue = self
                .carried
                .live()
                .queues
                .get(&backend.name)
                .or_else(|| backend.servers.iter().find_map(|s| s.state.queue.get()))
                .cloned()
                .unwrap_or_default();
            for server in &backend.servers {
                // A state carried from the last load already has this queue.
                let _ = server.state.queue.set(Arc::clone(&queue));
            }
            backend.queue = Some(queue);
        }
        if let Some(check) = raw.check.as_ref().and_then(|c| self.check(src, c)) {
            backend.extras_mut().check = Some(check);
        }
        if let Some(t) = self.carried.live().traffic.get(&backend.name) {
            backend.traffic = Arc::clone(&t.0);
            backend.verify_failures = Arc::clone(&t.1);
        }
        backend
    }

    /// `mode`: `http` by default for edge and re-encrypt, `tcp` for
    /// passthrough (and the only one it may have).
    fn mode(&mut self, src: &Source<'_>, raw: &RawBackend, termination: Termination) -> Mode {
        if termination == Termination::Plain {
            if let Some(mode) = raw.mode.as_ref().filter(|m| m.get_ref() != "http") {
                let m = "termination = \"none\" serves plain HTTP: mode is http".to_string();
                self.error(src, mode.span(), m);
            }
            return Mode::Http;
        }
        let Some(mode) = &raw.mode else {
            // Terminated routes are HTTP unless they say otherwise, as in
            // the reference; passthrough is always a tunnel.
            return match termination {
                Termination::Passthrough => Mode::Tcp,
                _ => Mode::Http,
            };
        };
        match (mode.get_ref().as_str(), termination) {
            ("tcp", _) => Mode::Tcp,
            ("http", Termination::Passthrough) => {
                let m = "mode = \"http\" needs termination = \"edge\" or \"reencrypt\": passthrough bytes are never read".to_string();
                self.error(src, mode.span(), m);
                Mode::Tcp
            }
            ("http", _) => Mode::Http,
            (other, _) => {
                let m = format!("unknown mode `{other}`: expected tcp or http");
                self.error(src, mode.span(), m);
                Mode::Tcp
            }
        }
    }

    /// The sticky cookie of an HTTP-mode backend: on by default, named
    /// `cookie_name` or after a hash of the backend's name (the same on
    /// every replica).
    fn cookie(
        &mut self,
        src: &Source<'_>,
        raw: &RawBackend,
        name: &str,
        mode: Mode,
    ) -> Option<Box<str>> {
        if mode != Mode::Http {
            for span in [
                raw.cookie.as_ref().map(|c| c.span()),
                raw.cookie_name.as_ref().map(|c| c.span()),
            ]
            .into_iter()
            .flatten()
            {
                let m = format!(
                    "sticky cookies need mode = \"http\": backend `{name}` relays a tunnel"
                );
                self.error(src, span, m);
            }
            return None;
        }
        if raw.cookie.as_ref().is_some_and(|c| !*c.get_ref()) {
            return None;
        }
        match &raw.cookie_name {
            Some(n) => {
                let valid = !n.get_ref().is_empty()
                    && n.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !valid {
                    let m = format!(
                        "cookie_name `{}`: use letters, digits, `-`, `_` and `.`",
                        n.get_ref()
                    );
                    self.error(src, n.span(), m);
                    return None;
                }
                Some(n.get_ref().as_str().into())
            }
            None => Some(crate::model::backend::default_cookie_name(name).into()),
        }
    }

    fn servers(&mut self, src: &Source<'_>, raw: &RawBackend, backend: &str) -> Vec<Server> {
        let mut servers: Vec<Server> = Vec::new();
        for s in &raw.servers {
            let name = s.name.get_ref().trim().to_string();
            if servers.iter().any(|o| o.name == name) {
                self.error(
                    src,
                    s.name.span(),
                    format!("server `{name}` appears twice in backend `{backend}`"),
                );
                continue;
            }
            let addr: SocketAddr = match s.address.get_ref().parse() {
                Ok(a) => a,
                Err(_) => {
                    let m = format!("server address `{}` is not IP:port (for example 10.128.2.7:8443 or [fd00::7]:8443)", s.address.get_ref());
                    self.error(src, s.address.span(), m);
                    continue;
                }
            };
            let weight = match &s.weight {
                None => 1,
                Some(w) if (0..=MAX_WEIGHT).contains(w.get_ref()) => *w.get_ref() as u16,
                Some(w) => {
                    self.error(
                        src,
                        w.span(),
                        format!("weight {} is outside 0..=256", w.get_ref()),
                    );
                    continue;
                }
            };
            let key = (backend.to_string(), name.clone(), addr);
            let state = self
                .carried
                .live()
                .servers
                .get(&key)
                .cloned()
                .unwrap_or_default();
            servers.push(Server {
                name,
                addr,
                weight,
                state,
            });
        }
        servers
    }

    /// Reads and compiles one map; `value` turns a line's value into `V`.
    fn map<V: Reused>(
        &mut self,
        path: &Path,
        role: &'static str,
        value: impl Fn(&str, usize) -> Result<V, String>,
    ) -> Option<Arc<Map<V>>> {
        self.map_keyed((path, role), value, true)
    }

    /// A map whose lines also route requests (HTTP mode): path routes are
    /// legitimate there, so no warning that they cannot match an SNI.
    fn map_for_requests<V: Reused>(
        &mut self,
        path: &Path,
        role: &'static str,
        value: impl Fn(&str, usize) -> Result<V, String>,
    ) -> Option<Arc<Map<V>>> {
        self.map_keyed((path, role), value, false)
    }

    fn map_keyed<V: Reused>(
        &mut self,
        (path, role): (&Path, &'static str),
        value: impl Fn(&str, usize) -> Result<V, String>,
        sni_only: bool,
    ) -> Option<Arc<Map<V>>> {
        let text = self.read(path)?;
        let digest = digest_of(&text);
        let valid = |m: &Map<V>, cx: &Self| m.table.values().all(|v| v.same_in(cx));
        if let Some(map) = self.reuse((path, role), digest, valid) {
            return Some(map);
        }
        let mark = self.warnings.len();
        let entries = self.map_entries(path, &text, value);
        let (table, pattern_errors) = Table::build(entries);
        self.pattern_problems(path, pattern_errors);
        for &line in table.never_lines().iter().filter(|_| sni_only) {
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
    fn request_map<V: Reused>(
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
    fn reuse<M: std::any::Any + Send + Sync>(
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
    fn remember(&mut self, (path, role): (&Path, &'static str), digest: Digest, mark: usize) {
        let key = (path.to_path_buf(), role);
        let warnings = self.warnings[mark..].to_vec();
        self.memo.insert(key, (digest, warnings));
    }

    /// A map file's lines with their values, every bad line and value
    /// reported as `file:line`, a warning for each unanchored regex.
    fn map_entries<V>(
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

    fn pattern_problems(
        &mut self,
        path: &Path,
        errors: Vec<crate::model::route::table::PatternError>,
    ) {
        for e in errors {
            self.errors.push(Problem::at(path, e.line, e.message));
        }
    }

    fn listeners(
        &mut self,
        src: &Source<'_>,
        raws: &[RawListener],
        names: &Names,
        certs: Option<&Arc<crate::tls::CertStore>>,
    ) -> (Vec<ListenerSpec>, Vec<Option<Arc<crate::tls::ServerSide>>>) {
        let mut tls = Vec::new();
        if raws.is_empty() {
            self.errors.push(Problem {
                file: src.path.to_path_buf(),
                line: None,
                message: "no [[listener]]: nothing would be served".into(),
            });
        }
        let mut out: Vec<ListenerSpec> = Vec::new();
        for raw in raws {
            let name: Arc<str> = raw.name.get_ref().as_str().into();
            if out.iter().any(|l| l.name == name) {
                self.error(
                    src,
                    raw.name.span(),
                    format!("listener `{name}` is defined twice"),
                );
                continue;
            }
            let Ok(bind) = raw.bind.get_ref().parse::<SocketAddr>() else {
                let m = format!(
                    "bind `{}` is not IP:port (for example 0.0.0.0:443)",
                    raw.bind.get_ref()
                );
                self.error(src, raw.bind.span(), m);
                continue;
            };
            if bind.port() != 0 && out.iter().any(|l| l.bind == bind) {
                self.error(
                    src,
                    raw.bind.span(),
                    format!("{bind} is bound by another listener"),
                );
                continue;
            }
            let default_backend = raw.default_backend.as_ref().and_then(|b| {
                let id = names.get(b.get_ref()).copied();
                if id.is_none() {
                    self.error(
                        src,
                        b.span(),
                        format!("default_backend `{}` is not a defined backend", b.get_ref()),
                    );
                }
                id
            });
            let max_connections = self.bounded(src, &raw.max_connections, 50_000, 1..=10_000_000);
            let max_client_hello = self.bounded(
                src,
                &raw.max_client_hello,
                client_hello::DEFAULT_LIMIT as u64,
                16_384..=1 << 20,
            );
            let protocol = match raw.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
                None | Some((_, "tls")) => Protocol::Tls,
                Some((_, "http")) => Protocol::Http,
                Some((p, other)) => {
                    let m = format!("protocol `{other}`: expected tls or http");
                    self.error(src, p.span(), m);
                    Protocol::Tls
                }
            };
            let https_port = self.bounded(src, &raw.https_port, 443, 1..=65_535) as u16;
            tls.push(match protocol {
                Protocol::Tls => certs.and_then(|c| self.listener_tls(src, raw, c)),
                Protocol::Http => None,
            });
            let proxy_from = self.proxy_from(src, raw);
            let sources = self
                .source_limits(
                    src,
                    &raw.max_connections_per_source,
                    &raw.connection_rate_per_source,
                )
                .map(|limits| crate::model::limits::sources::Limited {
                    table: crate::model::limits::sources::table(&name),
                    scope: 0,
                    limits,
                });
            out.push(ListenerSpec {
                sources,
                proxy_from,
                protocol,
                https_port,
                name,
                bind,
                inspect_timeout: self.duration(src, &raw.inspect_timeout, Duration::from_secs(5)),
                max_connections: max_connections as usize,
                max_client_hello: max_client_hello as usize,
                default_backend,
            });
        }
        (out, tls)
    }

    /// `[limits] buffer_memory`: bytes, or a share of the memory limit (a
    /// quarter of it when unset). `None`: no limit known.
    fn buffer_memory(&mut self, src: &Source<'_>, raw: &Option<Spanned<String>>) -> Option<usize> {
        use crate::model::limits::budget::{memory_limit, Size, DEFAULT_SHARE};
        let Some(text) = raw else {
            return DEFAULT_SHARE.bytes("25%", memory_limit()).ok();
        };
        let size = text
            .get_ref()
            .parse::<Size>()
            .and_then(|size| size.bytes(text.get_ref(), memory_limit()));
        match size {
            Ok(bytes) if bytes >= MIN_BUFFER_MEMORY => Some(bytes),
            Ok(bytes) => {
                let m = format!("buffer_memory is {bytes} bytes: at least {MIN_BUFFER_MEMORY} (64KiB) are needed to serve anything");
                self.error(src, text.span(), m);
                None
            }
            Err(e) => {
                self.error(src, text.span(), format!("buffer_memory {e}"));
                None
            }
        }
    }

    /// `max_connections_per_source` and `connection_rate_per_source`, as
    /// limits of their own (`None` when neither is set).
    fn source_limits(
        &mut self,
        src: &Source<'_>,
        concurrent: &Option<Spanned<u64>>,
        rate: &Option<Spanned<String>>,
    ) -> Option<crate::model::limits::sources::Limits> {
        let concurrent = concurrent
            .as_ref()
            .and_then(|n| match u32::try_from(*n.get_ref()) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    let m = "max_connections_per_source must be 1..=4294967295".to_string();
                    self.error(src, n.span(), m);
                    None
                }
            });
        let rate = self.opt_parse::<crate::model::limits::sources::Rate>(src, rate);
        if concurrent.is_none() && rate.is_none() {
            return None;
        }
        Some(crate::model::limits::sources::Limits {
            concurrent,
            rate,
            ipv6_prefix: self.ipv6_source_prefix,
        })
    }

    /// `accept_proxy` and `proxy_from`, which go together.
    fn proxy_from(
        &mut self,
        src: &Source<'_>,
        raw: &RawListener,
    ) -> Option<Arc<[crate::model::limits::cidr::Cidr]>> {
        let accept = raw.accept_proxy.as_ref().is_some_and(|a| *a.get_ref());
        let from = raw.proxy_from.as_deref().unwrap_or_default();
        if !accept {
            if let Some(first) = from.first() {
                let m =
                    "proxy_from without accept_proxy = true: no PROXY header is read".to_string();
                self.error(src, first.span(), m);
            }
            return None;
        }
        if from.is_empty() {
            let span = raw
                .accept_proxy
                .as_ref()
                .map_or(raw.name.span(), |a| a.span());
            let m = "accept_proxy needs proxy_from: the addresses of the load balancers that send the header".to_string();
            self.error(src, span, m);
            return None;
        }
        let mut blocks = Vec::new();
        for text in from {
            match text.get_ref().parse::<crate::model::limits::cidr::Cidr>() {
                Ok(block) => blocks.push(block),
                Err(m) => self.error(src, text.span(), format!("proxy_from: {m}")),
            }
        }
        Some(blocks.into())
    }

    fn bounded(
        &mut self,
        src: &Source<'_>,
        value: &Option<Spanned<u64>>,
        fallback: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> u64 {
        match value {
            None => fallback,
            Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                let m = format!(
                    "{} is outside {}..={}",
                    v.get_ref(),
                    range.start(),
                    range.end()
                );
                self.error(src, v.span(), m);
                fallback
            }
        }
    }
}

/// What a backend inherits from `[defaults]`.
struct BackendDefaults {
    balance: Algorithm,
    http_balance: Algorithm,
    timeouts: Timeouts,
    retries: u32,
}

impl Default for BackendDefaults {
    fn default() -> Self {
        BackendDefaults {
            balance: Algorithm::Source,
            // The reference's default for HTTP backends.
            http_balance: Algorithm::Random,
            timeouts: Timeouts::default(),
            retries: 2,
        }
    }
}

/// A map value: the name of a defined backend of one of the `kinds`.
/// SHA-256 of a file's text.
type Digest = [u8; 32];

fn digest_of(text: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A map by file and by role (`tcp_be`, …: the same file may serve two).
pub(crate) type MapKey = (PathBuf, &'static str);

/// What each compiled map of a snapshot was built from, and the warnings
/// it gave.
pub(crate) type MapMemo = HashMap<MapKey, (Digest, Vec<Problem>)>;

/// A compiled map of the previous configuration.
pub(super) struct PreviousMap {
    digest: Digest,
    warnings: Vec<Problem>,
    map: Arc<dyn std::any::Any + Send + Sync>,
}

/// What a snapshot's backends were built from: the main file, the backend
/// files (in order) and the warnings they gave.
#[derive(Debug, Clone)]
pub(crate) struct BackendMemo {
    main: Digest,
    files: Vec<(PathBuf, Digest)>,
    warnings: Vec<Problem>,
}

/// A configuration's backends and their ids by name.
type BuiltBackends = (Vec<Arc<Backend>>, Names);

/// Backend names to ids: every map line's value is looked up here.
type Names = HashMap<String, BackendId, foldhash::fast::RandomState>;

/// The edge map and the request table built from it.
type EdgeRequests = (
    Arc<Map<BackendId>>,
    Arc<crate::model::route::request::RequestTable<BackendId>>,
);

/// What a map's value for a backend depends on.
type BackendKind = (String, Termination, Mode);

fn kind_of(b: &Backend) -> BackendKind {
    (b.name.clone(), b.termination, b.mode)
}

/// A map value that a reused map may keep: the same in the new
/// configuration as in the one it was built for.
trait Reused: Send + Sync + 'static {
    fn same_in(&self, cx: &Context) -> bool;
}

impl Reused for () {
    fn same_in(&self, _: &Context) -> bool {
        true
    }
}

impl Reused for bool {
    fn same_in(&self, _: &Context) -> bool {
        true
    }
}

impl Reused for BackendId {
    /// The backend at this id has the same name, termination and mode.
    fn same_in(&self, cx: &Context) -> bool {
        match (cx.carried.kinds.get(*self), cx.kinds.get(*self)) {
            (Some(before), Some(now)) => before == now,
            _ => false,
        }
    }
}

/// The smallest `buffer_memory`: a few connections' worth.
const MIN_BUFFER_MEMORY: usize = 64 * 1024;

/// Told apart from a backend's connection limits in the shared table.
const REQUEST_SCOPE: u64 = 0x5245_5155_4553_5453;

fn backend_of(
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

#[cfg(test)]
mod tests {
    use crate::model::balance::Algorithm;

    fn algorithms(defaults: &str) -> Vec<(String, Algorithm)> {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("s.toml");
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n{defaults}\n\
             [[backend]]\nname = \"tcp\"\nservers = [{{ name = \"a\", address = \"127.0.0.1:1\" }}]\n\
             [[backend]]\nname = \"web\"\ntermination = \"none\"\nservers = [{{ name = \"a\", address = \"127.0.0.1:1\" }}]\n\
             [[backend]]\nname = \"own\"\ntermination = \"none\"\nbalance = \"leastconn\"\n\
             servers = [{{ name = \"a\", address = \"127.0.0.1:1\" }}]\n"
        );
        std::fs::write(&config, text).expect("write");
        let loaded = crate::config::load(&config).expect("load");
        let backends = &loaded.snapshot.backends;
        backends
            .iter()
            .map(|b| (b.name.clone(), b.algorithm))
            .collect()
    }

    /// `[limits]` is read before the backends that use it.
    #[test]
    fn backends_group_ipv6_sources_by_the_configured_prefix() {
        let dir = tempfile::tempdir().expect("dir");
        let main = dir.path().join("s.toml");
        std::fs::write(
            &main,
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n\
             [limits]\nipv6_source_prefix = 48\n\
             [[backend]]\nname = \"b\"\nmax_connections_per_source = 3\nservers = []\n",
        )
        .expect("write");
        let snapshot = super::load(&main).expect("load").snapshot;
        let limits = &snapshot.backends[0]
            .source_limits()
            .expect("limited")
            .limits;
        assert_eq!(limits.ipv6_prefix, 48);
    }

    /// HTTP backends take `http_balance` (random by default), others
    /// `balance`; a backend's own `balance` wins over both.
    #[test]
    fn http_backends_have_their_own_default_balance() {
        let by_default = algorithms("");
        assert_eq!(
            by_default,
            [
                ("tcp".to_string(), Algorithm::Source),
                ("web".to_string(), Algorithm::Random),
                ("own".to_string(), Algorithm::LeastConn),
            ]
        );
        let set = algorithms("[defaults]\nbalance = \"roundrobin\"\nhttp_balance = \"source\"\n");
        assert_eq!(
            set,
            [
                ("tcp".to_string(), Algorithm::RoundRobin),
                ("web".to_string(), Algorithm::Source),
                ("own".to_string(), Algorithm::LeastConn),
            ]
        );
    }
}

/// A reload reuses the maps whose files did not change: whatever the
/// sequence of edits, it must answer exactly as a load from scratch.
#[cfg(test)]
mod reuse {
    use proptest::prelude::*;
    use std::path::Path;

    use crate::model::decide::Hello;

    const HOSTS: [&str; 5] = ["a.test", "b.test", "c.test", "x.w.test", "d.test"];

    /// One configuration: backends (name, edge or passthrough) and three
    /// maps' lines (host index, backend index).
    #[derive(Debug, Clone)]
    struct Config {
        backends: Vec<(String, bool)>,
        sni: Vec<usize>,
        tcp: Vec<(usize, usize)>,
        edge: Vec<(usize, usize)>,
        in_file: bool,
    }

    fn line(host: &str) -> String {
        match host.strip_prefix("x.") {
            Some(domain) => format!(
                r"^[^\.]*\.{}\.?(:[0-9]+)?(/.*)?$",
                domain.replace('.', r"\.")
            ),
            None => format!(r"^{}\.?(:[0-9]+)?(/.*)?$", host.replace('.', r"\.")),
        }
    }

    fn write(dir: &Path, c: &Config) {
        if !dir.join("cert.pem").exists() {
            let cert =
                rcgen::generate_simple_self_signed(vec!["*.test".to_string()]).expect("cert");
            let pem = format!("{}{}", cert.cert.pem(), cert.key_pair.serialize_pem());
            std::fs::write(dir.join("cert.pem"), pem).expect("pem");
        }
        let mut main = String::from(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n\
             [tls]\ndefault_certificate = \"cert.pem\"\n\
             [maps]\nsni_passthrough = \"sni.map\"\ntcp_be = \"tcp.map\"\nedge_reencrypt_be = \"edge.map\"\n",
        );
        let mut backends = String::new();
        for (name, edge) in &c.backends {
            let termination = if *edge { "edge" } else { "passthrough" };
            backends.push_str(&format!(
                "[[backend]]\nname = \"{name}\"\ntermination = \"{termination}\"\n\
                 servers = [{{ name = \"s\", address = \"127.0.0.1:9\" }}]\n"
            ));
        }
        // In the main file, or in a backend file the main file names.
        if c.in_file {
            main.insert_str(0, "backend_files = [\"backends.toml\"]\n");
            std::fs::write(dir.join("backends.toml"), backends).expect("backends");
        } else {
            main.push_str(&backends);
        }
        // Lines name backends by name (passthrough p and q, edge r and s;
        // 7: one that is not there), whatever their order in the file.
        let name = |b: usize, edge: bool| match (b, edge) {
            (7, _) => "missing".to_string(),
            (b, false) => ["p", "q"][b % 2].to_string(),
            (b, true) => ["r", "s"][b % 2].to_string(),
        };
        let sni: String = c
            .sni
            .iter()
            .map(|&h| format!("^{}$ 1\n", HOSTS[h].replace('.', r"\.")))
            .collect();
        let tcp: String = c
            .tcp
            .iter()
            .map(|&(h, b)| format!("{} {}\n", line(HOSTS[h]), name(b, false)))
            .collect();
        let edge: String = c
            .edge
            .iter()
            .map(|&(h, b)| format!("{} {}\n", line(HOSTS[h]), name(b, true)))
            .collect();
        std::fs::write(dir.join("sni.map"), sni).expect("sni");
        std::fs::write(dir.join("tcp.map"), tcp).expect("tcp");
        std::fs::write(dir.join("edge.map"), edge).expect("edge");
        std::fs::write(dir.join("s.toml"), main).expect("main");
    }

    fn config() -> impl Strategy<Value = Config> {
        // Distinct names (a name twice is an error of its own) in any
        // order, so ids move between edits; one may be left out, and one
        // may change its kind.
        let backends = (
            Just(vec!["p", "q", "r", "s"]).prop_shuffle(),
            0..5usize,
            0..6usize,
        )
            .prop_map(|(names, dropped, flipped)| {
                names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != dropped)
                    .map(|(i, n)| (n.to_string(), (*n == "r" || *n == "s") != (i == flipped)))
                    .collect::<Vec<_>>()
            });
        (
            backends,
            prop::collection::vec(0..5usize, 0..4),
            prop::collection::vec((0..5usize, 0..8usize), 0..5),
            prop::collection::vec((0..5usize, 0..8usize), 0..5),
            any::<bool>(),
        )
            .prop_map(|(backends, sni, tcp, edge, in_file)| Config {
                in_file,
                backends,
                sni,
                tcp,
                edge,
            })
    }

    /// What a loaded configuration answers for every host, or its errors.
    fn answers(loaded: &Result<super::Loaded, super::Problems>) -> Result<Vec<String>, usize> {
        match loaded {
            Err(problems) => Err(problems.errors.len()),
            Ok(loaded) => Ok(HOSTS
                .iter()
                .map(|h| match loaded.snapshot.decide(0, Hello::Sni(h)) {
                    Ok(d) => format!("{h} {} {:?}", d.backend.name, d.via),
                    Err(miss) => format!("{h} {}", miss.as_str()),
                })
                .chain(loaded.warnings.iter().map(|w| w.to_string()))
                .collect()),
        }
    }

    /// Reloads that loaded, so the property is not only ever checked on
    /// configurations both loads refuse.
    static LOADED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn most_generated_configurations_load() {
        let before = LOADED.load(std::sync::atomic::Ordering::Relaxed);
        reloads_answer_as_fresh_loads();
        let loaded = LOADED.load(std::sync::atomic::Ordering::Relaxed) - before;
        // About a quarter of the generated reloads load (47 in one run of 64 cases;
        // the others are refused by both loads, which the
        // property also checks); the bound rules out a generator whose
        // every configuration is refused. Run alone, or the property
        // test running beside it adds its own count.
        assert!(loaded >= 16, "only {loaded} reloads loaded");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn reloads_answer_as_fresh_loads(
            edits in prop::collection::vec((config(), any::<bool>()), 1..6)
        ) {
            let dir = tempfile::tempdir().expect("dir");
            let main = dir.path().join("s.toml");
            let mut previous: Option<(crate::model::snapshot::Snapshot, super::Memo)> = None;
            let mut last: Option<Config> = None;
            for (c, keep_maps) in &edits {
                // Often only the backends change: the maps' text stays.
                let mut c = c.clone();
                if let (true, Some(last)) = (keep_maps, &last) {
                    c.sni = last.sni.clone();
                    c.tcp = last.tcp.clone();
                    c.edge = last.edge.clone();
                }
                last = Some(c.clone());
                let c = &c;
                write(dir.path(), c);
                let fresh = super::load(&main);
                let reloaded = match &previous {
                    Some((snapshot, memo)) => super::reload(&main, snapshot, memo),
                    None => super::load(&main),
                };
                prop_assert_eq!(answers(&reloaded), answers(&fresh), "{:?}", c);
                if let Ok(loaded) = reloaded {
                    LOADED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    previous = Some((loaded.snapshot, loaded.memo));
                }
            }
        }
    }

    /// An unchanged map is the same compiled map after a reload; an edited
    /// one is rebuilt.
    #[test]
    fn unchanged_maps_are_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let main = dir.path().join("s.toml");
        let c = Config {
            backends: vec![("p".into(), false), ("r".into(), true)],
            sni: vec![0],
            tcp: vec![(0, 0)],
            edge: vec![(1, 0)],
            in_file: true,
        };
        write(dir.path(), &c);
        let loaded = super::load(&main).expect("load");
        let first = loaded.snapshot;
        std::fs::write(
            dir.path().join("edge.map"),
            format!("{} r\n", line("c.test")),
        )
        .expect("edit");
        let second = super::reload(&main, &first, &loaded.memo)
            .expect("reload")
            .snapshot;
        let same =
            |a: &Option<std::sync::Arc<crate::model::route::Map<usize>>>,
             b: &Option<std::sync::Arc<crate::model::route::Map<usize>>>| {
                std::sync::Arc::ptr_eq(a.as_ref().expect("a"), b.as_ref().expect("b"))
            };
        assert!(
            same(&first.routes.tcp_be, &second.routes.tcp_be),
            "tcp_be reused"
        );
        assert!(
            !same(&first.routes.edge, &second.routes.edge),
            "edge rebuilt"
        );
        assert_eq!(
            second
                .decide(0, Hello::Sni("c.test"))
                .map(|d| d.backend.name.clone())
                .ok(),
            Some("r".into())
        );
    }

    /// Only a backend with `max_connections_per_server` has a queue, and
    /// one that loses its limit and gets it back waits where its servers'
    /// freed places wake (the queue they were given first).
    #[test]
    fn a_queue_follows_the_limit_and_stays_the_servers_one() {
        let dir = tempfile::tempdir().expect("dir");
        let main = dir.path().join("s.toml");
        let write = |limit: &str| {
            let text = format!(
                "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n\
                 [[backend]]\nname = \"b\"\n{limit}\
                 servers = [{{ name = \"s\", address = \"127.0.0.1:9\" }}]\n"
            );
            std::fs::write(&main, text).expect("write");
        };
        write("max_connections_per_server = 2\n");
        let limited = super::load(&main).expect("load").snapshot;
        let queue = std::sync::Arc::clone(limited.backends[0].queue.as_ref().expect("a queue"));
        write("");
        let unlimited = super::load_after(&main, Some(&limited))
            .expect("reload")
            .snapshot;
        assert!(unlimited.backends[0].queue.is_none(), "no limit, no queue");
        write("max_connections_per_server = 3\n");
        let again = super::load_after(&main, Some(&unlimited))
            .expect("reload")
            .snapshot;
        let back = again.backends[0].queue.as_ref().expect("a queue again");
        assert!(std::sync::Arc::ptr_eq(back, &queue), "the servers' queue");
        let woken = again.backends[0].servers[0].state.queue.get().expect("set");
        assert!(std::sync::Arc::ptr_eq(woken, &queue));
    }
}
