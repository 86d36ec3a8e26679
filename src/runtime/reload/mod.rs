//! Live configuration: edits to any file of the configuration (or SIGHUP)
//! build a whole new snapshot off the connection path, validate it, and
//! swap it in. An edit that does not validate is logged as `file:line`
//! problems and never applied; the last good configuration keeps serving.
//!
//! Timing: a finished write (close or rename) is applied after
//! `DEBOUNCE` of quiet; a write still in progress (data written, file
//! created or removed, no close yet) waits up to `WRITE_GRACE` for it to
//! finish, so a half-written file is not read.

mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config;
use crate::runtime::router::Router;

/// Quiet time after a finished write before reading the files.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// How long a write in progress may take before the files are read anyway.
const WRITE_GRACE: Duration = Duration::from_millis(1000);
/// Longest wait from the first event to the read, however busy the files.
const MAX_SETTLE: Duration = Duration::from_secs(5);

/// Why a reload is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A file was written and closed, or renamed into place.
    Changed,
    /// A file is being written, created or removed.
    Writing,
    /// SIGHUP or an explicit request: reload now.
    Signal,
}

/// Outcome counters of reloads, for logs and the stats port, and what the
/// applied snapshot was built from.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
    /// The loader's memo of the last snapshot applied: the next reload
    /// reuses what did not change since (the loader uses it only with the
    /// snapshot it describes).
    memo: Mutex<Option<Arc<config::Memo>>>,
}

#[derive(Debug, Default, Clone)]
pub struct StatusInner {
    pub applied: u64,
    pub refused: u64,
    /// The problems of the last refused reload, cleared by a good one.
    pub last_error: Option<String>,
    /// Time the last successful reload took (read, compile, swap).
    pub last_duration: Option<Duration>,
}

impl Status {
    pub fn get(&self) -> StatusInner {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Keeps `memo`, what the snapshot just applied was built from.
    fn keep_memo(&self, memo: config::Memo) {
        *self.memo.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(memo));
    }

    /// The memo kept last.
    fn memo(&self) -> Option<Arc<config::Memo>> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Handle to the reloader task.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::UnboundedSender<Trigger>,
    pub status: Arc<Status>,
}

impl Reloader {
    /// Asks for a reload now, as SIGHUP does.
    pub fn request(&self) {
        let _ = self.tx.send(Trigger::Signal);
    }
}

/// Starts watching the configuration rooted at `path` for `router`;
/// `memo` is what the router's current snapshot was built from.
pub fn spawn(path: PathBuf, router: Arc<Router>, memo: config::Memo) -> Reloader {
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(Status::default());
    status.keep_memo(memo);
    let reloader = Reloader {
        tx: tx.clone(),
        status: Arc::clone(&status),
    };
    // Watch before returning, so that no edit made after start is missed.
    let mut watcher = None;
    update_watch(&mut watcher, &tx, &router.snapshot());
    tokio::spawn(run(path, router, tx, rx, status, watcher));
    reloader
}

async fn run(
    path: PathBuf,
    router: Arc<Router>,
    tx: mpsc::UnboundedSender<Trigger>,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    status: Arc<Status>,
    mut watcher: Option<watch::Watcher>,
) {
    while let Some(first) = rx.recv().await {
        if !settle(first, &mut rx).await {
            return;
        }
        reload(&path, &router, &status).await;
        update_watch(&mut watcher, &tx, &router.snapshot());
    }
}

/// Starts, updates or stops the file watcher to match the snapshot.
fn update_watch(
    watcher: &mut Option<watch::Watcher>,
    tx: &mpsc::UnboundedSender<Trigger>,
    snapshot: &crate::model::snapshot::Snapshot,
) {
    if !snapshot.watch {
        *watcher = None;
        return;
    }
    if watcher.is_none() {
        match watch::Watcher::new(tx.clone()) {
            Ok(w) => *watcher = Some(w),
            Err(e) => {
                tracing::warn!("cannot watch the configuration files ({e}); SIGHUP still reloads")
            }
        }
    }
    if let Some(w) = watcher {
        w.watch(&snapshot.files);
    }
}

/// Waits until the files are settled after `first`: `DEBOUNCE` of quiet
/// after a finished write, up to `WRITE_GRACE` while one is in progress,
/// and never longer than `MAX_SETTLE` in all: a file that keeps being
/// written is read as it is then, and applied if it validates.
/// Returns false when the channel closed.
async fn settle(first: Trigger, rx: &mut mpsc::UnboundedReceiver<Trigger>) -> bool {
    settle_within(first, rx, MAX_SETTLE).await
}

async fn settle_within(
    first: Trigger,
    rx: &mut mpsc::UnboundedReceiver<Trigger>,
    max: Duration,
) -> bool {
    let mut writing = match first {
        Trigger::Signal => return true,
        Trigger::Changed => false,
        Trigger::Writing => true,
    };
    let give_up = tokio::time::Instant::now() + max;
    loop {
        let wait = if writing { WRITE_GRACE } else { DEBOUNCE };
        let until = (tokio::time::Instant::now() + wait).min(give_up);
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(Trigger::Signal)) | Err(_) => return true,
            Ok(Some(Trigger::Changed)) => writing = false,
            Ok(Some(Trigger::Writing)) => writing = true,
            Ok(None) => return false,
        }
        if tokio::time::Instant::now() >= give_up {
            tracing::warn!(target: "reload", "files still changing after {max:?}: reading them as they are");
            return true;
        }
    }
}

/// Loads the configuration again and applies it if it is valid.
pub async fn reload(path: &std::path::Path, router: &Arc<Router>, status: &Status) {
    let started = Instant::now();
    let previous = router.snapshot();
    let memo = status.memo();
    let owned = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || match memo {
        Some(memo) => config::reload(&owned, &previous, &memo),
        None => config::load_after(&owned, Some(&previous)),
    })
    .await;
    let loaded = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(problems)) => {
            for p in &problems.errors {
                tracing::error!(target: "reload", "{p}");
            }
            refuse(router, status, problems.to_string(), problems.errors.len());
            return;
        }
        Err(e) => {
            refuse(router, status, format!("reload task failed: {e}"), 1);
            return;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!(target: "reload", "{}: warning: {}", w.location(), w.message);
    }
    let summary = loaded.snapshot.summary();
    match router.apply(loaded.snapshot) {
        Ok(generation) => {
            status.keep_memo(loaded.memo);
            let took = started.elapsed();
            status.update(|s| {
                s.applied += 1;
                s.last_error = None;
                s.last_duration = Some(took);
            });
            let ms = took.as_secs_f64() * 1e3;
            tracing::info!(target: "reload", generation, ms, live_snapshots = router.live_snapshots(), "configuration applied: {summary}");
        }
        Err(e) => refuse(router, status, e.to_string(), 1),
    }
}

fn refuse(router: &Router, status: &Status, error: String, count: usize) {
    tracing::error!(
        target: "reload",
        errors = count,
        generation = router.generation(),
        "reload refused: still serving the last good configuration"
    );
    status.update(|s| {
        s.refused += 1;
        s.last_error = Some(error);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that is written without pause is still read, after a bounded wait.
    #[tokio::test]
    async fn settle_gives_up_waiting_for_a_file_that_keeps_changing() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            for _ in 0..200 {
                if tx.send(Trigger::Writing).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let started = std::time::Instant::now();
        let settled = tokio::time::timeout(
            Duration::from_secs(3),
            settle_within(Trigger::Writing, &mut rx, Duration::from_millis(300)),
        )
        .await
        .expect("settle returns while the writes go on");
        assert!(settled);
        assert!(started.elapsed() >= Duration::from_millis(300));
        writer.abort();
    }
}
