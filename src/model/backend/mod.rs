//! A backend as the data path uses it: its servers with their live
//! connection counts, its termination, its timeouts and the balancer built
//! for its server list. Built by `config`, read by `connection`, which
//! takes a server through `queue` (the pick, bounded per server).

mod queue;

pub use queue::Queue;
pub(crate) use queue::Unavailable;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::model::balance::{Algorithm, Balancer, Member, View};
use crate::model::counters::Traffic;
use crate::model::health::Health;

/// How a backend carries TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Termination {
    /// Relay the client's bytes untouched.
    Passthrough,
    /// Terminate TLS, forward plaintext.
    Edge,
    /// Terminate TLS, open verified TLS to the server.
    Reencrypt,
    /// Plain HTTP from clients and to servers (`be_http`, port 80 only;
    /// `termination = "none"` in the configuration).
    Plain,
}

impl Termination {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Termination::Passthrough => "passthrough",
            Termination::Edge => "edge",
            Termination::Reencrypt => "reencrypt",
            Termination::Plain => "none",
        }
    }
}

impl std::str::FromStr for Termination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "passthrough" => Ok(Termination::Passthrough),
            "edge" => Ok(Termination::Edge),
            "reencrypt" => Ok(Termination::Reencrypt),
            "none" => Ok(Termination::Plain),
            other => Err(format!(
                "unknown termination `{other}`: expected passthrough, edge, reencrypt or none"
            )),
        }
    }
}

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum CheckKind {
    Tcp,
    Tls,
    /// `GET path`, status within `expect`.
    Http {
        path: String,
        expect: (u16, u16),
    },
}

/// A backend's active check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CheckSpec {
    pub(crate) kind: CheckKind,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// How a terminated connection is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// One tunnel per connection to one server.
    Tcp,
    /// Each request routed by Host and path (`route::request`).
    Http,
}

/// What HTTP mode does with the client's forwarded headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Forwarded {
    Append,
    Replace,
    IfNone,
    Never,
}

impl std::str::FromStr for Forwarded {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "append" => Ok(Forwarded::Append),
            "replace" => Ok(Forwarded::Replace),
            "if-none" => Ok(Forwarded::IfNone),
            "never" => Ok(Forwarded::Never),
            other => Err(format!(
                "forwarded `{other}`: expected append, replace, if-none or never"
            )),
        }
    }
}

/// Timeouts of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// One TCP connect attempt.
    pub(crate) connect: Duration,
    /// From forwarding the ClientHello to the server's first byte.
    pub(crate) server: Duration,
    /// Inactivity in both directions once the server has answered.
    pub(crate) tunnel: Duration,
    /// HTTP mode: a request head from its first byte, and each pause in a
    /// request body.
    pub(crate) http_request: Duration,
    /// HTTP mode: a client connection with no request in flight.
    pub(crate) http_keep_alive: Duration,
    /// HTTP mode: a client that takes none of its response for this long
    /// while the router waits to write it (a slow or stalled reader).
    pub(crate) client: Duration,
    /// Waiting for a place when every server is at its maximum.
    pub(crate) queue: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            server: Duration::from_secs(30),
            tunnel: Duration::from_secs(3600),
            http_request: Duration::from_secs(10),
            http_keep_alive: Duration::from_secs(300),
            client: Duration::from_secs(30),
            queue: Duration::from_secs(5),
        }
    }
}

/// Counters of one server, shared by every connection it serves.
#[derive(Debug, Default)]
pub struct ServerState {
    /// Connections open now (leastconn reads it).
    active: AtomicUsize,
    /// Connections ever sent to it.
    total: AtomicU64,
    /// Times it was passed over at `max_connections_per_server`.
    pub full: AtomicU64,
    /// Its backend's queue, woken when a place frees here (set once: a
    /// server's state and its backend's queue are carried by the same
    /// backend name).
    pub(crate) queue: std::sync::OnceLock<Arc<Queue>>,
    /// Bytes and errors of the connections it served.
    pub(crate) traffic: Traffic,
    /// Up or down, from active checks and passive failures.
    pub(crate) health: Health,
    /// What the runtime keeps per server beyond these counters (see
    /// [`ServerState::attached`]); allocated on first use, so servers of
    /// passthrough backends carry only the empty slot.
    attached: Attached,
}

/// A slot for one value the runtime attaches to a server, of a type the
/// model does not name (as `http::Extensions` holds what layers above
/// put in a request).
#[derive(Default)]
struct Attached(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Attached(set)"
        } else {
            "Attached(none)"
        })
    }
}

/// The sticky cookie's name when none is configured: a hash of the
/// backend's name, the same on every replica.
pub(crate) fn default_cookie_name(backend: &str) -> String {
    format!(
        "{:016x}",
        crate::model::balance::hash::hash_bytes(backend.as_bytes())
    )
}

impl ServerState {
    /// What the runtime keeps for this server, of type `T` (the HTTP
    /// stage's idle connections): made on first use, carried across
    /// reloads with the server and dropped with it. `None` only if another
    /// type was attached first.
    pub(crate) fn attached<T: std::any::Any + Send + Sync + Default>(&self) -> Option<&T> {
        self.attached
            .0
            .get_or_init(|| Box::new(T::default()))
            .downcast_ref()
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Holds one active connection on a server; releases it when dropped
/// (and wakes a connection queued for a place on its backend).
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<ServerState>);

impl ActiveGuard {
    pub(crate) fn new(state: &Arc<ServerState>) -> Self {
        state.active.fetch_add(1, Ordering::Relaxed);
        state.total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(state))
    }

    /// A place on a server that takes at most `max` at once, if it has
    /// room (never more than `max`, however many take at the same time).
    fn within(state: &Arc<ServerState>, max: usize) -> Option<Self> {
        state
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        state.total.fetch_add(1, Ordering::Relaxed);
        Some(ActiveGuard(Arc::clone(state)))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        // SeqCst: ordered before the queue's look at its waiters.
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        if let Some(queue) = self.0.queue.get() {
            queue.place_freed();
        }
    }
}

#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    /// 0..=256; 0 takes no new connections.
    pub(crate) weight: u16,
    pub state: Arc<ServerState>,
}

/// Connections a backend lets wait for a place, unless configured.
pub(crate) const DEFAULT_MAX_QUEUE: usize = 1024;

#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub(crate) termination: Termination,
    /// Edge and re-encrypt: a tunnel or HTTP routed per request.
    pub(crate) mode: Mode,
    /// HTTP mode: the sticky cookie's name, `None` when turned off.
    pub(crate) cookie: Option<Box<str>>,
    /// HTTP mode: forwarded-header policy.
    pub(crate) forwarded: Forwarded,
    /// Passthrough and TCP mode: a PROXY header naming the client is sent
    /// to the server first (and a `LOCAL` one before each health check).
    pub(crate) send_proxy: Option<crate::model::wire::proxy_header::Version>,
    pub(crate) algorithm: Algorithm,
    pub servers: Vec<Server>,
    /// Connections (HTTP mode: requests) one server takes at once.
    pub(crate) max_per_server: Option<u32>,
    /// Connections waiting for a place at most (`max_queue`).
    pub(crate) max_queue: usize,
    /// Where they wait, for a backend with `max_per_server` (no other
    /// ever waits); carried across reloads.
    pub queue: Option<Arc<Queue>>,
    pub(crate) timeouts: Timeouts,
    /// Further servers tried after a failed connect.
    pub(crate) retries: u32,
    /// Round-robin position, carried across reloads with the backend.
    pub(crate) rotation: Arc<AtomicUsize>,
    /// Failed verifications of servers' certificates (re-encrypt).
    pub(crate) verify_failures: Arc<AtomicU64>,
    /// What few backends set (an allow list, limits, HSTS, re-encrypt,
    /// a health check), boxed: absent, it costs one pointer, not the
    /// 290 bytes a configuration of 10,000 plain backends would repeat.
    extras: Option<Box<Extras>>,
    /// Connections, bytes and errors of the backend (its route), carried
    /// across reloads.
    pub traffic: Arc<Traffic>,
    balancer: Balancer,
    /// Sticky-cookie value of each server, computed on first use (only
    /// HTTP-mode backends ever need them).
    cookie_values: std::sync::OnceLock<Vec<Box<str>>>,
}

/// A backend's settings that most backends leave unset.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// HTTP mode on TLS: `Strict-Transport-Security` set on responses.
    pub(crate) hsts: Option<hyper::header::HeaderValue>,
    /// Client addresses allowed (OpenShift `ip_whitelist`); `None`: all.
    pub(crate) allow: Option<Arc<[crate::model::limits::cidr::Cidr]>>,
    /// Connections per client address (those whose route chose this
    /// backend): at once and per period.
    pub(crate) sources: Option<crate::model::limits::sources::Limited>,
    /// HTTP mode: requests per client address per period.
    pub(crate) request_rate: Option<crate::model::limits::sources::Limited>,
    /// Re-encrypt only: how TLS to the servers is opened and verified.
    pub(crate) upstream: Option<crate::tls::upstream::Upstream>,
    /// Active health check, if asked for.
    pub(crate) check: Option<CheckSpec>,
    /// Clients whose JA4 fingerprint is one of these are refused
    /// (`deny_ja4`).
    pub(crate) deny_ja4: Option<Arc<[crate::model::wire::client_hello::Ja4]>>,
}

impl Backend {
    /// The settings most backends leave unset, to set one (allocated on
    /// first use).
    pub(crate) fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    fn extras(&self) -> Option<&Extras> {
        self.extras.as_deref()
    }

    /// HTTP mode on TLS: the `Strict-Transport-Security` value.
    pub(crate) fn hsts(&self) -> Option<&hyper::header::HeaderValue> {
        self.extras()?.hsts.as_ref()
    }

    /// Per-source connection limits, if any.
    pub(crate) fn source_limits(&self) -> Option<&crate::model::limits::sources::Limited> {
        self.extras()?.sources.as_ref()
    }

    /// Re-encrypt: how TLS to the servers is opened and verified.
    pub(crate) fn upstream(&self) -> Option<&crate::tls::upstream::Upstream> {
        self.extras()?.upstream.as_ref()
    }

    /// The active health check, if asked for.
    pub(crate) fn check(&self) -> Option<&CheckSpec> {
        self.extras()?.check.as_ref()
    }

    pub(crate) fn new(
        name: String,
        termination: Termination,
        algorithm: Algorithm,
        servers: Vec<Server>,
        timeouts: Timeouts,
        retries: u32,
        rotation: Arc<AtomicUsize>,
    ) -> Self {
        let identities: Vec<String> = servers
            .iter()
            .map(|s| format!("{} {}", s.name, s.addr))
            .collect();
        let members: Vec<Member<'_>> = servers
            .iter()
            .zip(&identities)
            .map(|(s, id)| Member {
                identity: id,
                weight: s.weight,
            })
            .collect();
        let balancer = Balancer::new(algorithm, &members, Arc::clone(&rotation));
        Backend {
            name,
            termination,
            mode: Mode::Tcp,
            cookie: None,
            forwarded: Forwarded::Append,
            send_proxy: None,
            extras: None,
            algorithm,
            servers,
            max_per_server: None,
            max_queue: DEFAULT_MAX_QUEUE,
            queue: None,
            timeouts,
            retries,
            rotation,
            verify_failures: Arc::default(),
            traffic: Arc::default(),
            balancer,
            cookie_values: std::sync::OnceLock::new(),
        }
    }

    /// Whether `client` may use this backend (its `allow` list); a refusal
    /// is counted.
    pub(crate) fn admits(&self, client: std::net::IpAddr) -> bool {
        let Some(allow) = self.extras().and_then(|e| e.allow.as_ref()) else {
            return true;
        };
        let admitted = allow.iter().any(|block| block.contains(client));
        if !admitted {
            self.traffic
                .denied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        admitted
    }

    /// Whether a client of fingerprint `ja4` is refused (`deny_ja4`); a
    /// refusal is counted.
    pub(crate) fn denies(&self, ja4: &crate::model::wire::client_hello::Ja4) -> bool {
        let Some(deny) = self.extras().and_then(|e| e.deny_ja4.as_ref()) else {
            return false;
        };
        let denied = deny.contains(ja4);
        if denied {
            self.traffic
                .denied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        denied
    }

    /// Admits a connection from `client` under the backend's per-source
    /// limits (a place held until the guard drops), or says why not; a
    /// refusal is counted.
    pub(crate) fn admit_source(
        &self,
        client: IpAddr,
    ) -> Result<
        Option<crate::model::limits::sources::Admitted>,
        crate::model::limits::sources::Refusal,
    > {
        let Some(limited) = self.source_limits() else {
            return Ok(None);
        };
        limited.admit(client).map(Some).inspect_err(|_| {
            self.traffic.limited.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// HTTP mode: whether one more request from `client` is within
    /// `http_request_rate_per_source`; a refusal is counted.
    pub(crate) fn admit_request(
        &self,
        client: IpAddr,
    ) -> Result<(), crate::model::limits::sources::Refusal> {
        let Some(limited) = self.extras().and_then(|e| e.request_rate.as_ref()) else {
            return Ok(());
        };
        limited.admit(client).map(drop).inspect_err(|_| {
            self.traffic.limited.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// The sticky-cookie value of server `i`: a hash of the backend's and
    /// the server's names and the server's address, so every replica with
    /// the same configuration gives the same value, with no shared state.
    pub(crate) fn cookie_value(&self, i: usize) -> Option<&str> {
        self.cookie_values().get(i).map(|v| &**v)
    }

    /// The server a sticky-cookie value names, if it is up (weight 0
    /// included: it keeps its sessions, it only takes no new ones).
    pub(crate) fn server_for_cookie(&self, value: &str) -> Option<usize> {
        let values = self.cookie_values();
        (0..self.servers.len()).find(|&i| {
            self.servers[i].state.health.is_up() && values.get(i).is_some_and(|v| **v == *value)
        })
    }

    /// Computed once per backend, not per request.
    fn cookie_values(&self) -> &[Box<str>] {
        self.cookie_values.get_or_init(|| {
            self.servers
                .iter()
                .map(|s| {
                    let identity = format!("{} {} {}", self.name, s.name, s.addr);
                    let hash = crate::model::balance::hash::hash_bytes(identity.as_bytes());
                    format!("{hash:016x}").into()
                })
                .collect()
        })
    }

    /// The server for a new connection from `client`, skipping `tried`
    /// and servers that are down.
    pub(crate) fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<usize> {
        self.balancer.pick(
            client,
            &Candidates {
                backend: self,
                tried,
            },
        )
    }
}

/// The balancer's view of a backend during one connection's pick.
struct Candidates<'a> {
    backend: &'a Backend,
    /// Servers this connection already failed to reach.
    tried: &'a [usize],
}

impl View for Candidates<'_> {
    fn eligible(&self, i: usize) -> bool {
        let Some(server) = self.backend.servers.get(i) else {
            return false;
        };
        if !server.state.health.is_up() || self.tried.contains(&i) {
            return false;
        }
        match self.backend.max_per_server {
            Some(max) if server.state.active() >= max as usize => {
                server.state.full.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }

    fn active(&self, i: usize) -> usize {
        self.backend.servers.get(i).map_or(0, |s| s.state.active())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas of different versions must agree on cookies during a
    /// rolling upgrade: names and values are pinned.
    #[test]
    fn golden_cookie_names_and_values() {
        let servers = (0..2)
            .map(|i| Server {
                name: format!("pod:web-{i}:web:https:10.128.0.{i}:8443"),
                addr: SocketAddr::from(([10, 128, 0, i], 8443)),
                weight: 256,
                state: Arc::default(),
            })
            .collect();
        let backend = Backend::new(
            "be_edge_http:shop:web".into(),
            Termination::Edge,
            Algorithm::Random,
            servers,
            Timeouts::default(),
            2,
            Arc::default(),
        );
        assert_eq!(default_cookie_name(&backend.name), "14592ce5c0da0a63");
        assert_eq!(backend.cookie_value(0), Some("9a2c4f19d62a7e50"));
        assert_eq!(backend.cookie_value(1), Some("d93e77109915b790"));
        assert_eq!(backend.server_for_cookie("d93e77109915b790"), Some(1));
        assert_eq!(backend.server_for_cookie("0000000000000000"), None);
    }
}
