//! Byte copying between a client and a server once the route is chosen:
//! both directions at once, half-close passed on, an idle deadline, and no
//! buffer held while the connection is quiet (see `pool`). Returns what a
//! log line needs: bytes each way, who closed and why.

mod pool;

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

use pool::Buffer;

/// Which end of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions finished; `first` closed its sending side first.
    Closed { first: Side },
    /// A socket failed (reset, broken pipe, …).
    Error { side: Side, kind: io::ErrorKind },
    /// The server did not answer within the server timeout.
    ServerTimeout,
    /// Nothing moved either way for the tunnel timeout.
    IdleTimeout,
}

/// What the relay did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub client_to_server: u64,
    pub server_to_client: u64,
    pub end: End,
}

/// Deadlines of a relay.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Until the server's first byte.
    pub first_response: Duration,
    /// Inactivity once the server has answered.
    pub idle: Duration,
}

/// State shared by the two directions of one connection. Both run in the
/// same task, so the atomics are never contended; they only make the
/// future `Send`.
struct Shared {
    start: Instant,
    /// Milliseconds from `start` to the last byte moved either way.
    last_activity_ms: AtomicU64,
    /// 0 until a direction finishes, then 1 (client) or 2 (server).
    first_fin: AtomicU8,
    client_to_server: AtomicU64,
    server_to_client: AtomicU64,
}

impl Shared {
    fn last_activity(&self) -> Instant {
        self.start + Duration::from_millis(self.last_activity_ms.load(Relaxed))
    }

    fn first_fin(&self) -> Side {
        if self.first_fin.load(Relaxed) == 2 {
            Side::Server
        } else {
            Side::Client
        }
    }
}

/// Copies bytes both ways until both directions are closed, a socket
/// fails, or a deadline passes.
pub async fn relay(client: &TcpStream, server: &TcpStream, deadlines: Deadlines) -> Outcome {
    let shared = Shared {
        start: Instant::now(),
        last_activity_ms: AtomicU64::new(0),
        first_fin: AtomicU8::new(0),
        client_to_server: AtomicU64::new(0),
        server_to_client: AtomicU64::new(0),
    };
    let copies = async {
        tokio::try_join!(
            pump(client, server, Side::Client, &shared),
            pump(server, client, Side::Server, &shared),
        )
    };
    let timer = async {
        loop {
            let answered = shared.server_to_client.load(Relaxed) > 0;
            let deadline = if answered {
                shared.last_activity() + deadlines.idle
            } else {
                shared.start + deadlines.first_response
            };
            if Instant::now() >= deadline {
                return if answered {
                    End::IdleTimeout
                } else {
                    End::ServerTimeout
                };
            }
            sleep_until(deadline).await;
        }
    };
    let end = tokio::select! {
        result = copies => match result {
            Ok(_) => End::Closed { first: shared.first_fin() },
            Err((side, kind)) => End::Error { side, kind },
        },
        end = timer => end,
    };
    Outcome {
        client_to_server: shared.client_to_server.load(Relaxed),
        server_to_client: shared.server_to_client.load(Relaxed),
        end,
    }
}

/// Copies `from` → `to` until `from` closes, then half-closes `to`.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    side: Side,
    shared: &Shared,
) -> Result<(), (Side, io::ErrorKind)> {
    let (other, count, fin_code) = match side {
        Side::Client => (Side::Server, &shared.client_to_server, 1),
        Side::Server => (Side::Client, &shared.server_to_client, 2),
    };
    loop {
        from.readable().await.map_err(|e| (side, e.kind()))?;
        let mut buf = Buffer::take();
        let n = match from.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err((side, e.kind())),
        };
        write_all(to, &buf[..n])
            .await
            .map_err(|e| (other, e.kind()))?;
        count.fetch_add(n as u64, Relaxed);
        let since_start = shared.start.elapsed().as_millis() as u64;
        shared.last_activity_ms.store(since_start, Relaxed);
    }
    let _ = shared
        .first_fin
        .compare_exchange(0, fin_code, Relaxed, Relaxed);
    // The peer may already be gone; the other direction reports that.
    let _ = SockRef::from(to).shutdown(Shutdown::Write);
    Ok(())
}

/// Writes all of `data`, waiting for the socket when it is full.
pub async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
