//! The most frequent names that matched no route, kept without a global
//! lock: a flood of random SNIs from a scanner must not serialise the
//! workers on the miss path.
//!
//! Counts go to a count-min sketch (4 rows of 1,024 atomic counters,
//! 32 KiB, fixed); the names worth showing sit in 64 candidate slots. A
//! miss costs four `fetch_add`s and a scan of 64 atomic hashes. Only a name
//! whose estimate rises above both the weakest candidate and 1/64 of all
//! misses takes the candidate list's lock, with `try_lock`: a random flood
//! never does (each name's estimate stays near misses/1,024), a real heavy
//! hitter (over 1/64 of the misses) always gets in. Estimates never
//! undercount; they overcount by at most misses/1,024 per row with high
//! probability.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::model::balance::hash::hash_bytes;

const ROWS: usize = 4;
const WIDTH: usize = 1024;
/// Candidate names kept.
pub(crate) const KEPT: usize = 64;

#[derive(Debug)]
pub struct TopNames {
    sketch: Box<[AtomicU64]>,
    total: AtomicU64,
    /// Hash of each candidate's name (0: empty), readable without the lock.
    hashes: [AtomicU64; KEPT],
    /// The estimate a name must beat to become a candidate.
    floor: AtomicU64,
    names: Mutex<Vec<(u64, String)>>,
}

impl Default for TopNames {
    fn default() -> Self {
        TopNames {
            sketch: (0..ROWS * WIDTH).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            hashes: std::array::from_fn(|_| AtomicU64::new(0)),
            floor: AtomicU64::new(0),
            names: Mutex::new(Vec::with_capacity(KEPT)),
        }
    }
}

impl TopNames {
    /// Counts one more occurrence of `name`.
    pub fn add(&self, name: &str) {
        let hash = hash_bytes(name.as_bytes());
        let total = self.total.fetch_add(1, Relaxed) + 1;
        let mut estimate = u64::MAX;
        for row in 0..ROWS {
            let cell = &self.sketch[row * WIDTH + cell(hash, row)];
            estimate = estimate.min(cell.fetch_add(1, Relaxed) + 1);
        }
        let marker = hash | 1; // never 0, which marks an empty slot
        if self.hashes.iter().any(|h| h.load(Relaxed) == marker) {
            return;
        }
        if estimate <= self.floor.load(Relaxed) || estimate * KEPT as u64 <= total {
            return;
        }
        // Contended: skip; the name's next miss tries again.
        if let Ok(mut names) = self.names.try_lock() {
            self.admit(&mut names, hash, name);
        }
    }

    fn admit(&self, names: &mut Vec<(u64, String)>, hash: u64, name: &str) {
        if names.iter().any(|(h, _)| *h == hash) {
            return;
        }
        let slot = if names.len() < KEPT {
            names.push((hash, name.to_string()));
            names.len() - 1
        } else {
            let weakest = (0..names.len()).min_by_key(|&i| self.estimate(names[i].0));
            let Some(i) = weakest else { return };
            names[i] = (hash, name.to_string());
            i
        };
        self.hashes[slot].store(hash | 1, Relaxed);
        if names.len() == KEPT {
            let floor = names.iter().map(|(h, _)| self.estimate(*h)).min();
            self.floor.store(floor.unwrap_or(0), Relaxed);
        }
    }

    fn estimate(&self, hash: u64) -> u64 {
        (0..ROWS)
            .map(|row| self.sketch[row * WIDTH + cell(hash, row)].load(Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// The `n` most frequent candidates with their estimated counts.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<(String, u64)> = names
            .iter()
            .map(|(h, name)| (name.clone(), self.estimate(*h)))
            .collect();
        drop(names);
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list.truncate(n);
        list
    }

    /// Candidates kept now (at most `KEPT`).
    pub fn len(&self) -> usize {
        self.names.lock().map_or(KEPT, |n| n.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The column of `hash` in `row`: a different 10-bit slice per row.
fn cell(hash: u64, row: usize) -> usize {
    ((hash >> (row * 16)) as usize) % WIDTH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_are_kept_and_random_names_do_not_crowd_them_out() {
        let top = TopNames::default();
        for i in 0..100_000 {
            top.add(&format!("random-{i}.example.org"));
            if i % 20 == 0 {
                top.add("scanner.example.org");
            }
            if i % 50 == 0 {
                top.add("old-route.example.org");
            }
        }
        assert!(top.len() <= KEPT);
        let list = top.top(3);
        assert_eq!(list[0].0, "scanner.example.org", "{list:?}");
        assert_eq!(list[1].0, "old-route.example.org", "{list:?}");
        // Never under, and close: 5,000 and 2,000 true hits.
        assert!((5_000..5_400).contains(&list[0].1), "{list:?}");
        assert!((2_000..2_400).contains(&list[1].1), "{list:?}");
    }

    #[test]
    fn a_few_names_are_counted_exactly() {
        let top = TopNames::default();
        for _ in 0..3 {
            top.add("a.test");
        }
        top.add("b.test");
        assert_eq!(
            top.top(10),
            vec![("a.test".to_string(), 3), ("b.test".to_string(), 1)]
        );
    }
}
