//! `balance source`: weighted rendezvous (highest random weight) hashing of
//! the client address. Each server scores `weight / -ln(u)` with `u` a hash of
//! (client, server identity); the highest score wins. Removing a server
//! moves only the clients it had; adding one takes ~1/n of clients from the
//! others; no state is shared, so two replicas always agree.

use std::net::IpAddr;

use super::hash::{hash_bytes, mix};
use super::{Member, View};

#[derive(Debug)]
pub struct Rendezvous {
    /// Hash of each server's identity.
    seeds: Vec<u64>,
    weights: Vec<f64>,
}

impl Rendezvous {
    pub(crate) fn new(members: &[Member<'_>]) -> Self {
        Rendezvous {
            seeds: members
                .iter()
                .map(|m| hash_bytes(m.identity.as_bytes()))
                .collect(),
            weights: members.iter().map(|m| f64::from(m.weight)).collect(),
        }
    }

    pub(crate) fn pick(&self, client: IpAddr, view: &impl View) -> Option<usize> {
        let key = match client {
            IpAddr::V4(v4) => hash_bytes(&v4.octets()),
            IpAddr::V6(v6) => hash_bytes(&v6.octets()),
        };
        let mut best: Option<(usize, f64)> = None;
        for (i, (&seed, &weight)) in self.seeds.iter().zip(&self.weights).enumerate() {
            if weight == 0.0 || !view.eligible(i) {
                continue;
            }
            // Uniform in (0, 1), never 0 or 1.
            let u = ((mix(key ^ seed) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = weight / -u.ln();
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixed;
    use super::*;
    use std::net::Ipv4Addr;

    fn members(names: &[String], weight: u16) -> Vec<Member<'_>> {
        names
            .iter()
            .map(|n| Member {
                identity: n,
                weight,
            })
            .collect()
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7919))
    }

    #[test]
    fn same_list_same_choice_and_minimal_movement() {
        let names: Vec<String> = (0..5).map(|i| format!("pod-{i} 10.1.0.{i}:8443")).collect();
        let five = Rendezvous::new(&members(&names, 100));
        let again = Rendezvous::new(&members(&names, 100));
        let four = Rendezvous::new(&members(&names[..4], 100));
        let view = Fixed::default();
        let (mut moved, mut on_removed) = (0, 0);
        for i in 0..10_000 {
            let a = five.pick(client(i), &view).expect("a server");
            assert_eq!(Some(a), again.pick(client(i), &view), "replicas agree");
            let b = four.pick(client(i), &view).expect("a server");
            if a == 4 {
                on_removed += 1;
            } else if a != b {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "only the removed server's clients move");
        assert!((1_500..2_500).contains(&on_removed), "{on_removed} ~ 1/5");
    }

    #[test]
    fn weights_are_honoured_and_zero_gets_nothing() {
        let names: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
        let mut m = members(&names, 0);
        m[0].weight = 100;
        m[1].weight = 300;
        let r = Rendezvous::new(&m);
        let mut counts = [0; 3];
        for i in 0..20_000 {
            counts[r.pick(client(i), &Fixed::default()).expect("a server")] += 1;
        }
        assert_eq!(counts[2], 0);
        let ratio = f64::from(counts[1]) / f64::from(counts[0]);
        assert!((2.6..3.4).contains(&ratio), "{counts:?}");
    }

    /// Replicas of different versions must agree during a rolling upgrade:
    /// these choices are pinned. A change here is a decision to move
    /// clients, to be announced, never a refactoring side effect.
    #[test]
    fn golden_choices_are_stable_across_versions() {
        assert_eq!(hash_bytes(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash_bytes(b"10.0.0.1"), 0x7fb1_b600_f0f5_c6d3);
        // Identities as backends build them: "<name> <address>".
        let names: Vec<String> = (0..4)
            .map(|i| format!("pod:web-{i}:web:https:10.128.0.{i}:8443 10.128.0.{i}:8443"))
            .collect();
        let mut m = members(&names, 256);
        m[3].weight = 128;
        let r = Rendezvous::new(&m);
        let clients: Vec<IpAddr> = vec![
            "192.0.2.1".parse().expect("ip"),
            "192.0.2.77".parse().expect("ip"),
            "198.51.100.20".parse().expect("ip"),
            "203.0.113.5".parse().expect("ip"),
            "10.1.2.3".parse().expect("ip"),
            "2001:db8::1".parse().expect("ip"),
            "2001:db8::ff".parse().expect("ip"),
            "fd00::42".parse().expect("ip"),
        ];
        let picks: Vec<usize> = clients
            .iter()
            .map(|&c| r.pick(c, &Fixed::default()).expect("a server"))
            .collect();
        assert_eq!(picks, [2, 0, 2, 2, 1, 1, 0, 2]);
    }
}
