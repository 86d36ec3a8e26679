//! File-system events for the configuration's files. The directories that
//! hold the files are watched, not the files: editors replace files by
//! rename and Kubernetes ConfigMap volumes swap a `..data` symlink, and a
//! watch on the old file would miss both. Events are classified so the
//! reloader can wait for a write to finish before reading.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use super::Trigger;

/// Watches the directories of a set of files and reports what happened to
/// those files (and to ConfigMap `..` entries next to them).
pub(crate) struct Watcher {
    inner: RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    /// File names that matter, shared with the event callback.
    names: Arc<Mutex<HashSet<OsString>>>,
}

impl Watcher {
    pub(crate) fn new(tx: UnboundedSender<Trigger>) -> notify::Result<Self> {
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let filter = Arc::clone(&names);
        let inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let trigger = match event {
                Ok(event) => classify(&event, &filter),
                Err(e) => {
                    tracing::warn!("file watch error: {e}");
                    Some(Trigger::Changed)
                }
            };
            if let Some(t) = trigger {
                let _ = tx.send(t);
            }
        })?;
        Ok(Watcher {
            inner,
            dirs: HashSet::new(),
            names,
        })
    }

    /// Watches exactly the directories of `files` (adding and dropping
    /// watches as the configuration's file list changes).
    pub(crate) fn watch(&mut self, files: &[PathBuf]) {
        // A file may be a symlink into another directory (a ConfigMap's
        // `..data/…`): watch where it points too, so edits there are seen.
        let resolved = files.iter().filter_map(|f| std::fs::canonicalize(f).ok());
        let dirs: HashSet<PathBuf> = files
            .iter()
            .cloned()
            .chain(resolved)
            .map(|f| parent(&f))
            .collect();
        for gone in self.dirs.difference(&dirs) {
            let _ = self.inner.unwatch(gone);
        }
        for dir in dirs.difference(&self.dirs) {
            if let Err(e) = self.inner.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), "cannot watch: {e}");
            }
        }
        self.dirs = dirs;
        let names = files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_os_string()));
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = names.collect();
    }
}

fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What an event means for the reloader, or `None` when it is irrelevant.
/// Entries whose names start with `..` are a ConfigMap volume's atomic
/// swap: each step is complete when it happens.
fn classify(event: &notify::Event, names: &Mutex<HashSet<OsString>>) -> Option<Trigger> {
    let (mut ours, mut swap) = (false, false);
    {
        let names = names.lock().unwrap_or_else(|p| p.into_inner());
        for name in event.paths.iter().filter_map(|p| p.file_name()) {
            ours |= names.contains(name);
            swap |= name.to_string_lossy().starts_with("..");
        }
    }
    let finished = matches!(
        event.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
    );
    let touched = matches!(
        event.kind,
        EventKind::Modify(_) | EventKind::Create(_) | EventKind::Remove(_)
    );
    match (ours, swap) {
        _ if finished && (ours || swap) => Some(Trigger::Changed),
        (false, true) if touched => Some(Trigger::Changed),
        // Written to, created or removed: the write (or re-creation) is
        // probably not over yet.
        (true, _) if touched => Some(Trigger::Writing),
        _ => None,
    }
}
