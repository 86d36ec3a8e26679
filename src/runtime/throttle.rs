//! Log lines that can repeat many times a second (a resource running out,
//! a flood of refused clients), written at most once a second per kind,
//! each with how many there were since the last: the log stays readable
//! when it matters most, and nothing is lost from the count.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// One kind of line. Shared by every task that may write it.
pub(crate) struct Throttle {
    /// The second (since the process's first use of a throttle) of the
    /// last line written.
    last: AtomicU64,
    /// Events since the last line.
    count: AtomicU64,
}

impl Throttle {
    pub(crate) const fn new() -> Self {
        Throttle {
            last: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one event; when a line is due, how many it stands for.
    pub(crate) fn tick(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        self.count.fetch_add(1, Relaxed);
        let second = START.get_or_init(Instant::now).elapsed().as_secs() + 1;
        let last = self.last.load(Relaxed);
        let due = second > last
            && self
                .last
                .compare_exchange(last, second, Relaxed, Relaxed)
                .is_ok();
        due.then(|| self.count.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count() {
        let throttle = Throttle::new();
        assert_eq!(throttle.tick(), Some(1), "the first is written");
        let written: Vec<u64> = (0..1000).filter_map(|_| throttle.tick()).collect();
        assert!(written.len() <= 1, "{written:?}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let total = throttle.tick().expect("a line after a second");
        assert_eq!(
            total + written.iter().sum::<u64>(),
            1001,
            "every event counted once"
        );
    }
}
