//! Taking a server for a connection (or, in HTTP mode, a request): the
//! balancer's pick, then a place on that server under its
//! `max_connections_per_server` (the reference's per-pod maximum). When
//! every server that is up is full, the connection waits in the backend's
//! bounded queue for a place to free, at most `queue_timeout`, then takes
//! whichever server has room or is refused. Waiting is first come, first
//! served: while others wait, a newcomer queues behind them rather than
//! take the place that was freed for them. The fast path (nobody waiting,
//! a server with room) takes no lock and registers no waiter.
//!
//! A connection retrying after a failed connect (`tried` not empty) cannot
//! use every server, so it must not take a wake-up meant for one that can:
//! it looks again at short intervals instead of waiting for a wake-up.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

use super::{ActiveGuard, Backend};

/// A backend's waiting connections; carried across reloads with the
/// backend, so that a place freed under either configuration wakes them.
#[derive(Debug, Default)]
pub struct Queue {
    /// Connections waiting now.
    waiting: AtomicUsize,
    /// Of those, the ones waiting for a wake-up (the others retry after
    /// a failed connect and look again at intervals).
    woken_by_freed: AtomicUsize,
    /// One waiter woken per place freed, oldest first.
    freed: Notify,
    /// Connections that had to wait.
    pub queued: AtomicU64,
    /// Connections refused: the queue was full, or no place freed in time.
    pub refused: AtomicU64,
}

impl Queue {
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place was given back on one of the backend's servers (its count
    /// already lowered, SeqCst: see [`Backend::wait_for_place`]).
    pub(super) fn place_freed(&self) {
        if self.woken_by_freed.load(Ordering::SeqCst) > 0 {
            self.freed.notify_one();
        }
    }

    /// Whether connections wait for a wake-up: a newcomer then queues
    /// behind them.
    fn others_wait(&self) -> bool {
        self.woken_by_freed.load(Ordering::SeqCst) > 0
    }
}

/// How often a retrying connection looks again for a place.
const RETRY_LOOK: Duration = Duration::from_millis(20);

/// Why no server was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unavailable {
    #[error("no server available")]
    NoServer,
    #[error("every server is at max_connections_per_server and the queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("every server stayed at max_connections_per_server for queue_timeout ({0:?})")]
    QueueTimeout(std::time::Duration),
}

/// Counts a connection in the queue while it waits; one that leaves
/// without a place passes a wake-up on, so that a place freed for it
/// reaches the next waiter.
struct Waiting<'a> {
    queue: &'a Queue,
    woken_by_freed: bool,
    placed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::Relaxed);
        if self.woken_by_freed {
            self.queue.woken_by_freed.fetch_sub(1, Ordering::SeqCst);
            if !self.placed {
                self.queue.place_freed();
            }
        }
    }
}

impl Backend {
    /// A server for a new connection from `client` (`preferred` first,
    /// when it has room: a sticky session), skipping `tried` and servers
    /// that are down, with its place held by the guard.
    pub(crate) async fn take(
        &self,
        client: IpAddr,
        tried: &[usize],
        preferred: Option<usize>,
    ) -> Result<(usize, ActiveGuard), Unavailable> {
        let queue = self
            .queue
            .as_deref()
            .filter(|_| self.max_per_server.is_some());
        if !queue.is_some_and(Queue::others_wait) {
            if let Some(taken) = self.try_take(client, tried, preferred) {
                return Ok(taken);
            }
        }
        let Some(queue) = queue.filter(|_| self.could_use(tried)) else {
            return Err(Unavailable::NoServer);
        };
        // Boxed: the rare path, kept out of every connection's future.
        Box::pin(self.wait_for_place(queue, client, tried, preferred)).await
    }

    /// Waits in the queue for a place on a server with room.
    async fn wait_for_place(
        &self,
        queue: &Queue,
        client: IpAddr,
        tried: &[usize],
        preferred: Option<usize>,
    ) -> Result<(usize, ActiveGuard), Unavailable> {
        let waiting = queue.waiting.fetch_add(1, Ordering::Relaxed);
        let woken_by_freed = tried.is_empty();
        // Others waiting for a wake-up before this one: a place free now
        // was freed for them.
        let mut behind = false;
        if woken_by_freed {
            behind = queue.woken_by_freed.fetch_add(1, Ordering::SeqCst) > 0;
        }
        let mut waiting_guard = Waiting {
            queue,
            woken_by_freed,
            placed: false,
        };
        if waiting >= self.max_queue {
            queue.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable::QueueFull(waiting));
        }
        queue.queued.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.timeouts.queue;
        loop {
            // Registered before looking again, so a place freed in between
            // is not missed: the releaser lowers the server's count and
            // then reads `woken_by_freed`, this side raised
            // `woken_by_freed` and then reads the count, all SeqCst, so
            // one of the two sees the other.
            let freed = queue.freed.notified();
            tokio::pin!(freed);
            if woken_by_freed {
                freed.as_mut().enable();
            }
            if !std::mem::take(&mut behind) {
                if let Some(taken) = self.try_take(client, tried, preferred) {
                    waiting_guard.placed = true;
                    return Ok(taken);
                }
            }
            if !self.could_use(tried) {
                return Err(Unavailable::NoServer);
            }
            let woke = if woken_by_freed {
                timeout_at(deadline, freed).await.is_ok()
            } else {
                let look = (Instant::now() + RETRY_LOOK).min(deadline);
                tokio::time::sleep_until(look).await;
                look < deadline
            };
            if !woke {
                queue.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Unavailable::QueueTimeout(self.timeouts.queue));
            }
        }
    }

    /// The balancer's pick among servers with room, and its place.
    fn try_take(
        &self,
        client: IpAddr,
        tried: &[usize],
        preferred: Option<usize>,
    ) -> Option<(usize, ActiveGuard)> {
        if let Some(i) = preferred {
            if let Some(guard) = self.place_on(i) {
                return Some((i, guard));
            }
        }
        // A pick can lose the last place on its server to another
        // connection; it then picks again among the others (the full
        // server is no longer eligible), at most once per server.
        for _ in 0..=self.servers.len() {
            let i = self.pick(client, tried)?;
            if let Some(guard) = self.place_on(i) {
                return Some((i, guard));
            }
        }
        None
    }

    /// A place on server `i`, if it has room.
    fn place_on(&self, i: usize) -> Option<ActiveGuard> {
        let server = self.servers.get(i)?;
        match self.max_per_server {
            None => Some(ActiveGuard::new(&server.state)),
            Some(max) => ActiveGuard::within(&server.state, max as usize),
        }
    }

    /// Whether a server this connection could use is up (full, or with a
    /// place freed since the last look), so that waiting can help, rather
    /// than every one down or tried.
    fn could_use(&self, tried: &[usize]) -> bool {
        self.servers
            .iter()
            .enumerate()
            .any(|(i, s)| s.weight > 0 && !tried.contains(&i) && s.state.health.is_up())
    }
}
