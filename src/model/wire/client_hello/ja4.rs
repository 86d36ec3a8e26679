//! The JA4 TLS client fingerprint (FoxIO's JA4 specification, BSD
//! licensed) of a ClientHello: `t13d1516h2_8daaf6152771_e5627efa2ab1`.
//!
//! - `t` (TLS over TCP), the highest version offered (`13`), `d` when a
//!   `server_name` extension is present (else `i`), the number of cipher
//!   suites and of extensions (two digits, at most 99), and the first and
//!   last characters of the first ALPN protocol (`00` without one; as hex
//!   when a character is not ASCII alphanumeric);
//! - the first 12 hex digits of the SHA-256 of the cipher suites, sorted,
//!   as 4-digit hex separated by commas;
//! - the same of the extensions, sorted, without `server_name` and ALPN,
//!   then `_` and the signature algorithms in the client's order.
//!
//! GREASE values are left out everywhere. Nothing here allocates for a
//! hello of ordinary size: the values sit in fixed arrays and the text to
//! hash in a stack buffer (a heap one only past 64 values).

use std::fmt;

/// A fingerprint: 36 ASCII characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ja4([u8; 36]);

impl Ja4 {
    pub(crate) fn as_str(&self) -> &str {
        // Every byte written is ASCII (digits, letters, `_`).
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl Default for Ja4 {
    fn default() -> Self {
        Ja4(*b"t00i000000_000000000000_000000000000")
    }
}

impl fmt::Debug for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Ja4 {
    type Err = String;

    /// A fingerprint as written in a configuration: the 36 characters JA4
    /// prints (`t13d1516h2_8daaf6152771_e5627efa2ab1`), the hashes in
    /// lowercase hex.
    fn from_str(text: &str) -> Result<Self, String> {
        let bytes = text.as_bytes();
        let hex = |part: &[u8]| {
            part.iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        };
        let ok = bytes.len() == 36
            // TLS over TCP: QUIC (`q`) and DTLS (`d`) never reach here.
            && bytes[0] == b't'
            && bytes[1..10].iter().all(u8::is_ascii_alphanumeric)
            && matches!(bytes[3], b'd' | b'i')
            && bytes[4..8].iter().all(u8::is_ascii_digit)
            && bytes[10] == b'_'
            && bytes[23] == b'_'
            && hex(&bytes[11..23])
            && hex(&bytes[24..36]);
        if !ok {
            return Err(format!(
                "`{text}` is not a JA4 fingerprint (like t13d1516h2_8daaf6152771_e5627efa2ab1)"
            ));
        }
        let mut out = [0u8; 36];
        out.copy_from_slice(bytes);
        Ok(Ja4(out))
    }
}

/// Whether a 16-bit value is a GREASE value (RFC 8701: `0x?a?a`, both
/// bytes equal).
#[inline]
pub(crate) fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// Up to 64 values in place; more (a hostile hello) on the heap.
#[derive(Clone)]
pub(crate) struct Values {
    inline: [u16; 64],
    len: usize,
    spill: Vec<u16>,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            inline: [0; 64],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl Values {
    /// Keeps `v` unless it is GREASE.
    #[inline]
    pub(crate) fn push(&mut self, v: u16) {
        if grease(v) {
            return;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = v;
            self.len += 1;
        } else {
            self.spill.push(v);
        }
    }

    fn count(&self) -> usize {
        self.len + self.spill.len()
    }

    fn sorted(&self) -> Values {
        let mut out = self.clone();
        out.inline[..out.len].sort_unstable();
        if !out.spill.is_empty() {
            out.spill.extend_from_slice(&out.inline[..out.len]);
            out.spill.sort_unstable();
            out.len = 0;
        }
        out
    }

    #[inline]
    fn iter(&self) -> impl Iterator<Item = u16> + Clone + '_ {
        self.inline[..self.len]
            .iter()
            .chain(self.spill.iter())
            .copied()
    }
}

/// What a ClientHello says that JA4 reads, collected by the parser.
#[derive(Clone, Default)]
pub(crate) struct Parts {
    pub(crate) version: u16,
    pub(crate) sni: bool,
    pub(crate) ciphers: Values,
    pub(crate) extensions: Values,
    pub(crate) signature_algorithms: Values,
    /// First and last bytes of the first ALPN protocol, if any.
    pub(crate) alpn: Option<(u8, u8)>,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Parts {
    /// The fingerprint, from this thread's cache of recent ones when the
    /// same hello was fingerprinted before (clients are few, connections
    /// many); computed and remembered otherwise.
    pub(crate) fn fingerprint(&self) -> Ja4 {
        let key = self.key();
        let slot = (key.0 as usize) % CACHED;
        let hit = CACHE.with(|cache| {
            let cache = cache.borrow();
            (cache[slot].0 == key).then_some(cache[slot].1)
        });
        if let Some(ja4) = hit {
            return ja4;
        }
        let ja4 = self.compute();
        CACHE.with(|cache| cache.borrow_mut()[slot] = (key, ja4));
        ja4
    }

    /// What the fingerprint is a function of, as two 64-bit sums keyed by
    /// a secret chosen at start: the version, SNI and ALPN parts, each
    /// cipher and extension (in any order: browsers shuffle extensions,
    /// and JA4 sorts both), and the signature algorithms in order. Without
    /// the secret a client cannot aim for another's key.
    fn key(&self) -> (u64, u64) {
        let [a, b, c, d] = seeds();
        let mut key = (0u64, 0u64);
        let mut add = |tag: u64, v: u64| {
            let x = (tag << 32) ^ v;
            key.0 = key.0.wrapping_add(folded(x ^ a, b));
            key.1 = key.1.wrapping_add(folded(x ^ c, d));
        };
        let (first, last) = self
            .alpn
            .map_or((0, 0), |(a, z)| (u64::from(a), u64::from(z)));
        add(1, u64::from(self.version) | (u64::from(self.sni) << 16));
        add(
            2,
            1 | (first << 8) | (last << 16) | (u64::from(self.alpn.is_some()) << 24),
        );
        self.ciphers.iter().for_each(|v| add(3, u64::from(v)));
        self.extensions.iter().for_each(|v| add(4, u64::from(v)));
        for (i, v) in self.signature_algorithms.iter().enumerate() {
            add(5 + i as u64, u64::from(v));
        }
        key
    }

    /// The fingerprint, computed.
    fn compute(&self) -> Ja4 {
        let mut out = Ja4::default();
        let a = &mut out.0;
        a[0] = b't';
        a[1..3].copy_from_slice(version_code(self.version));
        a[3] = if self.sni { b'd' } else { b'i' };
        two_digits(&mut a[4..6], self.ciphers.count());
        two_digits(&mut a[6..8], self.extensions.count());
        a[8..10].copy_from_slice(&alpn_code(self.alpn));
        let ciphers = self.ciphers.sorted();
        hash_into(&mut a[11..23], ciphers.iter(), None);
        let mut extensions = self.extensions.sorted();
        extensions.retain_not(&[0x0000, 0x0010]);
        let signatures =
            (self.signature_algorithms.count() > 0).then_some(&self.signature_algorithms);
        hash_into(&mut a[24..36], extensions.iter(), signatures);
        out
    }
}

/// Fingerprints kept per thread.
const CACHED: usize = 256;

thread_local! {
    static CACHE: std::cell::RefCell<[((u64, u64), Ja4); CACHED]> =
        std::cell::RefCell::new([((0, 0), Ja4::default()); CACHED]);
}

/// The process's secret for [`Parts::key`]: random at start, the
/// multipliers odd.
fn seeds() -> [u64; 4] {
    static SEEDS: std::sync::OnceLock<[u64; 4]> = std::sync::OnceLock::new();
    *SEEDS.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new();
        let seed = |n: u64| {
            let mut h = random.build_hasher();
            h.write_u64(n);
            h.finish()
        };
        [seed(1), seed(2) | 1, seed(3), seed(4) | 1]
    })
}

/// The folded multiply: the 128-bit product's halves, xored (one
/// multiplication; every input bit reaches the output).
#[inline]
fn folded(x: u64, k: u64) -> u64 {
    let product = u128::from(x) * u128::from(k);
    (product as u64) ^ ((product >> 64) as u64)
}

impl Values {
    /// Drops every value in `gone`.
    fn retain_not(&mut self, gone: &[u16]) {
        let mut kept = 0;
        for i in 0..self.len {
            if !gone.contains(&self.inline[i]) {
                self.inline[kept] = self.inline[i];
                kept += 1;
            }
        }
        self.len = kept;
        self.spill.retain(|v| !gone.contains(v));
    }
}

fn version_code(version: u16) -> &'static [u8; 2] {
    match version {
        0x0304 => b"13",
        0x0303 => b"12",
        0x0302 => b"11",
        0x0301 => b"10",
        0x0300 => b"s3",
        0x0002 => b"s2",
        0xfeff => b"d1",
        0xfefd => b"d2",
        0xfefc => b"d3",
        _ => b"00",
    }
}

fn two_digits(out: &mut [u8], n: usize) {
    let n = n.min(99) as u8;
    out[0] = b'0' + n / 10;
    out[1] = b'0' + n % 10;
}

/// The ALPN part: the first and last characters of the first protocol
/// when both are ASCII alphanumeric, else the first and last hex digits
/// of its bytes; `00` without one.
fn alpn_code(alpn: Option<(u8, u8)>) -> [u8; 2] {
    match alpn {
        None => *b"00",
        Some((first, last)) if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() => {
            [first, last]
        }
        Some((first, last)) => [HEX[usize::from(first >> 4)], HEX[usize::from(last & 0xf)]],
    }
}

/// Writes the first 12 hex digits of the SHA-256 of `values` as 4-digit
/// hex separated by commas, then `_` and `then` the same way when given;
/// `000000000000` when `values` is empty.
fn hash_into(out: &mut [u8], values: impl Iterator<Item = u16> + Clone, then: Option<&Values>) {
    let first = values.clone().count();
    if first == 0 {
        out.fill(b'0');
        return;
    }
    let second = then.map_or(0, Values::count);
    // Each value is 4 digits and a separator (a comma, or the `_`).
    let len = 5 * (first + second) - 1;
    let mut inline = [0u8; 640];
    let mut spill = Vec::new();
    let text: &mut [u8] = if len <= inline.len() {
        &mut inline[..len]
    } else {
        spill.resize(len, 0);
        &mut spill
    };
    let at = hex_list(text, 0, values);
    if let Some(then) = then.filter(|_| second > 0) {
        text[at - 1] = b'_';
        hex_list(text, at, then.iter());
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text);
    for (i, byte) in digest.as_ref().iter().take(6).enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
}

/// Writes `values` from `at` as 4-digit hex, each followed by a comma
/// (the last one's falls on the next list's `_`, or past the end);
/// returns where the next list starts.
fn hex_list(text: &mut [u8], mut at: usize, values: impl Iterator<Item = u16>) -> usize {
    for v in values {
        let digits = [
            HEX[usize::from(v >> 12)],
            HEX[usize::from((v >> 8) & 0xf)],
            HEX[usize::from((v >> 4) & 0xf)],
            HEX[usize::from(v & 0xf)],
        ];
        text[at..at + 4].copy_from_slice(&digits);
        if let Some(comma) = text.get_mut(at + 4) {
            *comma = b',';
        }
        at += 5;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(list: &[u16]) -> Values {
        let mut v = Values::default();
        for x in list {
            v.push(*x);
        }
        v
    }

    /// The specification's own example lists and the hashes it gives.
    #[test]
    fn the_specifications_example_hashes() {
        let mut out = [0u8; 12];
        let ciphers = values(&[
            0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
            0x009c, 0x009d, 0x002f, 0x0035,
        ]);
        hash_into(&mut out, ciphers.sorted().iter(), None);
        assert_eq!(&out, b"8daaf6152771");
        let mut extensions = values(&[
            0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012,
            0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
        ])
        .sorted();
        extensions.retain_not(&[0x0000, 0x0010]);
        let signatures = values(&[
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ]);
        hash_into(&mut out, extensions.iter(), Some(&signatures));
        assert_eq!(&out, b"e5627efa2ab1");
        hash_into(&mut out, extensions.iter(), None);
        assert_eq!(
            &out, b"6d807ffa2a79",
            "no signature algorithms: no underscore"
        );
        hash_into(&mut out, std::iter::empty(), Some(&signatures));
        assert_eq!(&out, b"000000000000");
    }

    #[test]
    fn alpn_codes_as_the_specification_lists_them() {
        assert_eq!(&alpn_code(Some((b'h', b'2'))), b"h2");
        assert_eq!(&alpn_code(Some((b'h', b'1'))), b"h1");
        assert_eq!(&alpn_code(None), b"00");
        for (first, last, code) in [
            (0xab, 0xab, b"ab"),
            (0x20, 0x20, b"20"),
            (0xab, 0xcd, b"ad"),
            (0x20, 0x61, b"21"),
            (0x30, 0xab, b"3b"),
            (0x61, 0x20, b"60"),
            (0x30, 0xcd, b"3d"),
            (0x30, 0x31, b"01"),
        ] {
            assert_eq!(
                &alpn_code(Some((first, last))),
                code,
                "{first:#x} {last:#x}"
            );
        }
    }

    #[test]
    fn grease_is_every_0x_a_a_pair_and_nothing_else() {
        let all: Vec<u16> = (0..=0xffff_u16).filter(|v| grease(*v)).collect();
        assert_eq!(all.len(), 16);
        assert!(all.iter().all(|v| v & 0xff == 0x0a | (v & 0xf0)));
        assert!(!grease(0x0a0b) && !grease(0x1a2a));
    }

    /// The cache gives what computing gives, for the same hello in any
    /// extension order, and tells apart hellos that differ in one value.
    #[test]
    fn the_cache_answers_what_computing_would() {
        let parts = |extensions: &[u16], sigalg: u16| Parts {
            version: 0x0304,
            sni: true,
            ciphers: values(&[0x1301, 0x1302, 0x1303]),
            extensions: values(extensions),
            signature_algorithms: values(&[0x0403, sigalg]),
            alpn: Some((b'h', b'2')),
        };
        let a = parts(&[0x0000, 0x0010, 0x000d, 0x002b], 0x0804);
        let shuffled = parts(&[0x002b, 0x000d, 0x0000, 0x0010], 0x0804);
        let other = parts(&[0x0000, 0x0010, 0x000d, 0x002b], 0x0805);
        assert_eq!(a.fingerprint(), a.compute());
        assert_eq!(a.fingerprint(), a.compute(), "a hit");
        assert_eq!(shuffled.fingerprint(), a.compute());
        assert_ne!(a.key(), other.key());
        assert_eq!(other.fingerprint(), other.compute());
        assert_ne!(other.fingerprint(), a.fingerprint());
    }

    #[test]
    fn many_values_spill_and_hash_the_same_as_in_place() {
        let list: Vec<u16> = (1..=200).rev().collect();
        let many = values(&list).sorted();
        assert_eq!(many.count(), 200);
        let sorted: Vec<u16> = many.iter().collect();
        assert_eq!(sorted, (1..=200).collect::<Vec<u16>>());
        let mut out = [0u8; 12];
        hash_into(&mut out, many.iter(), None);
        let text: Vec<String> = (1..=200_u16).map(|v| format!("{v:04x}")).collect();
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.join(",").as_bytes());
        let want: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(std::str::from_utf8(&out).expect("ascii"), want);
    }
}
