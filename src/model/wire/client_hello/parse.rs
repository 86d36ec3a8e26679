//! Record reassembly and ClientHello decoding (RFC 8446 §4.1.2, RFC 6066 §3,
//! RFC 7301 §3.1). Everything is bounds-checked; no input panics.

use std::borrow::Cow;

use super::ja4::{Ja4, Parts};

/// TLS record content type of handshake messages.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Largest plaintext record a peer may send (RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;
const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
/// ALPN names kept for logging; the rest are validated and counted only, so
/// a hostile list of thousands of entries costs nothing.
const MAX_ALPN_KEPT: usize = 8;

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The hello is incomplete: at least `at_least` bytes in total are needed.
    NeedMore { at_least: usize },
    /// The hello is complete.
    Done(ClientHello),
}

/// What Switchyard needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The host name of the `server_name` extension, lowercased, without a
    /// trailing dot. With Encrypted Client Hello it is the outer (public) name.
    pub(crate) sni: Option<String>,
    /// The first ALPN protocols offered, in the client's order.
    pub(crate) alpn: Vec<String>,
    /// How many ALPN protocols were offered in all.
    pub(crate) alpn_offered: usize,
    /// Highest version offered (`supported_versions`, else the legacy field).
    pub(crate) version: u16,
    /// Whether the hello carries an `encrypted_client_hello` extension.
    pub(crate) ech: bool,
    /// Its JA4 fingerprint.
    pub(crate) ja4: Ja4,
    /// Bytes from the start of the stream to the end of the last record
    /// holding part of the hello.
    pub(crate) len: usize,
    /// How many TLS records the hello was spread over.
    pub(crate) records: usize,
}

/// Why the bytes are not a usable ClientHello. Each variant names the
/// structure that was wrong so the log line says what the client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not TLS: first byte {0:#04x} is not a handshake record")]
    NotTls(u8),
    #[error("unsupported record version {0:#06x}")]
    RecordVersion(u16),
    #[error("record of {0} bytes exceeds the 16384-byte TLS limit")]
    RecordOverflow(usize),
    #[error("empty handshake record")]
    EmptyRecord,
    #[error("record of content type {0} arrived before the ClientHello was complete")]
    Interleaved(u8),
    #[error("first handshake message is type {0}, not a ClientHello")]
    NotClientHello(u8),
    #[error("ClientHello of {needed} bytes exceeds the {limit}-byte limit")]
    TooLarge { needed: usize, limit: usize },
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("server_name is not a valid host name")]
    InvalidSni,
}

/// Looks at the first bytes of a connection.
///
/// `buf` holds everything received so far; `limit` caps the bytes the caller
/// may have to buffer. Call again with more bytes on `NeedMore`.
pub fn peek(buf: &[u8], limit: usize) -> Result<Progress, HelloError> {
    let framing = match reassemble(buf, limit)? {
        Reassembly::NeedMore(at_least) => return Ok(Progress::NeedMore { at_least }),
        Reassembly::Complete(framing) => framing,
    };
    let body = framing.body(buf);
    let mut hello = decode_body(&body)?;
    hello.len = framing.end;
    hello.records = framing.records;
    Ok(Progress::Done(hello))
}

enum Reassembly {
    NeedMore(usize),
    Complete(Framing),
}

/// Where the ClientHello body lies in the record stream.
struct Framing {
    /// Length of the ClientHello body (after the handshake header).
    body_len: usize,
    /// Records that carry handshake bytes.
    records: usize,
    /// Offset just past the last record used.
    end: usize,
}

impl Framing {
    /// The body, borrowed when it sits in one record, else copied out of the
    /// fragments (bounded by the caller's limit).
    fn body<'a>(&self, buf: &'a [u8]) -> Cow<'a, [u8]> {
        let start = RECORD_HEADER + HANDSHAKE_HEADER;
        let first_len = record_len(buf, 0);
        if HANDSHAKE_HEADER + self.body_len <= first_len {
            return Cow::Borrowed(&buf[start..start + self.body_len]);
        }
        let mut out = Vec::with_capacity(HANDSHAKE_HEADER + self.body_len);
        let mut pos = 0;
        while out.len() < HANDSHAKE_HEADER + self.body_len {
            let len = record_len(buf, pos);
            out.extend_from_slice(&buf[pos + RECORD_HEADER..pos + RECORD_HEADER + len]);
            pos += RECORD_HEADER + len;
        }
        out.truncate(HANDSHAKE_HEADER + self.body_len);
        out.drain(..HANDSHAKE_HEADER);
        Cow::Owned(out)
    }
}

/// Length field of the record header at `pos`; the caller has checked that
/// the header is present.
fn record_len(buf: &[u8], pos: usize) -> usize {
    usize::from(u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]))
}

/// Walks the record headers (cheap: O(records)) and says whether the whole
/// handshake message is present, without copying anything.
fn reassemble(buf: &[u8], limit: usize) -> Result<Reassembly, HelloError> {
    let mut pos = 0;
    let mut records = 0;
    // First four bytes of the handshake stream (type and length), which may
    // themselves be split across records.
    let mut header = [0u8; HANDSHAKE_HEADER];
    let mut have = 0usize;
    let mut body_len: Option<usize> = None;
    // Handshake bytes carried by the complete records walked so far.
    let mut handshake_bytes = 0;
    loop {
        if buf.len() < pos + RECORD_HEADER {
            return need(pos + RECORD_HEADER, limit, body_len);
        }
        let len = check_record_header(buf, pos, records)?;
        records += 1;
        let end = pos + RECORD_HEADER + len;
        if end > limit {
            return Err(HelloError::TooLarge { needed: end, limit });
        }
        let fragment = &buf[pos + RECORD_HEADER..end.min(buf.len())];
        for &b in fragment.iter().take(HANDSHAKE_HEADER.saturating_sub(have)) {
            header[have] = b;
            have += 1;
        }
        if body_len.is_none() && have == HANDSHAKE_HEADER {
            if header[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(HelloError::NotClientHello(header[0]));
            }
            let n = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
            body_len = Some(n);
        }
        if buf.len() < end {
            return need(end, limit, body_len);
        }
        handshake_bytes += len;
        if let Some(n) = body_len {
            if handshake_bytes >= HANDSHAKE_HEADER + n {
                return Ok(Reassembly::Complete(Framing {
                    body_len: n,
                    records,
                    end,
                }));
            }
        }
        pos = end;
    }
}

/// Validates the record header at `pos` and returns its length.
fn check_record_header(buf: &[u8], pos: usize, records: usize) -> Result<usize, HelloError> {
    let content_type = buf[pos];
    if content_type != CONTENT_HANDSHAKE {
        return Err(if records == 0 {
            HelloError::NotTls(content_type)
        } else {
            HelloError::Interleaved(content_type)
        });
    }
    let version = u16::from_be_bytes([buf[pos + 1], buf[pos + 2]]);
    if version >> 8 != 3 {
        return Err(HelloError::RecordVersion(version));
    }
    let len = record_len(buf, pos);
    if len > MAX_RECORD {
        return Err(HelloError::RecordOverflow(len));
    }
    if len == 0 {
        return Err(HelloError::EmptyRecord);
    }
    Ok(len)
}

/// A `NeedMore` answer, or `TooLarge` when the hello cannot fit the limit.
fn need(at_least: usize, limit: usize, body_len: Option<usize>) -> Result<Reassembly, HelloError> {
    let floor = body_len.map_or(0, |n| RECORD_HEADER + HANDSHAKE_HEADER + n);
    let needed = at_least.max(floor);
    if needed > limit {
        return Err(HelloError::TooLarge { needed, limit });
    }
    Ok(Reassembly::NeedMore(at_least))
}

/// A bounds-checked cursor over the hello body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        let end = self.pos.checked_add(n).ok_or(HelloError::Malformed(what))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(HelloError::Malformed(what))?;
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<Reader<'a>, HelloError> {
        let n = usize::from(self.u8(what)?);
        Ok(Reader::new(self.take(n, what)?))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<Reader<'a>, HelloError> {
        let n = usize::from(self.u16(what)?);
        Ok(Reader::new(self.take(n, what)?))
    }
}

fn decode_body(body: &[u8]) -> Result<ClientHello, HelloError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("legacy_version")?;
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.buf.len() > 32 {
        return Err(HelloError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let mut suites = r.vec16("cipher_suites")?;
    if suites.buf.is_empty() || suites.buf.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher_suites"));
    }
    let mut parts = Parts::default();
    while !suites.is_empty() {
        parts.ciphers.push(suites.u16("cipher_suites")?);
    }
    if r.vec8("legacy_compression_methods")?.is_empty() {
        return Err(HelloError::Malformed("legacy_compression_methods"));
    }
    let mut hello = ClientHello {
        version: legacy_version,
        ..ClientHello::default()
    };
    if !r.is_empty() {
        // Else a hello without extensions (TLS 1.0 style).
        extensions(&mut r, &mut hello, &mut parts)?;
    }
    parts.version = hello.version;
    hello.ja4 = parts.fingerprint();
    Ok(hello)
}

/// The extensions: what routing reads, and what the fingerprint counts.
fn extensions(
    r: &mut Reader<'_>,
    hello: &mut ClientHello,
    parts: &mut Parts,
) -> Result<(), HelloError> {
    let mut extensions = r.vec16("extensions")?;
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after extensions"));
    }
    let mut seen = Seen::default();
    while !extensions.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec16("extension data")?;
        seen.check(kind)?;
        parts.extensions.push(kind);
        match kind {
            EXT_SERVER_NAME => {
                parts.sni = true;
                hello.sni = server_name(data)?;
            }
            EXT_ALPN => parts.alpn = alpn(data, hello)?,
            EXT_SUPPORTED_VERSIONS => hello.version = supported_versions(data)?,
            EXT_ENCRYPTED_CLIENT_HELLO => hello.ech = true,
            // Read for the fingerprint only: a list it cannot read leaves
            // it out rather than refuse a hello the server may accept.
            EXT_SIGNATURE_ALGORITHMS => {
                let mut data = data;
                if let Ok(mut list) = data.vec16("signature_algorithms") {
                    while let Ok(v) = list.u16("signature_algorithms") {
                        parts.signature_algorithms.push(v);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Rejects a repeated extension among those this reader interprets
/// (RFC 8446 §4.2: at most one of each type).
#[derive(Default)]
struct Seen {
    server_name: bool,
    alpn: bool,
    versions: bool,
}

impl Seen {
    fn check(&mut self, kind: u16) -> Result<(), HelloError> {
        let flag = match kind {
            EXT_SERVER_NAME => &mut self.server_name,
            EXT_ALPN => &mut self.alpn,
            EXT_SUPPORTED_VERSIONS => &mut self.versions,
            _ => return Ok(()),
        };
        if std::mem::replace(flag, true) {
            return Err(HelloError::Malformed("duplicate extension"));
        }
        Ok(())
    }
}

/// The first `host_name` entry of a `server_name` extension.
fn server_name(mut data: Reader<'_>) -> Result<Option<String>, HelloError> {
    let mut list = data.vec16("server_name_list")?;
    if !data.is_empty() || list.is_empty() {
        return Err(HelloError::Malformed("server_name_list"));
    }
    while !list.is_empty() {
        let name_type = list.u8("server_name type")?;
        let name = list.vec16("host_name")?;
        if name_type == 0 {
            return host_name(name.buf).map(Some);
        }
    }
    Ok(None)
}

/// Validates a host name and normalises it: lowercase, no trailing dot.
/// Only letters, digits, `-`, `_` and `.` are accepted, so every later stage
/// (route keys, logs) sees plain ASCII.
pub(crate) fn host_name(raw: &[u8]) -> Result<String, HelloError> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if raw.is_empty() || raw.len() > 253 || !raw.iter().all(valid) {
        return Err(HelloError::InvalidSni);
    }
    Ok(raw
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

/// The ALPN protocols offered; returns the first and last bytes of the
/// first one (for the fingerprint).
fn alpn(mut data: Reader<'_>, hello: &mut ClientHello) -> Result<Option<(u8, u8)>, HelloError> {
    let mut list = data.vec16("alpn protocol_name_list")?;
    if !data.is_empty() || list.is_empty() {
        return Err(HelloError::Malformed("alpn protocol_name_list"));
    }
    let mut first = None;
    while !list.is_empty() {
        let name = list.vec8("alpn protocol name")?;
        if name.is_empty() {
            return Err(HelloError::Malformed("empty alpn protocol name"));
        }
        if let (None, Some(a), Some(z)) = (first, name.buf.first(), name.buf.last()) {
            first = Some((*a, *z));
        }
        hello.alpn_offered += 1;
        if hello.alpn.len() < MAX_ALPN_KEPT {
            hello
                .alpn
                .push(String::from_utf8_lossy(name.buf).into_owned());
        }
    }
    Ok(first)
}

/// Highest non-GREASE version of a `supported_versions` extension.
fn supported_versions(mut data: Reader<'_>) -> Result<u16, HelloError> {
    let mut list = data.vec8("supported_versions")?;
    if !data.is_empty() || list.is_empty() || list.buf.len() % 2 != 0 {
        return Err(HelloError::Malformed("supported_versions"));
    }
    let mut best = 0;
    while !list.is_empty() {
        let v = list.u16("supported_versions")?;
        if !super::ja4::grease(v) {
            best = best.max(v);
        }
    }
    Ok(best)
}
