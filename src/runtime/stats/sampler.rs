//! Once a second, every frontend's and backend's totals go into the stats
//! page's history (`model::history`): what the rates, the graphs and the
//! response-time quantiles are drawn from. The totals are the atomics the
//! data path keeps; the history's lock is taken only here and by
//! rendering, never by a connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::model::counters::{global, LATENCY_BUCKETS};
use crate::model::history::{History, Kind, Totals};
use crate::runtime::router::Router;

/// Samples `router`'s counters into `history` every second, for ever.
pub(crate) async fn run(router: Arc<Router>, history: Arc<Mutex<History>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sample(&router, &history);
    }
}

/// One round: the current configuration's frontends and backends.
fn sample(router: &Router, history: &Mutex<History>) {
    let snapshot = router.snapshot();
    // Read before the lock: the frontends' table has a lock of its own.
    let frontends: Vec<_> = snapshot
        .listeners
        .iter()
        .map(|l| (Arc::clone(&l.name), global().frontend(&l.name).get()))
        .collect();
    let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
    h.begin();
    for (name, (connections, _, _, errors)) in frontends {
        let totals = Totals {
            sessions: connections,
            errors,
            latency: [0; LATENCY_BUCKETS],
        };
        h.sample(Kind::Frontend, &name, totals);
    }
    for b in &snapshot.backends {
        let (connections, _, _, errors) = b.traffic.get();
        let totals = Totals {
            sessions: connections,
            errors,
            latency: b.traffic.latency(),
        };
        h.sample(Kind::Backend, &b.name, totals);
    }
    h.end();
}
