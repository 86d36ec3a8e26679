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
            && matches!(bytes[0], b't' | b'q' | b'd')
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

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
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
    /// The fingerprint.
    pub(crate) fn fingerprint(&self) -> Ja4 {
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
fn hash_into(out: &mut [u8], values: impl Iterator<Item = u16>, then: Option<&Values>) {
    let mut text = Text::default();
    let mut any = false;
    for v in values {
        if any {
            text.push(b',');
        }
        text.hex4(v);
        any = true;
    }
    if !any {
        out.fill(b'0');
        return;
    }
    if let Some(then) = then {
        text.push(b'_');
        for (i, v) in then.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            text.hex4(v);
        }
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    for (i, byte) in digest.as_ref().iter().take(6).enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
}

/// The text hashed: in place up to 64 values and their signature
/// algorithms, on the heap past that.
struct Text {
    inline: [u8; 640],
    len: usize,
    spill: Vec<u8>,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            inline: [0; 640],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl Text {
    fn push(&mut self, b: u8) {
        if self.spill.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = b;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline[..self.len]);
            }
            self.spill.push(b);
        }
    }

    fn hex4(&mut self, v: u16) {
        for shift in [12, 8, 4, 0] {
            self.push(HEX[usize::from((v >> shift) & 0xf)]);
        }
    }

    fn as_bytes(&self) -> &[u8] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
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
