//! The last minutes of traffic, second by second, for the stats page:
//! each frontend's and backend's rate now and at its peak, a graph of
//! the last [`SECONDS`], and response-time quantiles over the last
//! minute. Fed once a second by the stats sampler from the totals the data
//! path keeps (the data path never sees this, and takes none of its
//! locks); read when the page renders. Bounded whatever the traffic: a
//! fixed ring per series, entries dropped when their frontend or backend
//! is gone from the configuration.

use std::collections::{HashMap, VecDeque};

use super::counters::LATENCY_BUCKETS;

/// Seconds of history kept and drawn.
pub(crate) const SECONDS: usize = 180;

/// Response-time snapshots kept, one every [`WINDOW_STEP`] samples: the
/// quantiles span the last minute.
const WINDOW_STEP: u64 = 10;
const WINDOW_SNAPSHOTS: usize = 7;

/// Per-second increments of a running total.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    last_total: Option<u64>,
    ring: VecDeque<u32>,
    peak: u32,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            last_total: None,
            ring: VecDeque::with_capacity(SECONDS),
            peak: 0,
        }
    }
}

impl Series {
    /// Takes the total as of now: the increment since the last second
    /// becomes the newest sample (a total that went back, a counter
    /// recreated, counts as 0).
    pub(crate) fn push(&mut self, total: u64) {
        let delta = self.last_total.map_or(0, |last| total.saturating_sub(last));
        self.last_total = Some(total);
        let delta = u32::try_from(delta).unwrap_or(u32::MAX);
        if self.ring.len() == SECONDS {
            self.ring.pop_front();
        }
        self.ring.push_back(delta);
        self.peak = self.peak.max(delta);
    }

    /// The last second's increment.
    pub(crate) fn now(&self) -> u32 {
        self.ring.back().copied().unwrap_or(0)
    }

    /// The largest one-second increment seen.
    pub(crate) fn peak(&self) -> u32 {
        self.peak
    }

    /// The samples, oldest first.
    pub(crate) fn samples(&self) -> impl Iterator<Item = u32> + '_ {
        self.ring.iter().copied()
    }
}

/// What is kept of one frontend or backend.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// Sessions (connections; HTTP mode: requests) per second.
    pub(crate) sessions: Series,
    /// Errors per second (connection errors, the router's own 5xx).
    pub(crate) errors: Series,
    /// Cumulative response-time buckets, one every [`WINDOW_STEP`] s,
    /// oldest first, and as of the last sample.
    latency: VecDeque<[u64; LATENCY_BUCKETS]>,
    latency_now: [u64; LATENCY_BUCKETS],
    /// The sample round this entry was last fed in.
    seen: u64,
}

impl Entry {
    /// The response-time quantile `q` (0..1) over the last minute, in ms:
    /// `None` before any response in it.
    pub(crate) fn latency_ms(&self, q: f64) -> Option<f64> {
        let oldest = self.latency.front()?;
        let window: [u64; LATENCY_BUCKETS] =
            std::array::from_fn(|i| self.latency_now[i].saturating_sub(oldest[i]));
        quantile(&window, q)
    }
}

/// The totals one frontend or backend has as of a sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) sessions: u64,
    pub(crate) errors: u64,
    pub(crate) latency: [u64; LATENCY_BUCKETS],
}

/// Every frontend's and backend's history, by kind and name.
#[derive(Debug, Default)]
pub(crate) struct History {
    entries: HashMap<(Kind, String), Entry>,
    round: u64,
}

/// Which table an entry belongs to (a frontend and a backend may share a
/// name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Frontend,
    Backend,
}

impl History {
    /// Starts a sample round (once a second).
    pub(crate) fn begin(&mut self) {
        self.round += 1;
    }

    /// Takes `name`'s totals in this round.
    pub(crate) fn sample(&mut self, kind: Kind, name: &str, totals: Totals) {
        let round = self.round;
        let entry = match self.entries.get_mut(&(kind, name.to_string())) {
            Some(entry) => entry,
            None => self.entries.entry((kind, name.to_string())).or_default(),
        };
        entry.seen = round;
        entry.sessions.push(totals.sessions);
        entry.errors.push(totals.errors);
        entry.latency_now = totals.latency;
        if round % WINDOW_STEP == 1 || entry.latency.is_empty() {
            if entry.latency.len() == WINDOW_SNAPSHOTS {
                entry.latency.pop_front();
            }
            entry.latency.push_back(totals.latency);
        }
    }

    /// Ends a round: entries not fed in it (their frontend or backend is
    /// gone) are dropped.
    pub(crate) fn end(&mut self) {
        let round = self.round;
        self.entries.retain(|_, e| e.seen == round);
    }

    pub(crate) fn get(&self, kind: Kind, name: &str) -> Option<&Entry> {
        self.entries.get(&(kind, name.to_string()))
    }
}

/// The quantile `q` of response times counted in `buckets` (whose upper
/// bounds are [`counters::LATENCY_BOUNDS_MS`](super::counters::LATENCY_BOUNDS_MS)),
/// interpolated within its bucket; `None` when nothing was counted.
pub(crate) fn quantile(buckets: &[u64; LATENCY_BUCKETS], q: f64) -> Option<f64> {
    use super::counters::LATENCY_BOUNDS_MS as BOUNDS;
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut below = 0.0;
    for (i, &n) in buckets.iter().enumerate() {
        let n = n as f64;
        if below + n >= rank && n > 0.0 {
            let low = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
            // The last bucket is open: its lower bound is all we know.
            let high = BOUNDS.get(i).copied().unwrap_or(low);
            return Some(low + (high - low) * (rank - below) / n);
        }
        below += n;
    }
    BOUNDS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(sessions: u64) -> Totals {
        Totals {
            sessions,
            errors: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }

    #[test]
    fn a_series_keeps_per_second_increments_and_its_peak() {
        let mut s = Series::default();
        for total in [100, 105, 125, 126, 90] {
            s.push(total);
        }
        // The first total is the baseline; a total that went back is 0.
        assert_eq!(s.samples().collect::<Vec<_>>(), [0, 5, 20, 1, 0]);
        assert_eq!((s.now(), s.peak()), (0, 20));
        for i in 0..1000 {
            s.push(90 + i);
        }
        assert_eq!(s.samples().count(), SECONDS);
        assert_eq!(s.peak(), 20);
    }

    #[test]
    fn entries_of_removed_names_are_dropped() {
        let mut h = History::default();
        h.begin();
        h.sample(Kind::Backend, "a", totals(1));
        h.sample(Kind::Backend, "b", totals(1));
        h.end();
        h.begin();
        h.sample(Kind::Backend, "a", totals(4));
        h.end();
        assert_eq!(h.get(Kind::Backend, "a").map(|e| e.sessions.now()), Some(3));
        assert!(h.get(Kind::Backend, "b").is_none());
        assert!(h.get(Kind::Frontend, "a").is_none());
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut b = [0u64; LATENCY_BUCKETS];
        assert_eq!(quantile(&b, 0.5), None);
        // 100 responses between 2 and 5 ms (the third bucket).
        b[2] = 100;
        let p50 = quantile(&b, 0.5).expect("p50");
        assert!((p50 - 3.5).abs() < 1e-9, "{p50}");
        // One slow response of 100 in the 1-2 s bucket moves p99 only.
        b[2] = 99;
        b[10] = 1;
        assert!(quantile(&b, 0.5).expect("p50") < 5.0);
        let p99 = quantile(&b, 0.995).expect("p99");
        assert!((1000.0..=2000.0).contains(&p99), "{p99}");
    }

    #[test]
    fn latency_quantiles_span_the_last_minute() {
        let mut h = History::default();
        let mut t = totals(0);
        // A minute and more of fast responses, then slow ones only.
        for round in 0..80u64 {
            h.begin();
            if round < 70 {
                t.latency[0] += 10;
            } else {
                t.latency[9] += 10;
            }
            h.sample(Kind::Backend, "a", t);
            h.end();
        }
        let entry = h.get(Kind::Backend, "a").expect("entry");
        let p99 = entry.latency_ms(0.99).expect("p99");
        assert!(p99 > 500.0, "the slow responses are in the window: {p99}");
        let p50 = entry.latency_ms(0.5).expect("p50");
        assert!(p50 < 1.0, "most of the last minute was fast: {p50}");
    }
}
