//! One client connection in HTTP mode: what its requests share (`Conn`),
//! what it is doing (`Activity`, `Busy`), and its keep-alive, request-head
//! and rest deadlines (`Watched`, `Deadline`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::headers::ThisSide;
use crate::model::backend::{Backend, Timeouts};
use crate::runtime::shared::Shared;
use crate::tls::{CertStore, Served};

/// One client connection in HTTP mode.
pub(super) struct Conn {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: SocketAddr,
    /// How the forwarded headers name the client and the port it came to,
    /// formatted once per connection.
    pub(super) this_side: ThisSide,
    pub(super) sni: Option<Box<str>>,
    /// The client's JA4 fingerprint (TLS listeners): each request's
    /// backend may deny it (`deny_ja4`).
    pub(super) ja4: Option<crate::model::wire::client_hello::Ja4>,
    /// The client speaks h2 (`X-Forwarded-Proto-Version`).
    pub(super) h2: bool,
    /// TLS connections: the listener's certificates and the one this
    /// connection presented (a request for a host another certificate
    /// serves gets 421). `None` on a plain-HTTP listener.
    pub(super) tls: Option<(Arc<CertStore>, Arc<Served>)>,
    /// Plain HTTP: the port redirects to https name (443 is left out).
    pub(super) https_port: u16,
    /// `X-SSL-*` headers describing the client's certificate (mTLS
    /// listeners), the same for every request of the connection.
    pub(super) client_certificate: Vec<(HeaderName, HeaderValue)>,
    /// The listener's default backend, if it serves HTTP: requests no map
    /// line routes go there instead of getting 503.
    pub(super) fallback: Option<Arc<Backend>>,
    /// Upgraded requests relayed as tunnels: the connection's task waits
    /// for them, so they keep its slot and count, and drain waits for them.
    /// Each gives back the bytes it moved each way.
    pub(super) tunnels: std::sync::Mutex<Vec<tokio::task::JoinHandle<(u64, u64)>>>,
    /// HTTP/1.1: the tunnel waiting for the client's stream once the 101
    /// has been written (the stream is handed over by the connection's
    /// task when hyper lets go of it).
    pub(super) upgraded: std::sync::Mutex<Option<Handover>>,
    /// `http_request_timeout` and `http_keep_alive_timeout` apply to the
    /// client side; the server-side ones are each request's backend's.
    pub(super) timeouts: Timeouts,
    /// Requests in flight and when the connection last went idle.
    pub(super) activity: Activity,
    /// Bytes of the connection's requests and responses (and tunnels),
    /// for its access-log line.
    pub(super) moved: Moved,
    /// The listener's counters: each request's bytes are added as it ends
    /// (an h2 stream may end after its connection).
    pub(super) frontend: Arc<crate::model::counters::Traffic>,
}

/// The client's stream, handed to its tunnel.
pub(super) type Handover = tokio::sync::oneshot::Sender<Box<dyn ClientStream>>;

/// A client's stream as a tunnel relays it (TLS or not).
pub(super) trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for S {}

/// Bytes from a client and to it, over its connection's requests.
#[derive(Default)]
pub(super) struct Moved {
    bytes_in: std::sync::atomic::AtomicU64,
    bytes_out: std::sync::atomic::AtomicU64,
}

impl Moved {
    pub(super) fn add(&self, bytes_in: u64, bytes_out: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }

    pub(super) fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.bytes_in.load(Relaxed), self.bytes_out.load(Relaxed))
    }
}

/// What the connection is doing, for its idle and request-head deadlines.
/// Times are milliseconds since `epoch`.
pub(super) struct Activity {
    pub(super) epoch: Instant,
    /// Requests received and not yet answered to the end of their body.
    pub(super) in_flight: std::sync::atomic::AtomicUsize,
    /// When the last request ended (or the connection began).
    pub(super) idle_since: std::sync::atomic::AtomicU64,
    /// Requests answered to the end of their body.
    pub(super) answered: std::sync::atomic::AtomicU64,
    /// HTTP/1.1: when bytes of the next request head began to arrive on an
    /// idle connection (0: none yet).
    pub(super) head_since: std::sync::atomic::AtomicU64,
    /// When a write to the client last found its socket full and nothing
    /// has been taken since (0: writes are moving).
    pub(super) write_blocked_since: std::sync::atomic::AtomicU64,
    /// HTTP/1.1: the request line of the request beginning to arrive has
    /// a `#fragment` (its URI parser drops fragments, so the raw line is
    /// looked at here); taken by that request's routing.
    pub(super) fragment: std::sync::atomic::AtomicBool,
    /// Where the scan of that request line stands ([`LINE_DONE`],
    /// [`LINE_AHEAD`], [`LINE_IN`]): it goes on over as many reads as the
    /// line takes.
    line: std::sync::atomic::AtomicU8,
}

/// The request line has been scanned (or none is arriving).
const LINE_DONE: u8 = 0;
/// A head began: blank lines may come before its request line.
const LINE_AHEAD: u8 = 1;
/// Inside the request line.
const LINE_IN: u8 = 2;

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            in_flight: Default::default(),
            idle_since: Default::default(),
            answered: Default::default(),
            head_since: Default::default(),
            write_blocked_since: Default::default(),
            fragment: Default::default(),
            line: Default::default(),
        }
    }

    pub(super) fn now(&self) -> u64 {
        // Never 0 once started, so 0 can mean "not yet".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    /// Bytes arrived from the client (HTTP/1.1 connections only): when
    /// they begin a request on an idle connection, its head's deadline
    /// starts, and its request line (in these bytes and the next, however
    /// it is split) is checked for a fragment.
    pub(super) fn bytes_arrived(&self, bytes: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut line = self.line.load(Relaxed);
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.now(), Relaxed);
            line = LINE_AHEAD;
        }
        if line == LINE_DONE {
            return;
        }
        for &b in bytes {
            match (line, b) {
                (LINE_AHEAD, b'\r' | b'\n') => {}
                (_, b'\n') => {
                    line = LINE_DONE;
                    break;
                }
                (_, b'#') => {
                    self.fragment.store(true, Relaxed);
                    line = LINE_IN;
                }
                _ => line = LINE_IN,
            }
        }
        self.line.store(line, Relaxed);
    }

    /// A write to the client found its socket full (`blocked`) or moved.
    fn writing(&self, blocked: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let since = self.write_blocked_since.load(Relaxed);
        if blocked && since == 0 {
            self.write_blocked_since.store(self.now(), Relaxed);
        } else if !blocked && since != 0 {
            self.write_blocked_since.store(0, Relaxed);
        }
    }

    /// Requests answered so far.
    pub(super) fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When the connection is to be closed if nothing changes, and why;
    /// or, if it may rest (`rest_after`: it has answered more requests than
    /// that), when it is to rest.
    pub(super) fn deadline(
        &self,
        timeouts: &Timeouts,
        rest_after: Option<u64>,
    ) -> Option<(Instant, Due)> {
        use std::sync::atomic::Ordering::Relaxed;
        let blocked = self.write_blocked_since.load(Relaxed);
        if blocked != 0 {
            // The client takes nothing: closed outright, whatever is in
            // flight (a graceful close would wait on the same client).
            let why = "the client read none of its response within client_timeout";
            return Some((self.at(blocked) + timeouts.client, Due::Close(why, true)));
        }
        // Acquire: pairs with the release in `Busy::drop`, so a count of
        // zero comes with the `idle_since` stored before it.
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        let head_since = self.head_since.load(Relaxed);
        let idle_since = self.idle_since.load(Relaxed);
        if head_since == 0
            && REST_AFTER < timeouts.http_keep_alive
            && rest_after.is_some_and(|n| self.answered() > n)
        {
            return Some((self.at(idle_since) + REST_AFTER, Due::Rest));
        }
        let (at, why) = match head_since {
            0 => (
                self.at(idle_since) + timeouts.http_keep_alive,
                "idle longer than http_keep_alive_timeout",
            ),
            head => (
                self.at(head) + timeouts.http_request,
                "request head not received within http_request_timeout",
            ),
        };
        Some((at, Due::Close(why, false)))
    }
}

/// How long an HTTP/1.1 connection stays idle before it rests: its HTTP
/// session ends at the request boundary, giving back hyper's buffers and
/// state (16 KiB and more), and the next byte from the client starts a new
/// one. Clients that send more often than this keep their session.
pub(super) const REST_AFTER: Duration = Duration::from_secs(1);

/// What a connection's [`Deadline`] says is due.
pub(super) enum Due {
    /// Closed, for this reason, outright (`hard`) or gracefully.
    Close(&'static str, bool),
    /// Idle for [`REST_AFTER`]: its HTTP session is to end, and the
    /// connection to wait for its next byte.
    Rest,
}

/// One request in flight: counted from its head until its response body
/// has been sent (or dropped).
pub(super) struct Busy(pub(super) Arc<Conn>);

impl Busy {
    pub(super) fn new(conn: &Arc<Conn>) -> Self {
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
        activity.answered.fetch_add(1, Relaxed);
        activity
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
}

/// The client's stream: notes when the bytes of an HTTP/1.1 request head
/// begin to arrive on an idle connection, and when writes to the client
/// stop moving (`client_timeout`). Bytes already read from the client
/// (`early`: by a session that ended, or while resting) are read first.
/// While `keep_open`, a shutdown only flushes: an HTTP/1.1 session ends
/// with everything it wrote sent, and the stream stays the connection's.
pub(super) struct Watched<S> {
    pub(super) io: S,
    pub(super) conn: Arc<Conn>,
    pub(super) early: Bytes,
    pub(super) keep_open: bool,
}

impl<S> Watched<S> {
    pub(super) fn new(io: S, conn: &Arc<Conn>) -> Self {
        Watched {
            io,
            conn: Arc::clone(conn),
            early: Bytes::new(),
            keep_open: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            // Already seen by `bytes_arrived` (when read, or by the rest).
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            if this.early.is_empty() {
                // Its buffer is freed, not kept for the connection's life.
                this.early = Bytes::new();
            }
            return std::task::Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before && !this.conn.h2 {
            this.conn.activity.bytes_arrived(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S> Watched<S> {
    /// Notes whether a write moved.
    fn wrote<T>(&self, polled: std::task::Poll<T>) -> std::task::Poll<T> {
        self.conn.activity.writing(polled.is_pending());
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(polled)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(polled)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = if this.keep_open {
            std::pin::Pin::new(&mut this.io).poll_flush(cx)
        } else {
            std::pin::Pin::new(&mut this.io).poll_shutdown(cx)
        };
        this.wrote(polled)
    }
}

/// Resolves when the connection has been idle, or taken too long over a
/// request head, past its deadline (re-read at every wake of the task);
/// or, once, when it is to rest.
pub(super) struct Deadline<'a> {
    pub(super) conn: &'a Conn,
    pub(super) timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// It may rest once it has answered more requests than this.
    pub(super) rest_after: Option<u64>,
}

impl<'a> Deadline<'a> {
    /// The deadlines of `conn`; `rest`: the connection may rest, once a
    /// request from now on has been answered.
    pub(super) fn new(conn: &'a Conn, rest: bool) -> Self {
        let far = Instant::now() + conn.timeouts.http_keep_alive;
        Deadline {
            conn,
            timer: Box::pin(tokio::time::sleep_until(far)),
            rest_after: rest.then(|| conn.activity.answered()),
        }
    }
}

impl std::future::Future for Deadline<'_> {
    type Output = Due;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Due> {
        // Polled at every wake of the connection's task: no clock read and
        // no timer reset unless the deadline moved.
        let conn = self.conn;
        let Some((at, due)) = conn.activity.deadline(&conn.timeouts, self.rest_after) else {
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
        std::task::ready!(self.timer.as_mut().poll(cx));
        if let Due::Rest = due {
            // Once: a rest is not asked for again.
            self.rest_after = None;
        }
        std::task::Poll::Ready(due)
    }
}
