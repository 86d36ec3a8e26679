//! The life of one accepted connection, a stage a file, in the order
//! [`decide_and_open`] runs them:
//!
//! 1. `preread`: the PROXY header (`accept_proxy`): who the client is;
//! 2. `admit`: the listener's per-source limits; then `postgres` answers a
//!    PostgreSQL client's `SSLRequest` (`postgres = true` listeners), and
//!    (1.) `preread` reads the ClientHello without consuming it (port-80
//!    listeners go straight to `http` instead);
//! 3. `decide`: the routing decision against the snapshot current at
//!    accept, which is let go right after (`follow` watches for a reload
//!    that removes the route, when asked); then (2.) `admit` the backend's
//!    allow list and per-source limits;
//! 4. `connect` and 5. the backend's termination: `passthrough` (connect,
//!    replay the hello, then the relay runs in place, see [`Connection`]),
//!    `terminate` (edge or re-encrypt in TCP mode: a tunnel) or `http`
//!    (HTTP mode, each request routed and dialed on its own);
//!
//! and one access-log line at the end, however it ends.

mod admit;
mod connect;
mod decide;
mod follow;
mod http;
mod passthrough;
mod postgres;
mod preread;
mod terminate;

pub(crate) use http::{forwardable, take_cookie};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::net::TcpStream;

use self::admit::Places;
use self::decide::{Decided, Routed};
use self::preread::Preread;
use crate::model::backend::{ActiveGuard, Backend, Termination};
use crate::model::counters::Traffic;
use crate::model::snapshot::{Protocol, Snapshot};
use crate::runtime::access_log::AccessLog;
use crate::runtime::relay;
use crate::runtime::shared::Shared;

/// What the listener hands over for each accepted connection.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    /// The configuration current at accept: the decision is made from it,
    /// then it is dropped.
    pub(crate) snapshot: Arc<Snapshot>,
    /// Index of the accepting listener in `snapshot.listeners`.
    pub(crate) listener: usize,
    /// To follow reloads when removed routes must be closed.
    pub(crate) shared: Arc<Shared>,
    pub(crate) counted: Counted,
}

/// A connection's task, from accept to its end: never panics on peer
/// input, and every way it ends is logged once.
///
/// A first stage, then at most one more. Everything before a passthrough
/// relay or HTTP mode (the
/// preread, the decision, the connect and the replay), and the whole of a
/// connection terminated in TCP mode, runs in one boxed future that is
/// freed when it returns. A passthrough connection then relays in place,
/// so the task of a long-lived connection is sized for the relay alone
/// (its streams, one timer, its log record and its places), not for the
/// largest step before it; an HTTP connection is served by a boxed future
/// of its own.
pub(crate) fn handle(conn: Accepted) -> Connection {
    let Accepted {
        stream,
        peer,
        snapshot,
        listener,
        shared,
        counted,
    } = conn;
    let log = AccessLog::new(peer, Arc::clone(&snapshot.listeners[listener].name));
    let frontend = Arc::clone(counted.open.frontend());
    let opening = open(stream, peer, snapshot, listener, shared, frontend, log);
    Connection {
        stage: Stage::Opening {
            opening: Box::pin(opening),
        },
        counted,
    }
}

/// What the listener counts a connection by until it ends: its slot
/// under `max_connections` and its place in the open-connection gauges.
pub(crate) struct Counted {
    /// Held, not read: dropping it frees the slot.
    #[allow(dead_code)]
    pub(crate) slot: crate::model::limits::slots::Slot,
    pub(crate) open: crate::runtime::shared::OpenGuard,
}

/// The end of the first stage: the log, and what comes next, if anything.
type Opened = (AccessLog, Option<Next>);

/// What the first stage hands on.
enum Next {
    /// A passthrough connection: the relay to run in place.
    Relay(relay::Relay, Held),
    /// HTTP mode, with the per-source places it holds.
    Http(http::Start, Places),
}

pin_project_lite::pin_project! {
    /// The future of one connection's task (see [`handle`]).
    pub(crate) struct Connection {
        #[pin]
        stage: Stage,
        counted: Counted,
    }
}

pin_project_lite::pin_project! {
    #[project = StageProj]
    enum Stage {
        Opening { opening: Pin<Box<dyn Future<Output = Opened> + Send>> },
        Relaying {
            #[pin]
            relay: relay::Relay,
            // Taken when the relay ends.
            log: Option<AccessLog>,
            held: Held,
        },
        Serving { serving: http::Serving },
        Done,
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            let log = match this.stage.as_mut().project() {
                StageProj::Opening { opening } => match ready!(opening.as_mut().poll(cx)) {
                    (log, Some(Next::Relay(relay, held))) => {
                        this.stage.set(Stage::Relaying {
                            relay,
                            log: Some(log),
                            held,
                        });
                        continue;
                    }
                    (log, Some(Next::Http(start, places))) => {
                        // The first stage's future is freed here.
                        let serving = start.serving(log, places);
                        this.stage.set(Stage::Serving { serving });
                        continue;
                    }
                    (log, None) => log,
                },
                StageProj::Serving { serving } => ready!(serving.as_mut().poll(cx)),
                StageProj::Relaying { relay, log, .. } => {
                    let outcome = ready!(relay.poll(cx));
                    // Taken only here, and the stage becomes `Done` right
                    // after: never `None` while `Relaying` is polled.
                    let Some(mut log) = log.take() else {
                        return Poll::Ready(());
                    };
                    log.relayed(&outcome);
                    log
                }
                StageProj::Done => return Poll::Ready(()),
            };
            // The sockets close and the places are given back before the
            // line is written.
            this.stage.set(Stage::Done);
            let (bytes_in, bytes_out, failed) = log.finish();
            this.counted
                .open
                .frontend()
                .record(bytes_in, bytes_out, failed);
            return Poll::Ready(());
        }
    }
}

/// What a relayed connection holds until it ends: its place on the server
/// and its per-source places.
pub(super) type Held = (ActiveGuard, Places);

/// Runs [`decide_and_open`] with the connection's log, and gives the log
/// back for the relay's part.
async fn open(
    stream: TcpStream,
    peer: SocketAddr,
    snapshot: Arc<Snapshot>,
    listener: usize,
    shared: Arc<Shared>,
    frontend: Arc<Traffic>,
    mut log: AccessLog,
) -> Opened {
    let next = decide_and_open(stream, peer, snapshot, listener, shared, frontend, &mut log).await;
    (log, next)
}

/// The stages in order: the client (PROXY header), the listener's
/// admission, the preread, the decision, the backend's admission, then the
/// termination's path. A passthrough connection comes back as a relay to
/// run, an HTTP-mode one as the connection to serve; every other way ends
/// here (logged).
async fn decide_and_open(
    mut stream: TcpStream,
    peer: SocketAddr,
    snapshot: Arc<Snapshot>,
    listener: usize,
    shared: Arc<Shared>,
    frontend: Arc<Traffic>,
    log: &mut AccessLog,
) -> Option<Next> {
    let spec = &snapshot.listeners[listener];
    let _ = stream.set_nodelay(true);
    let peer = preread::client(&stream, peer, spec, log).await?;
    let mut places = admit::listener(spec, peer.ip(), log).ok()?;
    if spec.protocol == Protocol::Http {
        // Port 80: no ClientHello, each request routed on its own.
        let (https_port, timeouts) = (spec.https_port, snapshot.http.timeouts);
        drop(snapshot);
        let routing = http::Routing {
            shared,
            frontend,
            fallback: None,
            peer,
            timeouts,
            ja4: None,
        };
        let start = http::Start::plain(stream, routing, https_port);
        return Some(Next::Http(start, places));
    }
    // The preread buffer stays charged to the buffer budget until its
    // bytes are handed on: to the server (passthrough, after the connect
    // and any wait in the queue) or to the TLS handshake, whose buffers
    // are charged on their own.
    if spec.postgres {
        // Boxed: only on listeners that allow it.
        Box::pin(postgres::start(&mut stream, spec, log)).await?;
    }
    let preread = preread::hello(&stream, spec, log).await?;
    admit::fingerprint(spec, log).ok()?;
    let routed = match decide::decide(snapshot, listener, &shared, log) {
        Decided::Routed(routed) => routed,
        Decided::Unrouted(_) | Decided::Closed if log.is_postgres() => {
            // A database client gets no 503 page: it is told the name is
            // not known, in its handshake.
            Box::pin(postgres::no_route(&mut stream)).await;
            return None;
        }
        Decided::Unrouted(unrouted) => {
            let routing = http::Routing {
                shared,
                frontend,
                fallback: unrouted.fallback,
                peer,
                timeouts: unrouted.timeouts,
                ja4: log.ja4(),
            };
            let hello = preread.into_bytes();
            let (tls, handshake_timeout) = (unrouted.tls, unrouted.handshake_timeout);
            let start = http::Start::tls(stream, routing, hello, tls, handshake_timeout);
            return Some(Next::Http(start, places));
        }
        Decided::Closed => return None,
    };
    // The decision took what it needs of it.
    drop(shared);
    admit::backend(&routed, peer.ip(), &mut places, log).ok()?;
    dispatch(stream, preread, routed, (peer, frontend), places, log).await
}

/// Hands a decided connection to the path of its backend's termination.
async fn dispatch(
    stream: TcpStream,
    preread: Preread,
    routed: Routed,
    (peer, frontend): (SocketAddr, Arc<Traffic>),
    places: Places,
    log: &mut AccessLog,
) -> Option<Next> {
    let Routed {
        backend,
        tls,
        handshake_timeout,
        fallback,
        copying,
        removed,
        requests,
    } = routed;
    let ctx = Ctx {
        peer,
        backend: &backend,
        removed,
        copying,
    };
    match (backend.termination, tls, requests) {
        (Termination::Passthrough, _, _) => {
            let (relay, held) = passthrough::open(stream, preread, ctx, places, log).await?;
            return Some(Next::Relay(relay, held));
        }
        (_, Some(_), Some(_)) if log.is_postgres() => log.fail(
            "switchyard",
            "a PostgreSQL client was routed to an HTTP-mode backend: its route must be passthrough or mode = \"tcp\"",
        ),
        // HTTP mode: served as a stage of its own.
        (_, Some(tls), Some(shared)) => {
            let routing = http::Routing {
                shared,
                frontend,
                fallback,
                peer,
                timeouts: backend.timeouts,
                ja4: log.ja4(),
            };
            let hello = preread.into_bytes();
            let start = http::Start::tls(stream, routing, hello, tls, handshake_timeout);
            return Some(Next::Http(start, places));
        }
        // Boxed: TLS state is large, and the first stage of a passthrough
        // connection (this future) must not be sized for it.
        (_, Some(tls), None) => {
            let hello = preread.into_bytes();
            Box::pin(terminate::run(
                stream,
                hello,
                tls,
                handshake_timeout,
                ctx,
                log,
            ))
            .await
        }
        (_, None, _) => log.fail(
            "switchyard",
            "backend terminates TLS but the listener has no certificate",
        ),
    }
    None
}

/// What the termination paths need besides the streams.
pub(crate) struct Ctx<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) backend: &'a Arc<Backend>,
    /// Resolves when a reload removed this connection's route (if asked).
    pub(crate) removed: Option<relay::Stop>,
    /// `[relay]`: how a passthrough relay copies.
    pub(crate) copying: relay::Copying,
}

#[cfg(test)]
mod size {
    /// An idle passthrough connection's memory is mostly its task: keep the
    /// connection future small (the TLS path is boxed).
    #[test]
    fn connection_future_stays_small() {
        fn size_of_handle() -> usize {
            // The future is never polled: only its size matters.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("addr");
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let dir = tempfile::tempdir().expect("dir");
                let config = dir.path().join("s.toml");
                std::fs::write(&config, "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n")
                    .expect("write");
                let snapshot = crate::config::load(&config).expect("load").snapshot;
                let router = crate::runtime::router::Router::start(snapshot).expect("router");
                let shared = std::sync::Arc::clone(router.shared());
                let frontend = crate::model::counters::global().frontend("l");
                let counted = super::Counted {
                    slot: crate::model::limits::slots::Slots::new(1).try_acquire().expect("slot"),
                    open: shared.open(&frontend),
                };
                let conn = super::Accepted { stream, peer: addr, snapshot: router.snapshot(), listener: 0, shared, counted };
                std::mem::size_of_val(&super::handle(conn))
            })
        }
        let size = size_of_handle();
        // 1,584 while the steps before the relay were inline; with them
        // boxed, the relay, the log record and the places: 656 here (a
        // debug build), 640 in release; 704 with the hello's JA4
        // fingerprint (36 bytes) kept for the log line.
        assert!(size <= 720, "connection future is {size} bytes");
    }
}
