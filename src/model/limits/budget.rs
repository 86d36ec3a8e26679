//! The process's memory budget for buffers (`[limits] buffer_memory`): the
//! sum of ClientHello preread buffers, relay copy buffers and TLS
//! connections' buffers is kept under it. New work (a connection's
//! preread, a buffer for a hello that grows, a TLS handshake) is admitted
//! only while there is room, and refused, counted and closed otherwise;
//! work already admitted (the relay of an established connection) is
//! charged but never refused, so established connections keep working
//! when the budget is reached. One counter for the whole process, updated
//! with atomics; the limit follows reloads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// What a TLS connection (its record buffers in and out, and HTTP mode's
/// read buffer) is counted as: rustls keeps up to one 16 KiB record each
/// way at a time.
pub(crate) const TLS_CONNECTION: usize = 32 * 1024;

/// What a plain HTTP connection (port 80: hyper's read and write
/// buffers) is counted as.
pub(crate) const HTTP_CONNECTION: usize = 16 * 1024;

/// The budget's state.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Bytes; `usize::MAX` when there is no limit.
    limit: AtomicUsize,
    used: AtomicUsize,
    /// Of `used`, what large ClientHellos hold beyond their first read.
    hellos: AtomicUsize,
    /// Work refused for want of room.
    refused: AtomicU64,
}

static BUDGET: Budget = Budget {
    limit: AtomicUsize::new(usize::MAX),
    used: AtomicUsize::new(0),
    hellos: AtomicUsize::new(0),
    refused: AtomicU64::new(0),
};

/// The process's budget.
pub(crate) fn global() -> &'static Budget {
    &BUDGET
}

/// Bytes held against the budget; given back when dropped.
#[derive(Debug)]
#[must_use = "the bytes are given back when the charge is dropped"]
pub(crate) struct Charge {
    budget: &'static Budget,
    bytes: usize,
    /// Of `bytes`, what a large ClientHello took beyond its first read.
    hello: usize,
}

impl Charge {
    /// Bytes charged.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows a preread's charge to `bytes` for a ClientHello larger than
    /// the first read, if there is room: new work, and large hellos
    /// together get at most a quarter of the budget, so that slow ones
    /// (slowloris) cannot keep every other client out.
    pub(crate) fn grow_hello_to(&mut self, bytes: usize) -> bool {
        let Some(extra) = bytes.checked_sub(self.bytes) else {
            return true;
        };
        let budget = self.budget;
        let share = budget.limit.load(Relaxed) / 4;
        let hellos = budget.hellos.fetch_update(Relaxed, Relaxed, |held| {
            held.checked_add(extra).filter(|&after| after <= share)
        });
        if hellos.is_err() {
            budget.refused.fetch_add(1, Relaxed);
            return false;
        }
        if !budget.take(extra) {
            budget.hellos.fetch_sub(extra, Relaxed);
            return false;
        }
        self.bytes = bytes;
        self.hello += extra;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
        if self.hello > 0 {
            self.budget.hellos.fetch_sub(self.hello, Relaxed);
        }
    }
}

impl Budget {
    /// Sets the limit (`None`: no limit). Charges already held stay.
    pub(crate) fn set_limit(&self, bytes: Option<usize>) {
        self.limit.store(bytes.unwrap_or(usize::MAX), Relaxed);
    }

    pub(crate) fn limit(&self) -> Option<usize> {
        Some(self.limit.load(Relaxed)).filter(|&l| l != usize::MAX)
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// `bytes` for new work, if they fit under the limit; a refusal is
    /// counted.
    pub(crate) fn admit(&'static self, bytes: usize) -> Option<Charge> {
        // Built only when taken: a Charge dropped gives its bytes back.
        self.take(bytes).then(|| Charge {
            budget: self,
            bytes,
            hello: 0,
        })
    }

    /// `bytes` for work already admitted: charged whatever the room.
    #[cfg(test)]
    pub(crate) fn force(&'static self, bytes: usize) -> Charge {
        self.used.fetch_add(bytes, Relaxed);
        Charge {
            budget: self,
            bytes,
            hello: 0,
        }
    }

    /// Counts `bytes` allocated outside a `Charge` (the relay's pool).
    pub(crate) fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Relaxed);
    }

    /// Gives back bytes counted with `add`.
    pub(crate) fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Relaxed);
    }

    fn take(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Relaxed);
        let taken = self.used.fetch_update(Relaxed, Relaxed, |used| {
            used.checked_add(bytes).filter(|&after| after <= limit)
        });
        if taken.is_err() {
            self.refused.fetch_add(1, Relaxed);
        }
        taken.is_ok()
    }
}

/// Why a `buffer_memory` value was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SizeError {
    #[error(
        "`{0}`: expected a size such as \"256MiB\" or a share of the memory limit such as \"25%\""
    )]
    Syntax(String),
    #[error("`{0}`: a share must be 1% to 100%")]
    Share(String),
    #[error(
        "`{0}`: a share needs a memory limit, and neither the cgroup nor /proc/meminfo gives one"
    )]
    NoLimit(String),
}

/// What `buffer_memory` says: bytes, or a share of the memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    Bytes(usize),
    Percent(u8),
}

impl std::str::FromStr for Size {
    type Err = SizeError;

    fn from_str(text: &str) -> Result<Self, SizeError> {
        let syntax = || SizeError::Syntax(text.to_string());
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: u8 = p.trim().parse().map_err(|_| syntax())?;
            return match p {
                1..=100 => Ok(Size::Percent(p)),
                _ => Err(SizeError::Share(text.to_string())),
            };
        }
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(digits);
        let number: usize = number.parse().map_err(|_| syntax())?;
        let unit = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(syntax()),
        };
        number
            .checked_mul(unit)
            .filter(|&b| b > 0)
            .map(Size::Bytes)
            .ok_or_else(syntax)
    }
}

impl Size {
    /// In bytes, a share taken of `memory_limit` (the cgroup's, else the
    /// machine's).
    pub(crate) fn bytes(self, text: &str, memory_limit: Option<u64>) -> Result<usize, SizeError> {
        match self {
            Size::Bytes(b) => Ok(b),
            Size::Percent(p) => memory_limit
                .map(|m| (m / 100).saturating_mul(u64::from(p)) as usize)
                .ok_or_else(|| SizeError::NoLimit(text.to_string())),
        }
    }
}

/// The default budget: a quarter of the memory limit.
pub(crate) const DEFAULT_SHARE: Size = Size::Percent(25);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_shares_are_read() {
        assert_eq!("256MiB".parse(), Ok(Size::Bytes(256 << 20)));
        assert_eq!("64 KiB".parse(), Ok(Size::Bytes(64 << 10)));
        assert_eq!("1GiB".parse(), Ok(Size::Bytes(1 << 30)));
        assert_eq!("4096".parse(), Ok(Size::Bytes(4096)));
        assert_eq!("25%".parse(), Ok(Size::Percent(25)));
        for bad in ["", "MiB", "12MB", "0", "-1KiB", "0%", "101%", "x%"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
        assert_eq!(Size::Percent(50).bytes("50%", Some(1000)), Ok(500));
        assert!(Size::Percent(50).bytes("50%", None).is_err());
    }

    #[test]
    fn new_work_is_refused_at_the_limit_and_admitted_work_is_not() {
        // A budget of its own, not the process's.
        let b: &'static Budget = Box::leak(Box::new(Budget {
            limit: AtomicUsize::new(40_000),
            used: AtomicUsize::new(0),
            hellos: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }));
        let mut first = b.admit(2_000).expect("room");
        assert!(first.grow_hello_to(10_000), "within a quarter");
        let mut second = b.admit(2_000).expect("room");
        assert!(
            !second.grow_hello_to(5_000),
            "large hellos hold a quarter already"
        );
        assert_eq!(first.bytes(), 10_000);
        assert!(b.admit(30_000).is_none(), "over the limit");
        assert_eq!(b.refused(), 2);
        let forced = b.force(30_000);
        assert_eq!(b.used(), 42_000, "established work is charged anyway");
        drop(first);
        assert!(second.grow_hello_to(5_000), "a quarter freed");
        drop((second, forced));
        assert_eq!(b.used(), 0);
        assert_eq!(b.hellos.load(Relaxed), 0);
    }
}
