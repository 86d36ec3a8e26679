//! Where connections are accepted. Each listener binds once, then loops:
//! wait for a connection slot (accept pauses at `max_connections` instead of
//! refusing), accept, take the current configuration snapshot and hand the
//! connection to its own task (`connection::handle`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::model::limits::slots::Slots;
use crate::runtime::connection::{self, Accepted};
use crate::runtime::shared::Shared;

/// Pending connections the kernel may queue before accept.
const BACKLOG: i32 = 4096;

/// Binds `addr` as a production listener: address reuse across restarts,
/// a deep backlog, non-blocking.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Accepts on `listener` until `stop` turns true. `name` finds this
/// listener's settings in whichever snapshot is current at each accept.
pub(crate) async fn serve(
    listener: TcpListener,
    name: Arc<str>,
    shared: Arc<Shared>,
    slots: Arc<Slots>,
    mut stop: watch::Receiver<bool>,
) {
    let frontend = crate::model::counters::global().frontend(&name);
    // Accept errors come in bursts (out of descriptors): one line a second.
    let mut failures = Failures::default();
    loop {
        let slot = tokio::select! {
            slot = slots.acquire() => slot,
            _ = stop.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors or a transient error: back off briefly.
                if crate::runtime::descriptors::is_local_failure(&e) {
                    let g = crate::model::counters::global();
                    g.local_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(times) = failures.add() {
                    tracing::warn!(listener = %name, times, "accept failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let snapshot = shared.snapshot();
        let Some(index) = snapshot.listeners.iter().position(|l| l.name == name) else {
            continue; // being removed by a reload: the stop signal follows
        };
        // The slot and the gauges are released when the task ends, or on
        // panic or abort.
        let counted = connection::Counted {
            slot,
            open: shared.open(&frontend),
        };
        tokio::spawn(connection::handle(Accepted {
            stream,
            peer,
            snapshot,
            listener: index,
            shared: Arc::clone(&shared),
            counted,
        }));
    }
}

/// Counts repeated errors so that they are logged at most once a second,
/// with how many there were.
#[derive(Default)]
struct Failures {
    since: Option<tokio::time::Instant>,
    count: u64,
}

impl Failures {
    /// Counts one; the count to log with it when a line is due.
    fn add(&mut self) -> Option<u64> {
        self.count += 1;
        let now = tokio::time::Instant::now();
        match self.since {
            Some(since) if now.duration_since(since) < Duration::from_secs(1) => None,
            _ => {
                self.since = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}
