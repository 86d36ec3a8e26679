//! Stage 1b, PostgreSQL's start (listeners with `postgres = true`): a
//! client before PostgreSQL 17 asks for SSL with an 8-byte `SSLRequest`
//! and waits for one byte before its ClientHello. The router answers `S`
//! for the server it has not chosen yet, then reads the ClientHello and
//! routes it by SNI like any other. Passthrough and re-encrypt servers are
//! asked the same (`ask_server`) before the TLS bytes go to them, so the
//! server sees the start a direct client gives it. A `GSSENCRequest` gets
//! `N` (the client then asks for SSL); a `CancelRequest` or a plain-text
//! `StartupMessage` carries no name and is refused with a log line (the
//! latter with an error `psql` prints). A client that opens with TLS
//! directly (`sslnegotiation=direct`) goes on as TLS; through passthrough
//! its server chooses ALPN `postgresql` as libpq 17 requires (the router
//! does not offer it when it terminates).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at};

use crate::model::counters::{global, PostgresOutcome};
use crate::model::snapshot::ListenerSpec;
use crate::model::wire::postgres::{self, Opening};
use crate::runtime::access_log::AccessLog;

/// Requests answered before the ClientHello at most: a `GSSENCRequest`,
/// then an `SSLRequest`, is what libpq sends; more is a client looping.
const ROUNDS: usize = 3;

/// Reads what the client opens with, within the listener's inspect
/// timeout from accept, and answers a PostgreSQL request for encryption.
/// `Some` when a ClientHello is to be read next (its `SSLRequest`
/// answered, noted in the log, or a client that opened with TLS or
/// something else, which the ClientHello reader judges); `None` (logged,
/// counted) when the connection is to be closed.
pub(super) async fn start(
    stream: &mut TcpStream,
    spec: &ListenerSpec,
    log: &mut AccessLog,
) -> Option<()> {
    let deadline = log.started() + spec.inspect_timeout;
    for _ in 0..ROUNDS {
        let opening = match timeout_at(deadline, first_message(stream)).await {
            Ok(Ok(opening)) => opening,
            Ok(Err(Unreadable::Malformed(malformed))) => {
                global().postgres(PostgresOutcome::Malformed);
                log.reject(&malformed.to_string(), 0, 0);
                return None;
            }
            Ok(Err(Unreadable::Closed)) => {
                log.reject("client closed before its first message", 0, 0);
                return None;
            }
            Ok(Err(Unreadable::Failed(e))) => {
                log.reject(&format!("read failed: {e}"), 0, 0);
                return None;
            }
            Err(_) => {
                let why = format!(
                    "no complete first message within {:?}",
                    spec.inspect_timeout
                );
                log.reject(&why, 0, 0);
                return None;
            }
        };
        let answer = match opening {
            Opening::Tls | Opening::Other => return Some(()),
            Opening::SslRequest => b'S',
            Opening::GssEncRequest => b'N',
            Opening::CancelRequest => {
                global().postgres(PostgresOutcome::CancelRefused);
                let why = "PostgreSQL CancelRequest refused: it names no server, so it cannot be routed by name";
                log.end("switchyard", why);
                // Its key is read, so the close is a FIN, not a reset.
                let _ = timeout_at(deadline, discard(stream, opening.rest())).await;
                return None;
            }
            Opening::Startup { major, minor, .. } => {
                global().postgres(PostgresOutcome::PlaintextRefused);
                let _ = timeout_at(deadline, discard(stream, opening.rest())).await;
                return refuse_plaintext(stream, major, minor, log).await;
            }
        };
        if let Err(e) = timeout_at(deadline, stream.write_all(&[answer]))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        {
            log.reject(&format!("PostgreSQL start: {e}"), 0, 0);
            return None;
        }
        if answer == b'S' {
            global().postgres(PostgresOutcome::SslRequest);
            log.postgres_start();
            return Some(());
        }
        global().postgres(PostgresOutcome::GssEncDeclined);
    }
    log.reject("PostgreSQL start: too many requests before TLS", 0, 0);
    None
}

/// Why a client's first message could not be read.
enum Unreadable {
    Malformed(postgres::Malformed),
    Closed,
    Failed(std::io::Error),
}

/// What the client's first bytes are. Anything that does not start with
/// 0 (a TLS record) is only peeked: the ClientHello reader takes it. A
/// PostgreSQL message (a length below 16 MiB starts with 0) has its
/// 8-byte head read here, so waiting for it is a read, never a spin.
async fn first_message(stream: &mut TcpStream) -> Result<Opening, Unreadable> {
    let mut first = [0u8; 1];
    // A peek waits for the socket to be readable.
    let seen = stream.peek(&mut first).await.map_err(Unreadable::Failed)?;
    if seen == 0 {
        return Err(Unreadable::Closed);
    }
    if first[0] != 0 {
        return match postgres::opening(&first) {
            Ok(Some(opening)) => Ok(opening),
            _ => Ok(Opening::Other),
        };
    }
    let mut head = [0u8; 8];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Unreadable::Closed,
            _ => Unreadable::Failed(e),
        })?;
    match postgres::opening(&head) {
        Ok(Some(opening)) => Ok(opening),
        // Eight bytes always tell.
        Ok(None) => Err(Unreadable::Closed),
        Err(malformed) => Err(Unreadable::Malformed(malformed)),
    }
}

/// Reads and drops `n` bytes (the rest of a refused message), so the
/// socket closes with nothing unread: a close with unread bytes is a
/// reset, which may discard the error written before it.
async fn discard(stream: &mut TcpStream, n: usize) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    let mut left = n;
    while left > 0 {
        let take = left.min(buf.len());
        stream.read_exact(&mut buf[..take]).await?;
        left -= take;
    }
    Ok(())
}

/// A plain-text start: the client is told, in the error `psql` prints,
/// that this port routes by TLS server name.
async fn refuse_plaintext(
    stream: &mut TcpStream,
    major: u16,
    minor: u16,
    log: &mut AccessLog,
) -> Option<()> {
    let message = "this port routes PostgreSQL by TLS server name (SNI): connect with sslmode=require or stronger";
    let error = postgres::error_response("28000", message);
    let told = async {
        stream.write_all(&error).await?;
        stream.shutdown().await
    };
    let _ = timeout(Duration::from_secs(1), told).await;
    let why = format!(
        "PostgreSQL plain-text StartupMessage (protocol {major}.{minor}) refused: no TLS, so no name to route by"
    );
    log.end("switchyard", &why);
    None
}

/// Asks a server for SSL as the client asked the router: sends the
/// `SSLRequest` and reads its one-byte answer within `limit`. An answer
/// other than `S` is the server's refusal, told in the error (counted).
pub(super) async fn ask_server(server: &mut TcpStream, limit: Duration) -> Result<(), String> {
    let asked = async {
        server.write_all(&postgres::SSL_REQUEST).await?;
        server.read_u8().await
    };
    let answer = match timeout(limit, asked).await {
        Ok(Ok(byte)) => postgres::server_answer(byte),
        Ok(Err(e)) => Err(format!(
            "the server closed before answering the SSLRequest: {e}"
        )),
        Err(_) => Err(format!(
            "the server did not answer the SSLRequest within {limit:?}"
        )),
    };
    if answer.is_err() {
        global().postgres(PostgresOutcome::ServerRefused);
    }
    answer
}

/// Tells a PostgreSQL client whose name no route takes so, in its TLS
/// handshake (`unrecognized_name`), instead of closing without a word.
pub(super) async fn no_route(stream: &mut TcpStream) {
    let alert = postgres::UNRECOGNIZED_NAME_ALERT;
    let _ = timeout(Duration::from_secs(1), stream.write_all(&alert)).await;
}
