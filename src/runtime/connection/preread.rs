//! Stage 1, the preread (the PROXY header, then after the listener's
//! admission the ClientHello): what a connection says before anything is
//! dialed. On an `accept_proxy` listener the PROXY header first (consumed
//! exactly: the client it names is the client from then on), then the
//! ClientHello, read until complete without consuming it, within the
//! listener's inspect timeout from accept and the buffer budget. The bytes
//! read stay in [`Preread`] until they are handed on.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout_at;

use super::terminate;
use crate::model::counters::{global, HelloOutcome};
use crate::model::limits::budget::Charge;
use crate::model::limits::cidr::Cidr;
use crate::model::snapshot::ListenerSpec;
use crate::model::wire::client_hello::{self, ClientHello, HelloError, Progress};
use crate::runtime::access_log::AccessLog;

/// First read size: most ClientHellos (500–1,800 bytes) arrive in one read.
const FIRST_READ: usize = 2048;

/// The bytes the preread took from the client, with their share of the
/// buffer budget. What they said (a hello with SNI, one without, or not
/// TLS) is in the connection's log: [`AccessLog::said`].
pub(super) struct Preread {
    pub(crate) bytes: Vec<u8>,
    /// Released with the bytes.
    _charge: Charge,
}

impl Preread {
    fn new(bytes: Vec<u8>, charge: Charge) -> Self {
        Preread {
            bytes,
            _charge: charge,
        }
    }

    /// The bytes, for a TLS handshake that charges its own buffers.
    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The client: the socket's peer, or behind a load balancer (an
/// `accept_proxy` listener) the one its PROXY header names. `None`
/// (logged, counted) when the connection is to be closed.
pub(super) async fn client(
    stream: &TcpStream,
    peer: SocketAddr,
    spec: &ListenerSpec,
    log: &mut AccessLog,
) -> Option<SocketAddr> {
    let Some(from) = &spec.proxy_from else {
        return Some(peer);
    };
    // Boxed: rare, and kept out of every connection's future.
    match Box::pin(proxy_header(stream, peer, spec, from, log)).await {
        Some(client) => {
            log.set_client(client);
            Some(client)
        }
        None => {
            global()
                .proxy_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        }
    }
}

/// Reads the PROXY header a connection to an `accept_proxy` listener must
/// start with, from a source in `proxy_from`, within the listener's
/// `inspect_timeout` (one deadline for it and the ClientHello after it),
/// and consumes exactly its bytes (the ClientHello or
/// request after it stays in the socket). The client it names, or the
/// socket's peer for v2 `LOCAL` and v1 `UNKNOWN`; `None` (logged) when the
/// connection is to be closed.
async fn proxy_header(
    stream: &TcpStream,
    peer: SocketAddr,
    spec: &ListenerSpec,
    from: &[Cidr],
    log: &mut AccessLog,
) -> Option<SocketAddr> {
    use crate::model::wire::proxy_header::{parse, Progress, V2_MAX};
    if !from.iter().any(|block| block.contains(peer.ip())) {
        log.reject(
            "PROXY header expected from a load balancer: source not in proxy_from",
            0,
            0,
        );
        return None;
    }
    let deadline = log.started() + spec.inspect_timeout;
    let mut buf = vec![0u8; V2_MAX];
    let mut peeks = 0;
    loop {
        let seen = match timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) => {
                log.reject("client closed before a complete PROXY header", 0, peeks);
                return None;
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                log.reject(&format!("read failed: {e}"), 0, peeks);
                return None;
            }
            Err(_) => {
                let why = format!("no complete PROXY header within {:?}", spec.inspect_timeout);
                log.reject(&why, 0, peeks);
                return None;
            }
        };
        peeks += 1;
        match parse(&buf[..seen]) {
            Ok(Progress::Complete(header)) => {
                // The header's bytes are in the socket already: consume
                // exactly them.
                let mut taken = 0;
                while taken < header.len {
                    match stream.try_read(&mut buf[taken..header.len]) {
                        Ok(0) => return None,
                        Ok(n) => taken += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if timeout_at(deadline, stream.readable()).await.is_err() {
                                return None;
                            }
                        }
                        Err(e) => {
                            log.reject(&format!("read failed: {e}"), 0, peeks);
                            return None;
                        }
                    }
                }
                return Some(header.client.unwrap_or(peer));
            }
            // A peek does not wait for more bytes: a split header (rare;
            // balancers write it whole) is looked at again shortly.
            Ok(Progress::Partial) => {
                let pause = tokio::time::sleep(Duration::from_millis(5));
                if timeout_at(deadline, pause).await.is_err() {
                    let why = format!("no complete PROXY header within {:?}", spec.inspect_timeout);
                    log.reject(&why, seen, peeks);
                    return None;
                }
            }
            Err(e) => {
                log.reject(&format!("bad PROXY header: {e}"), seen, peeks);
                return None;
            }
        }
    }
}

/// Reads until the ClientHello is complete (or not a hello) within the
/// listener's inspect timeout from accept, for the whole of it and a PROXY
/// header before it.
pub(super) async fn hello(
    stream: &TcpStream,
    spec: &ListenerSpec,
    log: &mut AccessLog,
) -> Option<Preread> {
    // The preread buffer is the connection's first memory: within the
    // budget or refused.
    let Some(mut charge) = crate::model::limits::budget::global().admit(FIRST_READ) else {
        log.reject(terminate::BUDGET_REACHED, 0, 0);
        return None;
    };
    // From accept: a PROXY header before the hello shares the time.
    let deadline = log.started() + spec.inspect_timeout;
    let mut buf = Vec::with_capacity(FIRST_READ);
    let mut reads = 0;
    loop {
        match client_hello::peek(&buf, spec.max_client_hello) {
            Ok(Progress::Done(hello)) => return accept_hello(hello, buf, charge, reads, log),
            Err(e) => {
                global().hello(match e {
                    HelloError::NotTls(_)
                    | HelloError::RecordVersion(_)
                    | HelloError::NotClientHello(_) => HelloOutcome::NotTls,
                    HelloError::TooLarge { .. } => HelloOutcome::TooLarge,
                    _ => HelloOutcome::Malformed,
                });
                log.reject(&format!("bad ClientHello: {e}"), buf.len(), reads);
                return Some(Preread::new(buf, charge));
            }
            Ok(Progress::NeedMore { at_least }) => {
                // A larger buffer is new work: within the budget or closed.
                if !charge.grow_hello_to(at_least.max(buf.capacity())) {
                    log.reject(terminate::BUDGET_REACHED, buf.len(), reads);
                    return None;
                }
                buf.reserve_exact(at_least.saturating_sub(buf.len()));
            }
        }
        let read = timeout_at(deadline, read_some(stream, &mut buf)).await;
        match read {
            Ok(Ok(0)) => {
                global().hello(HelloOutcome::Closed);
                log.reject(
                    "client closed before a complete ClientHello",
                    buf.len(),
                    reads,
                );
                return None;
            }
            Ok(Ok(_)) => reads += 1,
            Ok(Err(e)) => {
                global().hello(HelloOutcome::Closed);
                log.reject(&format!("read failed: {e}"), buf.len(), reads);
                return None;
            }
            Err(_) => {
                global().hello(HelloOutcome::Timeout);
                let why = format!("no complete ClientHello within {:?}", spec.inspect_timeout);
                log.reject(&why, buf.len(), reads);
                return None;
            }
        }
    }
}

/// Counts and logs a complete ClientHello; one without SNI is routed
/// all the same (to a default backend, if any).
fn accept_hello(
    hello: ClientHello,
    buf: Vec<u8>,
    charge: Charge,
    reads: usize,
    log: &mut AccessLog,
) -> Option<Preread> {
    let has_sni = hello.sni.is_some();
    global().hello(if has_sni {
        HelloOutcome::Ok
    } else {
        HelloOutcome::NoSni
    });
    global().fingerprint(hello.ja4.as_str());
    log.hello(hello, reads);
    if !has_sni {
        log.reject("ClientHello without SNI", buf.len(), reads);
    }
    Some(Preread::new(buf, charge))
}

/// Reads what the socket has into the spare capacity of `buf`.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    // A short read clears the socket's readiness, as the relay's reads do
    // (see `relay::read_draining`), so the relay that follows the hello
    // does not begin with a read that fails with EAGAIN. Into the spare
    // capacity, which is never zeroed (a hello dribbled a byte at a time
    // costs no more per read than one that arrives whole).
    loop {
        stream.readable().await?;
        let spare = buf.capacity() - buf.len();
        let mut short = None;
        let read = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            if n > 0 && n < spare {
                short = Some(n);
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (read, short) {
            (_, Some(n)) => return Ok(n),
            (Err(e), None) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            (other, None) => return other,
        }
    }
}
