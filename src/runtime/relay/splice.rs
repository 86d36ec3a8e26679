//! Bulk transfers through the kernel (Linux `splice(2)`): once a read fills
//! a whole copy buffer, a direction moves its bytes socket → pipe → socket
//! without copying them through user space, until the burst ends. The pipe
//! comes from a per-thread pool and goes back to it once it is empty, so an
//! idle connection holds no pipe and a busy one two descriptors per
//! direction. Through rustix: the system calls without `unsafe` here.
//!
//! Pipes are bounded like buffers: every pipe open (lent or spare) counts
//! 64 KiB against the buffer budget (counted, never refused), and at most
//! `descriptors::splice_pairs_allowed` are open at once, an eighth of the open-file limit,
//! counted in `descriptors::needed`; beyond it a burst copies through its
//! buffer. `[relay] splice = false` turns it off for connections accepted
//! from then on. Bytes moved this way are counted
//! (`switchyard_relay_spliced_bytes_total`).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::runtime::descriptors::{current, splice_pairs_allowed};

/// At most this much is moved per call: the default pipe capacity, and
/// what a pipe counts against the buffer budget.
pub(crate) const CHUNK: usize = 64 * 1024;
/// Empty pipes kept per thread; beyond this they are closed.
const SPARES: usize = 16;
/// Pipes open now (lent or spare), across threads.
static OPEN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SPARE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe on loan from the pool.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// An empty pipe: a spare, or a new one while fewer than the allowed
    /// number are open (`None` otherwise, or when the process is out of
    /// descriptors: the caller copies through its buffer instead).
    pub(crate) fn take() -> Option<Pipe> {
        if let Some(pipe) = SPARE.with(|s| s.borrow_mut().pop()) {
            return Some(pipe);
        }
        let allowed = splice_pairs_allowed(current());
        OPEN.fetch_update(Relaxed, Relaxed, |n| (n < allowed).then_some(n + 1))
            .ok()?;
        match pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) {
            Ok((read, write)) => {
                crate::model::limits::budget::global().add(CHUNK);
                Some(Pipe { read, write })
            }
            Err(_) => {
                OPEN.fetch_sub(1, Relaxed);
                None
            }
        }
    }

    /// Gives an empty pipe back to the pool (the caller never gives back
    /// one that holds bytes; such a pipe is dropped, closing it).
    pub(crate) fn give_back(self) {
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARES {
                spare.push(self);
            }
        });
    }

    /// Moves what `from` holds into the pipe: the bytes moved, or 0 when
    /// it moved nothing. A 0 is not trusted as the end of the stream, nor
    /// as an empty socket (splicing stops at TCP urgent data): readiness is
    /// left as it is and the caller reads the socket to settle it.
    pub(crate) fn fill(&self, from: &TcpStream) -> io::Result<usize> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        match splice(from.as_fd(), None, self.write.as_fd(), None, CHUNK, flags) {
            Ok(n) => Ok(n),
            Err(e) if e == rustix::io::Errno::AGAIN => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves up to `len` bytes from the pipe into `to`: the bytes moved,
    /// `WouldBlock` (readiness cleared) when `to` is full. The pipe holds
    /// `len` bytes, so it is never what would block. A peer that has gone
    /// gives `EPIPE`, not a signal: the process ignores SIGPIPE, as Rust
    /// programs do.
    pub(crate) fn drain(&self, to: &TcpStream, len: usize) -> io::Result<usize> {
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
        crate::model::counters::global()
            .spliced_bytes
            .fetch_add(moved as u64, Relaxed);
        Ok(moved)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Relaxed);
        crate::model::limits::budget::global().give_back(CHUNK);
    }
}
