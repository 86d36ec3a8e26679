//! Server choice: the four HAProxy algorithms as pure functions over a table
//! built once per configuration (weights, hash seeds, a round-robin
//! sequence). Picking takes no lock: the only shared state is atomics. What
//! a server's load is and whether it may be chosen comes from the caller
//! through [`View`], so every algorithm is tested without sockets.

pub(crate) mod hash;
mod leastconn;
mod random;
mod roundrobin;
mod source;

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// A balance algorithm as named in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Consistent hash of the client address: every replica with the same
    /// server list sends a client to the same server.
    Source,
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Power of two random choices, weighted.
    Random,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Source => "source",
            Algorithm::RoundRobin => "roundrobin",
            Algorithm::LeastConn => "leastconn",
            Algorithm::Random => "random",
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "source" => Ok(Algorithm::Source),
            "roundrobin" => Ok(Algorithm::RoundRobin),
            "leastconn" => Ok(Algorithm::LeastConn),
            "random" => Ok(Algorithm::Random),
            _ => Err(format!(
                "unknown balance `{s}`: expected source, roundrobin, leastconn or random"
            )),
        }
    }
}

/// What a balancer may ask about the servers at the moment of a pick.
pub trait View {
    /// Whether server `i` may take this connection (not tried already, not down).
    fn eligible(&self, i: usize) -> bool;
    /// Connections server `i` is serving now.
    fn active(&self, i: usize) -> usize;
}

/// A server as the balancer sees it.
pub struct Member<'a> {
    /// Stable identity (name and address): the consistent hash depends on it,
    /// so replicas that list the same servers agree.
    pub identity: &'a str,
    /// 0..=256; 0 takes no new connections.
    pub weight: u16,
}

/// A prebuilt balancer for one backend's server list.
#[derive(Debug)]
pub enum Balancer {
    Source(source::Rendezvous),
    RoundRobin(roundrobin::Smooth),
    LeastConn(leastconn::LeastConn),
    Random(random::TwoChoices),
}

impl Balancer {
    /// `rotation` is the round-robin position (or leastconn tie-breaker);
    /// passing the previous configuration's keeps it across reloads.
    pub fn new(algorithm: Algorithm, members: &[Member<'_>], rotation: Arc<AtomicUsize>) -> Self {
        let weights: Vec<u16> = members.iter().map(|m| m.weight).collect();
        match algorithm {
            Algorithm::Source => Balancer::Source(source::Rendezvous::new(members)),
            Algorithm::RoundRobin => {
                Balancer::RoundRobin(roundrobin::Smooth::new(&weights, rotation))
            }
            Algorithm::LeastConn => {
                Balancer::LeastConn(leastconn::LeastConn::new(weights, rotation))
            }
            Algorithm::Random => Balancer::Random(random::TwoChoices::new(weights)),
        }
    }

    /// The server for a new connection from `client`, or `None` when no
    /// eligible server has a weight above zero.
    pub fn pick(&self, client: IpAddr, view: &impl View) -> Option<usize> {
        match self {
            Balancer::Source(b) => b.pick(client, view),
            Balancer::RoundRobin(b) => b.pick(view),
            Balancer::LeastConn(b) => b.pick(view),
            Balancer::Random(b) => b.pick(view),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::View;
    use std::cell::RefCell;

    /// A view where every server is eligible unless excluded, with loads the
    /// test sets.
    #[derive(Default)]
    pub(crate) struct Fixed {
        pub(crate) excluded: Vec<usize>,
        pub(crate) load: RefCell<Vec<usize>>,
    }

    impl View for Fixed {
        fn eligible(&self, i: usize) -> bool {
            !self.excluded.contains(&i)
        }
        fn active(&self, i: usize) -> usize {
            self.load.borrow().get(i).copied().unwrap_or(0)
        }
    }
}
