//! One client connection in HTTP mode: what its requests share (`Conn`),
//! what it is doing (`Activity`, `Busy`), and its keep-alive and
//! request-head deadlines (`Watched`, `Deadline`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            in_flight: Default::default(),
            idle_since: Default::default(),
            head_since: Default::default(),
            write_blocked_since: Default::default(),
            fragment: Default::default(),
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
    /// starts, and its request line (in these bytes, as clients send it)
    /// is checked for a fragment.
    pub(super) fn bytes_arrived(&self, bytes: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.now(), Relaxed);
            let line = bytes
                .iter()
                .skip_while(|b| matches!(b, b'\r' | b'\n'))
                .take_while(|b| **b != b'\n');
            if line.into_iter().any(|b| *b == b'#') {
                self.fragment.store(true, Relaxed);
            }
        }
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

    /// When the connection is to be closed if nothing changes, and why.
    pub(super) fn deadline(&self, timeouts: &Timeouts) -> Option<Expiry> {
        use std::sync::atomic::Ordering::Relaxed;
        let blocked = self.write_blocked_since.load(Relaxed);
        if blocked != 0 {
            // The client takes nothing: closed outright, whatever is in
            // flight (a graceful close would wait on the same client).
            return Some(Expiry {
                at: self.at(blocked) + timeouts.client,
                why: "the client read none of its response within client_timeout",
                hard: true,
            });
        }
        // Acquire: pairs with the release in `Busy::drop`, so a count of
        // zero comes with the `idle_since` stored before it.
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        let (at, why) = match self.head_since.load(Relaxed) {
            0 => (
                self.at(self.idle_since.load(Relaxed)) + timeouts.http_keep_alive,
                "idle longer than http_keep_alive_timeout",
            ),
            head => (
                self.at(head) + timeouts.http_request,
                "request head not received within http_request_timeout",
            ),
        };
        Some(Expiry {
            at,
            why,
            hard: false,
        })
    }
}

/// When a connection is to be closed, why, and whether outright (`hard`)
/// or, for h2, with GOAWAY.
pub(super) struct Expiry {
    pub(super) at: Instant,
    pub(super) why: &'static str,
    pub(super) hard: bool,
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
        activity
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
}

/// The client's stream: notes when the bytes of an HTTP/1.1 request head
/// begin to arrive on an idle connection, and when writes to the client
/// stop moving (`client_timeout`).
pub(super) struct Watched<S> {
    pub(super) io: S,
    pub(super) conn: Arc<Conn>,
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
        let polled = std::pin::Pin::new(&mut this.io).poll_shutdown(cx);
        this.wrote(polled)
    }
}

/// Resolves when the connection has been idle, or taken too long over a
/// request head, past its deadline (re-read at every wake of the task).
pub(super) struct Deadline<'a> {
    pub(super) conn: &'a Conn,
    pub(super) timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<'a> Deadline<'a> {
    pub(super) fn new(conn: &'a Conn) -> Self {
        let far = Instant::now() + conn.timeouts.http_keep_alive;
        Deadline {
            conn,
            timer: Box::pin(tokio::time::sleep_until(far)),
        }
    }
}

impl std::future::Future for Deadline<'_> {
    type Output = (&'static str, bool);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<(&'static str, bool)> {
        // Polled at every wake of the connection's task: no clock read and
        // no timer reset unless the deadline moved.
        let conn = self.conn;
        let Some(Expiry { at, why, hard }) = conn.activity.deadline(&conn.timeouts) else {
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
            std::task::Poll::Ready(()) => std::task::Poll::Ready((why, hard)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
