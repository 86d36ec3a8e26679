//! What the listeners and connections share with the router that runs
//! them, and nothing more: the current snapshot (read through `ArcSwap`,
//! no lock), the gauge of open connections (released by a guard, so a
//! panicking or aborted task cannot leak it), and the announcement of each
//! applied generation. `runtime::router::Router` owns one and swaps snapshots in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::model::counters::Traffic;
use crate::model::snapshot::Snapshot;

/// The handle given to listeners and connections.
#[derive(Debug)]
pub(crate) struct Shared {
    current: ArcSwap<Snapshot>,
    /// Connections open now, across listeners: draining waits for zero.
    open: AtomicUsize,
    /// The generation of every snapshot applied.
    applied: watch::Sender<u64>,
    /// Turns true when the router starts draining: HTTP connections then
    /// finish their requests and close (Connection: close, h2 GOAWAY).
    drain: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new(snapshot: Arc<Snapshot>) -> Self {
        let generation = snapshot.generation;
        crate::model::limits::budget::global().set_limit(snapshot.buffer_memory);
        Shared {
            current: ArcSwap::new(snapshot),
            open: AtomicUsize::new(0),
            applied: watch::Sender::new(generation),
            drain: watch::Sender::new(false),
        }
    }

    /// The snapshot new connections get now.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Makes `snapshot` current and announces its generation.
    pub(crate) fn publish(&self, snapshot: Arc<Snapshot>) {
        let generation = snapshot.generation;
        crate::model::limits::budget::global().set_limit(snapshot.buffer_memory);
        self.current.store(snapshot);
        self.applied.send_replace(generation);
    }

    /// Receives the generation of every snapshot applied from now on; the
    /// value seen first is the current one.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Resolves-to-true receiver of the drain signal.
    pub(crate) fn draining(&self) -> watch::Receiver<bool> {
        self.drain.subscribe()
    }

    /// Tells open connections that the router is draining.
    pub(crate) fn begin_drain(&self) {
        self.drain.send_replace(true);
    }

    /// Connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a connection as open (globally and on its listener) until
    /// the guard is dropped, however its task ends.
    pub(crate) fn open(self: &Arc<Self>, frontend: &Arc<Traffic>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        frontend.current.fetch_add(1, Ordering::Relaxed);
        OpenGuard {
            shared: Arc::clone(self),
            frontend: Arc::clone(frontend),
        }
    }
}

/// One open connection in the gauges; released on drop.
#[derive(Debug)]
pub(crate) struct OpenGuard {
    shared: Arc<Shared>,
    frontend: Arc<Traffic>,
}

impl OpenGuard {
    /// The listener's traffic counters.
    pub(crate) fn frontend(&self) -> &Arc<Traffic> {
        &self.frontend
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.frontend.current.fetch_sub(1, Ordering::Relaxed);
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that panics or is aborted still releases its gauges.
    #[tokio::test]
    async fn gauges_are_released_by_panicking_and_aborted_tasks() {
        let snapshot = Arc::new(Snapshot::empty());
        let shared = Arc::new(Shared::new(snapshot));
        let frontend = Arc::new(Traffic::default());
        let guard = shared.open(&frontend);
        let panicking = tokio::spawn(async move {
            let _guard = guard;
            panic!("a bug in a connection task");
        });
        assert!(panicking.await.is_err());
        let guard = shared.open(&frontend);
        let stuck = tokio::spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(shared.open_connections(), 1);
        stuck.abort();
        let _ = stuck.await;
        assert_eq!(shared.open_connections(), 0);
        assert_eq!(frontend.current.load(Ordering::Relaxed), 0);
    }
}
