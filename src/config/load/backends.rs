//! `[[backend]]` tables (in the main file and in `backend_files`): servers,
//! termination, mode, balance, timeouts, HTTP settings, limits and queues,
//! each value checked with its file and line.

use std::net::SocketAddr;
use std::sync::Arc;

use toml::Spanned;

use crate::config::problem::Source;
use crate::config::raw::{RawBackend, RawBackendFile, RawDefaults};
use crate::model::backend::DEFAULT_MAX_QUEUE;
use crate::model::backend::{Backend, Mode, Server, Termination, Timeouts};
use crate::model::balance::Algorithm;
use crate::model::limits::cidr::Cidr;
use crate::model::limits::sources::{Limited, Limits, Rate};

use super::carried::{BackendMemo, BuiltBackends, Names};
use super::{digest_of, Context, Digest};

pub(super) const MAX_WEIGHT: i64 = 256;

impl Context {
    /// Every backend, from the main file and then each `backend_files`
    /// file in order, with the memo that lets the next load reuse them.
    pub(super) fn all_backends(
        &mut self,
        src: &Source<'_>,
        digest: Digest,
        main: Vec<RawBackend>,
        files: &[Spanned<String>],
        defaults: &BackendDefaults,
    ) -> BuiltBackends {
        let (files_mark, warnings_mark) = (self.files.len(), self.warnings.len());
        let mut backends = Vec::new();
        let mut names = Names::default();
        let mut file_digests = Vec::new();
        self.backends(src, main, defaults, &mut backends, &mut names);
        for file in files {
            let file_path = self.base.join(file.get_ref());
            let Some(text) = self.read(&file_path) else {
                continue;
            };
            file_digests.push((file_path.clone(), digest_of(&text)));
            let file_src = Source {
                path: &file_path,
                text: &text,
            };
            if let Some(raw) = self.parse_toml::<RawBackendFile>(&file_src) {
                self.backends(&file_src, raw.backends, defaults, &mut backends, &mut names);
            }
        }
        // Reusable next time only if the backends were built from these
        // files alone (a CA file they read may change on its own).
        let read = &self.files[files_mark..];
        let alone = read.iter().eq(file_digests.iter().map(|(p, _)| p));
        self.backends_memo = alone.then(|| BackendMemo {
            main: digest,
            files: file_digests,
            warnings: self.warnings[warnings_mark..].to_vec(),
        });
        let backends: Vec<Arc<Backend>> = backends.into_iter().map(Arc::new).collect();
        (backends, names)
    }

    pub(super) fn defaults(&mut self, src: &Source<'_>, raw: &RawDefaults) -> BackendDefaults {
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
                client: self.duration(src, &raw.client_timeout, fallback.timeouts.client),
                queue: self.duration(src, &raw.queue_timeout, fallback.timeouts.queue),
            },
            retries: self.retries(src, &raw.retries, fallback.retries),
        }
    }

    pub(super) fn backends(
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

    /// One `[[backend]]` table: what every backend has, then its HTTP
    /// settings, its limits and queue, and the live state it takes over.
    pub(super) fn backend(
        &mut self,
        src: &Source<'_>,
        raw: RawBackend,
        name: String,
        defaults: &BackendDefaults,
    ) -> Backend {
        let termination = self
            .opt_parse(src, &raw.termination)
            .unwrap_or(Termination::Passthrough);
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
            client: self.duration(src, &raw.client_timeout, d.client),
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
        self.http_settings(src, &raw, &mut backend);
        self.backend_limits(src, &raw, &mut backend);
        self.queue(src, &raw, &mut backend);
        if let Some(check) = raw.check.as_ref().and_then(|c| self.check(src, c)) {
            backend.extras_mut().check = Some(check);
        }
        if let Some(t) = self.carried.live().traffic.get(&backend.name) {
            backend.traffic = Arc::clone(&t.0);
            backend.verify_failures = Arc::clone(&t.1);
        }
        backend
    }

    /// HTTP mode's settings: the sticky cookie, the forwarded-headers
    /// policy and HSTS.
    fn http_settings(&mut self, src: &Source<'_>, raw: &RawBackend, backend: &mut Backend) {
        backend.cookie = self.cookie(src, raw, &backend.name, backend.mode);
        if let Some(forwarded) = self.opt_parse(src, &raw.forwarded) {
            backend.forwarded = forwarded;
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
    }

    /// Who may connect and how much: `send_proxy`, the allow list, the
    /// per-source connection limits and the HTTP request rate.
    fn backend_limits(&mut self, src: &Source<'_>, raw: &RawBackend, backend: &mut Backend) {
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
                match text.get_ref().parse::<Cidr>() {
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
        if let Some(deny) = self.fingerprints(src, &raw.deny_ja4) {
            backend.extras_mut().deny_ja4 = Some(deny);
        }
        let sources = self
            .source_limits(
                src,
                &raw.max_connections_per_source,
                &raw.connection_rate_per_source,
            )
            .map(|limits| Limited::backend(&backend.name, 0, limits));
        if sources.is_some() {
            backend.extras_mut().sources = sources;
        }
        let Some(rate) = &raw.http_request_rate_per_source else {
            return;
        };
        if backend.mode != Mode::Http {
            let m = "http_request_rate_per_source applies to HTTP-mode backends: use connection_rate_per_source".to_string();
            self.error(src, rate.span(), m);
            return;
        }
        if let Some(rate) = self.opt_parse::<Rate>(src, &raw.http_request_rate_per_source) {
            let limits = Limits {
                concurrent: None,
                rate: Some(rate),
                ipv6_prefix: self.ipv6_source_prefix,
            };
            let limited = Limited::backend(&backend.name, REQUEST_SCOPE, limits);
            backend.extras_mut().request_rate = Some(limited);
        }
    }

    /// `max_connections_per_server` and the wait queue it brings, carried
    /// across reloads by backend name (and woken by its servers' states).
    fn queue(&mut self, src: &Source<'_>, raw: &RawBackend, backend: &mut Backend) {
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
            backend.max_queue =
                self.bounded(src, &raw.max_queue, DEFAULT_MAX_QUEUE as u64, 0..=1 << 20) as usize;
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
    }

    /// `mode`: `http` by default for edge and re-encrypt, `tcp` for
    /// passthrough (and the only one it may have).
    pub(super) fn mode(
        &mut self,
        src: &Source<'_>,
        raw: &RawBackend,
        termination: Termination,
    ) -> Mode {
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
    pub(super) fn cookie(
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

    pub(super) fn servers(
        &mut self,
        src: &Source<'_>,
        raw: &RawBackend,
        backend: &str,
    ) -> Vec<Server> {
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
}

/// What a backend inherits from `[defaults]`.
pub(super) struct BackendDefaults {
    pub(super) balance: Algorithm,
    pub(super) http_balance: Algorithm,
    pub(super) timeouts: Timeouts,
    pub(super) retries: u32,
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

/// Told apart from a backend's connection limits in the shared table.
pub(super) const REQUEST_SCOPE: u64 = 0x5245_5155_4553_5453;
