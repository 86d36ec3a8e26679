//! The PROXY protocol header (v1 text and v2 binary) that a load balancer
//! in front of the router sends before the client's bytes, naming the
//! client it accepted. A pure function over the bytes received so far, no
//! I/O: read more, here is the header (its length and the client it names),
//! or these bytes are not a valid header. The caller consumes exactly the
//! header's length; what follows (the ClientHello) is left in the socket.
//!
//! Bounded whatever the input: a v1 line is at most 107 bytes, a v2 header
//! at most [`V2_MAX`]; v2 TLVs are skipped, never interpreted.
//!
//! [`encode`] writes the header the router sends to servers of backends
//! with `send_proxy`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every v2 header starts with.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (the specification's bound).
pub(crate) const V1_MAX: usize = 107;
/// Longest v2 header accepted: addresses plus TLVs a load balancer sends
/// (AWS and GCP add a few dozen bytes).
pub(crate) const V2_MAX: usize = 16 + 2048;

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header takes at the start of the stream.
    pub(crate) len: usize,
    /// The client the sender accepted; `None` for v2 `LOCAL`, v1
    /// `UNKNOWN` and address families other than TCP over IPv4/IPv6: the
    /// connection's own peer address stands.
    pub client: Option<SocketAddr>,
}

/// What the bytes received so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A valid prefix: read more.
    Partial,
    Complete(Header),
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol header (the connection starts with something else)")]
    Missing,
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    #[error("PROXY v1 line is malformed: {0}")]
    V1Malformed(&'static str),
    #[error("PROXY v2 version {0} is not 2")]
    V2Version(u8),
    #[error("PROXY v2 command {0:#x} is neither LOCAL nor PROXY")]
    V2Command(u8),
    #[error("PROXY v2 header of {0} bytes is over the limit")]
    V2TooLong(usize),
    #[error("PROXY v2 addresses are shorter than their family needs")]
    V2Short,
}

/// The header a backend's servers are sent (`send_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            other => Err(format!("send_proxy `{other}`: expected \"v1\" or \"v2\"")),
        }
    }
}

/// The header for a connection from `client` to `destination` (the
/// router's listening address), or for the router's own connection (a
/// health check: v2 `LOCAL`, v1 `UNKNOWN`) when `None`.
pub(crate) fn encode(version: Version, hop: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    // An IPv4 client on an IPv6 socket is IPv4; when the two ends are of
    // different families (an IPv6 client named by a balancer, an IPv4
    // listener), both are written as IPv6, the IPv4 one mapped.
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let hop = hop.map(|(c, d)| (canonical(c), canonical(d)));
    match version {
        Version::V1 => match hop {
            None => b"PROXY UNKNOWN\r\n".to_vec(),
            Some((c, d)) if c.is_ipv4() && d.is_ipv4() => {
                let (cip, dip, cp, dp) = (c.ip(), d.ip(), c.port(), d.port());
                format!("PROXY TCP4 {cip} {dip} {cp} {dp}\r\n").into_bytes()
            }
            Some((c, d)) => {
                let (cip, dip) = (v6(c.ip()), v6(d.ip()));
                let (cp, dp) = (c.port(), d.port());
                format!("PROXY TCP6 {cip} {dip} {cp} {dp}\r\n").into_bytes()
            }
        },
        Version::V2 => {
            let mut h = V2_SIGNATURE.to_vec();
            match hop {
                None => h.extend_from_slice(&[0x20, 0x00, 0, 0]),
                Some((c, d)) => {
                    let mut addresses = Vec::with_capacity(36);
                    let family = match (c.ip(), d.ip()) {
                        (IpAddr::V4(ci), IpAddr::V4(di)) => {
                            addresses.extend_from_slice(&ci.octets());
                            addresses.extend_from_slice(&di.octets());
                            0x11
                        }
                        (ci, di) => {
                            addresses.extend_from_slice(&v6(ci).octets());
                            addresses.extend_from_slice(&v6(di).octets());
                            0x21
                        }
                    };
                    addresses.extend_from_slice(&c.port().to_be_bytes());
                    addresses.extend_from_slice(&d.port().to_be_bytes());
                    h.extend_from_slice(&[0x21, family]);
                    h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
                    h.extend_from_slice(&addresses);
                }
            }
            h
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Reads a header from the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Progress, HeaderError> {
    if bytes.is_empty() {
        return Ok(Progress::Partial);
    }
    if bytes[0] == b'\r' {
        return v2(bytes);
    }
    if bytes[0] == b'P' {
        return v1(bytes);
    }
    Err(HeaderError::Missing)
}

/// `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`.
fn v1(bytes: &[u8]) -> Result<Progress, HeaderError> {
    const PREFIX: &[u8] = b"PROXY ";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Err(HeaderError::Missing);
    }
    let Some(end) = bytes.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if bytes.len() >= V1_MAX {
            Err(HeaderError::V1TooLong)
        } else {
            Ok(Progress::Partial)
        };
    };
    let len = end + 1;
    let line = bytes[..end]
        .strip_suffix(b"\r")
        .ok_or(HeaderError::V1Malformed("no CR before LF"))?;
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::V1Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let family = fields
        .next()
        .ok_or(HeaderError::V1Malformed("no protocol"))?;
    if family == "UNKNOWN" {
        // The rest of the line may say anything; it is ignored.
        return Ok(Progress::Complete(Header { len, client: None }));
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(HeaderError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let source = fields
        .next()
        .ok_or(HeaderError::V1Malformed("no source address"))?;
    let destination = fields
        .next()
        .ok_or(HeaderError::V1Malformed("no destination address"))?;
    let source_port = fields
        .next()
        .ok_or(HeaderError::V1Malformed("no source port"))?;
    let destination_port = fields
        .next()
        .ok_or(HeaderError::V1Malformed("no destination port"))?;
    if fields.next().is_some() {
        return Err(HeaderError::V1Malformed(
            "fields after the destination port",
        ));
    }
    let ip = |text: &str| -> Result<IpAddr, HeaderError> {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| HeaderError::V1Malformed("an address is not an IP address"))?;
        if ip.is_ipv6() != v6 {
            return Err(HeaderError::V1Malformed(
                "an address is not of the protocol's family",
            ));
        }
        Ok(ip)
    };
    let port = |text: &str| -> Result<u16, HeaderError> {
        // Decimal without a leading zero, as the specification writes it.
        if text.is_empty() || text.len() > 5 || (text.len() > 1 && text.starts_with('0')) {
            return Err(HeaderError::V1Malformed("a port is not a decimal number"));
        }
        text.parse()
            .map_err(|_| HeaderError::V1Malformed("a port is not a number up to 65535"))
    };
    let client = SocketAddr::new(ip(source)?, port(source_port)?);
    ip(destination)?;
    port(destination_port)?;
    Ok(Progress::Complete(Header {
        len,
        client: Some(client),
    }))
}

/// Signature, version and command, family, length, addresses, TLVs.
fn v2(bytes: &[u8]) -> Result<Progress, HeaderError> {
    let n = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..n] != V2_SIGNATURE[..n] {
        return Err(HeaderError::Missing);
    }
    if bytes.len() < 16 {
        return Ok(Progress::Partial);
    }
    let version = bytes[12] >> 4;
    if version != 2 {
        return Err(HeaderError::V2Version(version));
    }
    let command = bytes[12] & 0x0f;
    if command > 1 {
        return Err(HeaderError::V2Command(command));
    }
    let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if len > V2_MAX {
        return Err(HeaderError::V2TooLong(len));
    }
    if bytes.len() < len {
        return Ok(Progress::Partial);
    }
    if command == 0 {
        // LOCAL: the sender's own connection (a health check).
        return Ok(Progress::Complete(Header { len, client: None }));
    }
    let addresses = &bytes[16..len];
    let client = match bytes[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = addresses.get(..12).ok_or(HeaderError::V2Short)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([a[8], a[9]]),
            ))
        }
        // TCP over IPv6.
        0x21 => {
            let a = addresses.get(..36).ok_or(HeaderError::V2Short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC, UDP, UNIX: nothing the router routes by.
        _ => None,
    };
    Ok(Progress::Complete(Header { len, client }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut a = src.to_vec();
        a.extend_from_slice(&dst);
        a.extend_from_slice(&sport.to_be_bytes());
        a.extend_from_slice(&dport.to_be_bytes());
        a
    }

    fn complete(bytes: &[u8]) -> Header {
        match parse(bytes) {
            Ok(Progress::Complete(h)) => h,
            other => panic!("{other:?} for {bytes:?}"),
        }
    }

    #[test]
    fn v1_names_the_client() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n";
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\x16\x03\x01rest of the stream");
        let h = complete(&bytes);
        assert_eq!(h.len, line.len());
        assert_eq!(h.client, Some("203.0.113.7:56324".parse().expect("addr")));
        let h = complete(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n");
        assert_eq!(h.client, Some("[2001:db8::7]:65535".parse().expect("addr")));
        let h = complete(b"PROXY UNKNOWN\r\n");
        assert_eq!(h.client, None);
        let h = complete(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
        assert_eq!((h.len, h.client), (35, None));
    }

    #[test]
    fn v2_names_the_client_and_skips_tlvs() {
        let tlvs = [0x04, 0x00, 0x03, b'a', b'b', b'c']; // a NOOP TLV
        let bytes = v2_header(
            1,
            0x11,
            &tcp4([198, 51, 100, 9], [10, 0, 0, 1], 40000, 443),
            &tlvs,
        );
        let h = complete(&bytes);
        assert_eq!(h.len, bytes.len());
        assert_eq!(h.client, Some("198.51.100.9:40000".parse().expect("addr")));
        let mut v6 = [0u8; 36];
        v6[..16].copy_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().expect("v6").octets());
        v6[32..34].copy_from_slice(&8443u16.to_be_bytes());
        assert_eq!(
            complete(&v2_header(1, 0x21, &v6, &[])).client,
            Some("[2001:db8::9]:8443".parse().expect("addr"))
        );
        // LOCAL (a load balancer's health check) and UNSPEC: no client.
        assert_eq!(complete(&v2_header(0, 0x00, &[], &[])).client, None);
        assert_eq!(complete(&v2_header(1, 0x00, &[1, 2, 3], &[])).client, None);
    }

    #[test]
    fn every_prefix_of_a_valid_header_asks_for_more() {
        let headers = [
            b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2_header(
                1,
                0x11,
                &tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2),
                &[0x04, 0, 1, 0],
            ),
            v2_header(0, 0x00, &[], &[]),
        ];
        for header in headers {
            for cut in 0..header.len() {
                assert_eq!(
                    parse(&header[..cut]),
                    Ok(Progress::Partial),
                    "{cut} of {header:?}"
                );
            }
            assert_eq!(complete(&header).len, header.len());
        }
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let cases: &[(&[u8], HeaderError)] = &[
            (b"\x16\x03\x01\x02\x00", HeaderError::Missing),
            (b"GET / HTTP/1.1\r\n", HeaderError::Missing),
            (b"PROXI TCP4", HeaderError::Missing),
            (b"\r\n\r\n\0\r\nQUIX\n", HeaderError::Missing),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                HeaderError::V1Malformed("no CR before LF"),
            ),
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                HeaderError::V1Malformed("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                HeaderError::V1Malformed("no destination port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
                HeaderError::V1Malformed("fields after the destination port"),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                HeaderError::V1Malformed("an address is not of the protocol's family"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                HeaderError::V1Malformed("a port is not a number up to 65535"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                HeaderError::V1Malformed("a port is not a decimal number"),
            ),
            (
                b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
                HeaderError::V1Malformed("an address is not an IP address"),
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(parse(bytes), Err(*error), "{bytes:?}");
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Err(HeaderError::V1TooLong));
        let mut bad = v2_header(1, 0x11, &tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), &[]);
        bad[12] = 0x11;
        assert_eq!(parse(&bad), Err(HeaderError::V2Version(1)));
        bad[12] = 0x22;
        assert_eq!(parse(&bad), Err(HeaderError::V2Command(2)));
        let short = v2_header(1, 0x11, &[1, 2, 3, 4], &[]);
        assert_eq!(parse(&short), Err(HeaderError::V2Short));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(HeaderError::V2TooLong(16 + 0xffff)));
    }

    #[test]
    fn encoded_headers_read_back() {
        let client: SocketAddr = "203.0.113.7:5555".parse().expect("addr");
        let to: SocketAddr = "10.0.0.1:443".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:203.0.113.7]:5555".parse().expect("addr");
        let client6: SocketAddr = "[2001:db8::7]:6666".parse().expect("addr");
        let to6: SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
        for version in [Version::V1, Version::V2] {
            for (c, d, named) in [
                (client, to, Some(client)),
                (mapped, to, Some(client)),
                (client6, to6, Some(client6)),
            ] {
                let bytes = encode(version, Some((c, d)));
                let h = complete(&bytes);
                assert_eq!(
                    (h.len, h.client),
                    (bytes.len(), named),
                    "{version:?} {c} {d}"
                );
            }
            let local = encode(version, None);
            assert_eq!(complete(&local).client, None);
        }
        assert_eq!(
            encode(Version::V1, Some((client, to))),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n"
        );
        // Mixed families (an IPv6 client a balancer named, an IPv4
        // listener): both as IPv6.
        assert_eq!(
            encode(Version::V1, Some((client6, to))),
            b"PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 6666 443\r\n"
        );
        for version in [Version::V1, Version::V2] {
            let h = complete(&encode(version, Some((client6, to))));
            assert_eq!(h.client, Some(client6), "{version:?}");
        }
    }

    /// Arbitrary bytes never panic and never claim more than they hold.
    #[test]
    fn arbitrary_bytes_are_answered_within_bounds() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            if seed % 3 == 0 {
                bytes.splice(0..0, V2_SIGNATURE);
            } else if seed % 3 == 1 {
                bytes.splice(0..0, *b"PROXY TCP4 ");
            }
            if let Ok(Progress::Complete(h)) = parse(&bytes) {
                assert!(h.len <= bytes.len());
            }
        }
    }
}
