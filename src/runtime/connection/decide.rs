//! Stage 3, the decision: the snapshot current at accept says where the
//! connection goes (`Snapshot::decide`, the same code `switchyard route`
//! runs), and what the rest of the connection needs from the
//! configuration is taken out of it. The snapshot is let go here: a
//! long-lived connection keeps its route, not its configuration's route
//! tables, and a reload never changes a connection midway.

use std::sync::Arc;
use std::time::Duration;

use super::follow::{route_removed, Followed};
use crate::model::backend::{Backend, Mode, Termination, Timeouts};
use crate::model::counters::global;
use crate::model::decide::{Miss, OwnedHello, Via};
use crate::model::snapshot::Snapshot;
use crate::runtime::access_log::AccessLog;
use crate::runtime::relay;
use crate::runtime::shared::Shared;
use crate::tls::ServerSide;

/// Where a connection goes.
pub(super) enum Decided {
    /// To a backend, through its termination.
    Routed(Routed),
    /// Nowhere, on a listener that terminates TLS: served in HTTP mode
    /// with the default certificate, so a browser gets a 503 page (or a
    /// route per request) rather than a reset.
    Unrouted(Unrouted),
    /// Nowhere (logged).
    Closed,
}

/// A decided connection: what it needs from the configuration.
pub(super) struct Routed {
    pub(super) backend: Arc<Backend>,
    /// The listener's TLS settings, unless the backend is passthrough.
    pub(super) tls: Option<Arc<ServerSide>>,
    pub(super) handshake_timeout: Duration,
    /// The listener's default backend, if it serves HTTP.
    pub(super) fallback: Option<Arc<Backend>>,
    /// `[relay]`: how a passthrough relay copies.
    pub(super) copying: relay::Copying,
    /// Resolves when a reload removed the route (`close_removed_after`).
    pub(super) removed: Option<relay::Stop>,
    /// HTTP mode: each request is routed on its own against the current
    /// snapshot; the connection's backend only chose the mode.
    pub(super) requests: Option<Arc<Shared>>,
}

/// An unrouted connection served in HTTP mode.
pub(super) struct Unrouted {
    pub(super) tls: Arc<ServerSide>,
    pub(super) handshake_timeout: Duration,
    pub(super) fallback: Option<Arc<Backend>>,
    pub(super) timeouts: Timeouts,
}

/// Decides the connection from what its log says the client sent, then
/// lets the snapshot go.
pub(super) fn decide(
    snapshot: Arc<Snapshot>,
    listener: usize,
    shared: &Arc<Shared>,
    log: &mut AccessLog,
) -> Decided {
    let decision = match snapshot.decide(listener, log.said(), log.alpn()) {
        Ok(decision) => decision,
        Err(miss) => return unrouted(&snapshot, listener, miss, log),
    };
    if let (Some(name), Via::Default(Miss::NoRoute)) = (log.sni(), &decision.via) {
        global().unmatched(name);
    }
    log.decided(&decision);
    let spec = &snapshot.listeners[listener];
    let http_mode = decision.backend.mode == Mode::Http;
    let follow = snapshot.close_removed_after.filter(|_| !http_mode);
    let removed = follow.map(|grace| {
        let followed = Followed {
            listener: Arc::clone(&spec.name),
            hello: OwnedHello::from(log.said()),
            alpn: log.alpn().to_vec(),
            backend: decision.backend.name.clone(),
            generation: decision.generation,
        };
        Box::pin(route_removed(Arc::clone(shared), followed, grace)) as relay::Stop
    });
    let backend = decision.backend;
    let tls = match backend.termination {
        Termination::Passthrough => None,
        _ => listener_tls(&snapshot, listener),
    };
    Decided::Routed(Routed {
        tls,
        handshake_timeout: spec.inspect_timeout,
        fallback: http_fallback(&snapshot, listener),
        copying: relay::Copying {
            splice: snapshot.splice,
        },
        removed,
        requests: http_mode.then(|| Arc::clone(shared)),
        backend,
    })
}

/// No line and no default backend took the connection.
fn unrouted(snapshot: &Snapshot, listener: usize, miss: Miss, log: &mut AccessLog) -> Decided {
    if let Some(name) = log.sni() {
        global().unmatched(name);
        let why = format!("no route: {}", miss.as_str());
        log.end("switchyard", &why);
    }
    match (listener_tls(snapshot, listener), miss) {
        (Some(tls), Miss::NoRoute | Miss::NoSni) => Decided::Unrouted(Unrouted {
            tls,
            handshake_timeout: snapshot.listeners[listener].inspect_timeout,
            fallback: http_fallback(snapshot, listener),
            timeouts: snapshot.http.timeouts,
        }),
        _ => Decided::Closed,
    }
}

/// The listener's TLS termination, if it has a certificate.
fn listener_tls(snapshot: &Snapshot, listener: usize) -> Option<Arc<ServerSide>> {
    snapshot.tls.get(listener).cloned().flatten()
}

/// The listener's default backend when it serves HTTP: where requests that
/// no map line routes go (else they get 503).
fn http_fallback(snapshot: &Snapshot, listener: usize) -> Option<Arc<Backend>> {
    let id = snapshot.listeners.get(listener)?.default_backend?;
    let backend = snapshot.backends.get(id)?;
    (backend.mode == Mode::Http).then(|| Arc::clone(backend))
}
