//! `balance leastconn`: the eligible server with the fewest active
//! connections per unit of weight. Ties rotate so that idle servers share
//! new connections evenly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::View;

#[derive(Debug)]
pub struct LeastConn {
    weights: Vec<u16>,
    /// Where the scan starts, advanced on every pick to break ties.
    rotate: Arc<AtomicUsize>,
}

impl LeastConn {
    pub(crate) fn new(weights: Vec<u16>, rotate: Arc<AtomicUsize>) -> Self {
        LeastConn { weights, rotate }
    }

    pub(crate) fn pick(&self, view: &impl View) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
        let candidates = (0..n).map(|k| (start + k) % n);
        let eligible = candidates.filter(|&i| self.weights[i] > 0 && view.eligible(i));
        lightest(eligible, &self.weights, view)
    }
}

/// The least loaded of `candidates` relative to weight (first on ties):
/// `a_i / w_i < a_j / w_j` compared as `a_i * w_j < a_j * w_i`.
pub(crate) fn lightest(
    candidates: impl Iterator<Item = usize>,
    weights: &[u16],
    view: &impl View,
) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for i in candidates {
        let active = view.active(i) as u64;
        let lighter = best.is_none_or(|(b, b_active)| {
            active * u64::from(weights[b]) < b_active * u64::from(weights[i])
        });
        if lighter {
            best = Some((i, active));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixed;
    use super::*;

    #[test]
    fn follows_weighted_load() {
        let lc = LeastConn::new(vec![100, 200, 0], Arc::default());
        let view = Fixed::default();
        // Simulate long-lived connections: each pick adds one to that server.
        for _ in 0..300 {
            let i = lc.pick(&view).unwrap();
            view.load.borrow_mut().resize(3, 0);
            view.load.borrow_mut()[i] += 1;
        }
        assert_eq!(*view.load.borrow(), [100, 200, 0]);
    }

    #[test]
    fn idle_servers_share_and_exclusions_hold() {
        let lc = LeastConn::new(vec![1, 1, 1], Arc::default());
        let view = Fixed::default();
        let picks: Vec<usize> = (0..3).map(|_| lc.pick(&view).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2]);
        let view = Fixed {
            excluded: vec![0, 1, 2],
            ..Fixed::default()
        };
        assert_eq!(lc.pick(&view), None);
    }
}
