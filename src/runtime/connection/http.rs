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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::upload::{Upload, UploadEnd};
use super::{connect_one, terminate};
use crate::model::backend::{ActiveGuard, Backend, Forwarded, Timeouts, Unavailable};
use crate::model::decide::PlainDecision;
use crate::runtime::access_log::AccessLog;
use crate::runtime::shared::Shared;
use crate::tls::{CertStore, Served, ServerSide};

/// Request heads (h1 buffer, h2 header list) are bounded by this.
const MAX_HEAD: u32 = 32 * 1024;
/// hyper's HTTP/1.1 buffers (its read bound, and how much response it
/// queues for writing): above `MAX_HEAD`, which is checked per request.
const MAX_BUF: usize = 64 * 1024;
/// Concurrent streams one h2 client may open.
const H2_MAX_STREAMS: u32 = 128;
/// Pooled connections one request may find closed under it before it gets
/// 503 (a close racing the request; connections whose server already
/// closed them are skipped by the pool itself).
const MAX_STALE: usize = 64;
/// h2: a PING after this much silence, and the connection closes if the
/// answer takes longer than the timeout (dead peers do not pin streams).
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle server connections older than this are not reused.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// What the router answers with: a server's response, or its own page.
type Body = Either<Returning, Full<Bytes>>;

/// A server's response body that gives its connection back to the pool
/// when it has been read through (no task per request for that). A body
/// dropped before its end takes the connection with it: what is left of
/// it on the wire would otherwise be read as the next response.
struct Returning {
    body: Incoming,
    back: Option<PoolReturn>,
}

/// A server connection on its way back to the pool, holding its place in
/// the server's active count until then.
struct PoolReturn {
    /// An HTTP/1.1 connection to put back; h2 ones stay shared meanwhile.
    sender: Option<hyper::client::conn::http1::SendRequest<Upload>>,
    state: Arc<crate::model::backend::ServerState>,
    tls: u64,
    active: ActiveGuard,
}

impl PoolReturn {
    fn put(self) {
        let PoolReturn {
            sender,
            state,
            tls,
            active,
        } = self;
        let Some(sender) = sender else {
            return;
        };
        if sender.is_ready() {
            state.idle().put(tls, sender);
            drop(active);
            return;
        }
        // The connection's own task has not yet seen the end of the
        // exchange: wait for it to become ready (or closed).
        let mut sender = sender;
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                state.idle().put(tls, sender);
            }
            drop(active);
        });
    }
}

impl Returning {
    fn new(body: Incoming, back: Option<PoolReturn>) -> Self {
        Returning { body, back }
    }
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => this.back.take().map_or((), PoolReturn::put),
            std::task::Poll::Ready(Some(Err(_))) => this.back = None,
            std::task::Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => {
                this.back.take().map_or((), PoolReturn::put)
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // A body with nothing in it (204, HEAD, an empty 200) is never
        // polled: it has been read through all the same.
        if hyper::body::Body::is_end_stream(&self.body) {
            if let Some(back) = self.back.take() {
                back.put();
            }
        }
    }
}

/// One client connection in HTTP mode.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// How the forwarded headers name the client and the port it came to,
    /// formatted once per connection.
    this_side: ThisSide,
    sni: Option<Box<str>>,
    /// The client speaks h2 (`X-Forwarded-Proto-Version`).
    h2: bool,
    /// TLS connections: the listener's certificates and the one this
    /// connection presented (a request for a host another certificate
    /// serves gets 421). `None` on a plain-HTTP listener.
    tls: Option<(Arc<CertStore>, Arc<Served>)>,
    /// Plain HTTP: the port redirects to https name (443 is left out).
    https_port: u16,
    /// `X-SSL-*` headers describing the client's certificate (mTLS
    /// listeners), the same for every request of the connection.
    client_certificate: Vec<(HeaderName, HeaderValue)>,
    /// The listener's default backend, if it serves HTTP: requests no map
    /// line routes go there instead of getting 503.
    fallback: Option<Arc<Backend>>,
    /// Upgraded requests relayed as tunnels: the connection's task waits
    /// for them, so they keep its slot and count, and drain waits for them.
    tunnels: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// `http_request_timeout` and `http_keep_alive_timeout` apply to the
    /// client side; the server-side ones are each request's backend's.
    timeouts: Timeouts,
    /// Requests in flight and when the connection last went idle.
    activity: Activity,
}

/// What the connection is doing, for its idle and request-head deadlines.
/// Times are milliseconds since `epoch`.
struct Activity {
    epoch: Instant,
    /// Requests received and not yet answered to the end of their body.
    in_flight: std::sync::atomic::AtomicUsize,
    /// When the last request ended (or the connection began).
    idle_since: std::sync::atomic::AtomicU64,
    /// HTTP/1.1: when bytes of the next request head began to arrive on an
    /// idle connection (0: none yet).
    head_since: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            in_flight: Default::default(),
            idle_since: Default::default(),
            head_since: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        // Never 0 once started, so 0 can mean "not yet".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    /// Bytes arrived from the client (HTTP/1.1 connections only).
    fn bytes_arrived(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.now(), Relaxed);
        }
    }

    /// When the connection is to be closed if nothing changes, and why.
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, &'static str)> {
        use std::sync::atomic::Ordering::Relaxed;
        // Acquire: pairs with the release in `Busy::drop`, so a count of
        // zero comes with the `idle_since` stored before it.
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_since.load(Relaxed) {
            0 => Some((
                self.at(self.idle_since.load(Relaxed)) + timeouts.http_keep_alive,
                "idle longer than http_keep_alive_timeout",
            )),
            head => Some((
                self.at(head) + timeouts.http_request,
                "request head not received within http_request_timeout",
            )),
        }
    }
}

/// One request in flight: counted from its head until its response body
/// has been sent (or dropped).
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        conn.activity.in_flight.fetch_add(1, Relaxed);
        conn.activity.head_since.store(0, Relaxed);
        Busy(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let activity = &self.0.activity;
        activity.idle_since.store(activity.now(), Relaxed);
        activity
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
}

/// A response on its way to the client, keeping its request counted; its
/// access-log line is written when it has been sent (or dropped).
struct Answer {
    body: Body,
    record: Record,
    busy: Busy,
}

/// What the access log says of one request.
struct Record {
    method: hyper::Method,
    host: Option<String>,
    path: String,
    status: StatusCode,
    served: Option<(Arc<Backend>, Option<usize>)>,
    started: Instant,
    /// Until the response head was ready.
    head: Duration,
    /// Response body bytes sent.
    bytes: u64,
}

impl Drop for Answer {
    fn drop(&mut self) {
        let conn = &self.busy.0;
        let r = &self.record;
        let backend = r.served.as_ref();
        let server = backend.and_then(|(b, i)| i.and_then(|i| b.servers.get(i)));
        conn.log(r, backend.map(|(b, _)| b.name.as_str()), server);
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.record.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The client's stream on an HTTP/1.1 connection: notes when the bytes of
/// a request head begin to arrive on an idle connection.
struct Watched<S> {
    io: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.activity.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Resolves when the connection has been idle, or taken too long over a
/// request head, past its deadline (re-read at every wake of the task).
struct Deadline<'a> {
    conn: &'a Conn,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<'a> Deadline<'a> {
    fn new(conn: &'a Conn) -> Self {
        let far = Instant::now() + conn.timeouts.http_keep_alive;
        Deadline {
            conn,
            timer: Box::pin(tokio::time::sleep_until(far)),
        }
    }
}

impl std::future::Future for Deadline<'_> {
    type Output = &'static str;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<&'static str> {
        // Polled at every wake of the connection's task: no clock read and
        // no timer reset unless the deadline moved.
        let conn = self.conn;
        let Some((at, why)) = conn.activity.deadline(&conn.timeouts) else {
            // Busy: look again a keep-alive period from now.
            while self.timer.as_mut().poll(cx).is_ready() {
                let later = Instant::now() + conn.timeouts.http_keep_alive;
                self.timer.as_mut().reset(later);
            }
            return std::task::Poll::Pending;
        };
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        match self.timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(why),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl Conn {
    /// Waits for the tunnels this connection's upgrades became.
    async fn join_tunnels(&self) {
        let tunnels: Vec<_> = self
            .tunnels
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for tunnel in tunnels {
            let _ = tunnel.await;
        }
    }
}

/// Drives a hyper connection to its end; when the router starts draining,
/// asks it to shut down gracefully (in-flight requests finish, HTTP/1.1
/// answers `Connection: close`, h2 sends GOAWAY) and goes on driving it.
///
/// A connection idle past `http_keep_alive_timeout`, or slower than
/// `http_request_timeout` over a request head, is closed: HTTP/1.1 at once
/// (there is nothing in flight), h2 with GOAWAY.
macro_rules! until_drained {
    ($connection:expr, $drain:expr, $conn:expr, $log:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        let mut asked = *$drain.borrow();
        if asked {
            connection.as_mut().graceful_shutdown();
        }
        let deadline = Deadline::new($conn);
        tokio::pin!(deadline);
        let mut expired = false;
        loop {
            tokio::select! {
                // The connection first: the deadline reads what it did.
                biased;
                // After an expiry the reason is already logged.
                done = connection.as_mut() => break (!expired).then_some(done),
                changed = $drain.wait_for(|d| *d), if !asked => {
                    asked = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
                why = deadline.as_mut(), if !expired => {
                    expired = true;
                    $log.end("client", &format!("closed: {why}"));
                    if $conn.h2 {
                        asked = true;
                        connection.as_mut().graceful_shutdown();
                    } else {
                        break None;
                    }
                }
            }
        }
    }};
}

/// What requests of one connection are routed with.
pub(super) struct Routing {
    pub shared: Arc<Shared>,
    /// The listener's default backend, if it serves HTTP.
    pub fallback: Option<Arc<Backend>>,
    pub peer: SocketAddr,
    /// `http_request_timeout` and `http_keep_alive_timeout` of the backend
    /// the SNI chose, else of `[defaults]`.
    pub timeouts: Timeouts,
}

/// Terminates TLS, then serves requests until the client is done.
pub(super) async fn serve(
    client: TcpStream,
    hello: Vec<u8>,
    tls: Arc<ServerSide>,
    handshake_timeout: Duration,
    routing: Routing,
    log: &mut AccessLog,
) {
    let Routing {
        shared,
        fallback,
        peer,
        timeouts,
    } = routing;
    let shared_drain = shared.draining();
    let local_port = client.local_addr().map_or(443, |a| a.port());
    let offer: [&[u8]; 2] = [b"h2", b"http/1.1"];
    let certs = Arc::clone(&tls.certs);
    let accepted = terminate::accept(client, hello, tls, handshake_timeout, &offer, log).await;
    let Some((stream, served)) = accepted else {
        return;
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let client_certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| client_certificate_headers(leaf))
        .unwrap_or_default();
    let conn = Arc::new(Conn {
        shared,
        peer,
        this_side: ThisSide::new(peer, local_port),
        sni: log.sni().map(Into::into),
        h2,
        tls: Some((certs, served)),
        https_port: 443,
        client_certificate,
        fallback,
        tunnels: Default::default(),
        timeouts,
        activity: Activity::new(),
    });
    let watched = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |req| {
        let conn = Arc::clone(&conn);
        async move {
            let busy = Busy::new(&conn);
            let (response, record) = conn.route(req).await;
            Ok::<_, Infallible>(response.map(|body| Answer { body, record, busy }))
        }
    });
    let mut drain = shared_drain;
    let served = if h2 {
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(MAX_HEAD)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        until_drained!(connection, drain, &watched, log)
    } else {
        let io = TokioIo::new(Watched {
            io: stream,
            conn: Arc::clone(&watched),
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(head_backstop(&timeouts))
            .max_buf_size(MAX_BUF)
            .serve_connection(io, service)
            .with_upgrades();
        until_drained!(connection, drain, &watched, log)
    };
    watched.join_tunnels().await;
    match served {
        Some(Ok(())) => log.end("client", "closed (HTTP mode)"),
        Some(Err(e)) => {
            watched.refused(&e);
            log.end("client", &format!("HTTP connection ended: {e}"))
        }
        None => {}
    }
}

/// hyper's own bound on reading a request head, which starts as soon as a
/// connection waits for its next request: a backstop only, above the
/// keep-alive and head deadlines the connection keeps itself.
fn head_backstop(timeouts: &Timeouts) -> Duration {
    timeouts.http_keep_alive + timeouts.http_request
}

/// A plain-HTTP listener (port 80): requests are redirected to https by
/// `os_route_http_redirect.map` or routed by `os_http_be.map`.
pub(super) async fn serve_plain(
    client: TcpStream,
    shared: Arc<Shared>,
    peer: SocketAddr,
    https_port: u16,
    timeouts: Timeouts,
    log: &mut AccessLog,
) {
    let Some(_charge) =
        crate::model::limits::budget::global().admit(crate::model::limits::budget::HTTP_CONNECTION)
    else {
        log.fail("switchyard", terminate::BUDGET_REACHED);
        return;
    };
    let local_port = client.local_addr().map_or(80, |a| a.port());
    let shared_drain = shared.draining();
    let conn = Arc::new(Conn {
        shared,
        peer,
        this_side: ThisSide::new(peer, local_port),
        sni: None,
        h2: false,
        tls: None,
        https_port,
        client_certificate: Vec::new(),
        fallback: None,
        tunnels: Default::default(),
        timeouts,
        activity: Activity::new(),
    });
    let watched = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |req| {
        let conn = Arc::clone(&conn);
        async move {
            let busy = Busy::new(&conn);
            let (response, record) = conn.route(req).await;
            Ok::<_, Infallible>(response.map(|body| Answer { body, record, busy }))
        }
    });
    let io = TokioIo::new(Watched {
        io: client,
        conn: Arc::clone(&watched),
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_backstop(&timeouts))
        .max_buf_size(MAX_BUF)
        .serve_connection(io, service)
        .with_upgrades();
    let mut drain = shared_drain;
    let served = until_drained!(connection, drain, &watched, log);
    watched.join_tunnels().await;
    match served {
        Some(Ok(())) => log.end("client", "closed (HTTP mode)"),
        Some(Err(e)) => {
            watched.refused(&e);
            log.end("client", &format!("HTTP connection ended: {e}"))
        }
        None => {}
    }
}

impl Conn {
    /// Routes, forwards and logs one request (one access-log line).
    async fn route(&self, req: Request<Incoming>) -> (Response<Body>, Record) {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let host = host_of(&req);
        let (response, served) = self.answer(req, host.as_deref(), &path).await;
        let status = response.status();
        if let Some((backend, server)) = &served {
            backend.traffic.response(status.as_u16());
            let server = server.and_then(|i| backend.servers.get(i));
            if let Some(s) = server {
                s.state.traffic.response(status.as_u16());
            }
        }
        let record = Record {
            method,
            host,
            path,
            status,
            served,
            started,
            head: started.elapsed(),
            bytes: 0,
        };
        (response, record)
    }

    /// The response to one request, and the backend (and server) that
    /// gave it, if one did.
    async fn answer(
        &self,
        req: Request<Incoming>,
        host: Option<&str>,
        path: &str,
    ) -> (Response<Body>, Option<(Arc<Backend>, Option<usize>)>) {
        // hyper bounds its read buffer, but a head that arrives whole in
        // one read is not measured: the bound is checked here too.
        if head_size(&req) > MAX_HEAD as usize {
            let text = "The request head is larger than this router accepts.";
            return (
                page(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "Request Header Fields Too Large",
                    text,
                ),
                None,
            );
        }
        if req.method() == hyper::Method::CONNECT {
            let text = "CONNECT is not proxied.";
            return (
                page(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", text),
                None,
            );
        }
        let Some(host) = host else {
            let text = "the request names no valid host, or more than one";
            return (page(StatusCode::BAD_REQUEST, "Bad Request", text), None);
        };
        if self.misdirected(host) {
            let text = "This connection was made for another name; retry on a new connection.";
            return (
                page(StatusCode::MISDIRECTED_REQUEST, "Misdirected Request", text),
                None,
            );
        }
        let snapshot = self.shared.snapshot();
        let decision = if self.tls.is_some() {
            snapshot.decide_request(host, path)
        } else {
            match snapshot.decide_plain_request(host, path) {
                Some(PlainDecision::Redirect) => return (self.redirect(host, &req), None),
                Some(PlainDecision::Route(decision)) => Some(decision),
                None => None,
            }
        };
        drop(snapshot);
        let backend = match (decision, &self.fallback) {
            (Some(decision), _) => decision.backend,
            (None, Some(fallback)) => Arc::clone(fallback),
            (None, None) => return (self.unavailable(), None),
        };
        if !backend.admits(self.peer.ip()) {
            let text = "This address may not use this application.";
            return (
                page(StatusCode::FORBIDDEN, "Forbidden", text),
                Some((backend, None)),
            );
        }
        if let Err(refusal) = backend.admit_request(self.peer.ip()) {
            let text = "Too many requests from this address; retry later.";
            let mut response = page(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", text);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(refusal.retry_after()),
            );
            return (response, Some((backend, None)));
        }
        let (response, server) = self.forward(&backend, host, req).await;
        (response, Some((backend, server)))
    }

    /// Whether `host` has a certificate of its own other than the one this
    /// connection presented: a browser that coalesced connections under a
    /// wildcard certificate must retry on a connection made for that name
    /// (RFC 9110 §15.5.20), so it never reaches another tenant's backend
    /// through this one. Hosts that would get the default certificate are
    /// routed (or get 503) as usual.
    fn misdirected(&self, host: &str) -> bool {
        let Some((certs, served)) = &self.tls else {
            return false;
        };
        let name = host_name(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        certs
            .find(Some(name))
            .is_some_and(|wanted| !Arc::ptr_eq(wanted, served))
    }

    /// `503`, with the configured page if there is one.
    fn unavailable(&self) -> Response<Body> {
        let mut response = unavailable();
        if let Some(page) = &self.shared.snapshot().http.error_page_503 {
            *response.body_mut() = Either::Right(Full::new(page.clone()));
        }
        response
    }

    /// `302` to the same host (without its port) and target over https.
    fn redirect(&self, host: &str, req: &Request<Incoming>) -> Response<Body> {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let port = match self.https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let location = format!("https://{}{port}{target}", host_name(host));
        let mut response = page(
            StatusCode::FOUND,
            "Found",
            "This site is served over https.",
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        response.headers_mut().remove(header::CONNECTION);
        response
    }

    /// Sends `req` to a server of `backend`, trying another after a failed
    /// connect (never after the request may have reached one).
    async fn forward(
        &self,
        backend: &Backend,
        host: &str,
        mut req: Request<Incoming>,
    ) -> (Response<Body>, Option<usize>) {
        // An HTTP/1.1 upgrade (WebSocket): passed on, and the connection
        // becomes a tunnel after the server's 101. Never h2c.
        let upgrade = if self.h2 {
            None
        } else {
            upgrade_of(req.headers())
        };
        let mut client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let hop = Hop {
            this_side: &self.this_side,
            host,
            proto: if self.tls.is_some() { "https" } else { "http" },
            h2: self.h2,
            client_certificate: &self.client_certificate,
        };
        // `te: trailers` is hop-by-hop, but h2 servers (gRPC) expect it
        // when the client sent it: it goes on again for those.
        let trailers = req
            .headers()
            .get(header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        prepare_request(&mut req, &hop, backend.forwarded);
        let (parts, body) = req.into_parts();
        let (body, upload) = Upload::new(body, self.timeouts.http_request);
        let mut req = Request::from_parts(parts, body);
        if let Some(protocol) = &upgrade {
            let headers = req.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        // Sticky cookie: the server it names while that one is up; the
        // cookie itself is the router's and not passed on.
        let sticky = backend.cookie.as_deref().map(|name| {
            let value = take_cookie(req.headers_mut(), name);
            (name, value)
        });
        let mut preferred = sticky
            .as_ref()
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| backend.server_for_cookie(v));
        let tls = backend.upstream().map_or(0, |u| u.fingerprint);
        let mut tried = Vec::new();
        let mut attempts = 0;
        // Stale pooled connections met on the way: bounded, as the pool is.
        let mut stale = 0;
        while attempts <= backend.retries && stale <= MAX_STALE {
            let (i, active) = match backend.take(self.peer.ip(), &tried, preferred.take()).await {
                Ok(taken) => taken,
                Err(Unavailable::NoServer) => break,
                Err(full) => {
                    tracing::info!(backend = %backend.name, client = %self.peer, "{full}");
                    break;
                }
            };
            let server = &backend.servers[i];
            // A pooled connection first; if it turns out closed before the
            // request was written, the request comes back and goes on a
            // new connection (never resent once it may have been read).
            let pooled = if upgrade.is_some() {
                None // a tunnel-to-be gets a connection of its own
            } else if backend.upstream().is_some() {
                let idle = server.state.idle();
                idle.shared_h2(tls)
                    .map(Sender::H2)
                    .or_else(|| idle.take(tls, POOL_IDLE).map(Sender::H1))
            } else {
                server.state.idle().take(tls, POOL_IDLE).map(Sender::H1)
            };
            let fresh = pooled.is_none();
            let mut sender = match pooled {
                Some(sender) => sender,
                // Boxed: connecting (TLS included) is the rare path, and
                // would otherwise more than double every request's future.
                None => match Box::pin(self.open(backend, server.addr, upgrade.is_none())).await {
                    Ok(Sender::H2(h2)) => {
                        server.state.idle().share_h2(tls, h2.clone());
                        Sender::H2(h2)
                    }
                    Ok(sender) => sender,
                    Err(e) => {
                        tracing::warn!(backend = %backend.name, server = %server.name, addr = %server.addr, client = %self.peer, "connect failed: {e}");
                        tried.push(i);
                        attempts += 1;
                        continue;
                    }
                },
            };
            if backend.upstream().is_some() {
                sender.fit(&mut req, host, trailers);
            }
            let sent_at = Instant::now();
            let sent = send(&mut sender, req, upload.as_deref(), backend.timeouts.server).await;
            if let Some(Ok(_)) = &sent {
                backend.traffic.response_time(sent_at.elapsed());
                server.state.traffic.response_time(sent_at.elapsed());
            }
            let response = match sent {
                Some(Ok(mut response))
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS
                        && client_side.is_some() =>
                {
                    let server_side = hyper::upgrade::on(&mut response);
                    let deadlines = crate::runtime::relay::Deadlines {
                        first_response: backend.timeouts.tunnel,
                        idle: backend.timeouts.tunnel,
                    };
                    if let Some(client_side) = client_side.take() {
                        let tunnel = tokio::spawn(async move {
                            let _active = active;
                            let _sender = sender;
                            if let (Ok(client), Ok(server)) = tokio::join!(client_side, server_side)
                            {
                                let (client, server) = (TokioIo::new(client), TokioIo::new(server));
                                crate::runtime::relay::relay_streams(
                                    client, server, deadlines, None,
                                )
                                .await;
                            }
                        });
                        if let Ok(mut tunnels) = self.tunnels.lock() {
                            tunnels.push(tunnel);
                        }
                    }
                    response.map(|body| Either::Left(Returning::new(body, None)))
                }
                Some(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    tracing::warn!(backend = %backend.name, server = %server.name, "101 to a request that asked for no upgrade");
                    page(
                        StatusCode::BAD_GATEWAY,
                        "Bad Gateway",
                        "the server switched protocols unasked",
                    )
                }
                Some(Ok(mut response)) => {
                    strip_hop_by_hop(response.headers_mut());
                    if let (Some(hsts), Some(_)) = (backend.hsts(), &self.tls) {
                        response
                            .headers_mut()
                            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
                    }
                    if let Some((name, given)) = &sticky {
                        if let Some(value) = backend.cookie_value(i) {
                            if given.as_deref() != Some(value) {
                                let tls = self.tls.is_some();
                                set_cookie(response.headers_mut(), name, value, tls);
                            }
                        }
                    }
                    // Back to the pool once this response is read through.
                    let back = PoolReturn {
                        sender: match sender {
                            Sender::H1(h1) => Some(h1),
                            Sender::H2(_) => None,
                        },
                        state: Arc::clone(&server.state),
                        tls,
                        active,
                    };
                    response.map(|body| Either::Left(Returning::new(body, Some(back))))
                }
                Some(Err(mut e)) => match e.take_message() {
                    Some(unsent) => {
                        // Not written: safe to send again. A stale pooled
                        // connection costs no attempt; a fresh one does.
                        req = unsent;
                        if fresh {
                            tried.push(i);
                            attempts += 1;
                        } else {
                            stale += 1;
                            preferred = Some(i);
                        }
                        continue;
                    }
                    None if upload.as_ref().is_some_and(|u| u.stalled()) => {
                        tracing::info!(backend = %backend.name, client = %self.peer, "request body stalled: {}", e.error());
                        page(
                            StatusCode::REQUEST_TIMEOUT,
                            "Request Timeout",
                            "the request body stopped arriving",
                        )
                    }
                    None if upload.as_ref().is_some_and(|u| u.client_failed()) => {
                        tracing::info!(backend = %backend.name, client = %self.peer, "request body broke off: {}", e.error());
                        page(
                            StatusCode::BAD_REQUEST,
                            "Bad Request",
                            "the request body broke off",
                        )
                    }
                    None => {
                        tracing::warn!(backend = %backend.name, server = %server.name, "request failed: {}", e.error());
                        page(
                            StatusCode::BAD_GATEWAY,
                            "Bad Gateway",
                            "the server did not answer",
                        )
                    }
                },
                None => page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Gateway Timeout",
                    "the server did not answer in time",
                ),
            };
            return (response, Some(i));
        }
        (self.unavailable(), None)
    }

    /// A new HTTP/1.1 connection to a server: plaintext for edge, TLS
    /// verified against `verify_host` for re-encrypt.
    async fn open(
        &self,
        backend: &Backend,
        addr: SocketAddr,
        may_h2: bool,
    ) -> Result<Sender, String> {
        let tcp = connect_one(addr, backend.timeouts.connect)
            .await
            .map_err(|e| e.to_string())?;
        let Some(upstream) = backend.upstream() else {
            return handshake(tcp, false).await;
        };
        let offer = if may_h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let config = upstream.config(&offer);
        let connecting = TlsConnector::from(config).connect(upstream.verify_host.clone(), tcp);
        let tls = tokio::time::timeout(backend.timeouts.connect, connecting)
            .await
            .map_err(|_| "TLS handshake with the server timed out".to_string())?
            .map_err(|e| crate::tls::upstream::describe_failure(addr, &e))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        handshake(tls, h2).await
    }

    /// The access-log line of a request hyper refused before it reached
    /// the router (it answered 400 or 431 itself and closed).
    fn refused(&self, e: &hyper::Error) {
        let status = if e.is_parse_too_large() {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        } else if e.is_parse() {
            StatusCode::BAD_REQUEST
        } else {
            return;
        };
        tracing::info!(
            target: "access",
            client = %self.peer,
            sni = self.sni.as_deref().unwrap_or("-"),
            proto = if self.h2 { "h2" } else { "http/1.1" },
            status = status.as_u16(),
            reason = %e,
            "request refused"
        );
    }

    fn log(
        &self,
        r: &Record,
        backend: Option<&str>,
        server: Option<&crate::model::backend::Server>,
    ) {
        // Formatted only when the access log is on.
        struct Named<'a>(Option<&'a crate::model::backend::Server>);
        impl std::fmt::Display for Named<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.0 {
                    Some(s) => write!(f, "{} {}", s.name, s.addr),
                    None => f.write_str("-"),
                }
            }
        }
        tracing::info!(
            target: "access",
            client = %self.peer,
            sni = self.sni.as_deref().unwrap_or("-"),
            proto = if self.h2 { "h2" } else { "http/1.1" },
            method = %r.method,
            host = r.host.as_deref().unwrap_or("-"),
            path = r.path,
            status = r.status.as_u16(),
            bytes = r.bytes,
            backend = backend.unwrap_or("-"),
            server = %Named(server),
            head_ms = r.head.as_millis() as u64,
            duration_ms = r.started.elapsed().as_millis() as u64,
            "request"
        );
    }
}

/// A connection to a server: HTTP/1.1 (one request at a time, pooled when
/// idle), or h2 when a re-encrypt server chose it (shared by all).
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Upload>),
    H2(crate::model::backend::H2Sender),
}

impl Sender {
    /// Puts `req` in the form this connection speaks: HTTP/1.1 with an
    /// origin-form target, or h2 with `:scheme` and `:authority` (the host
    /// the request was routed by).
    fn fit(&self, req: &mut Request<Upload>, host: &str, trailers: bool) {
        match self {
            Sender::H2(_) if trailers => {
                req.headers_mut()
                    .insert(header::TE, HeaderValue::from_static("trailers"));
            }
            _ => {
                req.headers_mut().remove(header::TE);
            }
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let target = match self {
            Sender::H1(_) if req.uri().authority().is_none() => None,
            Sender::H1(_) => Some(path.to_string()),
            Sender::H2(_) => Some(format!("https://{host}{path}")),
        };
        *req.version_mut() = match self {
            Sender::H1(_) => hyper::Version::HTTP_11,
            Sender::H2(_) => hyper::Version::HTTP_2,
        };
        if let Some(uri) = target.and_then(|t| t.parse::<Uri>().ok()) {
            *req.uri_mut() = uri;
        }
    }
}

/// Sends a request; the server timeout runs from the end of its body (a
/// slow upload is bounded by its own pauses, not by the server's answer).
/// While the body is on its way, a server that stops reading it for the
/// server timeout is given up on too. `None`: timed out.
async fn send(
    sender: &mut Sender,
    req: Request<Upload>,
    upload: Option<&UploadEnd>,
    server_timeout: Duration,
) -> Option<Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Upload>>>> {
    let sending = async {
        match sender {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        }
    };
    let Some(upload) = upload else {
        return tokio::time::timeout(server_timeout, sending).await.ok();
    };
    tokio::pin!(sending);
    let finished = upload.finished();
    tokio::pin!(finished);
    let mut seen = upload.progress();
    loop {
        tokio::select! {
            sent = &mut sending => return Some(sent),
            () = &mut finished => break,
            () = tokio::time::sleep(server_timeout) => {
                let now = upload.progress();
                if now == seen {
                    return None;
                }
                seen = now;
            }
        }
    }
    tokio::time::timeout(server_timeout, sending).await.ok()
}

async fn handshake<S>(stream: S, h2: bool) -> Result<Sender, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            // A shared connection is found dead while idle too, not by the
            // requests that would wait on it.
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        return Ok(Sender::H2(sender));
    }
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(Sender::H1(sender))
}

/// About the size of a request head as an HTTP/1.1 client sends it.
fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri
            .authority()
            .map_or(0, |a| a.as_str().len() + "https://".len());
    let line = req.method().as_str().len() + target + " HTTP/1.1\r\n ".len();
    req.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

/// The request's host, lowercased, with its port if it has one: the
/// authority of an absolute-form target, else `Host` (RFC 9112 §3.2.2).
/// `None` when it has none, more than one `Host`, or one that is not a
/// host name or bracketed IPv6 address with an optional port: nothing
/// else may reach the route key or the forwarded headers.
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            let host = hosts.next()?.to_str().ok()?.to_string();
            if hosts.next().is_some() {
                return None;
            }
            host
        }
    };
    let authority = authority.trim().to_ascii_lowercase();
    valid_authority(&authority).then_some(authority)
}

/// `name[:port]` or `[v6]:port`: letters, digits, `-`, `_`, `.` in a name.
fn valid_authority(authority: &str) -> bool {
    let (name, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => {
                if v6.is_empty()
                    || !v6
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                ("v6", port)
            }
            None => return false,
        },
        None => match authority.find(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        },
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let port_ok = match port.strip_prefix(':') {
        Some(digits) => {
            !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit())
        }
        None => port.is_empty(),
    };
    name_ok && port_ok
}

/// The head a request is forwarded with, as the request path prepares it:
/// its host (`None`: refused with 400), then the target in origin form,
/// hop-by-hop headers out, `Host` and the forwarded headers set under
/// `policy`, as from `client` over TLS. The fuzz target
/// (`fuzzing::http_request`) checks its invariants on arbitrary heads.
pub(crate) fn forwardable<B>(
    req: &mut Request<B>,
    client: SocketAddr,
    h2: bool,
    policy: Forwarded,
) -> Option<String> {
    let host = host_of(req)?;
    let this_side = ThisSide::new(client, 443);
    let hop = Hop {
        this_side: &this_side,
        host: &host,
        proto: "https",
        h2,
        client_certificate: &[],
    };
    prepare_request(req, &hop, policy);
    Some(host)
}

/// Origin-form target, `Host`, forwarded headers, no hop-by-hop headers.
fn prepare_request<B>(req: &mut Request<B>, hop: &Hop<'_>, policy: Forwarded) {
    // Servers are spoken to in HTTP/1.1, whatever the client speaks.
    *req.version_mut() = hyper::Version::HTTP_11;
    if req.uri().authority().is_some() {
        let origin = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if let Ok(uri) = origin.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    // h2 clients may split `cookie` into one field per pair; an HTTP/1.1
    // server expects one line (RFC 9113 §8.2.3).
    if hop.h2 {
        join_cookies(headers);
    }
    // X-SSL-* describe the client's certificate: only the router says so.
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-ssl"))
        .cloned()
        .collect();
    for name in claimed {
        headers.remove(name);
    }
    for (name, value) in hop.client_certificate {
        headers.insert(name.clone(), value.clone());
    }
    // The server sees the host the request was routed by (RFC 9112
    // §3.2.2: an absolute-form target or h2 :authority wins over Host).
    if let Ok(v) = HeaderValue::from_str(hop.host) {
        headers.insert(header::HOST, v);
    }
    forwarded_headers(headers, hop, policy);
}

/// The parts of the forwarded headers that are the same for every request
/// of a connection.
struct ThisSide {
    /// The client's address (`X-Forwarded-For`).
    client: HeaderValue,
    /// The client as a `Forwarded` node (IPv6 quoted and bracketed).
    node: Box<str>,
    /// The port the client connected to (`X-Forwarded-Port`).
    port: HeaderValue,
}

impl ThisSide {
    fn new(peer: SocketAddr, local_port: u16) -> Self {
        let ip = peer.ip().to_canonical();
        let client = ip.to_string();
        let node = if ip.is_ipv6() {
            format!("\"[{client}]\"")
        } else {
            client.clone()
        };
        ThisSide {
            client: HeaderValue::from_str(&client).unwrap_or(HeaderValue::from_static("unknown")),
            node: node.into(),
            port: HeaderValue::from(local_port),
        }
    }
}

/// Several `cookie` fields as one, joined by "; ".
fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for field in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(field.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// What the forwarded headers say about one hop.
struct Hop<'a> {
    this_side: &'a ThisSide,
    host: &'a str,
    proto: &'static str,
    h2: bool,
    client_certificate: &'a [(HeaderName, HeaderValue)],
}

/// `X-Forwarded-For/-Host/-Port/-Proto/-Proto-Version` and `Forwarded`,
/// under the backend's policy: `append` adds this hop to what the client
/// sent (and sets the others), `replace` sends only this hop, `if-none`
/// sets each header the client did not send, `never` leaves them as sent.
fn forwarded_headers(headers: &mut HeaderMap, hop: &Hop<'_>, policy: Forwarded) {
    if policy == Forwarded::Never {
        return;
    }
    let side = hop.this_side;
    // RFC 7239: a host with a port or brackets is a quoted-string.
    let this_hop = format!(
        "for={};host=\"{}\";proto={}",
        side.node, hop.host, hop.proto
    );
    let joined = |headers: &HeaderMap, name: &str, ours: &str| -> Option<String> {
        let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        let mut all = String::from(first);
        for v in values {
            all.push_str(", ");
            all.push_str(v);
        }
        all.push_str(", ");
        all.push_str(ours);
        Some(all)
    };
    let set = |headers: &mut HeaderMap, name: &'static str, value: HeaderValue| {
        if policy != Forwarded::IfNone || !headers.contains_key(name) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    let text = |value: &str| HeaderValue::from_str(value).ok();
    if let Some(host) = text(hop.host) {
        set(headers, "x-forwarded-host", host);
    }
    set(headers, "x-forwarded-port", side.port.clone());
    set(
        headers,
        "x-forwarded-proto",
        HeaderValue::from_static(hop.proto),
    );
    if hop.h2 {
        set(
            headers,
            "x-forwarded-proto-version",
            HeaderValue::from_static("h2"),
        );
    } else if policy != Forwarded::IfNone {
        headers.remove("x-forwarded-proto-version");
    }
    let client = side.client.to_str().unwrap_or("unknown");
    let (xff, fwd) = match policy {
        Forwarded::Append => (
            joined(headers, "x-forwarded-for", client).and_then(|v| text(&v)),
            joined(headers, "forwarded", &this_hop).map_or_else(|| text(&this_hop), |v| text(&v)),
        ),
        _ => (None, text(&this_hop)),
    };
    set(
        headers,
        "x-forwarded-for",
        xff.unwrap_or_else(|| side.client.clone()),
    );
    if let Some(fwd) = fwd {
        set(headers, "forwarded", fwd);
    }
}

/// The `X-SSL-*` headers the reference router sends for a verified client
/// certificate (values quoted as its `%{+Q}` does): verify result, SHA-1,
/// subject and CN, issuer, validity, and the DER in base64.
fn client_certificate_headers(leaf: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
    use base64::Engine;
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let sha1: String = sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let der = base64::engine::general_purpose::STANDARD.encode(leaf);
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut headers = vec![
        ("x-ssl", "1".to_string()),
        ("x-ssl-client-verify", "0".to_string()),
        ("x-ssl-client-sha1", quoted(&sha1)),
        ("x-ssl-client-der", quoted(&der)),
    ];
    if let Some(d) = crate::tls::x509::describe(leaf) {
        headers.push(("x-ssl-client-dn", quoted(&d.subject)));
        headers.push((
            "x-ssl-client-cn",
            quoted(d.common_name.as_deref().unwrap_or("")),
        ));
        headers.push(("x-ssl-issuer", quoted(&d.issuer)));
        headers.push(("x-ssl-client-notbefore", quoted(&d.not_before)));
        headers.push(("x-ssl-client-notafter", quoted(&d.not_after)));
    }
    headers
        .into_iter()
        .filter_map(|(name, value)| {
            let value = HeaderValue::from_bytes(value.as_bytes()).ok()?;
            Some((HeaderName::from_static(name), value))
        })
        .collect()
}

/// `host[:port]` without the port (an IPv6 literal keeps its brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection:
/// upgrade` and `Upgrade`), unless it is h2c: cleartext h2 would slip past
/// routing and header policy.
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    let h2c = protocol
        .to_str()
        .map_or(true, |p| p.to_ascii_lowercase().contains("h2c"));
    (asked && !h2c).then(|| protocol.clone())
}

/// Removes the cookie `name` from the request's `Cookie` headers and
/// returns its value.
pub(crate) fn take_cookie(headers: &mut HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    let mut kept = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            kept.push(value.clone());
            continue;
        };
        let mut rest = Vec::new();
        for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((n, v)) if n.trim() == name => found = Some(v.trim().to_string()),
                _ => rest.push(pair),
            }
        }
        if !rest.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&rest.join("; ")) {
                kept.push(v);
            }
        }
    }
    if found.is_some() {
        headers.remove(header::COOKIE);
        for v in kept {
            headers.append(header::COOKIE, v);
        }
    }
    found
}

/// `Set-Cookie` for the server chosen (HttpOnly, plus Secure and
/// SameSite=None on TLS routes); a response that sets it is not cached by
/// shared caches.
fn set_cookie(headers: &mut HeaderMap, name: &str, value: &str, tls: bool) {
    let cookie = if tls {
        format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=None")
    } else {
        format!("{name}={value}; Path=/; HttpOnly")
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, v);
    }
    // A shared cache must not keep one client's cookie for others.
    let public = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("public"));
    if public || !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// Removes the headers that describe one hop (RFC 9110 §7.6.1), including
/// those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // A length beside Transfer-Encoding is not the body's length: hyper
    // frames what is forwarded itself (RFC 9112 §6.3).
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("http2-settings"),
    ] {
        headers.remove(name);
    }
}

/// The 503 page for a request no route serves (as the reference answers).
/// The built-in 503 page, when `[http] error_page_503` names none.
fn unavailable() -> Response<Body> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Application is not available",
        "No route serves this address. Check the host name and path, and that the application is running.",
    )
}

/// A small HTML page with `status`, never cached.
fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(html))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
