//! Limits per client address, on a listener or a backend: connections open
//! at once (`max_connections_per_source`), new connections per period
//! (`connection_rate_per_source`, a token bucket) and, in HTTP mode,
//! requests per period (`http_request_rate_per_source`). IPv6 clients are
//! grouped by their `/ipv6_source_prefix` so that one host cannot dodge the
//! limit by rotating addresses; IPv4-mapped addresses count as IPv4.
//!
//! A table is sharded (no lock shared by all accepts; the shard of an
//! address is keyed by a secret drawn at start, so a client cannot aim a
//! block of addresses at one shard) and bounded: a shard that is full drops
//! its idlest sources with nothing open before it takes a new one, so a
//! flood of distinct addresses never grows it; a source with nothing open
//! and no rate to remember is dropped at once. A shard whose every source
//! has connections open admits a new source untracked, as a stick table
//! that is full does, and looks for idle ones again only once one of its
//! sources has gone idle. Each listener
//! has a table of its own; backends share one, each under its own scope
//! (a hash of its name), so a configuration of 100,000 backends costs no
//! more than one. Tables outlive reloads.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

const SHARDS: usize = 32;
/// Sources tracked per listener at most.
pub(crate) const CAPACITY: usize = 65_536;
/// Sources tracked for all backends together at most.
pub(crate) const BACKEND_CAPACITY: usize = 262_144;

/// `N/period`: at most `count` new connections per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) count: u32,
    pub(crate) per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}`: expected a rate such as \"20/10s\"");
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = crate::model::duration::parse(per.trim()).map_err(|_| bad())?;
        if count == 0 || per.is_zero() {
            return Err(format!(
                "`{text}`: a rate of zero would refuse every connection"
            ));
        }
        Ok(Rate { count, per })
    }
}

/// A listener's per-source limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) concurrent: Option<u32>,
    pub(crate) rate: Option<Rate>,
    /// IPv6 clients in one block of this length are one source.
    pub(crate) ipv6_prefix: u8,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("{0} connections already open from this source (max_connections_per_source)")]
    Concurrent(u32),
    #[error("more than {} new connections in {:?} from this source (connection_rate_per_source)", .0.count, .0.per)]
    Rate(Rate),
}

impl Refusal {
    /// Seconds until a refused client may try again (`Retry-After`).
    pub(crate) fn retry_after(&self) -> u64 {
        match self {
            Refusal::Concurrent(_) => 1,
            Refusal::Rate(rate) => {
                let wait = rate.per.as_secs_f64() / f64::from(rate.count);
                (wait.ceil() as u64).max(1)
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    open: u32,
    tokens: f64,
    refilled: Instant,
    /// Last admitted or released: the idlest goes first when full.
    seen: Instant,
    /// Whether its tokens must be remembered once nothing is open.
    rated: bool,
}

/// A listener's or backend's limits with its table.
#[derive(Debug, Clone)]
pub(crate) struct Limited {
    pub(crate) table: Arc<Sources>,
    /// Whose entries these are in a shared table (0 for a listener).
    pub(crate) scope: u64,
    pub(crate) limits: Limits,
}

impl PartialEq for Limited {
    fn eq(&self, other: &Self) -> bool {
        self.limits == other.limits
            && self.scope == other.scope
            && Arc::ptr_eq(&self.table, &other.table)
    }
}

impl Eq for Limited {}

impl Limited {
    /// Admits a connection from `ip`, or says why not.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        self.table.admit(self.scope, ip, &self.limits)
    }

    /// The limits of backend `name`, in the table all backends share.
    pub(crate) fn backend(name: &str, salt: u64, limits: Limits) -> Self {
        static BACKENDS: OnceLock<Arc<Sources>> = OnceLock::new();
        let table = BACKENDS.get_or_init(|| Sources::with_capacity(BACKEND_CAPACITY));
        Limited {
            table: Arc::clone(table),
            scope: crate::model::balance::hash::hash_bytes(name.as_bytes()) ^ salt,
            limits,
        }
    }
}

/// The sources of one listener, or of every backend.
#[derive(Debug)]
pub(crate) struct Sources {
    shards: Vec<Mutex<Shard>>,
    /// Which shard a source is in: keyed, drawn at start.
    spread: RandomState,
    /// Entries per shard at most.
    per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Key, Entry>,
    /// Set when a search for idle sources found none; cleared when one of
    /// its sources goes idle (so a full, busy shard is not searched for
    /// every new source).
    all_busy: bool,
}

/// A source (an IPv4 address, or an IPv6 block) as one scope sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    scope: u64,
    addr: Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Addr {
    V4(u32),
    V6(u128),
}

/// One admitted connection; releases its place when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    table: Arc<Sources>,
    /// `None`: admitted untracked (the table was full of busy sources).
    key: Option<Key>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(key) = self.key else {
            return;
        };
        let mut shard = self.table.shard(key);
        let Some(entry) = shard.entries.get_mut(&key) else {
            return;
        };
        entry.open = entry.open.saturating_sub(1);
        if entry.open == 0 && !entry.rated {
            // Nothing open and no rate to remember: as if never seen.
            shard.entries.remove(&key);
            shard.all_busy = false;
        } else {
            entry.seen = Instant::now();
            if entry.open == 0 {
                shard.all_busy = false;
            }
        }
    }
}

/// The table of the listener `name`, the same across reloads while a
/// configuration in use has it (a listener removed for good takes its
/// table with it).
pub(crate) fn table(name: &str) -> Arc<Sources> {
    static TABLES: OnceLock<Mutex<HashMap<String, Weak<Sources>>>> = OnceLock::new();
    let tables = TABLES.get_or_init(Default::default);
    let mut tables = tables.lock().unwrap_or_else(|p| p.into_inner());
    tables.retain(|_, table| table.strong_count() > 0);
    if let Some(table) = tables.get(name).and_then(Weak::upgrade) {
        return table;
    }
    let table = Sources::with_capacity(CAPACITY);
    tables.insert(name.to_string(), Arc::downgrade(&table));
    table
}

/// The source `ip` counts as.
fn addr(ip: IpAddr, ipv6_prefix: u8) -> Addr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Addr::V4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(ipv6_prefix.min(128)))
                .unwrap_or(0);
            Addr::V6(u128::from(v6) & mask)
        }
    }
}

impl Sources {
    fn with_capacity(capacity: usize) -> Arc<Self> {
        Arc::new(Sources {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            spread: RandomState::new(),
            per_shard: (capacity / SHARDS).max(1),
        })
    }

    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, Shard> {
        let index = (self.spread.hash_one(key) % self.shards.len() as u64) as usize;
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip` under `limits` in `scope`, or says why
    /// not.
    pub(crate) fn admit(
        self: &Arc<Self>,
        scope: u64,
        ip: IpAddr,
        limits: &Limits,
    ) -> Result<Admitted, Refusal> {
        let key = Key {
            scope,
            addr: addr(ip, limits.ipv6_prefix),
        };
        let now = Instant::now();
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(&key) {
            // Full: make room by dropping the idlest sources with nothing
            // open, an eighth of the shard at a time (one pass over it
            // every so many new sources, not one per source).
            if shard.all_busy || !make_room(&mut shard.entries, (self.per_shard / 8).max(1)) {
                // Every tracked source has connections open: this one is
                // admitted untracked (the listener's max_connections
                // still bounds the total).
                shard.all_busy = true;
                return Ok(self.untracked());
            }
        }
        let burst = limits.rate.map_or(0.0, |r| f64::from(r.count));
        let rated = limits.rate.is_some();
        let entry = shard.entries.entry(key).or_insert(Entry {
            open: 0,
            tokens: burst,
            refilled: now,
            seen: now,
            rated,
        });
        if entry.rated != rated {
            // A reload added or removed the rate: start it afresh.
            entry.rated = rated;
            entry.tokens = burst;
            entry.refilled = now;
        }
        entry.seen = now;
        if let Some(max) = limits.concurrent {
            if entry.open >= max {
                return Err(Refusal::Concurrent(max));
            }
        }
        if let Some(rate) = limits.rate {
            let refill = now.duration_since(entry.refilled).as_secs_f64() / rate.per.as_secs_f64();
            entry.tokens = (entry.tokens + refill * f64::from(rate.count)).min(burst);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                return Err(Refusal::Rate(rate));
            }
            entry.tokens -= 1.0;
        }
        entry.open += 1;
        Ok(Admitted {
            table: Arc::clone(self),
            key: Some(key),
        })
    }

    /// A guard that releases nothing.
    fn untracked(self: &Arc<Self>) -> Admitted {
        Admitted {
            table: Arc::clone(self),
            key: None,
        }
    }

    /// Sources tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.entries.len()))
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops up to `room` sources with nothing open, the idlest first;
/// whether any could go.
fn make_room(shard: &mut HashMap<Key, Entry>, room: usize) -> bool {
    let mut idle: Vec<(Instant, Key)> = shard
        .iter()
        .filter(|(_, e)| e.open == 0)
        .map(|(k, e)| (e.seen, *k))
        .collect();
    if idle.is_empty() {
        return false;
    }
    let n = room.min(idle.len());
    if n < idle.len() {
        idle.select_nth_unstable_by_key(n - 1, |(seen, _)| *seen);
    }
    for (_, key) in &idle[..n] {
        shard.remove(key);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrent: Option<u32>, rate: Option<&str>) -> Limits {
        Limits {
            concurrent,
            rate: rate.map(|r| r.parse().expect("rate")),
            ipv6_prefix: 64,
        }
    }

    fn fresh() -> Arc<Sources> {
        Sources::with_capacity(CAPACITY)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn concurrent_connections_are_counted_per_source() {
        let t = fresh();
        let l = limits(Some(2), None);
        let a = t.admit(0, ip("192.0.2.1"), &l).expect("1st");
        let _b = t
            .admit(0, ip("::ffff:192.0.2.1"), &l)
            .expect("2nd, IPv4-mapped is the same");
        assert_eq!(
            t.admit(0, ip("192.0.2.1"), &l).err(),
            Some(Refusal::Concurrent(2))
        );
        assert!(t.admit(0, ip("192.0.2.2"), &l).is_ok(), "another source");
        drop(a);
        assert!(t.admit(0, ip("192.0.2.1"), &l).is_ok(), "a place freed");
        // One /64 is one source.
        let _c = t.admit(0, ip("2001:db8::1"), &l).expect("v6");
        let _d = t
            .admit(0, ip("2001:db8::ffff:2"), &l)
            .expect("v6, same /64");
        assert!(t.admit(0, ip("2001:db8::3"), &l).is_err());
        assert!(t.admit(0, ip("2001:db8:0:1::1"), &l).is_ok(), "another /64");
    }

    #[test]
    fn new_connections_are_rate_limited() {
        let t = fresh();
        let l = limits(None, Some("3/1h"));
        for _ in 0..3 {
            drop(t.admit(0, ip("198.51.100.7"), &l).expect("within the rate"));
        }
        assert!(matches!(
            t.admit(0, ip("198.51.100.7"), &l),
            Err(Refusal::Rate(_))
        ));
        assert!(t.admit(0, ip("198.51.100.8"), &l).is_ok());
    }

    #[test]
    fn a_flood_of_addresses_never_grows_the_table() {
        let t = fresh();
        let l = limits(Some(4), Some("10/1s"));
        for i in 0..200_000u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            drop(t.admit(0, ip, &l).expect("admitted"));
        }
        assert!(t.len() <= CAPACITY, "{} entries", t.len());
    }

    #[test]
    fn the_idlest_source_is_evicted_first() {
        // One shard of two entries, so every key lands in a full shard.
        let t = one_shard_of(2);
        let l = limits(None, Some("1/1h"));
        drop(t.admit(0, ip("192.0.2.1"), &l).expect("a"));
        std::thread::sleep(Duration::from_millis(5));
        drop(t.admit(0, ip("192.0.2.2"), &l).expect("b"));
        std::thread::sleep(Duration::from_millis(5));
        // A third source takes the place of the idlest (a), not of b.
        drop(t.admit(0, ip("192.0.2.3"), &l).expect("c"));
        assert_eq!(t.len(), 2);
        assert!(
            t.admit(0, ip("192.0.2.2"), &l).is_err(),
            "b is remembered: its rate is spent"
        );
        assert!(
            t.admit(0, ip("192.0.2.1"), &l).is_ok(),
            "a was evicted and starts afresh"
        );
    }

    fn one_shard_of(per_shard: usize) -> Arc<Sources> {
        Arc::new(Sources {
            shards: vec![Mutex::default()],
            spread: RandomState::new(),
            per_shard,
        })
    }

    #[test]
    fn a_shard_of_busy_sources_admits_untracked_until_one_goes_idle() {
        let t = one_shard_of(2);
        let l = limits(Some(1), Some("1/1h"));
        let a = t.admit(0, ip("192.0.2.1"), &l).expect("a");
        let _b = t.admit(0, ip("192.0.2.2"), &l).expect("b");
        // Full of sources with connections open: c and d are admitted
        // untracked (no limit applies to them) and the shard is marked.
        let _c1 = t.admit(0, ip("192.0.2.3"), &l).expect("c, untracked");
        let _c2 = t.admit(0, ip("192.0.2.3"), &l).expect("c again, untracked");
        assert!(t.shards[0].lock().expect("shard").all_busy);
        assert_eq!(t.len(), 2);
        // a goes idle: the next new source takes its place and is tracked.
        drop(a);
        assert!(!t.shards[0].lock().expect("shard").all_busy);
        let _d = t.admit(0, ip("192.0.2.4"), &l).expect("d, tracked");
        assert_eq!(
            t.admit(0, ip("192.0.2.4"), &l).err(),
            Some(Refusal::Concurrent(1)),
            "d is counted"
        );
    }

    #[test]
    fn a_rate_added_by_a_reload_starts_with_a_full_bucket() {
        let t = fresh();
        let concurrent = limits(Some(5), None);
        let _open = t.admit(0, ip("192.0.2.1"), &concurrent).expect("unrated");
        let rated = limits(Some(5), Some("2/1h"));
        for n in 0..2 {
            let admitted = t.admit(0, ip("192.0.2.1"), &rated);
            assert!(admitted.is_ok(), "connection {n} within the new rate");
        }
        assert!(matches!(
            t.admit(0, ip("192.0.2.1"), &rated),
            Err(Refusal::Rate(_))
        ));
    }

    #[test]
    fn listener_tables_live_while_a_configuration_holds_them() {
        let name = "sources-test-listener";
        let first = table(name);
        let l = limits(Some(1), None);
        let held = first.admit(0, ip("192.0.2.1"), &l).expect("held");
        assert!(
            table(name).admit(0, ip("192.0.2.1"), &l).is_err(),
            "the same table across reloads"
        );
        drop(held);
        drop(first);
        assert!(table(name).is_empty(), "a new table once none held it");
    }

    #[test]
    fn scopes_are_counted_apart_and_unrated_sources_are_forgotten() {
        let t = fresh();
        let l = limits(Some(1), None);
        let a = t.admit(1, ip("192.0.2.1"), &l).expect("scope 1");
        let _b = t
            .admit(2, ip("192.0.2.1"), &l)
            .expect("scope 2 is another count");
        assert!(t.admit(1, ip("192.0.2.1"), &l).is_err());
        assert_eq!(t.len(), 2);
        drop(a);
        assert_eq!(t.len(), 1, "nothing open, no rate: forgotten");
    }

    #[test]
    fn retry_after_is_the_time_for_one_token() {
        let r: Rate = "10/1m".parse().expect("rate");
        assert_eq!(Refusal::Rate(r).retry_after(), 6);
        let r: Rate = "100/1s".parse().expect("rate");
        assert_eq!(Refusal::Rate(r).retry_after(), 1);
    }

    #[test]
    fn rates_are_read_with_their_period() {
        let r: Rate = "20/10s".parse().expect("rate");
        assert_eq!((r.count, r.per), (20, Duration::from_secs(10)));
        for bad in ["20", "x/1s", "0/1s", "5/0s", "5/"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
