//! The life of one accepted connection, top to bottom: read the ClientHello
//! without consuming it, choose the route, then hand over to the path of
//! the backend's termination (`passthrough`: replay the hello and relay the
//! raw bytes; `terminate`: edge or re-encrypt), and write one access-log
//! line. Everything it consults comes from the snapshot taken at accept,
//! so a reload never changes a connection midway.

mod passthrough;
mod terminate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::access_log::AccessLog;
use crate::backend::{ActiveGuard, Backend, Termination};
use crate::client_hello::{self, ClientHello, HelloError, Progress};
use crate::config::{ListenerSpec, Snapshot};
use crate::relay;
use crate::route::BackendId;
use crate::server::Router;
use crate::stats::counters::{global, HelloOutcome};

/// First read size: most ClientHellos (500–1,800 bytes) arrive in one read.
const FIRST_READ: usize = 2048;

/// What the listener hands over for each accepted connection.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The configuration this connection lives with, to its end.
    pub snapshot: Arc<Snapshot>,
    /// Index of the accepting listener in `snapshot.listeners`.
    pub listener: usize,
    /// To follow reloads when removed routes must be closed.
    pub router: Arc<Router>,
}

/// Runs a connection to its end. Never panics on peer input; every way it
/// ends is logged once.
pub async fn handle(conn: Accepted) -> (u64, u64, bool) {
    let Accepted {
        stream,
        peer,
        snapshot,
        listener,
        router,
    } = conn;
    let spec = &snapshot.listeners[listener];
    let mut log = AccessLog::new(peer, &spec.name);
    let _ = stream.set_nodelay(true);
    let Some((hello_bytes, id)) = decide(&stream, &snapshot, spec, &mut log).await else {
        return log.finish();
    };
    let backend = snapshot.backend(id);
    log.backend(backend);
    let removed = snapshot.close_removed_after.map(|grace| {
        let sni = log.sni().map(str::to_string);
        let watch = route_removed(
            Arc::clone(&router),
            sni,
            listener,
            backend.name.clone(),
            grace,
        );
        Box::pin(watch) as relay::Stop
    });
    let ctx = Ctx {
        peer,
        backend,
        removed,
    };
    match backend.termination {
        Termination::Passthrough => passthrough::run(stream, hello_bytes, ctx, &mut log).await,
        Termination::Edge | Termination::Reencrypt => {
            match snapshot.tls.get(listener).and_then(Option::as_ref) {
                // Boxed: TLS state is large, and a passthrough connection's
                // task must not be sized for it.
                Some(tls) => {
                    Box::pin(terminate::run(
                        stream,
                        hello_bytes,
                        tls,
                        spec,
                        ctx,
                        &mut log,
                    ))
                    .await
                }
                None => log.fail(
                    "switchyard",
                    "backend terminates TLS but the listener has no certificate",
                ),
            }
        }
    }
    log.finish()
}

/// What the termination paths need besides the streams.
pub(crate) struct Ctx<'a> {
    pub peer: SocketAddr,
    pub backend: &'a Backend,
    /// Resolves when a reload removed this connection's route (if asked).
    pub removed: Option<relay::Stop>,
}

/// Reads the ClientHello and chooses the backend: a passthrough route, an
/// edge or re-encrypt route, or the listener's default backend. Returns
/// the bytes read (to replay) and the backend, or `None` to close.
async fn decide<'a>(
    stream: &TcpStream,
    snapshot: &'a Snapshot,
    spec: &ListenerSpec,
    log: &mut AccessLog<'a>,
) -> Option<(Vec<u8>, BackendId)> {
    match preread(stream, spec, log).await {
        Ok(hello_bytes) => choose_backend(snapshot, spec, log).map(|id| (hello_bytes, id)),
        Err(PrereadError::NoSni(bytes)) => spec.default_backend.map(|id| (bytes, id)),
        // Not a usable hello: only a passthrough default can take it.
        Err(PrereadError::Hello(bytes)) => spec
            .default_backend
            .filter(|&id| snapshot.backend(id).termination == Termination::Passthrough)
            .map(|id| (bytes, id)),
        Err(PrereadError::Timeout | PrereadError::Closed) => None,
    }
}

/// Why the preread stopped without a ClientHello that names a host.
enum PrereadError {
    /// The client sent something else; the bytes are kept for a default backend.
    Hello(Vec<u8>),
    /// A valid hello without SNI.
    NoSni(Vec<u8>),
    Timeout,
    Closed,
}

/// Reads until the ClientHello is complete (or not a hello), within the
/// listener's inspect timeout for the whole of it.
async fn preread(
    stream: &TcpStream,
    spec: &ListenerSpec,
    log: &mut AccessLog<'_>,
) -> Result<Vec<u8>, PrereadError> {
    let deadline = Instant::now() + spec.inspect_timeout;
    let mut buf = Vec::with_capacity(FIRST_READ);
    let mut reads = 0;
    loop {
        match client_hello::peek(&buf, spec.max_client_hello) {
            Ok(Progress::Done(hello)) => return accept_hello(hello, buf, reads, log),
            Err(e) => {
                global().hello(match e {
                    HelloError::NotTls(_)
                    | HelloError::RecordVersion(_)
                    | HelloError::NotClientHello(_) => HelloOutcome::NotTls,
                    HelloError::TooLarge { .. } => HelloOutcome::TooLarge,
                    _ => HelloOutcome::Malformed,
                });
                log.reject(&format!("bad ClientHello: {e}"), buf.len(), reads);
                return Err(PrereadError::Hello(buf));
            }
            Ok(Progress::NeedMore { at_least }) => {
                buf.reserve(at_least.saturating_sub(buf.len()));
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
    reads: usize,
    log: &mut AccessLog<'_>,
) -> Result<Vec<u8>, PrereadError> {
    let has_sni = hello.sni.is_some();
    global().hello(if has_sni {
        HelloOutcome::Ok
    } else {
        HelloOutcome::NoSni
    });
    log.hello(hello, reads);
    if has_sni {
        Ok(buf)
    } else {
        log.reject("ClientHello without SNI", buf.len(), reads);
        Err(PrereadError::NoSni(buf))
    }
}

/// Reads what the socket has into the spare capacity of `buf`.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// The backend for the SNI the log has recorded, or the default one.
fn choose_backend<'a>(
    snapshot: &'a Snapshot,
    spec: &ListenerSpec,
    log: &mut AccessLog<'a>,
) -> Option<BackendId> {
    let sni = log.sni()?;
    let miss = match snapshot.routes.find(sni) {
        Ok(route) => {
            log.route(route.hit.file, route.hit.line);
            return Some(route.backend);
        }
        Err(miss) => miss,
    };
    if let Some((hit, id)) = snapshot.routes.find_terminated(sni) {
        log.route(hit.file, hit.line);
        return Some(id);
    }
    global().unmatched(sni);
    log.end("switchyard", &format!("no route: {}", miss.as_str()));
    spec.default_backend
}

/// Picks a server and connects, trying others after a failure (bounded by
/// the backend's retries).
pub(crate) async fn connect<'a>(
    backend: &'a Backend,
    peer: SocketAddr,
    log: &mut AccessLog<'a>,
) -> Option<(TcpStream, ActiveGuard)> {
    let mut tried = Vec::new();
    for _ in 0..=backend.retries {
        let Some(i) = backend.pick(peer.ip(), &tried) else {
            break;
        };
        let server = &backend.servers[i];
        let active = ActiveGuard::new(&server.state);
        let started = Instant::now();
        match connect_one(server.addr, backend.timeouts.connect).await {
            Ok(stream) => {
                log.server(server, started.elapsed());
                return Some((stream, active));
            }
            Err(e) => {
                if let Some(check) = &backend.check {
                    let change = server.state.health.failure(check.fall);
                    crate::health::log_change(
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

/// Resolves once a reload has taken this connection's route away (its SNI
/// no longer leads to `backend`) and `grace` has passed without it coming
/// back. Only built when `close_removed_after` is set.
async fn route_removed(
    router: Arc<Router>,
    sni: Option<String>,
    listener: usize,
    backend: String,
    grace: Duration,
) {
    let mut applied = router.subscribe();
    loop {
        if applied.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !still_routed(&router, sni.as_deref(), listener, &backend) {
            tokio::time::sleep(grace).await;
            if !still_routed(&router, sni.as_deref(), listener, &backend) {
                return;
            }
        }
    }
}

fn still_routed(router: &Router, sni: Option<&str>, listener: usize, backend: &str) -> bool {
    let now = router.snapshot();
    let id = match sni.map(|s| now.routes.find(s)) {
        Some(Ok(route)) => Some(route.backend),
        _ => now.listeners.get(listener).and_then(|l| l.default_backend),
    };
    id.is_some_and(|id| now.backend(id).name == backend)
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
                let router = crate::server::Router::start(snapshot).expect("router");
                let conn = super::Accepted { stream, peer: addr, snapshot: router.snapshot(), listener: 0, router };
                std::mem::size_of_val(&super::handle(conn))
            })
        }
        let size = size_of_handle();
        assert!(size <= 1536, "connection future is {size} bytes");
    }
}
