//! The snapshot: one complete, validated configuration, immutable once
//! built. The loader (`config`) makes it; the router publishes it; each
//! connection decides against the one current at its accept
//! ([`Snapshot::decide`](crate::model::decide)) and then lets it go.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::backend::{Backend, Timeouts};
use crate::model::limits::cidr::Cidr;
use crate::model::limits::sources::Limited;
use crate::model::route::{BackendId, Routes};
use crate::tls::ServerSide;

/// One listening socket and what it does with connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerSpec {
    pub(crate) name: Arc<str>,
    pub(crate) bind: SocketAddr,
    /// Deadline for the whole ClientHello, from accept.
    pub(crate) inspect_timeout: Duration,
    /// Connections open at once; accept pauses at the limit.
    pub(crate) max_connections: usize,
    /// Bytes that may be buffered while waiting for the ClientHello.
    pub(crate) max_client_hello: usize,
    /// Where connections without SNI, without TLS or without a route go;
    /// without one they are closed.
    pub(crate) default_backend: Option<BackendId>,
    /// What clients speak first on this listener.
    pub(crate) protocol: Protocol,
    /// Port of the https URLs that plain-HTTP redirects point to.
    pub(crate) https_port: u16,
    /// `accept_proxy`: every connection starts with a PROXY header, sent
    /// only by these sources; the client it names is the client.
    pub(crate) proxy_from: Option<Arc<[Cidr]>>,
    /// Limits per client address, and the listener's table of sources
    /// (the same across reloads).
    pub(crate) sources: Option<Limited>,
    /// Clients whose JA4 fingerprint is one of these are closed right
    /// after their ClientHello (`deny_ja4`).
    pub(crate) deny_ja4: Option<Arc<[crate::model::wire::client_hello::Ja4]>>,
    /// `postgres = true`: a PostgreSQL client's `SSLRequest` is answered
    /// `S` and its ClientHello then routed like any other.
    pub(crate) postgres: bool,
}

/// What a listener expects first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// A TLS ClientHello (port 443): routed by SNI.
    Tls,
    /// Plain HTTP (port 80): each request routed by Host and path through
    /// `os_route_http_redirect.map` and `os_http_be.map`.
    Http,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tls" => Ok(Protocol::Tls),
            "http" => Ok(Protocol::Http),
            other => Err(format!("protocol `{other}`: expected tls or http")),
        }
    }
}

/// Where the stats port listens and who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// `None`: no stats port.
    pub bind: Option<SocketAddr>,
    /// Required on `/metrics`, `/stats` and `/stats.json` when set.
    pub credentials: Option<Credentials>,
}

/// A user and password for HTTP basic auth.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// A complete, validated configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) listeners: Vec<ListenerSpec>,
    /// HTTP mode's own settings: `[defaults]` timeouts for connections no
    /// backend was chosen for yet, and the 503 page.
    pub(crate) http: HttpSettings,
    /// `[limits] buffer_memory` in bytes; `None`: no limit.
    pub(crate) buffer_memory: Option<usize>,
    /// `[relay] splice`: passthrough bursts through a kernel pipe.
    pub(crate) splice: bool,
    pub(crate) routes: Routes,
    /// Shared with the connections decided to them, so that a connection
    /// holds its backend, not the snapshot.
    pub backends: Vec<Arc<Backend>>,
    /// Every file it was built from, main file first.
    pub(crate) files: Vec<PathBuf>,
    /// Whether edits to `files` are applied without a signal.
    pub(crate) watch: bool,
    /// The stats port (bound at start; changes need a restart).
    pub stats: StatsConfig,
    /// TLS termination of each listener (same index as `listeners`); `None`
    /// when no certificate is configured.
    pub(crate) tls: Vec<Option<Arc<ServerSide>>>,
    /// Grace period after which connections whose route was removed by a
    /// reload are closed; `None` lets them run to their end.
    pub(crate) close_removed_after: Option<Duration>,
    /// Set by the router when it applies the snapshot: 1 for the first,
    /// +1 per applied reload (0 for one that was never applied).
    pub(crate) generation: u64,
    /// Unique in the process, given by the loader: ties the loader's memo
    /// of what this snapshot was built from to this snapshot alone.
    pub(crate) load_id: u64,
    /// What listeners that set no `max_connections` were sized to, when
    /// the open files allow fewer than the default.
    pub(crate) sized_max_connections: Option<u64>,
}

/// What HTTP mode needs from the configuration beyond the backends.
#[derive(Debug, Default)]
pub(crate) struct HttpSettings {
    pub(crate) timeouts: Timeouts,
    /// The body of 503 responses (`[http] error_page_503`); a built-in
    /// page when `None`.
    pub(crate) error_page_503: Option<bytes::Bytes>,
}

impl Snapshot {
    pub fn backend(&self, id: BackendId) -> &Backend {
        &self.backends[id]
    }

    /// A snapshot with nothing in it, for unit tests.
    #[cfg(test)]
    pub fn empty() -> Self {
        Snapshot {
            http: HttpSettings::default(),
            buffer_memory: None,
            splice: true,
            listeners: Vec::new(),
            routes: Routes::default(),
            backends: Vec::new(),
            files: Vec::new(),
            watch: false,
            stats: StatsConfig {
                bind: None,
                credentials: None,
            },
            tls: Vec::new(),
            close_removed_after: None,
            generation: 0,
            load_id: 0,
            sized_max_connections: None,
        }
    }

    /// Said at start when listeners that set no `max_connections` were
    /// sized to the open files this process may have.
    pub fn sized_note(&self) -> Option<String> {
        let n = self.sized_max_connections?;
        Some(format!(
            "listeners that set no max_connections take {n} connections each: \
             what this process's open-file limit fits (set max_connections to choose)"
        ))
    }

    /// `routes, backends, servers` in one line, as `check` prints it.
    pub fn summary(&self) -> String {
        let servers: usize = self.backends.iter().map(|b| b.servers.len()).sum();
        format!(
            "{} listeners, {} routes, {} backends, {} servers",
            self.listeners.len(),
            self.routes.len(),
            self.backends.len(),
            servers
        )
    }
}
