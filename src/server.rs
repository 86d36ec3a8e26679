//! The running router: binds the listeners of a snapshot, keeps the current
//! snapshot behind an `ArcSwap` that every accept reads, and drains on
//! shutdown. `main` and the tests start Switchyard through here.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Snapshot;
use crate::listener;

/// A started router.
pub struct Running {
    /// The configuration new connections get.
    current: Arc<ArcSwap<Snapshot>>,
    /// Listener names and the addresses they are bound to.
    bound: Vec<(String, SocketAddr)>,
    stop: watch::Sender<bool>,
    accept_loops: Vec<JoinHandle<()>>,
    /// Connections open now, across listeners: draining waits for zero.
    open: Arc<AtomicUsize>,
}

/// Binds every listener of `snapshot` and starts accepting. Fails without
/// serving anything if any address cannot be bound.
pub fn start(snapshot: Snapshot) -> io::Result<Running> {
    let mut sockets = Vec::new();
    for spec in &snapshot.listeners {
        let socket = listener::bind(spec.bind).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener `{}` cannot bind {}: {e}", spec.name, spec.bind),
            )
        })?;
        sockets.push((spec.name.clone(), socket));
    }
    let current = Arc::new(ArcSwap::from_pointee(snapshot));
    let (stop, stopped) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let mut bound = Vec::new();
    let mut accept_loops = Vec::new();
    for (name, socket) in sockets {
        bound.push((name.clone(), socket.local_addr()?));
        let task = listener::serve(
            socket,
            name,
            Arc::clone(&current),
            Arc::clone(&open),
            stopped.clone(),
        );
        accept_loops.push(tokio::spawn(task));
    }
    for (name, addr) in &bound {
        tracing::info!(listener = %name, %addr, "listening");
    }
    Ok(Running {
        current,
        bound,
        stop,
        accept_loops,
        open,
    })
}

impl Running {
    /// The address a listener is bound to (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
    }

    /// The snapshot new connections get now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stops accepting, waits up to `deadline` for open connections to end,
    /// and returns how many were still open.
    pub async fn shutdown(mut self, deadline: Duration) -> usize {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.accept_loops) {
            let _ = task.await;
        }
        let until = tokio::time::Instant::now() + deadline;
        while self.open_connections() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.open_connections()
    }
}
