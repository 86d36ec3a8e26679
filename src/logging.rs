//! Log output through `tracing`: human-readable text or one JSON object a
//! line, filtered by `RUST_LOG` (default `info`). Text is coloured only
//! when stderr is a terminal: files, `kubectl logs` and journald get plain
//! text.
//!
//! Lines are never written by the thread that logs them: they are
//! gathered in memory and written to stderr by a thread of their own, so a
//! worker never writes a line itself, nor waits on a slow log reader. Access-log lines (target `access`, one per connection or
//! request) are the many: they are written in batches, every
//! [`FLUSH_EVERY`] or as soon as [`FLUSH_AT`] bytes wait. Any other line
//! (warnings, errors, reloads) wakes the writer at once, and goes out
//! after the lines before it. Should stderr stop draining, at most
//! [`MAX_PENDING`] bytes wait (besides the batch being written); lines
//! beyond are dropped, counted in `switchyard_log_lines_dropped_total` and
//! said in one line when writing resumes. What waits is written before
//! the process exits ([`flush`]) and when a thread panics.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
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
    let installed = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        flush_on_panic();
    }
}

/// Writes the lines still waiting: before the process exits, and before
/// anything is printed to stderr directly (so that it comes after them).
pub fn flush() {
    if let Some(batch) = BATCH.get() {
        batch.write_out();
    }
}

/// Writes what waits when a thread panics, before the panic's own message
/// (the last lines before a crash are the ones that explain it).
fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(batch) = BATCH.get() {
            batch.write_out_now();
        }
        previous(info);
    }));
}

/// The lines waiting to be written.
struct Batch {
    pending: Mutex<Pending>,
    /// Wakes the writer thread: a batch is full, or a line is urgent.
    wake: Condvar,
    /// Held while writing to stderr, so that batches go out in order.
    out: Mutex<()>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    /// A line that is not an access line waits.
    urgent: bool,
}

static BATCH: OnceLock<Batch> = OnceLock::new();
static WRITER: Once = Once::new();
/// The writer thread runs.
static WRITING: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped since start because stderr did not drain.
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
            wake: Condvar::new(),
            out: Mutex::new(()),
        });
        WRITER.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || batch.run());
            match spawned {
                Ok(_) => WRITING.store(true, Relaxed),
                // Every line is then written by the thread that logs it.
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "log: no writer thread ({e}); lines are written as they come"
                    );
                }
            }
        });
        batch
    }

    /// Adds a line; `now`: wake the writer for it (not an access line).
    fn push(&self, line: &[u8], now: bool) {
        let mut p = lock(&self.pending);
        if p.bytes.len() + line.len() > MAX_PENDING {
            // Counted now: the writer may be stuck on stderr meanwhile.
            DROPPED.fetch_add(1, Relaxed);
            p.dropped += 1;
            return;
        }
        let was_below = p.bytes.len() < FLUSH_AT;
        p.bytes.extend_from_slice(line);
        p.urgent |= now;
        if now || (was_below && p.bytes.len() >= FLUSH_AT) {
            self.wake.notify_one();
        }
    }

    /// The writer thread: a batch every `FLUSH_EVERY`, or at once when
    /// full or when a line that is not an access line waits.
    fn run(&self) {
        loop {
            {
                let p = lock(&self.pending);
                if p.bytes.len() < FLUSH_AT && !p.urgent {
                    let _ = self.wake.wait_timeout(p, FLUSH_EVERY);
                }
            }
            self.write_out();
        }
    }

    /// Takes what waits and writes it, in the order it came.
    fn write_out(&self) {
        let dropped = {
            // Held while writing: a batch taken later goes out later.
            let _out = lock(&self.out);
            let (bytes, dropped) = {
                let mut p = lock(&self.pending);
                p.urgent = false;
                (std::mem::take(&mut p.bytes), std::mem::take(&mut p.dropped))
            };
            if !bytes.is_empty() {
                // Nothing to tell if stderr is closed: the lines are lost.
                let _ = std::io::stderr().lock().write_all(&bytes);
            }
            dropped
        };
        if dropped > 0 {
            // In the configured format, after the lines before the gap.
            tracing::warn!(
                dropped,
                "log lines dropped: stderr did not drain and {MAX_PENDING} bytes were waiting"
            );
        }
    }

    /// `write_out` for a panicking thread: skipped if a lock is held (the
    /// panic may have struck while it was), never waits.
    fn write_out_now(&self) {
        let Ok(_out) = self.out.try_lock() else {
            return;
        };
        let Ok(mut p) = self.pending.try_lock() else {
            return;
        };
        let bytes = std::mem::take(&mut p.bytes);
        drop(p);
        let _ = std::io::stderr().lock().write_all(&bytes);
    }
}

/// Where the subscriber writes: the batch, with access lines marked as
/// the ones that may wait.
struct Output;

struct Line {
    access: bool,
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { access: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            access: meta.target() == "access" && *meta.level() >= tracing::Level::INFO,
        }
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let batch = Batch::get();
        batch.push(buf, !self.access);
        if !WRITING.load(Relaxed) {
            // No writer thread: this line and any before it now.
            batch.write_out();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
