//! The life of one accepted connection, top to bottom: read the ClientHello
//! without consuming it, choose the route, choose and connect a server,
//! replay the hello, relay, and write one access-log line. Everything it
//! consults comes from the snapshot taken at accept, so a reload never
//! changes a connection midway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::access_log::AccessLog;
use crate::backend::{ActiveGuard, Backend};
use crate::client_hello::{self, ClientHello, Progress};
use crate::config::{ListenerSpec, Snapshot};
use crate::relay::{self, Deadlines};
use crate::route::BackendId;
use crate::server::Router;

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
pub async fn handle(conn: Accepted) {
    let spec = &conn.snapshot.listeners[conn.listener];
    let mut log = AccessLog::new(conn.peer, &spec.name);
    let _ = conn.stream.set_nodelay(true);
    let (hello_bytes, backend) = match preread(&conn.stream, spec, &mut log).await {
        Ok(hello_bytes) => match choose_backend(&conn.snapshot, spec, &mut log) {
            Some(id) => (hello_bytes, id),
            None => return log.finish(),
        },
        Err(e) => match spec.default_backend {
            Some(id) if e.goes_to_default() => (e.into_bytes(), id),
            _ => return log.finish(),
        },
    };
    let backend = conn.snapshot.backend(backend);
    log.backend(backend);
    let Some((server, _active)) = connect(backend, conn.peer, &mut log).await else {
        return log.finish();
    };
    if let Err(e) = relay::write_all(&server, &hello_bytes).await {
        log.end("server", &format!("write failed: {e}"));
        return log.finish();
    }
    drop(hello_bytes);
    let deadlines = Deadlines {
        first_response: backend.timeouts.server,
        idle: backend.timeouts.tunnel,
    };
    let removed = conn.snapshot.close_removed_after.map(|grace| {
        let sni = log.sni().map(str::to_string);
        let watch = route_removed(
            Arc::clone(&conn.router),
            sni,
            conn.listener,
            backend.name.clone(),
            grace,
        );
        Box::pin(watch) as relay::Stop
    });
    let outcome = relay::relay(&conn.stream, &server, deadlines, removed).await;
    log.relayed(&outcome);
    log.finish();
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

impl PrereadError {
    /// Whether the listener's default backend should take the connection.
    fn goes_to_default(&self) -> bool {
        matches!(self, PrereadError::Hello(_) | PrereadError::NoSni(_))
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            PrereadError::Hello(b) | PrereadError::NoSni(b) => b,
            PrereadError::Timeout | PrereadError::Closed => Vec::new(),
        }
    }
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
            Ok(Progress::NeedMore { at_least }) => {
                buf.reserve(at_least.saturating_sub(buf.len()));
            }
            Err(e) => {
                log.reject(&format!("bad ClientHello: {e}"), buf.len(), reads);
                return Err(PrereadError::Hello(buf));
            }
        }
        let read = timeout_at(deadline, read_some(stream, &mut buf)).await;
        match read {
            Ok(Ok(0)) => {
                log.reject(
                    "client closed before a complete ClientHello",
                    buf.len(),
                    reads,
                );
                return Err(PrereadError::Closed);
            }
            Ok(Ok(_)) => reads += 1,
            Ok(Err(e)) => {
                log.reject(&format!("read failed: {e}"), buf.len(), reads);
                return Err(PrereadError::Closed);
            }
            Err(_) => {
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
    match snapshot.routes.find(sni) {
        Ok(route) => {
            log.route(route.hit.file, route.hit.line);
            Some(route.backend)
        }
        Err(miss) => {
            log.end("switchyard", &format!("no route: {}", miss.as_str()));
            spec.default_backend
        }
    }
}

/// Picks a server and connects, trying others after a failure (bounded by
/// the backend's retries).
async fn connect<'a>(
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
                tracing::warn!(backend = %backend.name, server = %server.name, addr = %server.addr, client = %peer, "connect failed: {e}");
                tried.push(i);
            }
        }
    }
    let why = if tried.is_empty() {
        "no server available (none, or all weight 0)".to_string()
    } else {
        format!("{} connect attempts failed", tried.len())
    };
    log.end("switchyard", &why);
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
