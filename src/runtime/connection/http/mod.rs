//! HTTP mode for edge and re-encrypt backends with `mode = "http"`: after
//! the TLS handshake the connection is served as HTTP/1.1 (hyper), and each
//! request is routed on its own by Host and path (`Snapshot::decide_request`
//! against the configuration current when the request arrives, so a map
//! edit applies to the next request of an open connection), balanced over
//! the backend's servers and forwarded with `X-Forwarded-*` and `Forwarded`
//! headers. A request that no line routes gets a 503 page.
//!
//! Server connections are kept alive in a small pool per server (in its
//! carried state), tagged with the TLS identity they were verified under.
//!
//! Clients speak h2 or HTTP/1.1 (ALPN offers `h2,http/1.1` unless the
//! crt-list line names its own list); servers are spoken to in HTTP/1.1,
//! or in h2 when a re-encrypt server chooses it by ALPN (one connection per
//! server, shared by every request).
//! HTTP/1.1 upgrades (WebSocket) become a tunnel after the server's 101,
//! under the backend's tunnel timeout; `Upgrade: h2c` is never passed on.

mod conn;
mod cookies;
mod dial;
mod forward;
mod h1;
mod headers;
mod log;
mod pages;
mod pool;
mod route;
mod upgrade;
mod upload;

pub(crate) use cookies::take_cookie;
pub(crate) use headers::forwardable;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use self::conn::{Activity, Busy, Conn, Deadline, Due, Moved, Watched};
use self::h1::Ended;
use self::headers::{client_certificate_headers, ThisSide};
use self::log::Answer;
use self::pool::Returning;
use crate::model::backend::{Backend, Timeouts};
use crate::runtime::access_log::AccessLog;
use crate::runtime::connection::terminate;
use crate::runtime::shared::Shared;
use crate::tls::ServerSide;

/// Request heads (h1 buffer, h2 header list) are bounded by this.
const MAX_HEAD: u32 = 32 * 1024;

/// hyper's HTTP/1.1 buffers (its read bound, and how much response it
/// queues for writing), on both sides: above `MAX_HEAD`, which is checked
/// per request.
const MAX_BUF: usize = 64 * 1024;

/// Concurrent streams one h2 client may open.
const H2_MAX_STREAMS: u32 = 128;

/// h2: a PING after this much silence, and the connection closes if the
/// answer takes longer than the timeout (dead peers do not pin streams).
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What the router answers with: a server's response, or its own page.
type Body = Either<Returning, Full<Bytes>>;

/// Drives an h2 connection to its end; when the router starts draining,
/// asks it to shut down gracefully (in-flight streams finish after a
/// GOAWAY) and goes on driving it. (HTTP/1.1 connections: [`h1`].)
///
/// A connection idle past `http_keep_alive_timeout` is sent GOAWAY. A
/// client that reads none of its responses for `client_timeout` is closed
/// outright.
///
/// The stream comes boxed, as for [`h1::serve`]: moved into hyper's
/// connection, it would otherwise be held twice.
async fn serve_h2<S>(io: Box<S>, conn: &Arc<Conn>, log: &mut AccessLog) -> Ended
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut drain = conn.shared.draining();
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEAD)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .serve_connection(watched(io, conn), service(conn));
    tokio::pin!(connection);
    let mut asked = *drain.borrow();
    if asked {
        connection.as_mut().graceful_shutdown();
    }
    let deadline = Deadline::new(conn, false);
    tokio::pin!(deadline);
    let mut expired = false;
    loop {
        tokio::select! {
            // The connection first: the deadline reads what it did.
            biased;
            done = connection.as_mut() => {
                // After an expiry the reason is already logged.
                return match done {
                    _ if expired => Ended::Expired,
                    Ok(()) => Ended::Closed,
                    Err(e) => Ended::Failed(e),
                };
            }
            changed = drain.wait_for(|d| *d), if !asked => {
                asked = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
            due = deadline.as_mut(), if !expired => {
                let Due::Close(why, hard) = due else { continue };
                expired = true;
                log.end("client", &format!("closed: {why}"));
                if hard {
                    return Ended::Expired;
                }
                asked = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What requests of one connection are routed with.
pub(super) struct Routing {
    pub(crate) shared: Arc<Shared>,
    /// The listener's traffic counters (each request's bytes).
    pub(crate) frontend: Arc<crate::model::counters::Traffic>,
    /// The listener's default backend, if it serves HTTP.
    pub(crate) fallback: Option<Arc<Backend>>,
    pub(crate) peer: SocketAddr,
    /// `http_request_timeout` and `http_keep_alive_timeout` of the backend
    /// the SNI chose, else of `[defaults]`.
    pub(crate) timeouts: Timeouts,
    /// The client's JA4 fingerprint (TLS listeners), for each request's
    /// backend's `deny_ja4`.
    pub(crate) ja4: Option<crate::model::wire::client_hello::Ja4>,
}

/// A connection for HTTP mode, as the first stage hands it on: the
/// client's stream, what its requests are routed with, and its TLS side
/// (none on a plain-HTTP listener).
pub(super) struct Start {
    client: TcpStream,
    routing: Routing,
    side: Side,
}

enum Side {
    /// A plain-HTTP listener: https redirects go to this port.
    Plain { https_port: u16 },
    /// TLS is terminated first, with this ClientHello read ahead.
    Tls {
        hello: Vec<u8>,
        tls: Arc<ServerSide>,
        handshake_timeout: Duration,
    },
}

/// The HTTP stage of a connection's task: it owns the connection's log
/// and gives it back at the end.
pub(super) type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = AccessLog> + Send>>;

impl Start {
    /// A connection on a plain-HTTP listener.
    pub(super) fn plain(client: TcpStream, routing: Routing, https_port: u16) -> Self {
        let side = Side::Plain { https_port };
        Start {
            client,
            routing,
            side,
        }
    }

    /// A TLS connection whose ClientHello (`hello`) chose HTTP mode.
    pub(super) fn tls(
        client: TcpStream,
        routing: Routing,
        hello: Vec<u8>,
        tls: Arc<ServerSide>,
        handshake_timeout: Duration,
    ) -> Self {
        let side = Side::Tls {
            hello,
            tls,
            handshake_timeout,
        };
        Start {
            client,
            routing,
            side,
        }
    }

    /// The connection served to its end, holding `held` (its per-source
    /// places) until then.
    pub(super) fn serving<H: Send + 'static>(self, log: AccessLog, held: H) -> Serving {
        let Start {
            client,
            routing,
            side,
        } = self;
        match side {
            Side::Plain { https_port } => {
                Box::pin(serve_plain(client, routing, https_port, log, held))
            }
            Side::Tls {
                hello,
                tls,
                handshake_timeout,
            } => Box::pin(serve(
                client,
                (hello, tls, handshake_timeout),
                routing,
                log,
                held,
            )),
        }
    }
}

/// Terminates TLS, then serves requests until the client is done.
async fn serve<H>(
    client: TcpStream,
    (hello, tls, handshake_timeout): (Vec<u8>, Arc<ServerSide>, Duration),
    routing: Routing,
    mut record: AccessLog,
    _held: H,
) -> AccessLog {
    let log = &mut record;
    let local_port = client.local_addr().map_or(443, |a| a.port());
    let offer: [&[u8]; 2] = [b"h2", b"http/1.1"];
    let certs = Arc::clone(&tls.certs);
    // Boxed, as are the stream and the h2 path: this future lives as long
    // as the connection, and would otherwise keep room for the handshake's
    // state and the stream (and an HTTP/1.1 connection for h2's) all that
    // time.
    let accepting = async {
        let accepted = terminate::accept(client, hello, tls, handshake_timeout, &offer, log);
        let (stream, served) = accepted.await?;
        Some((Box::new(stream), served))
    };
    let Some((stream, served)) = Box::pin(accepting).await else {
        return record;
    };
    let session = stream.get_ref().1;
    let h2 = session.alpn_protocol() == Some(b"h2");
    let client_certificate = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| client_certificate_headers(leaf))
        .unwrap_or_default();
    let Routing {
        shared,
        frontend,
        fallback,
        peer,
        timeouts,
        ja4,
    } = routing;
    let conn = Arc::new(Conn {
        shared,
        peer,
        this_side: ThisSide::new(peer, local_port),
        sni: log.sni().map(Into::into),
        ja4,
        h2,
        tls: Some((certs, served)),
        https_port: 443,
        client_certificate,
        fallback,
        tunnels: Default::default(),
        upgraded: Default::default(),
        timeouts,
        activity: Activity::new(),
        moved: Moved::default(),
        frontend,
    });
    let served = if h2 {
        Box::pin(serve_h2(stream, &conn, log)).await
    } else {
        h1::serve(Watched::new(stream, &conn), &conn, log).await
    };
    ended(&conn, served, log).await;
    record
}

/// A plain-HTTP listener (port 80): requests are redirected to https by
/// `os_route_http_redirect.map` or routed by `os_http_be.map`.
async fn serve_plain<H>(
    client: TcpStream,
    routing: Routing,
    https_port: u16,
    mut record: AccessLog,
    _held: H,
) -> AccessLog {
    let log = &mut record;
    let Routing {
        shared,
        frontend,
        peer,
        timeouts,
        ..
    } = routing;
    let Some(_charge) =
        crate::model::limits::budget::global().admit(crate::model::limits::budget::HTTP_CONNECTION)
    else {
        log.fail("switchyard", terminate::BUDGET_REACHED);
        return record;
    };
    let local_port = client.local_addr().map_or(80, |a| a.port());
    let conn = Arc::new(Conn {
        shared,
        peer,
        this_side: ThisSide::new(peer, local_port),
        sni: None,
        ja4: None,
        h2: false,
        tls: None,
        https_port,
        client_certificate: Vec::new(),
        fallback: None,
        tunnels: Default::default(),
        upgraded: Default::default(),
        timeouts,
        activity: Activity::new(),
        moved: Moved::default(),
        frontend,
    });
    let served = h1::serve(Watched::new(Box::new(client), &conn), &conn, log).await;
    ended(&conn, served, log).await;
    record
}

/// An h2 client stream that tells `conn` when writes stop moving.
fn watched<S>(io: S, conn: &Arc<Conn>) -> TokioIo<Watched<S>> {
    TokioIo::new(Watched::new(io, conn))
}

/// Each request of `conn`, counted from its head to the end of its
/// response, routed and answered.
fn service(
    conn: &Arc<Conn>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Answer>,
    Error = Infallible,
    Future = Answering,
> + Clone {
    let conn = Arc::clone(conn);
    hyper::service::service_fn(move |req| {
        let conn = Arc::clone(&conn);
        Box::pin(async move {
            let busy = Busy::new(&conn);
            let (response, record) = conn.route(req).await;
            Ok::<_, Infallible>(response.map(|body| Answer { body, record, busy }))
        }) as Answering
    })
}

/// One request's routing and forwarding, boxed: hyper keeps room for the
/// future of the request in flight for as long as an HTTP/1.1 connection
/// lives, so an idle connection holds a pointer, not the whole state of
/// routing, dialing and forwarding.
type Answering = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<hyper::Response<Answer>, Infallible>> + Send>,
>;

/// After the client connection: its tunnels waited for, its end logged.
async fn ended(conn: &Conn, served: Ended, log: &mut AccessLog) {
    conn.join_tunnels().await;
    let (bytes_in, bytes_out) = conn.moved.get();
    log.served_http(bytes_in, bytes_out);
    match served {
        Ended::Closed => log.end("client", "closed (HTTP mode)"),
        Ended::Failed(e) => {
            conn.refused(&e);
            log.end("client", &format!("HTTP connection ended: {e}"))
        }
        Ended::Broke(e) => log.end("client", &format!("HTTP connection ended: {e}")),
        Ended::Expired => {}
    }
}
