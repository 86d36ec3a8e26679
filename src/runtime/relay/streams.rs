//! Copying between two byte streams of any kind (a terminated TLS session
//! and a plaintext or TLS server connection), with the same deadlines and
//! the same outcome as the socket relay. Terminated connections hold TLS
//! state anyway, so this one uses tokio's buffered bidirectional copy.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep_until, Instant};

use super::{Deadlines, End, Outcome, Side, Stop};

/// Copy buffer per direction.
const BUFFER: usize = 16 * 1024;

/// What the two wrapped streams observed, shared with the watchdog.
struct Observed {
    start: Instant,
    /// Bytes read from each side: [client, server].
    read: [AtomicU64; 2],
    /// Milliseconds from `start` to the last byte read either way.
    last_ms: AtomicU64,
    /// 0, or 1 + the side that reached end of stream first.
    first_eof: AtomicU8,
    /// 0, or 1 + the side whose socket failed first.
    failed: AtomicU8,
}

/// A stream that reports what crosses it to `Observed`.
struct Tracked<'a, S> {
    inner: S,
    side: usize,
    seen: &'a Observed,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let seen = self.seen;
        match &result {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n == 0 {
                    let _ =
                        seen.first_eof
                            .compare_exchange(0, 1 + self.side as u8, Relaxed, Relaxed);
                } else {
                    seen.read[self.side].fetch_add(n, Relaxed);
                    seen.last_ms
                        .store(seen.start.elapsed().as_millis() as u64, Relaxed);
                }
            }
            Poll::Ready(Err(_)) => {
                let _ = seen
                    .failed
                    .compare_exchange(0, 1 + self.side as u8, Relaxed, Relaxed);
            }
            Poll::Pending => {}
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(_)) = &result {
            let _ = self
                .seen
                .failed
                .compare_exchange(0, 1 + self.side as u8, Relaxed, Relaxed);
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The side recorded as `1 + index` (0 when nothing was recorded: client).
fn side(code: u8) -> Side {
    if code == 2 {
        Side::Server
    } else {
        Side::Client
    }
}

/// Copies both ways between `client` and `server` until both are closed,
/// one fails, a deadline passes or `stop` resolves.
pub(crate) async fn relay_streams<C, S>(
    client: C,
    server: S,
    deadlines: Deadlines,
    stop: Option<Stop>,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let seen = Observed {
        start: Instant::now(),
        read: [AtomicU64::new(0), AtomicU64::new(0)],
        last_ms: AtomicU64::new(0),
        first_eof: AtomicU8::new(0),
        failed: AtomicU8::new(0),
    };
    let mut client = Tracked {
        inner: client,
        side: 0,
        seen: &seen,
    };
    let mut server = Tracked {
        inner: server,
        side: 1,
        seen: &seen,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUFFER, BUFFER);
    let watchdog = async {
        let first_response = seen.start + deadlines.first_response;
        loop {
            let now = Instant::now();
            if seen.read[1].load(Relaxed) == 0 {
                if now >= first_response {
                    return End::ServerTimeout;
                }
                // Wake by the idle period too, should the server answer first.
                sleep_until(first_response.min(now + deadlines.idle)).await;
                continue;
            }
            let last = seen.start + Duration::from_millis(seen.last_ms.load(Relaxed));
            let deadline = last + deadlines.idle;
            if now >= deadline {
                return End::IdleTimeout;
            }
            sleep_until(deadline).await;
        }
    };
    let stopped = async {
        match stop {
            Some(stop) => stop.await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        result = copy => match result {
            Ok(_) => End::Closed { first: side(seen.first_eof.load(Relaxed)) },
            Err(e) => End::Error { side: side(seen.failed.load(Relaxed)), kind: e.kind() },
        },
        end = watchdog => end,
        () = stopped => End::RouteRemoved,
    };
    Outcome {
        client_to_server: seen.read[0].load(Relaxed),
        server_to_client: seen.read[1].load(Relaxed),
        end,
    }
}
