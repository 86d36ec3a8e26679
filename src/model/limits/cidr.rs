//! Address blocks (`192.0.2.0/24`, `2001:db8::/32`, or one address) for
//! the configuration's source lists: who may send a PROXY header. IPv4
//! clients that reach an IPv6 socket as `::ffff:a.b.c.d` match IPv4
//! blocks.

use std::net::IpAddr;

/// One block of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an address or an address block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0..={max}"))?,
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != network {
            return Err(format!(
                "`{text}` has bits set after its /{prefix} prefix (did you mean {}/{prefix}?)",
                cidr.masked(network)
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// Whether `ip` is in this block.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cidr;
    use std::net::IpAddr;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let v4: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(v4.contains(ip("10.1.255.3")));
        assert!(
            v4.contains(ip("::ffff:10.1.0.9")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!v4.contains(ip("10.2.0.1")));
        assert!(!v4.contains(ip("::1")));
        let v6: Cidr = "2001:db8::/32".parse().expect("cidr");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let one: Cidr = "192.0.2.7".parse().expect("cidr");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("203.0.113.1")));
    }

    #[test]
    fn malformed_blocks_say_why() {
        for (text, says) in [
            ("10.0.0.0/33", "0..=32"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("example.com", "not an address"),
            ("10.0.0.0/x", "0..=32"),
        ] {
            let error = text.parse::<Cidr>().expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
