//! Edge and re-encrypt: finish the TLS handshake with the client (the
//! preread bytes are replayed into it, nothing is read twice from the
//! socket), with the certificate chosen by SNI, and only then connect a
//! server: a ClientHello alone, or a client that cannot present the
//! certificate a listener requires, never costs a backend connection.
//! Edge relays plaintext; re-encrypt opens verified TLS to the server
//! (after an `SSLRequest` for a PostgreSQL client),
//! offering upstream exactly the protocol the client negotiated (none if
//! none), so both ends speak the same one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::{LazyConfigAcceptor, StartHandshake, TlsConnector};

use super::connect::connect;
use super::Ctx;
use crate::model::counters::{global, HandshakeFailure};
use crate::runtime::access_log::AccessLog;
use crate::runtime::relay::{self, Deadlines};
use crate::tls::upstream::{describe_failure, is_verify_failure};
use crate::tls::{Served, ServerSide};

pub(super) async fn run(
    client: TcpStream,
    hello: Vec<u8>,
    tls: Arc<ServerSide>,
    handshake_timeout: Duration,
    ctx: Ctx<'_>,
    log: &mut AccessLog,
) {
    let Some((client, _)) = accept(client, hello, tls, handshake_timeout, &[], log).await else {
        return;
    };
    let negotiated: Option<Vec<u8>> = client.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let Some((mut server, _active)) =
        connect(ctx.backend, ctx.peer, client.get_ref().0.socket(), log).await
    else {
        return;
    };
    let deadlines = Deadlines {
        first_response: ctx.backend.timeouts.server,
        idle: ctx.backend.timeouts.tunnel,
    };
    let Some(upstream) = ctx.backend.upstream() else {
        // Edge: plaintext to the server.
        let outcome = relay::relay_streams(client, server, deadlines, ctx.removed).await;
        return log.relayed(&outcome);
    };
    if log.is_postgres() {
        // A PostgreSQL server starts TLS only when asked, as the client
        // asked the router.
        // As for passthrough: the server's first answer, under the server
        // timeout.
        let limit = ctx.backend.timeouts.server;
        if let Err(why) = super::postgres::ask_server(&mut server, limit).await {
            tracing::warn!(backend = %ctx.backend.name, client = %ctx.peer, "{why}");
            return log.fail("server", &why);
        }
    }
    let addr = server.peer_addr().ok();
    let offered: Vec<Vec<u8>> = negotiated.iter().cloned().collect();
    let connector = TlsConnector::from(upstream.config(&offered));
    let connecting = connector.connect(upstream.verify_host.clone(), server);
    let server = match timeout(ctx.backend.timeouts.connect, connecting).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            if is_verify_failure(&e) {
                ctx.backend
                    .verify_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let addr = addr.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
            let why = describe_failure(addr, &e);
            tracing::warn!(backend = %ctx.backend.name, client = %ctx.peer, "{why}");
            global().handshake_failure(HandshakeFailure::Upstream);
            return log.fail("server", &why);
        }
        Err(_) => {
            global().handshake_failure(HandshakeFailure::Upstream);
            return log.fail("server", "TLS handshake with the server timed out");
        }
    };
    let chosen = server.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    // A server that does not do ALPN speaks HTTP/1.1 (RFC 7301 §3.2 leaves
    // the default to the application; for HTTPS it is HTTP/1.1).
    let agreed = |wanted: &Vec<u8>| match &chosen {
        Some(c) => c == wanted,
        None => wanted == b"http/1.1",
    };
    if let Some(wanted) = negotiated.filter(|w| !agreed(w)) {
        global().handshake_failure(HandshakeFailure::Upstream);
        let why = format!(
            "the server did not accept ALPN {} that the client negotiated (it chose {})",
            String::from_utf8_lossy(&wanted),
            chosen.map_or("none".into(), |c| String::from_utf8_lossy(&c).into_owned())
        );
        tracing::warn!(backend = %ctx.backend.name, client = %ctx.peer, "{why}");
        return log.fail("server", &why);
    }
    let outcome = relay::relay_streams(client, server, deadlines, ctx.removed).await;
    log.relayed(&outcome);
}

/// The log line of a connection refused for want of buffer memory.
pub(super) const BUDGET_REACHED: &str =
    "buffer memory budget reached (buffer_memory): new connection refused";

/// Completes the client's handshake (the preread bytes replayed first) with
/// the certificate chosen by SNI, offering the crt-list line's ALPN, or
/// `fallback` when the line names none; a client whose protocols meet none
/// of those is served without ALPN. The listener's settings are let go
/// once it is done. Returns the stream and the certificate it presented.
pub(super) async fn accept(
    client: TcpStream,
    hello: Vec<u8>,
    tls: Arc<ServerSide>,
    handshake_timeout: Duration,
    fallback: &[&[u8]],
    log: &mut AccessLog,
) -> Option<(tokio_rustls::server::TlsStream<Replay>, Arc<Served>)> {
    let Some(cert) = tls.certificate(log.sni()).cloned() else {
        global().handshake_failure(HandshakeFailure::NoCertificate);
        log.fail("switchyard", "no certificate for this SNI (strict_sni)");
        return None;
    };
    // The TLS buffers are new work: within the budget or not at all.
    let Some(charge) =
        crate::model::limits::budget::global().admit(crate::model::limits::budget::TLS_CONNECTION)
    else {
        log.fail("switchyard", BUDGET_REACHED);
        return None;
    };
    let deadline = Instant::now() + handshake_timeout;
    let acceptor = LazyConfigAcceptor::new(
        rustls::server::Acceptor::default(),
        Replay::new(hello, client, charge),
    );
    let start = match timeout_at(deadline, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            let why = format!("TLS handshake failed: {e}");
            client_failure(log, HandshakeFailure::Client, &why);
            return None;
        }
        Err(_) => {
            client_failure(log, HandshakeFailure::Timeout, "TLS handshake timed out");
            return None;
        }
    };
    let alpn = if cert.alpn.is_empty() {
        fallback.iter().map(|p| p.to_vec()).collect()
    } else {
        cert.alpn.clone()
    };
    // A client offering only protocols this side does not speak (`curl
    // --http1.0` offers http/1.0) is served without ALPN, as HAProxy and
    // nginx serve it, rather than refused with no_application_protocol.
    let disjoint = start
        .client_hello()
        .alpn()
        .is_some_and(|mut offered| !offered.any(|p| alpn.iter().any(|a| a.as_slice() == p)));
    let alpn = if disjoint { Vec::new() } else { alpn };
    let stream = handshake(start, &tls, &cert, alpn, deadline, log).await?;
    Some((stream, cert))
}

/// Completes the client handshake presenting `cert` and offering `alpn`.
async fn handshake(
    start: StartHandshake<Replay>,
    tls: &ServerSide,
    cert: &Served,
    alpn: Vec<Vec<u8>>,
    deadline: Instant,
    log: &mut AccessLog,
) -> Option<tokio_rustls::server::TlsStream<Replay>> {
    match timeout_at(deadline, start.into_stream(tls.config(cert, alpn))).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            client_failure(
                log,
                HandshakeFailure::Client,
                &format!("TLS handshake failed: {e}"),
            );
            None
        }
        Err(_) => {
            client_failure(log, HandshakeFailure::Timeout, "TLS handshake timed out");
            None
        }
    }
}

fn client_failure(log: &mut AccessLog, why: HandshakeFailure, text: &str) {
    global().handshake_failure(why);
    let by = if why == HandshakeFailure::Timeout {
        "switchyard"
    } else {
        "client"
    };
    log.fail(by, text);
}

/// The client socket with the preread bytes put back in front: reads
/// return `prefix` first, then the socket; writes go to the socket. It
/// holds the connection's charge against the buffer budget.
pub(super) struct Replay {
    prefix: Vec<u8>,
    /// How much of `prefix` has been read.
    pos: usize,
    inner: TcpStream,
    _charge: crate::model::limits::budget::Charge,
}

impl Replay {
    fn new(
        prefix: Vec<u8>,
        inner: TcpStream,
        charge: crate::model::limits::budget::Charge,
    ) -> Self {
        Replay {
            prefix,
            pos: 0,
            inner,
            _charge: charge,
        }
    }

    /// The client's socket.
    pub(super) fn socket(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new(); // replayed: free it
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
