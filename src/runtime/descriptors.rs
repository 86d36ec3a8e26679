//! File descriptors, the limit a busy router meets first: two per relayed
//! connection, one per listener, one per health check in flight. At start
//! the soft limit is raised to the hard one (as HAProxy does); `check` and
//! `run` say when the configured connection limits cannot fit. Running out
//! is the router's own failure, never a server's: [`is_local_failure`]
//! tells the two apart wherever a connect fails.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The open-files limit before and after [`raise`]; `None`: unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub before: Option<u64>,
    pub now: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise() -> std::io::Result<Raised> {
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current == limit.maximum {
        return Ok(Raised {
            before,
            now: before,
        });
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok(Raised {
        before,
        now: getrlimit(Resource::Nofile).current,
    })
}

/// The hard limit, the most [`raise`] can reach; `None`: unlimited.
pub fn hard() -> Option<u64> {
    getrlimit(Resource::Nofile).maximum
}

/// A warning when `needed` descriptors do not fit under `limit`.
pub fn shortfall(needed: u64, limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    (needed > limit).then(|| {
        format!(
            "the listeners' max_connections need up to {needed} open files (two per connection, \
             and pipes for bulk transfers), \
             the limit is {limit}: raise it (ulimit -n, LimitNOFILE) or lower max_connections"
        )
    })
}

/// The soft limit now; `None`: unlimited.
pub fn current() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Descriptors the configuration may need at once: two per connection
/// each listener admits, its listening socket, one per health-checked
/// server, the relays' pipes (`[relay] splice`: an eighth of the limit at
/// most), and a few for the stats port, logs and file watches.
pub fn needed(snapshot: &crate::model::snapshot::Snapshot) -> u64 {
    #[cfg(target_os = "linux")]
    let pipes = if snapshot.splice {
        2 * splice_pairs_allowed(current()) as u64
    } else {
        0
    };
    #[cfg(not(target_os = "linux"))]
    let pipes = 0;
    let listeners: u64 = snapshot
        .listeners
        .iter()
        .map(|l| 2 * l.max_connections as u64 + 1)
        .sum();
    let checks: u64 = snapshot
        .backends
        .iter()
        .filter(|b| b.check().is_some())
        .map(|b| b.servers.len() as u64)
        .sum();
    listeners + checks + pipes + 32
}

/// Whether a failed connect or accept is the router's own doing (out of
/// descriptors, buffers or local ports), not the peer's.
pub(crate) fn is_local_failure(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    [
        Errno::MFILE,
        Errno::NFILE,
        Errno::NOBUFS,
        Errno::ADDRNOTAVAIL,
    ]
    .iter()
    .any(|errno| errno.raw_os_error() == code)
}

/// Pipes open at most, whatever the open-file limit.
const MAX_PAIRS: usize = 4096;

/// Splice pipes that may be open at once under an open-file limit of `limit`
/// (`None`: unlimited): an eighth of it, two descriptors each.
pub(crate) fn splice_pairs_allowed(limit: Option<u64>) -> usize {
    limit.map_or(MAX_PAIRS, |l| {
        usize::try_from(l / 8).unwrap_or(MAX_PAIRS).min(MAX_PAIRS)
    })
}

#[cfg(test)]
mod tests {
    use super::{is_local_failure, splice_pairs_allowed};

    #[test]
    fn local_failures_are_told_from_the_servers() {
        use rustix::io::Errno;
        for local in [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOBUFS,
            Errno::ADDRNOTAVAIL,
        ] {
            let e = std::io::Error::from_raw_os_error(local.raw_os_error());
            assert!(is_local_failure(&e), "{e}");
        }
        for remote in [Errno::CONNREFUSED, Errno::TIMEDOUT, Errno::HOSTUNREACH] {
            let e = std::io::Error::from_raw_os_error(remote.raw_os_error());
            assert!(!is_local_failure(&e), "{e}");
        }
        assert!(!is_local_failure(&std::io::Error::other("no code")));
    }

    /// Pipes take at most an eighth of the open-file limit, and never more
    /// than 4,096 of them.
    #[test]
    fn pipes_are_bounded_by_the_open_file_limit() {
        assert_eq!(splice_pairs_allowed(Some(20_000)), 2_500);
        assert_eq!(
            splice_pairs_allowed(Some(7)),
            0,
            "no room: bursts use the buffer"
        );
        assert_eq!(splice_pairs_allowed(Some(1 << 20)), 4_096);
        assert_eq!(splice_pairs_allowed(None), 4_096);
    }
}
