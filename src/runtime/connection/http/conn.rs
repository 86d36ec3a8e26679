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
    pub(super) tunnels: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// `http_request_timeout` and `http_keep_alive_timeout` apply to the
    /// client side; the server-side ones are each request's backend's.
    pub(super) timeouts: Timeouts,
    /// Requests in flight and when the connection last went idle.
    pub(super) activity: Activity,
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
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            in_flight: Default::default(),
            idle_since: Default::default(),
            head_since: Default::default(),
        }
    }

    pub(super) fn now(&self) -> u64 {
        // Never 0 once started, so 0 can mean "not yet".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    /// Bytes arrived from the client (HTTP/1.1 connections only).
    pub(super) fn bytes_arrived(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.now(), Relaxed);
        }
    }

    /// When the connection is to be closed if nothing changes, and why.
    pub(super) fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, &'static str)> {
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

/// The client's stream on an HTTP/1.1 connection: notes when the bytes of
/// a request head begin to arrive on an idle connection.
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
