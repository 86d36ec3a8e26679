//! The life of one accepted connection, top to bottom: read the ClientHello
//! without consuming it, ask the snapshot for the routing decision
//! (`Snapshot::decide`, the same code `switchyard route` runs), then hand
//! over to the path of the backend's termination (`passthrough`: replay the
//! hello and relay the raw bytes; `terminate`: edge or re-encrypt), and
//! write one access-log line. The decision owns its backend, and the
//! snapshot is let go as soon as the route is decided: a long-lived
//! connection keeps its route, not the route tables of its configuration,
//! and a reload never changes a connection midway.

mod http;
mod passthrough;
mod terminate;

pub(crate) use http::{forwardable, take_cookie};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::model::backend::{ActiveGuard, Backend, Mode, Termination, Unavailable};
use crate::model::counters::{global, HelloOutcome};
use crate::model::decide::{Hello, Miss, OwnedHello, Via};
use crate::model::limits::budget::Charge;
use crate::model::snapshot::{ListenerSpec, Protocol, Snapshot};
use crate::model::wire::client_hello::{self, ClientHello, HelloError, Progress};
use crate::runtime::access_log::AccessLog;
use crate::runtime::relay;
use crate::runtime::shared::Shared;

/// First read size: most ClientHellos (500–1,800 bytes) arrive in one read.
const FIRST_READ: usize = 2048;

/// What the listener hands over for each accepted connection.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The configuration current at accept: the decision is made from it,
    /// then it is dropped.
    pub snapshot: Arc<Snapshot>,
    /// Index of the accepting listener in `snapshot.listeners`.
    pub listener: usize,
    /// To follow reloads when removed routes must be closed.
    pub shared: Arc<Shared>,
    pub counted: Counted,
}

/// A connection's task, from accept to its end: never panics on peer
/// input, and every way it ends is logged once.
///
/// Two stages. Everything before a passthrough relay (the preread, the
/// decision, the connect and the replay), and the whole of a terminated
/// connection, runs in one boxed future that is freed when it returns.
/// A passthrough connection then relays in place, so the task of a
/// long-lived connection is sized for the relay alone (its streams, one
/// timer, its log record and its places), not for the largest step
/// before it.
pub fn handle(conn: Accepted) -> Connection {
    let Accepted {
        stream,
        peer,
        snapshot,
        listener,
        shared,
        counted,
    } = conn;
    let log = AccessLog::new(peer, Arc::clone(&snapshot.listeners[listener].name));
    let opening = open(stream, peer, snapshot, listener, shared, log);
    Connection {
        stage: Stage::Opening {
            opening: Box::pin(opening),
        },
        counted,
    }
}

/// What the listener counts a connection by until it ends: its slot
/// under `max_connections` and its place in the open-connection gauges.
pub struct Counted {
    /// Held, not read: dropping it frees the slot.
    #[allow(dead_code)]
    pub slot: crate::model::limits::slots::Slot,
    pub open: crate::runtime::shared::OpenGuard,
}

/// The end of the first stage: the log, and the relay to run if the
/// connection is passthrough.
type Opened = (AccessLog, Option<(relay::Relay, Held)>);

pin_project_lite::pin_project! {
    /// The future of one connection's task (see [`handle`]).
    pub struct Connection {
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
                    (log, Some((relay, held))) => {
                        this.stage.set(Stage::Relaying {
                            relay,
                            log: Some(log),
                            held,
                        });
                        continue;
                    }
                    (log, None) => log,
                },
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

/// The per-source places a connection holds: the listener's, then its
/// backend's (boxed: only limited connections pay for them).
type Places = Option<Box<[Option<crate::model::limits::sources::Admitted>; 2]>>;

/// Runs [`decide_and_open`] with the connection's log, and gives the log
/// back for the relay's part.
async fn open(
    stream: TcpStream,
    peer: SocketAddr,
    snapshot: Arc<Snapshot>,
    listener: usize,
    shared: Arc<Shared>,
    mut log: AccessLog,
) -> Opened {
    let tunnel = decide_and_open(stream, peer, snapshot, listener, shared, &mut log).await;
    (log, tunnel)
}

/// Reads the hello, decides and connects: a passthrough connection comes
/// back as a relay to run; every other way ends here (logged).
async fn decide_and_open(
    stream: TcpStream,
    peer: SocketAddr,
    snapshot: Arc<Snapshot>,
    listener: usize,
    shared: Arc<Shared>,
    log: &mut AccessLog,
) -> Option<(relay::Relay, Held)> {
    let spec = &snapshot.listeners[listener];
    let _ = stream.set_nodelay(true);
    // Behind a load balancer: the client is the one its PROXY header names.
    let peer = match &spec.proxy_from {
        None => peer,
        Some(from) => match Box::pin(proxy_header(&stream, peer, spec, from, log)).await {
            Some(client) => {
                log.set_client(client);
                client
            }
            None => {
                global()
                    .proxy_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
        },
    };
    // Per-source limits: places held for the connection's life, the
    // listener's and then the backend's (boxed: only limited ones pay for
    // them in every connection's future).
    let mut places: Places = match spec.sources.as_ref().map(|s| s.admit(peer.ip())) {
        None => None,
        Some(Ok(admitted)) => Some(Box::new([Some(admitted), None])),
        Some(Err(refusal)) => {
            global()
                .source_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log.reject(&refusal.to_string(), 0, 0);
            return None;
        }
    };
    if spec.protocol == Protocol::Http {
        // Port 80: no ClientHello, each request routed on its own.
        let https_port = spec.https_port;
        let timeouts = snapshot.http.timeouts;
        drop(snapshot);
        Box::pin(http::serve_plain(
            stream, shared, peer, https_port, timeouts, log,
        ))
        .await;
        return None;
    }
    // The preread buffer stays charged to the buffer budget until its
    // bytes are handed on: to the server (passthrough, after the connect
    // and any wait in the queue) or to the TLS handshake, whose buffers
    // are charged on their own.
    let (preread, hello) = match preread(&stream, spec, log).await {
        Ok((bytes, charge)) => (
            Preread {
                bytes,
                _charge: charge,
            },
            Said::Sni,
        ),
        Err(PrereadError::NoSni(bytes, charge)) => (
            Preread {
                bytes,
                _charge: charge,
            },
            Said::NoSni,
        ),
        Err(PrereadError::Hello(bytes, charge)) => (
            Preread {
                bytes,
                _charge: charge,
            },
            Said::NotTls,
        ),
        Err(PrereadError::Timeout | PrereadError::Closed) => return None,
    };
    let decision = match snapshot.decide(listener, hello.of(log)) {
        Ok(decision) => decision,
        Err(miss) => {
            if let Some(name) = log.sni() {
                global().unmatched(name);
                let why = format!("no route: {}", miss.as_str());
                log.end("switchyard", &why);
            }
            // A listener that terminates TLS serves what no route takes in
            // HTTP mode, with the default certificate: a browser gets a 503
            // page (or a route per request) rather than a reset.
            let tls = snapshot.tls.get(listener).cloned().flatten();
            if let (Some(tls), Miss::NoRoute | Miss::NoSni) = (tls, miss) {
                let handshake_timeout = spec.inspect_timeout;
                let fallback = http_fallback(&snapshot, listener);
                let timeouts = snapshot.http.timeouts;
                drop(snapshot);
                let serve = http::serve(
                    stream,
                    preread.into_bytes(),
                    tls,
                    handshake_timeout,
                    http::Routing {
                        shared,
                        fallback,
                        peer,
                        timeouts,
                    },
                    log,
                );
                Box::pin(serve).await;
            }
            return None;
        }
    };
    if let (Some(name), Via::Default(Miss::NoRoute)) = (log.sni(), &decision.via) {
        global().unmatched(name);
    }
    log.decided(&decision);
    let http_mode = decision.backend.mode == Mode::Http;
    let shared_for_requests = http_mode.then(|| Arc::clone(&shared));
    let follow = snapshot.close_removed_after.filter(|_| !http_mode);
    let removed = follow.map(|grace| {
        let followed = Followed {
            listener: Arc::clone(&spec.name),
            hello: OwnedHello::from(hello.of(log)),
            backend: decision.backend.name.clone(),
            generation: decision.generation,
        };
        Box::pin(route_removed(shared, followed, grace)) as relay::Stop
    });
    let backend = decision.backend;
    // What the rest of the connection needs from the configuration; the
    // route tables go with the snapshot, now.
    let tls = match backend.termination {
        Termination::Passthrough => None,
        _ => snapshot.tls.get(listener).cloned().flatten(),
    };
    let handshake_timeout = spec.inspect_timeout;
    let fallback = http_fallback(&snapshot, listener);
    let copying = relay::Copying {
        splice: snapshot.splice,
    };
    drop(snapshot);
    // HTTP mode checks each request's backend instead.
    if shared_for_requests.is_none() && !backend.admits(peer.ip()) {
        log.end(
            "switchyard",
            "client address not in the backend's allow list",
        );
        return None;
    }
    // The backend's own per-source limits (its routes' `rate-limit-connections`).
    match backend.admit_source(peer.ip()) {
        Ok(None) => {}
        Ok(Some(place)) => places.get_or_insert_with(Box::default)[1] = Some(place),
        Err(refusal) => {
            log.end("switchyard", &refusal.to_string());
            return None;
        }
    }
    let ctx = Ctx {
        peer,
        backend: &backend,
        removed,
        copying,
    };
    match (backend.termination, tls, shared_for_requests) {
        (Termination::Passthrough, _, _) => {
            return passthrough::open(stream, preread, ctx, places, log).await
        }
        // HTTP mode: each request is routed on its own; the connection's
        // backend only chose the mode. Boxed like the tunnel below.
        (_, Some(tls), Some(shared)) => {
            Box::pin(http::serve(
                stream,
                preread.into_bytes(),
                tls,
                handshake_timeout,
                http::Routing {
                    shared,
                    fallback,
                    peer,
                    timeouts: backend.timeouts,
                },
                log,
            ))
            .await
        }
        // Boxed: TLS state is large, and the first stage of a passthrough
        // connection (this future) must not be sized for it.
        (_, Some(tls), None) => {
            Box::pin(terminate::run(
                stream,
                preread.into_bytes(),
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

/// The listener's default backend when it serves HTTP: where requests that
/// no map line routes go (else they get 503).
fn http_fallback(snapshot: &Snapshot, listener: usize) -> Option<Arc<Backend>> {
    let id = snapshot.listeners.get(listener)?.default_backend?;
    let backend = snapshot.backends.get(id)?;
    (backend.mode == Mode::Http).then(|| Arc::clone(backend))
}

/// The bytes the preread took from the client, with their share of the
/// buffer budget.
pub(super) struct Preread {
    pub bytes: Vec<u8>,
    /// Released with the bytes.
    _charge: Charge,
}

impl Preread {
    /// The bytes, for a TLS handshake that charges its own buffers.
    fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// What the preread found; the name itself stays in the log.
#[derive(Clone, Copy)]
enum Said {
    Sni,
    NoSni,
    NotTls,
}

impl Said {
    fn of(self, log: &AccessLog) -> Hello<'_> {
        match self {
            Said::Sni => log.sni().map_or(Hello::NoSni, Hello::Sni),
            Said::NoSni => Hello::NoSni,
            Said::NotTls => Hello::NotTls,
        }
    }
}

/// What the termination paths need besides the streams.
pub(crate) struct Ctx<'a> {
    pub peer: SocketAddr,
    pub backend: &'a Arc<Backend>,
    /// Resolves when a reload removed this connection's route (if asked).
    pub removed: Option<relay::Stop>,
    /// `[relay]`: how a passthrough relay copies.
    pub copying: relay::Copying,
}

/// Why the preread stopped without a ClientHello that names a host.
enum PrereadError {
    /// The client sent something else; the bytes are kept for a default backend.
    Hello(Vec<u8>, Charge),
    /// A valid hello without SNI.
    NoSni(Vec<u8>, Charge),
    Timeout,
    Closed,
}

/// Reads the PROXY header a connection to an `accept_proxy` listener must
/// start with, from a source in `proxy_from`, within the listener's
/// `inspect_timeout` (one deadline for it and the ClientHello after it),
/// and consumes exactly its bytes (the ClientHello or
/// request after it stays in the socket). The client it names, or the
/// socket's peer for v2 `LOCAL` and v1 `UNKNOWN`; `None` (logged) when the
/// connection is to be closed.
async fn proxy_header(
    stream: &TcpStream,
    peer: SocketAddr,
    spec: &ListenerSpec,
    from: &[crate::model::limits::cidr::Cidr],
    log: &mut AccessLog,
) -> Option<SocketAddr> {
    use crate::model::wire::proxy_header::{parse, Progress, V2_MAX};
    if !from.iter().any(|block| block.contains(peer.ip())) {
        log.reject(
            "PROXY header expected from a load balancer: source not in proxy_from",
            0,
            0,
        );
        return None;
    }
    let deadline = log.started() + spec.inspect_timeout;
    let mut buf = vec![0u8; V2_MAX];
    let mut peeks = 0;
    loop {
        let seen = match timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) => {
                log.reject("client closed before a complete PROXY header", 0, peeks);
                return None;
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                log.reject(&format!("read failed: {e}"), 0, peeks);
                return None;
            }
            Err(_) => {
                let why = format!("no complete PROXY header within {:?}", spec.inspect_timeout);
                log.reject(&why, 0, peeks);
                return None;
            }
        };
        peeks += 1;
        match parse(&buf[..seen]) {
            Ok(Progress::Complete(header)) => {
                // The header's bytes are in the socket already: consume
                // exactly them.
                let mut taken = 0;
                while taken < header.len {
                    match stream.try_read(&mut buf[taken..header.len]) {
                        Ok(0) => return None,
                        Ok(n) => taken += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if timeout_at(deadline, stream.readable()).await.is_err() {
                                return None;
                            }
                        }
                        Err(e) => {
                            log.reject(&format!("read failed: {e}"), 0, peeks);
                            return None;
                        }
                    }
                }
                return Some(header.client.unwrap_or(peer));
            }
            // A peek does not wait for more bytes: a split header (rare;
            // balancers write it whole) is looked at again shortly.
            Ok(Progress::Partial) => {
                let pause = tokio::time::sleep(Duration::from_millis(5));
                if timeout_at(deadline, pause).await.is_err() {
                    let why = format!("no complete PROXY header within {:?}", spec.inspect_timeout);
                    log.reject(&why, seen, peeks);
                    return None;
                }
            }
            Err(e) => {
                log.reject(&format!("bad PROXY header: {e}"), seen, peeks);
                return None;
            }
        }
    }
}

/// Reads until the ClientHello is complete (or not a hello) within the
/// listener's inspect timeout from accept, for the whole of it and a PROXY
/// header before it.
async fn preread(
    stream: &TcpStream,
    spec: &ListenerSpec,
    log: &mut AccessLog,
) -> Result<(Vec<u8>, Charge), PrereadError> {
    // The preread buffer is the connection's first memory: within the
    // budget or refused.
    let Some(mut charge) = crate::model::limits::budget::global().admit(FIRST_READ) else {
        log.reject(terminate::BUDGET_REACHED, 0, 0);
        return Err(PrereadError::Closed);
    };
    // From accept: a PROXY header before the hello shares the time.
    let deadline = log.started() + spec.inspect_timeout;
    let mut buf = Vec::with_capacity(FIRST_READ);
    let mut reads = 0;
    loop {
        match client_hello::peek(&buf, spec.max_client_hello) {
            Ok(Progress::Done(hello)) => return accept_hello(hello, buf, charge, reads, log),
            Err(e) => {
                global().hello(match e {
                    HelloError::NotTls(_)
                    | HelloError::RecordVersion(_)
                    | HelloError::NotClientHello(_) => HelloOutcome::NotTls,
                    HelloError::TooLarge { .. } => HelloOutcome::TooLarge,
                    _ => HelloOutcome::Malformed,
                });
                log.reject(&format!("bad ClientHello: {e}"), buf.len(), reads);
                return Err(PrereadError::Hello(buf, charge));
            }
            Ok(Progress::NeedMore { at_least }) => {
                // A larger buffer is new work: within the budget or closed.
                if !charge.grow_hello_to(at_least.max(buf.capacity())) {
                    log.reject(terminate::BUDGET_REACHED, buf.len(), reads);
                    return Err(PrereadError::Closed);
                }
                buf.reserve_exact(at_least.saturating_sub(buf.len()));
            }
        }
        let read = timeout_at(deadline, read_some(stream, &mut buf)).await;
        match read {
            Ok(Ok(0)) => {
                global().hello(HelloOutcome::Closed);
                log.reject(
                    "client closed before a complete ClientHello",
                    buf.len(),
                    reads,
                );
                return Err(PrereadError::Closed);
            }
            Ok(Ok(_)) => reads += 1,
            Ok(Err(e)) => {
                global().hello(HelloOutcome::Closed);
                log.reject(&format!("read failed: {e}"), buf.len(), reads);
                return Err(PrereadError::Closed);
            }
            Err(_) => {
                global().hello(HelloOutcome::Timeout);
                let why = format!("no complete ClientHello within {:?}", spec.inspect_timeout);
                log.reject(&why, buf.len(), reads);
                return Err(PrereadError::Timeout);
            }
        }
    }
}

fn accept_hello(
    hello: ClientHello,
    buf: Vec<u8>,
    charge: Charge,
    reads: usize,
    log: &mut AccessLog,
) -> Result<(Vec<u8>, Charge), PrereadError> {
    let has_sni = hello.sni.is_some();
    global().hello(if has_sni {
        HelloOutcome::Ok
    } else {
        HelloOutcome::NoSni
    });
    log.hello(hello, reads);
    if has_sni {
        Ok((buf, charge))
    } else {
        log.reject("ClientHello without SNI", buf.len(), reads);
        Err(PrereadError::NoSni(buf, charge))
    }
}

/// Reads what the socket has into the spare capacity of `buf`.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    // A short read clears the socket's readiness, as the relay's reads do
    // (see `relay::read_draining`), so the relay that follows the hello
    // does not begin with a read that fails with EAGAIN. Into the spare
    // capacity, which is never zeroed (a hello dribbled a byte at a time
    // costs no more per read than one that arrives whole).
    loop {
        stream.readable().await?;
        let spare = buf.capacity() - buf.len();
        let mut short = None;
        let read = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            if n > 0 && n < spare {
                short = Some(n);
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (read, short) {
            (_, Some(n)) => return Ok(n),
            (Err(e), None) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            (other, None) => return other,
        }
    }
}

/// Picks a server and connects, trying others after a failure (bounded by
/// the backend's retries).
pub(crate) async fn connect(
    backend: &Backend,
    peer: SocketAddr,
    client: &TcpStream,
    log: &mut AccessLog,
) -> Option<(TcpStream, ActiveGuard)> {
    let mut tried = Vec::new();
    for _ in 0..=backend.retries {
        let (i, active) = match backend.take(peer.ip(), &tried, None).await {
            Ok(taken) => taken,
            Err(Unavailable::NoServer) => break,
            Err(full) => {
                log.fail("switchyard", &full.to_string());
                return None;
            }
        };
        let server = &backend.servers[i];
        let started = Instant::now();
        let limit = backend.timeouts.connect;
        let connected = match backend.send_proxy {
            None => connect_one(server.addr, limit).await,
            // Boxed: rare, and kept out of every connection's future.
            Some(version) => {
                // The address the client connected to, as the header's
                // destination.
                let hop = (peer, client.local_addr().unwrap_or(peer));
                Box::pin(send_header(server.addr, version, hop, limit)).await
            }
        };
        match connected {
            Ok(stream) => {
                log.server(i, started.elapsed());
                return Some((stream, active));
            }
            Err(e) if crate::runtime::descriptors::is_local_failure(&e) => {
                // The router's own shortage: not the server's fault, and
                // another server would fail the same way.
                global()
                    .local_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(backend = %backend.name, server = %server.name, client = %peer, "connect failed on this side: {e}");
                log.fail("switchyard", &format!("connect failed on this side: {e}"));
                return None;
            }
            Err(e) => {
                if let Some(check) = backend.check() {
                    let change = server.state.health.failure(check.fall);
                    crate::model::health::log_change(
                        backend,
                        server,
                        change,
                        &format!("connect failed: {e}"),
                    );
                }
                tracing::warn!(backend = %backend.name, server = %server.name, addr = %server.addr, client = %peer, "connect failed: {e}");
                tried.push(i);
            }
        }
    }
    let why = if tried.is_empty() {
        format!(
            "no server available: {} of {} servers up with weight > 0",
            backend
                .servers
                .iter()
                .filter(|s| s.weight > 0 && s.state.health.is_up())
                .count(),
            backend.servers.len()
        )
    } else {
        format!("{} connect attempts failed", tried.len())
    };
    log.fail("switchyard", &why);
    None
}

/// Connects and writes a PROXY header first (`send_proxy`).
async fn send_header(
    addr: SocketAddr,
    version: crate::model::wire::proxy_header::Version,
    hop: (SocketAddr, SocketAddr),
    limit: Duration,
) -> std::io::Result<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = connect_one(addr, limit).await?;
    let header = crate::model::wire::proxy_header::encode(version, Some(hop));
    match timeout(limit, stream.write_all(&header)).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "PROXY header not written in time",
        )),
    }
}

async fn connect_one(addr: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
    let stream = timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a connection's route was decided from, to decide it again.
struct Followed {
    listener: Arc<str>,
    hello: OwnedHello,
    /// The backend it was decided to.
    backend: String,
    /// The generation of the snapshot it was decided from.
    generation: u64,
}

/// Resolves once a reload has taken this connection's route away (the same
/// listener and ClientHello no longer lead to its backend) and `grace` has
/// passed without it coming back. A reload applied between the decision
/// and the start of this watch is seen: generations are compared, no
/// snapshot is held. Only built when `close_removed_after` is set.
async fn route_removed(shared: Arc<Shared>, followed: Followed, grace: Duration) {
    let mut applied = shared.subscribe();
    let mut seen = followed.generation;
    loop {
        let now = *applied.borrow_and_update();
        if now != seen {
            seen = now;
            if !still_routed(&shared, &followed) {
                // Removed: close after `grace`, unless a reload within it
                // brings the route back (then a later removal starts anew).
                let deadline = Instant::now() + grace;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {
                            if !still_routed(&shared, &followed) {
                                return;
                            }
                            break;
                        }
                        changed = applied.changed() => {
                            if changed.is_err() {
                                return std::future::pending().await;
                            }
                            seen = *applied.borrow_and_update();
                            if still_routed(&shared, &followed) {
                                break;
                            }
                        }
                    }
                }
                continue;
            }
        }
        if applied.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn still_routed(shared: &Shared, followed: &Followed) -> bool {
    let now = shared.snapshot();
    let Some(listener) = now
        .listeners
        .iter()
        .position(|l| l.name == followed.listener)
    else {
        return false;
    };
    now.decide(listener, followed.hello.as_hello())
        .is_ok_and(|d| d.backend.name == followed.backend)
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
        // debug build), 640 in release.
        assert!(size <= 672, "connection future is {size} bytes");
    }
}

#[cfg(test)]
mod follow {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{route_removed, Followed};
    use crate::model::decide::OwnedHello;
    use crate::runtime::shared::Shared;

    /// A snapshot whose passthrough map routes `svc.test` to `backend`.
    fn snapshot(
        dir: &std::path::Path,
        backend: &str,
        generation: u64,
    ) -> crate::model::snapshot::Snapshot {
        std::fs::write(dir.join("tcp.map"), format!("^svc\\.test$ {backend}\n")).expect("map");
        let config = dir.join("s.toml");
        let text = "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
                    [maps]\ntcp_be = \"tcp.map\"\n[stats]\nenabled = false\n\
                    [[backend]]\nname = \"a\"\nservers = []\n\
                    [[backend]]\nname = \"b\"\nservers = []\n";
        std::fs::write(&config, text).expect("config");
        let mut snapshot = crate::config::load(&config).expect("load").snapshot;
        snapshot.generation = generation;
        snapshot
    }

    fn followed(generation: u64) -> Followed {
        Followed {
            listener: "l".into(),
            hello: OwnedHello::Sni("svc.test".into()),
            backend: "a".into(),
            generation,
        }
    }

    /// A reload applied after the decision but before the watch starts is
    /// still seen: the watch compares generations.
    #[tokio::test]
    async fn a_reload_before_the_watch_starts_is_not_missed() {
        let dir = tempfile::tempdir().expect("dir");
        let shared = Arc::new(Shared::new(Arc::new(snapshot(dir.path(), "a", 1))));
        shared.publish(Arc::new(snapshot(dir.path(), "b", 2)));
        let watch = route_removed(Arc::clone(&shared), followed(1), Duration::from_millis(10));
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("the moved route is noticed");
    }

    /// A route removed, restored and removed again within the grace gets a
    /// full grace from the second removal.
    #[tokio::test]
    async fn the_grace_starts_again_when_a_route_comes_back() {
        let dir = tempfile::tempdir().expect("dir");
        let shared = Arc::new(Shared::new(Arc::new(snapshot(dir.path(), "a", 1))));
        let grace = Duration::from_millis(400);
        let started = tokio::time::Instant::now();
        let watch = tokio::spawn(route_removed(Arc::clone(&shared), followed(1), grace));
        shared.publish(Arc::new(snapshot(dir.path(), "b", 2)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        shared.publish(Arc::new(snapshot(dir.path(), "a", 3)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let removed_again = tokio::time::Instant::now();
        shared.publish(Arc::new(snapshot(dir.path(), "b", 4)));
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("closed after the second removal's grace")
            .expect("join");
        assert!(
            removed_again.elapsed() >= grace,
            "a whole grace after the second removal"
        );
        assert!(started.elapsed() >= Duration::from_millis(600));
    }

    #[tokio::test]
    async fn a_reload_that_keeps_the_route_keeps_the_connection() {
        let dir = tempfile::tempdir().expect("dir");
        let shared = Arc::new(Shared::new(Arc::new(snapshot(dir.path(), "a", 1))));
        shared.publish(Arc::new(snapshot(dir.path(), "a", 2)));
        let watch = route_removed(Arc::clone(&shared), followed(1), Duration::from_millis(10));
        let ended = tokio::time::timeout(Duration::from_millis(300), watch).await;
        assert!(ended.is_err(), "the route is the same: keep the connection");
    }
}
