//! Health of one server, shared by the checker, the data path (passive
//! failures, eligibility) and the stats page. Carried across reloads with
//! the server.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Debug)]
pub(crate) struct Health {
    up: AtomicBool,
    /// Consecutive failed checks (active or passive).
    fails: AtomicU32,
    /// Consecutive successful checks.
    oks: AtomicU32,
    /// Unix seconds of the last state change (0: never changed).
    changed_at: AtomicU64,
    /// Failed active checks, ever.
    pub(crate) check_failures: AtomicU64,
    /// What the last active check said, for the stats page.
    last: Mutex<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            oks: AtomicU32::new(0),
            changed_at: AtomicU64::new(0),
            check_failures: AtomicU64::new(0),
            last: Mutex::new(String::from("not checked")),
        }
    }
}

/// A state change to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    WentDown,
    CameUp,
}

impl Health {
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Records a failure (active check or connect); down after `fall` in a row.
    pub(crate) fn failure(&self, fall: u32) -> Option<Change> {
        self.oks.store(0, Relaxed);
        let fails = self.fails.fetch_add(1, Relaxed) + 1;
        if fails >= fall && self.up.swap(false, Relaxed) {
            self.changed_at.store(now(), Relaxed);
            return Some(Change::WentDown);
        }
        None
    }

    /// Records a success; up again after `rise` in a row.
    pub(crate) fn success(&self, rise: u32) -> Option<Change> {
        self.fails.store(0, Relaxed);
        let oks = self.oks.fetch_add(1, Relaxed) + 1;
        if oks >= rise && !self.up.swap(true, Relaxed) {
            self.changed_at.store(now(), Relaxed);
            return Some(Change::CameUp);
        }
        None
    }

    pub(crate) fn set_last(&self, text: String) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    pub(crate) fn last(&self) -> String {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Seconds since the last state change, if there was one.
    pub(crate) fn since_change(&self) -> Option<u64> {
        match self.changed_at.load(Relaxed) {
            0 => None,
            t => Some(now().saturating_sub(t)),
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let h = Health::default();
        assert_eq!(h.failure(3), None);
        assert_eq!(h.failure(3), None);
        assert_eq!(h.success(2), None, "a success resets the failures");
        assert_eq!(h.failure(3), None);
        assert_eq!(h.failure(3), None);
        assert_eq!(h.failure(3), Some(Change::WentDown));
        assert!(!h.is_up());
        assert_eq!(h.failure(3), None, "logged once");
        assert_eq!(h.success(2), None);
        assert_eq!(h.success(2), Some(Change::CameUp));
        assert!(h.is_up());
    }
}
