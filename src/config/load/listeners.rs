//! `[[listener]]` tables: addresses, limits, PROXY sources, per-source
//! limits and TLS termination, plus the buffer budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::config::problem::{Problem, Source};
use crate::config::raw::RawLimits;
use crate::config::raw::RawListener;
use crate::model::snapshot::{ListenerSpec, Protocol};
use crate::model::wire::client_hello;

use super::carried::Names;
use super::Context;

impl Context {
    /// `[limits] ipv6_source_prefix`: IPv6 clients are limited by this
    /// prefix (64 by default).
    pub(super) fn ipv6_source_prefix(&mut self, src: &Source<'_>, limits: &RawLimits) -> u8 {
        let Some(p) = &limits.ipv6_source_prefix else {
            return 64;
        };
        match u8::try_from(*p.get_ref()) {
            Ok(p) if p <= 128 => p,
            _ => {
                let m = "ipv6_source_prefix must be 0..=128".to_string();
                self.error(src, p.span(), m);
                64
            }
        }
    }

    pub(super) fn listeners(
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
            let Some(spec) = self.listener(src, raw, names, (&out, raws.len())) else {
                continue;
            };
            tls.push(match spec.protocol {
                Protocol::Tls => certs.and_then(|c| self.listener_tls(src, raw, c)),
                Protocol::Http => None,
            });
            out.push(spec);
        }
        (out, tls)
    }

    /// One `[[listener]]`, unless its name or address is taken by one of
    /// `before` or unreadable (then it is left out, with its error).
    fn listener(
        &mut self,
        src: &Source<'_>,
        raw: &RawListener,
        names: &Names,
        (before, listeners): (&[ListenerSpec], usize),
    ) -> Option<ListenerSpec> {
        let name: Arc<str> = raw.name.get_ref().as_str().into();
        if before.iter().any(|l| l.name == name) {
            let m = format!("listener `{name}` is defined twice");
            self.error(src, raw.name.span(), m);
            return None;
        }
        let Ok(bind) = raw.bind.get_ref().parse::<SocketAddr>() else {
            let m = format!(
                "bind `{}` is not IP:port (for example 0.0.0.0:443)",
                raw.bind.get_ref()
            );
            self.error(src, raw.bind.span(), m);
            return None;
        };
        if bind.port() != 0 && before.iter().any(|l| l.bind == bind) {
            let m = format!("{bind} is bound by another listener");
            self.error(src, raw.bind.span(), m);
            return None;
        }
        let default_backend = raw.default_backend.as_ref().and_then(|b| {
            let id = names.get(b.get_ref()).copied();
            if id.is_none() {
                let m = format!("default_backend `{}` is not a defined backend", b.get_ref());
                self.error(src, b.span(), m);
            }
            id
        });
        let sized = sized_max_connections(listeners);
        if raw.max_connections.is_none() && sized < MAX_CONNECTIONS {
            self.sized_max_connections = Some(sized);
        }
        let max_connections = self.bounded(src, &raw.max_connections, sized, 1..=10_000_000);
        let max_client_hello = self.bounded(
            src,
            &raw.max_client_hello,
            client_hello::DEFAULT_LIMIT as u64,
            16_384..=1 << 20,
        );
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
        let deny_ja4 = self.fingerprints(src, &raw.deny_ja4);
        if deny_ja4.is_some() && raw.protocol.as_ref().is_some_and(|p| p.get_ref() == "http") {
            let m =
                "deny_ja4 on a plain-HTTP listener never matches: its clients send no ClientHello"
                    .to_string();
            self.warnings.push(src.problem(raw.name.span(), m));
        }
        let postgres = raw.postgres.as_ref().filter(|p| *p.get_ref());
        if let (Some(p), true) = (
            postgres,
            raw.protocol.as_ref().is_some_and(|p| p.get_ref() == "http"),
        ) {
            let m = "postgres = true needs a TLS listener: PostgreSQL clients are routed by the SNI of the ClientHello that follows their SSLRequest";
            self.error(src, p.span(), m.to_string());
        }
        let postgres = postgres.is_some();
        Some(ListenerSpec {
            postgres,
            deny_ja4,
            sources,
            proxy_from: self.proxy_from(src, raw),
            protocol: self.opt_parse(src, &raw.protocol).unwrap_or(Protocol::Tls),
            https_port: self.bounded(src, &raw.https_port, 443, 1..=65_535) as u16,
            name,
            bind,
            inspect_timeout: self.duration(src, &raw.inspect_timeout, Duration::from_secs(5)),
            max_connections: max_connections as usize,
            max_client_hello: max_client_hello as usize,
            default_backend,
        })
    }

    /// `[limits] buffer_memory`: bytes, or a share of the memory limit (a
    /// quarter of it when unset). `None`: no limit known.
    pub(super) fn buffer_memory(
        &mut self,
        src: &Source<'_>,
        raw: &Option<Spanned<String>>,
    ) -> Option<usize> {
        use crate::model::limits::budget::{Size, DEFAULT_SHARE};
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
    pub(super) fn source_limits(
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
    pub(super) fn proxy_from(
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
}

/// The smallest `buffer_memory`: a few connections' worth.
pub(super) const MIN_BUFFER_MEMORY: usize = 64 * 1024;

/// The memory this process may use: its cgroup's limit (v2, then v1),
/// else the machine's memory.
fn memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|t| t.trim().parse::<u64>().ok())
        // v1 says "no limit" with a huge number.
        .filter(|&b| b < 1 << 60);
    cgroup.or_else(|| {
        let meminfo = read("/proc/meminfo")?;
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// `max_connections` of a listener that sets none, where the open files
/// allow it.
const MAX_CONNECTIONS: u64 = 50_000;

/// The open files this process may have, set once at start (0: not
/// known): listeners that set no `max_connections` are sized to fit it.
static OPEN_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sizes the listeners that set no `max_connections` to `limit` open
/// files (`None`: unlimited), for every load from now on.
pub fn size_to_open_files(limit: Option<u64>) {
    OPEN_FILES.store(limit.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// `max_connections` for each of `listeners` listeners that set none:
/// 50,000, or what two descriptors a connection leave of the open-files
/// limit when that is less (a quarter kept for the relays' pipes, 64 for
/// listening sockets, health checks, the stats port and logs).
fn sized_max_connections(listeners: usize) -> u64 {
    let limit = OPEN_FILES.load(std::sync::atomic::Ordering::Relaxed);
    if limit == 0 {
        return MAX_CONNECTIONS;
    }
    let budget = (limit / 4 * 3).saturating_sub(64);
    (budget / 2 / listeners.max(1) as u64).clamp(1, MAX_CONNECTIONS)
}
