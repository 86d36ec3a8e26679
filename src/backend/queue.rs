//! Taking a server for a connection (or, in HTTP mode, a request): the
//! balancer's pick, then a place on that server under its
//! `max_connections_per_server` (the reference's per-pod maximum). When
//! every server that is up is full, the connection waits in the backend's
//! bounded queue for a place to free, at most `queue_timeout`, then takes
//! whichever server has room or is refused. The fast path (a server with
//! room) takes no lock and registers no waiter.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

use super::{ActiveGuard, Backend};

/// A backend's waiting connections; carried across reloads with the
/// backend, so that a place freed under either configuration wakes them.
#[derive(Debug, Default)]
pub struct Queue {
    /// Connections waiting now.
    waiting: AtomicUsize,
    /// One waiter woken per place freed.
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

    /// A place was given back on one of the backend's servers.
    pub(super) fn place_freed(&self) {
        if self.waiting() > 0 {
            self.freed.notify_one();
        }
    }
}

/// Why no server was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no server available")]
    NoServer,
    #[error("every server is at max_connections_per_server and the queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("every server stayed at max_connections_per_server for queue_timeout ({0:?})")]
    QueueTimeout(std::time::Duration),
}

/// Counts a connection in the queue while it waits.
struct Waiting<'a>(&'a Queue);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Backend {
    /// A server for a new connection from `client` (`preferred` first,
    /// when it has room: a sticky session), skipping `tried` and servers
    /// that are down, with its place held by the guard.
    pub async fn take(
        &self,
        client: IpAddr,
        tried: &[usize],
        preferred: Option<usize>,
    ) -> Result<(usize, ActiveGuard), Unavailable> {
        if let Some(taken) = self.try_take(client, tried, preferred) {
            return Ok(taken);
        }
        if self.max_per_server.is_none() || !self.only_full(tried) {
            return Err(Unavailable::NoServer);
        }
        // Boxed: the rare path, kept out of every connection's future.
        Box::pin(self.wait_for_place(client, tried, preferred)).await
    }

    /// Waits in the queue for a place on a server with room.
    async fn wait_for_place(
        &self,
        client: IpAddr,
        tried: &[usize],
        preferred: Option<usize>,
    ) -> Result<(usize, ActiveGuard), Unavailable> {
        let queue = &self.queue;
        let waiting = queue.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(queue);
        if waiting >= self.max_queue {
            queue.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable::QueueFull(waiting));
        }
        queue.queued.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.timeouts.queue;
        loop {
            // Registered before looking again, so a place freed in between
            // is not missed.
            let freed = queue.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(taken) = self.try_take(client, tried, preferred) {
                return Ok(taken);
            }
            if !self.only_full(tried) {
                return Err(Unavailable::NoServer);
            }
            if timeout_at(deadline, freed).await.is_err() {
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

    /// Whether the servers this connection could use are up but full (so
    /// waiting can help), rather than down or tried.
    fn only_full(&self, tried: &[usize]) -> bool {
        let Some(max) = self.max_per_server else {
            return false;
        };
        self.servers.iter().enumerate().any(|(i, s)| {
            s.weight > 0
                && !tried.contains(&i)
                && s.state.health.is_up()
                && s.state.active() >= max as usize
        })
    }
}
