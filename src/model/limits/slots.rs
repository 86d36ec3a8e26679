//! Connection slots of one listener: at most `limit` connections open at
//! once; the accept loop waits for a free slot instead of refusing. The
//! limit can be changed while connections are open: lowering it takes
//! effect as connections end (no new one is accepted until the count is
//! under the new limit), raising it frees exactly the difference. Two
//! atomics and a `Notify`; no lock on the accept path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Slots {
    limit: AtomicUsize,
    used: AtomicUsize,
    /// Woken when a slot is released or the limit changes.
    changed: Notify,
}

/// One open connection's slot; released on drop.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Slots {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Slots {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    /// Waits until a connection may be accepted.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            // A release between the failed try and this wait is not lost:
            // `notify_one` leaves a permit when nobody waits.
            self.changed.notified().await;
        }
    }

    /// A slot if one is free now.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.limit.load(Ordering::Acquire)).then_some(used + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }

    /// Changes the limit; connections over a lowered one are not closed,
    /// they just keep new ones waiting until enough have ended.
    pub(crate) fn resize(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
        self.changed.notify_one();
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_waits_for_connections_to_end_and_raising_does_not_overshoot() {
        let slots = Slots::new(3);
        let held: Vec<Slot> = (0..3).map(|_| slots.try_acquire().expect("free")).collect();
        assert!(slots.try_acquire().is_none());
        slots.resize(1);
        let mut held = held.into_iter();
        drop(held.next());
        assert!(slots.try_acquire().is_none(), "2 open, limit 1");
        drop(held.next());
        assert!(slots.try_acquire().is_none(), "1 open, limit 1");
        drop(held.next());
        let one = slots.try_acquire().expect("0 open, limit 1");
        assert!(slots.try_acquire().is_none());
        slots.resize(4);
        let more: Vec<Slot> = (0..3)
            .map(|_| slots.try_acquire().expect("raised"))
            .collect();
        assert!(slots.try_acquire().is_none(), "exactly 4, never more");
        assert_eq!(slots.in_use(), 4);
        drop((one, more));
        assert_eq!(slots.in_use(), 0);
    }

    #[tokio::test]
    async fn a_waiting_accept_wakes_when_a_slot_frees_or_the_limit_rises() {
        let slots = Slots::new(1);
        let first = slots.try_acquire().expect("free");
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("join");
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.acquire().await }
        });
        tokio::task::yield_now().await;
        slots.resize(2);
        let third = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the raise")
            .expect("join");
        drop((second, third));
    }
}
