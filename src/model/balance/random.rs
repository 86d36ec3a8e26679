//! `balance random`: two servers drawn at random in proportion to their
//! weights, and the less loaded of the two (relative to weight) is taken.

use std::cell::Cell;

use super::leastconn::lightest;
use super::View;

/// Draws tried before falling back to a scan of every eligible server.
const DRAWS: usize = 8;

#[derive(Debug)]
pub struct TwoChoices {
    weights: Vec<u16>,
    /// Running sum of weights, for weighted draws by binary search.
    cumulative: Vec<u64>,
}

impl TwoChoices {
    pub(crate) fn new(weights: Vec<u16>) -> Self {
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        TwoChoices {
            weights,
            cumulative,
        }
    }

    pub(crate) fn pick(&self, view: &impl View) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let mut draws = (0..DRAWS)
            .map(|_| {
                let r = next_random() % total;
                self.cumulative.partition_point(|&c| c <= r)
            })
            .filter(|&i| view.eligible(i));
        match (draws.next(), draws.next()) {
            (Some(a), Some(b)) => lightest([a, b].into_iter(), &self.weights, view),
            (Some(a), None) => Some(a),
            _ => {
                let all = (0..self.weights.len()).filter(|&i| self.weights[i] > 0);
                lightest(all.filter(|&i| view.eligible(i)), &self.weights, view)
            }
        }
    }
}

thread_local! {
    /// Per-thread xorshift state: no contention, seeded differently per thread.
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id()) | 1
}

fn next_random() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixed;
    use super::*;

    #[test]
    fn weighted_and_never_zero() {
        let r = TwoChoices::new(vec![0, 100, 300]);
        let view = Fixed::default();
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[r.pick(&view).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        // With equal (zero) load the first of the two draws wins, so the
        // split follows the weights.
        let ratio = counts[2] as f64 / counts[1] as f64;
        assert!((2.5..3.5).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn prefers_the_less_loaded() {
        let r = TwoChoices::new(vec![1, 1]);
        let view = Fixed {
            load: vec![50, 0].into(),
            ..Fixed::default()
        };
        let picks = (0..1000).filter(|_| r.pick(&view) == Some(1)).count();
        assert!(picks > 650, "{picks}");
        let only = Fixed {
            excluded: vec![1],
            ..Fixed::default()
        };
        assert_eq!(r.pick(&only), Some(0));
    }
}
