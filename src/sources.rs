//! Limits per client address on a listener: connections open at once
//! (`max_connections_per_source`) and new connections per period
//! (`connection_rate_per_source`, a token bucket). IPv6 clients are grouped
//! by their `/ipv6_source_prefix` so that one host cannot dodge the limit
//! by rotating addresses; IPv4-mapped addresses count as IPv4.
//!
//! The table is sharded (no lock shared by all accepts) and bounded: a
//! shard that is full drops a source with nothing open before it takes a
//! new one, so a flood of distinct addresses never grows it. Its state
//! outlives reloads (one table per listener name).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const SHARDS: usize = 32;
/// Sources tracked per listener at most.
pub const CAPACITY: usize = 65_536;

/// `N/period`: at most `count` new connections per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}`: expected a rate such as \"20/10s\"");
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = crate::config::duration::parse(per.trim()).map_err(|_| bad())?;
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
pub struct Limits {
    pub concurrent: Option<u32>,
    pub rate: Option<Rate>,
    /// IPv6 clients in one block of this length are one source.
    pub ipv6_prefix: u8,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} connections already open from this source (max_connections_per_source)")]
    Concurrent(u32),
    #[error("more than {} new connections in {:?} from this source (connection_rate_per_source)", .0.count, .0.per)]
    Rate(Rate),
}

#[derive(Debug)]
struct Entry {
    open: u32,
    tokens: f64,
    refilled: Instant,
}

/// A listener's limits with its table.
#[derive(Debug, Clone)]
pub struct Limited {
    pub table: Arc<Sources>,
    pub limits: Limits,
}

impl PartialEq for Limited {
    fn eq(&self, other: &Self) -> bool {
        self.limits == other.limits && Arc::ptr_eq(&self.table, &other.table)
    }
}

impl Eq for Limited {}

impl Limited {
    /// Admits a connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        self.table.admit(ip, &self.limits)
    }
}

/// The sources of one listener.
#[derive(Debug)]
pub struct Sources {
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
}

/// A source: an IPv4 address, or an IPv6 block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6(u128),
}

/// One admitted connection; releases its place when dropped.
#[derive(Debug)]
pub struct Admitted {
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
        if let Some(entry) = shard.get_mut(&key) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

/// The table of the listener `name`, the same across reloads.
pub fn table(name: &str) -> Arc<Sources> {
    static TABLES: OnceLock<Mutex<HashMap<String, Arc<Sources>>>> = OnceLock::new();
    let tables = TABLES.get_or_init(Default::default);
    let mut tables = tables.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(tables.entry(name.to_string()).or_insert_with(|| {
        Arc::new(Sources {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }))
}

/// The source `ip` counts as.
fn key(ip: IpAddr, ipv6_prefix: u8) -> Key {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(ipv6_prefix.min(128)))
                .unwrap_or(0);
            Key::V6(u128::from(v6) & mask)
        }
    }
}

impl Sources {
    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        let bits = match key {
            Key::V4(v4) => u128::from(v4),
            Key::V6(v6) => v6 ^ (v6 >> 64),
        };
        let index = (bits ^ (bits >> 32)) as usize % self.shards.len();
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip` under `limits`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Admitted, Refusal> {
        let key = key(ip, limits.ipv6_prefix);
        let now = Instant::now();
        let mut shard = self.shard(key);
        if !shard.contains_key(&key) && shard.len() >= CAPACITY / SHARDS {
            // Full: make room by dropping a source with nothing open.
            let idle = shard.iter().find(|(_, e)| e.open == 0).map(|(k, _)| *k);
            match idle {
                Some(k) => {
                    shard.remove(&k);
                }
                // Every tracked source has connections open: this one is
                // admitted untracked (the listener's max_connections
                // still bounds the total).
                None => return Ok(self.untracked()),
            }
        }
        let burst = limits.rate.map_or(0.0, |r| f64::from(r.count));
        let entry = shard.entry(key).or_insert(Entry {
            open: 0,
            tokens: burst,
            refilled: now,
        });
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
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
        Arc::new(Sources {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn concurrent_connections_are_counted_per_source() {
        let t = fresh();
        let l = limits(Some(2), None);
        let a = t.admit(ip("192.0.2.1"), &l).expect("1st");
        let _b = t
            .admit(ip("::ffff:192.0.2.1"), &l)
            .expect("2nd, IPv4-mapped is the same");
        assert_eq!(
            t.admit(ip("192.0.2.1"), &l).err(),
            Some(Refusal::Concurrent(2))
        );
        assert!(t.admit(ip("192.0.2.2"), &l).is_ok(), "another source");
        drop(a);
        assert!(t.admit(ip("192.0.2.1"), &l).is_ok(), "a place freed");
        // One /64 is one source.
        let _c = t.admit(ip("2001:db8::1"), &l).expect("v6");
        let _d = t.admit(ip("2001:db8::ffff:2"), &l).expect("v6, same /64");
        assert!(t.admit(ip("2001:db8::3"), &l).is_err());
        assert!(t.admit(ip("2001:db8:0:1::1"), &l).is_ok(), "another /64");
    }

    #[test]
    fn new_connections_are_rate_limited() {
        let t = fresh();
        let l = limits(None, Some("3/1h"));
        for _ in 0..3 {
            drop(t.admit(ip("198.51.100.7"), &l).expect("within the rate"));
        }
        assert!(matches!(
            t.admit(ip("198.51.100.7"), &l),
            Err(Refusal::Rate(_))
        ));
        assert!(t.admit(ip("198.51.100.8"), &l).is_ok());
    }

    #[test]
    fn a_flood_of_addresses_never_grows_the_table() {
        let t = fresh();
        let l = limits(Some(4), Some("10/1s"));
        for i in 0..200_000u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            drop(t.admit(ip, &l).expect("admitted"));
        }
        assert!(t.len() <= CAPACITY, "{} entries", t.len());
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
