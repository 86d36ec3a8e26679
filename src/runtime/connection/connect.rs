//! Stage 4, the connect (passthrough and TCP mode; HTTP mode dials per
//! request in `http/dial.rs`): a server taken from the backend (balanced, under
//! `max_connections_per_server`, or a wait in its queue), dialed within
//! the connect timeout (a PROXY header first with `send_proxy`), another
//! tried after a failure, up to the backend's retries. A failed connect
//! counts against the server's health; a failure of the router's own
//! (out of descriptors) is told apart and tries no other server.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::model::backend::{ActiveGuard, Backend, Unavailable};
use crate::model::counters::global;
use crate::runtime::access_log::AccessLog;

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
                    crate::runtime::health_check::log_change(
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

/// A TCP connection to `addr` within `limit`, with Nagle off.
pub(crate) async fn connect_one(addr: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
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
