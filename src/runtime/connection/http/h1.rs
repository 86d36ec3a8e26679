//! An HTTP/1.1 client connection, served in sessions: hyper serves it
//! while requests come; once it has been idle for [`REST_AFTER`](super::conn::REST_AFTER), the
//! session ends at the request boundary and gives back its buffers and
//! state, and the connection rests on the client's stream alone until the
//! next byte starts a new session. A session that wrote a 101 hands the
//! stream to its tunnel.
//!
//! What an idle keep-alive connection holds is what HAProxy and nginx hold
//! for one: the stream, not the HTTP layer's buffers.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::conn::{Conn, Deadline, Due, Watched};
use super::service;
use crate::model::backend::Timeouts;
use crate::runtime::access_log::AccessLog;

/// The most a resting connection reads of the client's next bytes before
/// a session takes over (the session reads the rest).
const WAKE_READ: usize = 64;

/// How an HTTP/1.1 client connection ended.
pub(super) enum Ended {
    /// The client closed it, or it was closed at a request boundary
    /// (`Connection: close`, drain), or it became a tunnel.
    Closed,
    /// hyper gave up on it (a malformed request, a broken stream).
    Failed(hyper::Error),
    /// The client's stream failed while the connection rested or closed.
    Broke(std::io::Error),
    /// A deadline closed it (already logged).
    Expired,
}

/// How one session ended.
enum Session {
    /// At a request boundary after it was asked to rest.
    Rested,
    /// For good (client closed, `Connection: close`, drain, upgrade).
    Done,
    Failed(hyper::Error),
    Expired,
}

/// How a rest ended.
enum Woken {
    /// Bytes arrived: a new session reads them.
    Bytes,
    /// The client closed, or the router drains.
    Closed,
    Broke(std::io::Error),
    Expired,
}

/// Serves `io` until the client is done, in as many sessions as its idle
/// spells need.
///
/// The stream comes boxed: it is moved into each session and back, and an
/// async fn keeps room for its arguments for as long as it runs (a stream
/// by value would be held twice, here and in the session).
pub(super) async fn serve<S>(
    mut io: Watched<Box<S>>,
    conn: &Arc<Conn>,
    log: &mut AccessLog,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut drain = conn.shared.draining();
    loop {
        // The session flushes what it wrote as it ends, and leaves the
        // stream open.
        io.keep_open = true;
        // Boxed: resting gives back the session's state with its buffers.
        let mut session =
            Box::new(builder(&conn.timeouts).serve_connection(TokioIo::new(io), service(conn)));
        let ended = run(&mut *session, conn, &mut drain, log).await;
        // The box is freed here, not at the end of the rest (a box moved
        // out of in place keeps its memory to the end of its scope).
        let parts = {
            let boxed = session;
            *boxed
        }
        .into_parts();
        io = parts.io.into_inner();
        io.keep_open = false;
        // hyper's read buffer is let go of; bytes it read past the last
        // request (pipelined behind it, or after an upgrade request) are
        // kept, ahead of any it had not yet taken from `early`.
        if !parts.read_buf.is_empty() {
            let mut kept = bytes::BytesMut::with_capacity(parts.read_buf.len() + io.early.len());
            kept.extend_from_slice(&parts.read_buf);
            kept.extend_from_slice(&io.early);
            io.early = kept.freeze();
        }
        drop(parts.read_buf);
        let waiting = conn.upgraded.lock().ok().and_then(|mut w| w.take());
        match ended {
            Session::Failed(e) => {
                // hyper's own answer (400, 431) is sent; then the close.
                let _ = close(&mut io, &conn.timeouts).await;
                return Ended::Failed(e);
            }
            Session::Expired => return Ended::Expired,
            Session::Done => {
                if let Some(handover) = waiting {
                    // The 101 is written: the stream is the tunnel's.
                    if let Err(mut io) = handover.send(Box::new(io)) {
                        let _ = io.shutdown().await;
                    }
                    return Ended::Closed;
                }
                return close(&mut io, &conn.timeouts).await;
            }
            Session::Rested => {}
        }
        match rest(&mut io, conn, &mut drain, log).await {
            Woken::Bytes => continue,
            Woken::Closed => return close(&mut io, &conn.timeouts).await,
            Woken::Broke(e) => return Ended::Broke(e),
            Woken::Expired => return Ended::Expired,
        }
    }
}

/// The HTTP/1.1 server side of a client connection.
fn builder(timeouts: &Timeouts) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_backstop(timeouts))
        .max_buf_size(super::MAX_BUF);
    builder
}

/// hyper's own bound on reading a request head, which starts as soon as a
/// session waits for its next request: a backstop only, above the
/// keep-alive and head deadlines the connection keeps itself.
fn head_backstop(timeouts: &Timeouts) -> Duration {
    timeouts.http_keep_alive + timeouts.http_request
}

/// Drives one session to its end. When the router starts draining, it is
/// asked to shut down gracefully (the request in flight finishes with
/// `Connection: close`); when it has been idle for [`REST_AFTER`](super::conn::REST_AFTER), it is
/// asked the same way, and the stream is kept.
///
/// A connection idle past `http_keep_alive_timeout`, or slower than
/// `http_request_timeout` over a request head, or whose client reads none
/// of its response for `client_timeout`, is closed at once.
async fn run<C>(
    session: &mut C,
    conn: &Conn,
    drain: &mut watch::Receiver<bool>,
    log: &mut AccessLog,
) -> Session
where
    C: HttpSession,
{
    let mut asked = *drain.borrow();
    if asked {
        session.end_at_boundary();
    }
    let deadline = Deadline::new(conn, true);
    tokio::pin!(deadline);
    let mut resting = false;
    loop {
        if std::mem::take(&mut resting) {
            // An idle session ends at once (nothing to write); one that is
            // not (a request body still arriving after its answer) goes on
            // to its end and is then closed.
            match poll_fn(|cx| Poll::Ready(session.poll_session(cx))).await {
                Poll::Ready(Ok(())) => return Session::Rested,
                Poll::Ready(Err(e)) => return Session::Failed(e),
                Poll::Pending => asked = true,
            }
        }
        tokio::select! {
            // The session first: the deadline reads what it did.
            biased;
            done = poll_fn(|cx| session.poll_session(cx)) => {
                return match done {
                    Ok(()) => Session::Done,
                    Err(e) => Session::Failed(e),
                };
            }
            changed = drain.wait_for(|d| *d), if !asked => {
                asked = true;
                if changed.is_ok() {
                    session.end_at_boundary();
                }
            }
            due = deadline.as_mut() => match due {
                Due::Rest => {
                    session.end_at_boundary();
                    resting = true;
                }
                Due::Close(why, _) => {
                    log.end("client", &format!("closed: {why}"));
                    return Session::Expired;
                }
            },
        }
    }
}

/// Waits, holding the stream alone, for the client's next bytes (read
/// into `io.early` for the next session), its close, the drain, or the
/// keep-alive deadline.
async fn rest<S>(
    io: &mut Watched<S>,
    conn: &Conn,
    drain: &mut watch::Receiver<bool>,
    log: &mut AccessLog,
) -> Woken
where
    S: AsyncRead + Unpin,
{
    if !io.early.is_empty() {
        conn.activity.bytes_arrived(&io.early);
        return Woken::Bytes;
    }
    let _counted = Resting::new();
    let deadline = Deadline::new(conn, false);
    tokio::pin!(deadline);
    let mut first = [0; WAKE_READ];
    let mut buf = ReadBuf::new(&mut first);
    let woken = tokio::select! {
        biased;
        read = poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut buf)) => match read {
            Ok(()) if buf.filled().is_empty() => Woken::Closed,
            Ok(()) => Woken::Bytes,
            Err(e) => Woken::Broke(e),
        },
        () = drained(drain) => Woken::Closed,
        due = deadline.as_mut() => match due {
            Due::Close(why, _) => {
                log.end("client", &format!("closed: {why}"));
                Woken::Expired
            }
            // Not asked for: no rest within a rest.
            Due::Rest => Woken::Closed,
        },
    };
    if let Woken::Bytes = woken {
        io.early = Bytes::copy_from_slice(buf.filled());
    }
    woken
}

/// One resting connection, counted in `switchyard_http_connections_resting`.
struct Resting;

impl Resting {
    fn new() -> Self {
        let resting = &crate::model::counters::global().http_resting;
        resting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Resting
    }
}

impl Drop for Resting {
    fn drop(&mut self) {
        let resting = &crate::model::counters::global().http_resting;
        resting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Resolves when the router starts draining (never, if it cannot).
async fn drained(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Closes the client's stream (TLS: close_notify, then FIN), for as long
/// as the client takes writes.
async fn close<S: AsyncWrite + Unpin>(io: &mut Watched<S>, timeouts: &Timeouts) -> Ended {
    match tokio::time::timeout(timeouts.client, io.shutdown()).await {
        Ok(Ok(())) => Ended::Closed,
        Ok(Err(e)) => Ended::Broke(e),
        Err(_) => Ended::Broke(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client took none of the close within client_timeout",
        )),
    }
}

/// What `run` needs of a hyper HTTP/1.1 session (named so that its long
/// type is written once).
trait HttpSession {
    fn poll_session(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<hyper::Result<()>>;
    fn end_at_boundary(&mut self);
}

impl<I, S, B> HttpSession for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn poll_session(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<hyper::Result<()>> {
        // As a future: hyper flushes what it wrote before it ends (with a
        // shutdown that, `keep_open`, leaves the stream open: it is the
        // connection's, to rest on, hand to a tunnel, or close).
        std::future::Future::poll(Pin::new(self), cx)
    }

    fn end_at_boundary(&mut self) {
        Pin::new(self).graceful_shutdown();
    }
}
