//! Log output through `tracing`: human-readable text or one JSON object a
//! line, filtered by `RUST_LOG` (default `info`). Text is coloured only
//! when stderr is a terminal: files, `kubectl logs` and journald get plain
//! text.
//!
//! Access-log lines (target `access`, one per connection or request) are
//! the many: they are gathered in memory and written to stderr in batches
//! by a thread of their own, every [`FLUSH_EVERY`] or as soon as
//! [`FLUSH_AT`] bytes wait, so a worker never makes a system call for a
//! line, nor waits on a slow log reader. Should stderr stop draining, at
//! most [`MAX_PENDING`] bytes wait; lines beyond are dropped, counted in
//! `switchyard_log_lines_dropped_total` and said in one line when writing
//! resumes. Every other line (warnings, errors, reloads) is written at
//! once, after the access lines before it, so the order holds.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Access lines wait at most this long before they are written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A batch this large is written at once.
const FLUSH_AT: usize = 64 * 1024;
/// Bytes that may wait while stderr does not drain; lines beyond are dropped.
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: Format) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Output)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Writes the access lines still waiting (before the process exits).
pub fn flush() {
    if let Some(batch) = BATCH.get() {
        batch.write_out();
    }
}

/// The access lines waiting to be written.
struct Batch {
    pending: Mutex<Pending>,
    /// Wakes the writer thread when a batch is full.
    full: Condvar,
    /// Held while writing to stderr: a direct line waits for the batch
    /// taken before it.
    out: Mutex<()>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
}

static BATCH: OnceLock<Batch> = OnceLock::new();
static WRITER: Once = Once::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access lines dropped since start because stderr did not drain.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Relaxed)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain bytes: still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Batch {
    /// The batch, its writer thread started on first use.
    fn get() -> &'static Batch {
        let batch = BATCH.get_or_init(|| Batch {
            pending: Mutex::new(Pending::default()),
            full: Condvar::new(),
            out: Mutex::new(()),
        });
        WRITER.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || batch.run());
            if let Err(e) = spawned {
                // Lines are then written by the next direct line or at exit.
                eprintln!(
                    "access log: no writer thread ({e}); lines wait for the next warning or exit"
                );
            }
        });
        batch
    }

    fn push(&self, line: &[u8]) {
        let mut p = lock(&self.pending);
        if p.bytes.len() + line.len() > MAX_PENDING {
            p.dropped += 1;
            return;
        }
        let was_below = p.bytes.len() < FLUSH_AT;
        p.bytes.extend_from_slice(line);
        if was_below && p.bytes.len() >= FLUSH_AT {
            self.full.notify_one();
        }
    }

    /// The writer thread: a batch every `FLUSH_EVERY`, or when full.
    fn run(&self) {
        loop {
            {
                let p = lock(&self.pending);
                if p.bytes.len() < FLUSH_AT {
                    let _ = self.full.wait_timeout(p, FLUSH_EVERY);
                }
            }
            self.write_out();
        }
    }

    /// Takes what waits and writes it; returns with `out` released.
    fn write_out(&self) {
        let out = lock(&self.out);
        self.write_pending(&out);
    }

    /// Writes the waiting lines, `out` held by the caller.
    fn write_pending(&self, _out: &MutexGuard<'_, ()>) {
        let (bytes, dropped) = {
            let mut p = lock(&self.pending);
            (std::mem::take(&mut p.bytes), std::mem::take(&mut p.dropped))
        };
        let mut stderr = std::io::stderr().lock();
        if !bytes.is_empty() {
            // Nothing to tell if stderr is closed: the lines are lost.
            let _ = stderr.write_all(&bytes);
        }
        if dropped > 0 {
            DROPPED.fetch_add(dropped, Relaxed);
            let _ = writeln!(
                stderr,
                "access log: {dropped} lines dropped: stderr did not drain and {MAX_PENDING} bytes were waiting"
            );
        }
    }
}

/// Where the subscriber writes: access lines to the batch, the rest to
/// stderr at once.
struct Output;

enum Line {
    Access,
    Direct,
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line::Direct
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        if meta.target() == "access" && *meta.level() >= tracing::Level::INFO {
            Line::Access
        } else {
            Line::Direct
        }
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Line::Access => Batch::get().push(buf),
            Line::Direct => match BATCH.get() {
                // The access lines before this one go first.
                Some(batch) => {
                    let out = lock(&batch.out);
                    batch.write_pending(&out);
                    std::io::stderr().lock().write_all(buf)?;
                }
                None => std::io::stderr().lock().write_all(buf)?,
            },
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
