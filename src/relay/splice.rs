//! Bulk transfers through the kernel (Linux `splice(2)`): once a read fills
//! a whole copy buffer, a direction moves its bytes socket → pipe → socket
//! without copying them through user space, until the burst ends. The pipe
//! comes from a per-thread pool and goes back to it once it is empty, so an
//! idle connection holds no pipe and a busy one two descriptors per
//! direction. Through rustix: the system calls without `unsafe` here.
//!
//! On by default; `[relay] splice = false` turns it off for connections
//! accepted from then on. Bytes moved this way are counted
//! (`switchyard_relay_spliced_bytes_total`).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// At most this much is moved per call: the default pipe capacity.
const CHUNK: usize = 64 * 1024;
/// Empty pipes kept per thread; beyond this they are closed.
const SPARES: usize = 16;

thread_local! {
    static SPARE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe on loan from the pool, with the bytes it holds.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// An empty pipe: a spare, or a new one (`None` when the process is out
    /// of descriptors: the caller copies through its buffer instead).
    pub fn take() -> Option<Pipe> {
        if let Some(pipe) = SPARE.with(|s| s.borrow_mut().pop()) {
            return Some(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
        Some(Pipe { read, write })
    }

    /// Gives an empty pipe back to the pool (a pipe that still holds bytes
    /// is closed instead, with them).
    pub fn give_back(self) {
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARES {
                spare.push(self);
            }
        });
    }

    /// Moves what `from` holds into the pipe: the bytes moved, 0 at end of
    /// stream, `WouldBlock` (readiness cleared) when `from` is empty.
    pub fn fill(&self, from: &TcpStream) -> io::Result<usize> {
        from.try_io(Interest::READABLE, || {
            let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
            Ok(splice(
                from.as_fd(),
                None,
                self.write.as_fd(),
                None,
                CHUNK,
                flags,
            )?)
        })
    }

    /// Moves up to `len` bytes from the pipe into `to`: the bytes moved,
    /// `WouldBlock` (readiness cleared) when `to` is full.
    pub fn drain(&self, to: &TcpStream, len: usize) -> io::Result<usize> {
        let moved = to.try_io(Interest::WRITABLE, || {
            let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
            Ok(splice(
                self.read.as_fd(),
                None,
                to.as_fd(),
                None,
                len,
                flags,
            )?)
        })?;
        crate::stats::counters::global()
            .spliced_bytes
            .fetch_add(moved as u64, Relaxed);
        Ok(moved)
    }
}
