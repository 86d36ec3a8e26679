//! Byte copying between a client and a server once the route is chosen:
//! both directions at once, half-close passed on, a first-response and an
//! idle deadline, and no buffer held while the connection is quiet (see
//! `pool`). Returns what a log line needs: bytes each way, who closed, why.
//!
//! The copy is written against socket readiness (`poll_read_ready`,
//! `try_read`, …) rather than as nested futures, so an idle relay is a few
//! hundred bytes: two direction states and one timer. Per message it makes
//! one read and one write each way: a short read clears the readiness at
//! once instead of reading again into `EAGAIN`.

mod pool;
#[cfg(target_os = "linux")]
pub(crate) mod splice;
mod streams;

pub(crate) use streams::relay_streams;

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use pool::Buffer;

/// Which end of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

impl Side {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Both directions finished; `first` closed its sending side first.
    Closed { first: Side },
    /// A socket failed (reset, broken pipe, …).
    Error { side: Side, kind: io::ErrorKind },
    /// The server did not answer within the first-response deadline.
    ServerTimeout,
    /// Nothing moved either way for the idle deadline.
    IdleTimeout,
    /// A reload removed the connection's route and its grace period ended.
    RouteRemoved,
}

/// A future that ends the relay when it resolves (boxed, so a connection
/// that has none pays one pointer).
pub(crate) type Stop = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the relay did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) client_to_server: u64,
    pub(crate) server_to_client: u64,
    pub(crate) end: End,
}

/// Deadlines of a relay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// From the start of the relay to the server's first byte.
    pub(crate) first_response: Duration,
    /// Inactivity once the server has answered.
    pub(crate) idle: Duration,
}

/// How a passthrough relay copies: `splice`: bursts through a kernel pipe
/// (`[relay] splice`, Linux only; elsewhere always through the buffer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copying {
    pub(crate) splice: bool,
}

pin_project_lite::pin_project! {
    /// A passthrough relay: copies bytes both ways until both directions
    /// are closed, a socket fails, or a deadline passes. A struct rather
    /// than an `async fn`, so that a long-lived connection's task holds
    /// each piece of state once: the two streams, one timer, the two
    /// directions and the deadline bookkeeping.
    pub(crate) struct Relay {
        client: TcpStream,
        server: TcpStream,
        #[pin]
        timer: Sleep,
        up: Direction,
        down: Direction,
        first_fin: Option<Side>,
        last_activity: Instant,
        idle: Duration,
        stop: Option<Stop>,
    }
}

/// Starts relaying between `client` and `server`; the first-response
/// deadline counts from now.
pub(crate) fn relay(
    client: TcpStream,
    server: TcpStream,
    deadlines: Deadlines,
    copying: Copying,
    stop: Option<Stop>,
) -> Relay {
    let start = Instant::now();
    Relay {
        client,
        server,
        timer: sleep_until(start + deadlines.first_response),
        up: Direction::new(Side::Client, copying),
        down: Direction::new(Side::Server, copying),
        first_fin: None,
        last_activity: start,
        idle: deadlines.idle,
        stop,
    }
}

impl std::future::Future for Relay {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.project();
        let end = 'end: {
            for side in [Side::Client, Side::Server] {
                let (dir, other_done, from, to) = match side {
                    Side::Client => (&mut *this.up, this.down.done, &*this.client, &*this.server),
                    Side::Server => (&mut *this.down, this.up.done, &*this.server, &*this.client),
                };
                match dir.poll_copy(cx, from, to, other_done) {
                    Poll::Ready(Ok(())) => {
                        this.first_fin.get_or_insert(dir.side);
                    }
                    Poll::Ready(Err((side, kind))) => break 'end End::Error { side, kind },
                    Poll::Pending => {}
                }
                if std::mem::take(&mut dir.moved) {
                    *this.last_activity = Instant::now();
                }
            }
            if this.up.done && this.down.done {
                break 'end End::Closed {
                    first: this.first_fin.unwrap_or(Side::Client),
                };
            }
            if let Some(stop) = this.stop {
                if stop.as_mut().poll(cx).is_ready() {
                    break 'end End::RouteRemoved;
                }
            }
            let answered = this.down.bytes > 0;
            ready!(poll_deadline(
                cx,
                this.timer,
                answered,
                *this.last_activity,
                *this.idle
            ))
        };
        Poll::Ready(Outcome {
            client_to_server: this.up.bytes,
            server_to_client: this.down.bytes,
            end,
        })
    }
}

/// Fires the timeout, or re-arms the timer when there was activity since
/// it was set (re-arming only on expiry keeps timer work off the copy path).
/// The one exception: when the server first answers, an idle deadline
/// earlier than the first-response one is armed at once.
fn poll_deadline(
    cx: &mut Context<'_>,
    mut timer: Pin<&mut Sleep>,
    answered: bool,
    last_activity: Instant,
    idle: Duration,
) -> Poll<End> {
    if answered && last_activity + idle < timer.deadline() {
        timer.as_mut().reset(last_activity + idle);
    }
    loop {
        ready!(timer.as_mut().poll(cx));
        if !answered {
            return Poll::Ready(End::ServerTimeout);
        }
        let deadline = last_activity + idle;
        if Instant::now() >= deadline {
            return Poll::Ready(End::IdleTimeout);
        }
        timer.as_mut().reset(deadline);
    }
}

use std::future::Future as _;

/// One direction of the copy.
struct Direction {
    side: Side,
    /// Bytes read from `from` and not yet written to `to`; `None` whenever
    /// the direction is idle.
    pending: Option<Pending>,
    /// `from` filled a whole buffer: the burst goes through a pipe.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    bulk: bool,
    /// Bursts may go through a pipe at all (Linux only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    splice: bool,
    /// `from` reached end of stream and `to` was half-closed.
    done: bool,
    /// Bytes moved since the relay loop last looked.
    moved: bool,
    bytes: u64,
}

/// Where a direction's bytes in flight are.
enum Pending {
    /// `buffer[start..end]`.
    Buffer(Buffer, u32, u32),
    /// In a pipe (`splice`), this many.
    #[cfg(target_os = "linux")]
    Pipe(splice::Pipe, u32),
}

impl Direction {
    fn new(side: Side, copying: Copying) -> Self {
        Direction {
            side,
            pending: None,
            bulk: false,
            splice: copying.splice,
            done: false,
            moved: false,
            bytes: 0,
        }
    }

    /// Copies until a socket would block (`Pending`), `from` closes
    /// (`Ready(Ok)`), or a socket fails. `other_done`: the other direction
    /// already ended, so the relay ends with this one and closing the
    /// sockets sends the FIN (no separate `shutdown` call).
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        other_done: bool,
    ) -> Poll<Result<(), (Side, io::ErrorKind)>> {
        let (side, other) = (self.side, self.side.other());
        loop {
            if let Some(pending) = &mut self.pending {
                ready!(to.poll_write_ready(cx)).map_err(|e| (other, e.kind()))?;
                let (written, left) = match pending {
                    Pending::Buffer(buf, start, end) => {
                        match to.try_write(&buf[*start as usize..*end as usize]) {
                            Ok(n) => {
                                // At most `end - start`, a `u32`.
                                *start += n as u32;
                                (Ok(n), end.saturating_sub(*start))
                            }
                            Err(e) => (Err(e), 1),
                        }
                    }
                    #[cfg(target_os = "linux")]
                    Pending::Pipe(pipe, held) => match pipe.drain(to, *held as usize) {
                        Ok(n) => {
                            *held = held.saturating_sub(n as u32);
                            (Ok(n), *held)
                        }
                        Err(e) => (Err(e), 1),
                    },
                };
                match written {
                    Ok(n) => {
                        self.bytes += n as u64;
                        self.moved = true;
                        if left == 0 {
                            self.finish_pending();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err((other, e.kind()))),
                }
                continue;
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            ready!(from.poll_read_ready(cx)).map_err(|e| (side, e.kind()))?;
            let read = match self.read(from) {
                Ok(0) => {
                    self.done = true;
                    if !other_done {
                        // Half-close passed on. The peer may already be
                        // gone; the other direction reports that.
                        let _ = SockRef::from(to).shutdown(Shutdown::Write);
                    }
                    return Poll::Ready(Ok(()));
                }
                read => read,
            };
            match read {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err((side, e.kind()))),
            }
        }
    }

    /// One read from `from` into a pipe (in a burst) or a pool buffer; what
    /// it read is left in `pending`.
    fn read(&mut self, from: &TcpStream) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        if std::mem::take(&mut self.bulk) {
            if let Some(pipe) = splice::Pipe::take() {
                let n = pipe.fill(from)?;
                if n > 0 {
                    // A full pipe: the burst goes on. A shorter fill
                    // emptied the socket: the next read is the buffer's.
                    self.bulk = n == splice::CHUNK;
                    // At most the pipe's 64 KiB.
                    self.pending = Some(Pending::Pipe(pipe, n as u32));
                    return Ok(n);
                }
                // Nothing moved (the end, an empty socket, or urgent
                // data): the buffer's read below says which.
                pipe.give_back();
            }
        }
        let mut buf = Buffer::take();
        let n = read_draining(from, &mut buf)?;
        if n > 0 {
            #[cfg(target_os = "linux")]
            {
                self.bulk = self.splice && n == buf.len();
            }
            // A read is at most the buffer's 32 KiB.
            self.pending = Some(Pending::Buffer(buf, 0, n as u32));
        }
        Ok(n)
    }

    /// The bytes in flight are all written: the buffer or the pipe goes
    /// back to its pool.
    fn finish_pending(&mut self) {
        match self.pending.take() {
            #[cfg(target_os = "linux")]
            Some(Pending::Pipe(pipe, _)) => pipe.give_back(),
            _ => {}
        }
    }
}

/// Reads what `from` holds into `buf`. A read shorter than the buffer
/// emptied the socket's receive queue, so the socket's readiness is cleared
/// at once: the next look waits for the kernel's next event instead of
/// learning it from a read that fails with `EAGAIN` (one system call per
/// message saved, each way). Tokio clears readiness only if no event came
/// in since it was read, so data that arrives meanwhile still wakes us.
fn read_draining(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut short = None;
    let len = buf.len();
    let read = from.try_io(tokio::io::Interest::READABLE, || {
        let n = io::Read::read(&mut &*SockRef::from(from), buf)?;
        if n > 0 && n < len {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (read, short) {
        (_, Some(n)) => Ok(n),
        (read, None) => read,
    }
}

/// Writes all of `data`, waiting for the socket when it is full.
pub(crate) async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
