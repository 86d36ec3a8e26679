//! The running router: the listeners, the current snapshot behind an
//! `ArcSwap` that every accept reads, in-process configuration swaps, and
//! draining on shutdown. `main`, the reloader and the tests drive it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::model::limits::slots::Slots;
use crate::model::snapshot::{ListenerSpec, Snapshot};
use crate::runtime::listener;
use crate::runtime::shared::Shared;

/// A started router, shared by the reloader, the stats port and `main`.
/// Dropping the last handle stops its listeners (open connections run on).
pub struct Router {
    /// The current snapshot, the open-connection gauge and reload
    /// announcements: all that listeners and connections see.
    shared: Arc<Shared>,
    /// Listeners by name; locked only while starting, reloading or stopping.
    listeners: Mutex<HashMap<String, ListenerHandle>>,
    /// Every snapshot ever applied that connections may still hold.
    history: Mutex<Vec<Weak<Snapshot>>>,
    /// Set when shutdown begins: readiness turns false.
    draining: AtomicBool,
    /// Health checkers of the current snapshot; replaced with it.
    checks: Mutex<crate::runtime::health_check::Checkers>,
}

/// One bound listener.
struct ListenerHandle {
    /// The address as configured (port 0 included): a reload that keeps it
    /// keeps the socket.
    bind: SocketAddr,
    /// The address actually bound.
    addr: SocketAddr,
    /// Connection slots; resized in place when `max_connections` changes.
    slots: Arc<Slots>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Router {
    /// Binds every listener of `snapshot` and starts accepting. Fails without
    /// serving anything if any address cannot be bound.
    pub fn start(mut snapshot: Snapshot) -> io::Result<Arc<Router>> {
        let bound = bind_all(&snapshot.listeners)?;
        snapshot.generation = 1;
        let snapshot = Arc::new(snapshot);
        let router = Arc::new(Router {
            history: Mutex::new(vec![Arc::downgrade(&snapshot)]),
            shared: Arc::new(Shared::new(snapshot)),
            listeners: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            checks: Mutex::default(),
        });
        router.spawn_listeners(bound);
        router.restart_checks();
        Ok(router)
    }

    /// Makes `next` the configuration of new connections. Listeners that
    /// stay are untouched; new ones are bound first, and if any cannot be,
    /// nothing changes. Open connections keep the snapshot they started with.
    pub fn apply(self: &Arc<Self>, mut next: Snapshot) -> io::Result<u64> {
        let mut listeners = self.lock_listeners();
        let fresh: Vec<ListenerSpec> = next
            .listeners
            .iter()
            .filter(|spec| {
                listeners
                    .get(&*spec.name)
                    .is_none_or(|h| h.bind != spec.bind)
            })
            .cloned()
            .collect();
        let bound = bind_all(&fresh)?;
        let generation = self.generation() + 1;
        next.generation = generation;
        let next = Arc::new(next);
        self.remember(&next);
        self.shared.publish(Arc::clone(&next));
        for spec in &next.listeners {
            if let Some(handle) = listeners.get_mut(&*spec.name) {
                handle.slots.resize(spec.max_connections);
            }
        }
        let gone: Vec<String> = listeners
            .iter()
            .filter(|(name, h)| {
                !next
                    .listeners
                    .iter()
                    .any(|s| *s.name == **name && s.bind == h.bind)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(handle) = listeners.remove(&name) {
                let _ = handle.stop.send(true);
                tracing::info!(listener = %name, addr = %handle.addr, "listener closed");
            }
        }
        drop(listeners);
        self.spawn_listeners(bound);
        self.restart_checks();
        Ok(generation)
    }

    /// Makes the health checkers those of the current snapshot: unchanged
    /// backends keep theirs (server health is carried with the servers).
    fn restart_checks(&self) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.update(&self.snapshot());
    }

    /// Serving: a configuration is loaded, listeners are bound, and the
    /// router is not draining.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && !self.lock_listeners().is_empty()
    }

    fn spawn_listeners(&self, bound: Vec<(ListenerSpec, tokio::net::TcpListener)>) {
        let mut listeners = self.lock_listeners();
        for (spec, socket) in bound {
            let addr = socket.local_addr().unwrap_or(spec.bind);
            let slots = Slots::new(spec.max_connections);
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(listener::serve(
                socket,
                Arc::clone(&spec.name),
                Arc::clone(&self.shared),
                Arc::clone(&slots),
                stopped,
            ));
            tracing::info!(listener = %spec.name, %addr, "listening");
            let handle = ListenerHandle {
                bind: spec.bind,
                addr,
                slots,
                stop,
                task,
            };
            listeners.insert(spec.name.to_string(), handle);
        }
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, HashMap<String, ListenerHandle>> {
        self.listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, snapshot: &Arc<Snapshot>) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.retain(|w| w.strong_count() > 0);
        history.push(Arc::downgrade(snapshot));
    }

    /// The snapshot new connections get now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }

    /// What listeners and connections share with the router.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Receives the generation number of every snapshot applied from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.subscribe()
    }

    /// Number of the current snapshot: 1 at start, +1 per applied reload.
    pub fn generation(&self) -> u64 {
        self.shared.snapshot().generation
    }

    /// Snapshots (route tables) still in memory: the current one, and an
    /// older one only while a connection accepted under it is still being
    /// routed (connections drop their snapshot once decided).
    pub fn live_snapshots(&self) -> usize {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.iter().filter(|w| w.strong_count() > 0).count()
    }

    /// The address a listener is bound to (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.lock_listeners().get(listener).map(|h| h.addr)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections()
    }

    /// Stops accepting on every listener, waits up to `deadline` for open
    /// connections to end, and returns how many were still open.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.draining.store(true, Ordering::Relaxed);
        self.shared.begin_drain();
        self.checks.lock().unwrap_or_else(|p| p.into_inner()).stop();
        let handles: Vec<ListenerHandle> = self.lock_listeners().drain().map(|(_, h)| h).collect();
        for handle in handles {
            let _ = handle.stop.send(true);
            let _ = handle.task.await;
        }
        let until = tokio::time::Instant::now() + deadline;
        while self.open_connections() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.open_connections()
    }
}

fn bind_all(specs: &[ListenerSpec]) -> io::Result<Vec<(ListenerSpec, tokio::net::TcpListener)>> {
    specs
        .iter()
        .map(|spec| {
            let socket = listener::bind(spec.bind).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener `{}` cannot bind {}: {e}", spec.name, spec.bind),
                )
            })?;
            Ok((spec.clone(), socket))
        })
        .collect()
}
