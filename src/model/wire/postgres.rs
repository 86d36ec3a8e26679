//! The first message of a PostgreSQL connection (protocol 3, "Start-up"
//! in the PostgreSQL documentation's message flow), sans I/O: what the
//! bytes a client sent first say, so that a listener with `postgres = true`
//! can answer an `SSLRequest` with `S` and then route the ClientHello that
//! follows by its SNI like any other.
//!
//! Every PostgreSQL start-up message is a 4-byte big-endian length (itself
//! included) and a 4-byte code. A length is below 16 MiB, so its first
//! byte is 0; a TLS record starts with 0x16 (handshake): the two never
//! look alike, and a client that opens with TLS directly (PostgreSQL 17's
//! `sslnegotiation=direct`) is read as TLS.

/// The 8 bytes of an `SSLRequest`: length 8, code 80877103. The router
/// sends them to a server on behalf of a client that sent them.
pub(crate) const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// `SSLRequest`'s code (1234 << 16 | 5679).
const SSL_CODE: u32 = 80_877_103;
/// `GSSENCRequest`'s code (1234 << 16 | 5680).
const GSSENC_CODE: u32 = 80_877_104;
/// `CancelRequest`'s code (1234 << 16 | 5678).
const CANCEL_CODE: u32 = 80_877_102;
/// The longest `StartupMessage` a server takes (its `MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP: u32 = 10_000;

/// What a connection's first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A TLS record: a ClientHello follows the usual way.
    Tls,
    /// Neither TLS nor PostgreSQL: left to the ClientHello reader, which
    /// says what it is.
    Other,
    /// `SSLRequest` (8 bytes): answered `S`, then TLS.
    SslRequest,
    /// `GSSENCRequest` (8 bytes): answered `N` (GSSAPI encryption is not
    /// routed: it carries no name); the client then asks for SSL or starts
    /// in plain text.
    GssEncRequest,
    /// `CancelRequest` (16 bytes): names a backend process by its key, not
    /// a server by name: cannot be routed.
    CancelRequest,
    /// A plain-text `StartupMessage` of this protocol version and
    /// `length` bytes in all: no TLS, so no name to route by.
    Startup { major: u16, minor: u16, length: u32 },
}

impl Opening {
    /// Bytes of the message after its 8-byte head (what is left to read
    /// once the head is read).
    pub(crate) fn rest(self) -> usize {
        match self {
            Opening::CancelRequest => 8,
            Opening::Startup { length, .. } => length.saturating_sub(8) as usize,
            _ => 0,
        }
    }
}

/// Bytes that start like a PostgreSQL message but are not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub(crate) length: u32,
    pub(crate) code: u32,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not a PostgreSQL start-up message (length {}, code {})",
            self.length, self.code
        )
    }
}

/// What the first bytes received say: `Ok(None)` until there are enough
/// to tell (one byte for TLS, eight for a PostgreSQL message).
pub(crate) fn opening(bytes: &[u8]) -> Result<Option<Opening>, Malformed> {
    match bytes.first() {
        None => return Ok(None),
        Some(0x16) => return Ok(Some(Opening::Tls)),
        Some(0) => {}
        Some(_) => return Ok(Some(Opening::Other)),
    }
    let Some(head) = bytes.get(..8) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let (major, minor) = ((code >> 16) as u16, code as u16);
    match (code, length) {
        (SSL_CODE, 8) => Ok(Some(Opening::SslRequest)),
        (GSSENC_CODE, 8) => Ok(Some(Opening::GssEncRequest)),
        (CANCEL_CODE, 16) => Ok(Some(Opening::CancelRequest)),
        _ if major == 3 && (8..=MAX_STARTUP).contains(&length) => Ok(Some(Opening::Startup {
            major,
            minor,
            length,
        })),
        _ => Err(Malformed { length, code }),
    }
}

/// What a server's one-byte answer to the router's `SSLRequest` means.
pub(crate) fn server_answer(byte: u8) -> Result<(), String> {
    match byte {
        b'S' => Ok(()),
        b'N' => Err("the server refused SSL (answered N to the SSLRequest)".into()),
        b'E' => Err("the server answered the SSLRequest with an error".into()),
        other => Err(format!(
            "the server answered the SSLRequest with {other:#04x}: not a PostgreSQL server"
        )),
    }
}

/// A FATAL `ErrorResponse` with SQLSTATE `code` and `message`, as a server
/// sends it before authentication: what `psql` prints for a client the
/// router cannot route.
pub(crate) fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::with_capacity(message.len() + 32);
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        // A field is a C string: a NUL inside would end it early.
        fields.extend(value.bytes().filter(|b| *b != 0));
        fields.push(0);
    }
    fields.push(0);
    let mut out = Vec::with_capacity(fields.len() + 5);
    out.push(b'E');
    let length = u32::try_from(fields.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

/// A fatal TLS alert `unrecognized_name` (112), as a plain record: what a
/// client whose name no route takes is told, where a reset would leave it
/// guessing ("server closed the connection unexpectedly").
pub(crate) const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_messages_are_told_apart() {
        assert_eq!(opening(&SSL_REQUEST), Ok(Some(Opening::SslRequest)));
        let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(opening(&gss), Ok(Some(Opening::GssEncRequest)));
        let cancel = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(opening(&cancel), Ok(Some(Opening::CancelRequest)));
        assert_eq!(Opening::CancelRequest.rest(), 8);
        // A StartupMessage, protocol 3.0, "user\0postgres\0\0".
        let mut startup = vec![0, 0, 0, 23, 0, 3, 0, 0];
        startup.extend_from_slice(b"user\0postgres\0\0");
        let read = opening(&startup);
        assert_eq!(
            read,
            Ok(Some(Opening::Startup {
                major: 3,
                minor: 0,
                length: 23
            }))
        );
        assert_eq!(read.ok().flatten().map(Opening::rest), Some(15));
        // A TLS record is told from its first byte.
        assert_eq!(opening(&[0x16]), Ok(Some(Opening::Tls)));
        assert_eq!(opening(b"GET / HTTP/1.1\r\n"), Ok(Some(Opening::Other)));
    }

    #[test]
    fn a_message_is_read_only_when_whole_and_well_formed() {
        assert_eq!(opening(&[]), Ok(None));
        assert_eq!(opening(&SSL_REQUEST[..7]), Ok(None));
        // An SSLRequest code with the wrong length is no SSLRequest.
        let long = [0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(
            opening(&long),
            Err(Malformed {
                length: 9,
                code: SSL_CODE
            })
        );
        // Protocol 2 is long gone; a huge startup is refused.
        assert!(opening(&[0, 0, 0, 8, 0, 2, 0, 0]).is_err());
        assert!(opening(&[0, 1, 0, 0, 0, 3, 0, 0]).is_err());
    }

    #[test]
    fn the_server_answer_is_s_or_a_reason() {
        assert_eq!(server_answer(b'S'), Ok(()));
        assert!(server_answer(b'N').unwrap_err().contains("refused SSL"));
        assert!(server_answer(b'H')
            .unwrap_err()
            .contains("not a PostgreSQL server"));
    }

    #[test]
    fn an_error_response_is_framed_as_a_server_frames_it() {
        let out = error_response("28000", "no\0route");
        assert_eq!(out[0], b'E');
        let length = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(length, out.len() - 1);
        let body = &out[5..];
        assert_eq!(body.last(), Some(&0));
        let text = String::from_utf8_lossy(body);
        assert!(text.contains("SFATAL\0") && text.contains("C28000\0"));
        assert!(text.contains("Mnoroute\0"), "{text:?}");
    }
}
