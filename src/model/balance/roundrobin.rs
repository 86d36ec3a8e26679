//! `balance roundrobin`: smooth weighted round robin. The sequence a smooth
//! weighted scheduler would produce is computed once per configuration; a
//! pick is one atomic increment and an index, so no lock is taken.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::View;

/// Sequences longer than this are built from proportionally scaled weights.
const MAX_SEQUENCE: u64 = 4096;

#[derive(Debug)]
pub struct Smooth {
    /// Server indexes in the order they are served; each appears in
    /// proportion to its weight, spread out rather than in bursts.
    sequence: Vec<u32>,
    /// Position of the next pick; shared with the previous configuration's
    /// balancer so that a reload does not restart the rotation.
    next: Arc<AtomicUsize>,
}

impl Smooth {
    pub(crate) fn new(weights: &[u16], next: Arc<AtomicUsize>) -> Self {
        Smooth {
            sequence: sequence(&scaled(weights)),
            next,
        }
    }

    pub(crate) fn pick(&self, view: &impl View) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| self.sequence[(start + k) % len] as usize)
            .find(|&i| view.eligible(i))
    }
}

/// Weights divided by their common divisor, scaled down when the sequence
/// would be too long (every non-zero weight stays at least 1).
fn scaled(weights: &[u16]) -> Vec<u64> {
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w)))
        .max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    if total <= MAX_SEQUENCE {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| {
            if w == 0 {
                0
            } else {
                (w * MAX_SEQUENCE / total).max(1)
            }
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The smooth weighted round-robin order: each step every server gains its
/// weight, the richest is served and pays the total.
fn sequence(weights: &[u64]) -> Vec<u32> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixed;
    use super::*;

    #[test]
    fn smooth_and_weighted() {
        let rr = Smooth::new(&[5, 1, 1], Arc::default());
        let picks: Vec<usize> = (0..7)
            .map(|_| rr.pick(&Fixed::default()).unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn zero_weight_and_exclusions() {
        let rr = Smooth::new(&[0, 256, 128], Arc::default());
        let view = Fixed::default();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[rr.pick(&view).unwrap()] += 1;
        }
        assert_eq!(counts, [0, 200, 100]);
        let only_two = Fixed {
            excluded: vec![1],
            ..Fixed::default()
        };
        assert!((0..10).all(|_| rr.pick(&only_two) == Some(2)));
        assert_eq!(Smooth::new(&[0, 0], Arc::default()).pick(&view), None);
    }

    #[test]
    fn many_servers_with_coprime_weights_stay_bounded() {
        let weights: Vec<u16> = (1..=200).map(|i| (i % 256) as u16).collect();
        let rr = Smooth::new(&weights, Arc::default());
        assert!(rr.sequence.len() as u64 <= MAX_SEQUENCE + weights.len() as u64);
        assert!(weights
            .iter()
            .enumerate()
            .all(|(i, _)| rr.sequence.contains(&(i as u32))));
    }
}
