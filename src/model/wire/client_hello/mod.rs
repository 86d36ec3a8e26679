//! The TLS ClientHello reader: a pure function over the bytes a client has
//! sent so far, with no I/O. The listener feeds it whatever the socket has
//! delivered and gets one of three answers: read more, here is what the hello
//! says (SNI, ALPN, versions, the JA4 fingerprint), or the bytes are not a
//! ClientHello. The bytes are
//! never consumed: the caller replays them to the server or the TLS acceptor.
//!
//! It reassembles a hello split over any number of TCP segments and TLS
//! records, and allocates at most `limit` bytes whatever the input.

mod ja4;
mod parse;
#[cfg(test)]
mod tests;

pub use ja4::Ja4;
pub use parse::peek;
pub(crate) use parse::{host_name, ClientHello, HelloError, Progress};

/// Default cap on the bytes read while waiting for a complete ClientHello.
/// Post-quantum key shares make 1.5–2 KB hellos common and FrodoKEM ones
/// reach ~21 KB; 32 KiB covers them with room to spare.
pub const DEFAULT_LIMIT: usize = 32 * 1024;
