//! Counters kept on the data path: atomics only, updated once per
//! connection where it ends (`access_log`), read at scrape time. Per-server
//! and per-backend counters are carried across reloads with their owner;
//! process-wide ones live here for the life of the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// Traffic of a frontend (listener), backend or server.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Connections open now (frontends; servers count theirs in `ServerState`).
    pub(crate) current: AtomicU64,
    /// Connections taken.
    pub(crate) connections: AtomicU64,
    /// Client → server bytes.
    pub(crate) bytes_in: AtomicU64,
    /// Server → client bytes.
    pub(crate) bytes_out: AtomicU64,
    /// Connections that ended in an error (connect, handshake, reset, timeout).
    pub(crate) errors: AtomicU64,
    /// Connections (HTTP mode: requests) refused by the backend's `allow`
    /// list.
    pub denied: AtomicU64,
    /// Connections and requests refused by the backend's per-source limits.
    pub limited: AtomicU64,
    /// HTTP mode: responses by class (1xx … 5xx, other), as
    /// `http_responses_total{code}`.
    pub(crate) responses: [AtomicU64; 6],
    /// HTTP mode: average time to the response head, in ms (f64 bits),
    /// over the last 1,024 responses (fewer at first).
    response_ms: AtomicU64,
    /// Responses timed so far (caps the average's window).
    timed: AtomicU64,
    /// HTTP mode: responses by time to their head, in the buckets of
    /// [`LATENCY_BOUNDS_MS`] (the stats page's quantiles).
    latency: [AtomicU64; LATENCY_BUCKETS],
}

/// Upper bounds (ms) of the response-time buckets; the last is open.
pub(crate) const LATENCY_BOUNDS_MS: [f64; LATENCY_BUCKETS - 1] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
pub(crate) const LATENCY_BUCKETS: usize = 14;

/// Responses the average response time spans, as HAProxy's `rtime`.
const RESPONSE_WINDOW: u64 = 1024;

/// The `code` labels of `responses`, in order.
pub(crate) const RESPONSE_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

impl Traffic {
    pub fn record(&self, bytes_in: u64, bytes_out: u64, error: bool) {
        self.connections.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        if error {
            self.errors.fetch_add(1, Relaxed);
        }
    }

    /// Bytes moved without a connection of their own (an HTTP mode
    /// tunnel after its request was counted).
    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }

    /// Counts one HTTP response with `status`.
    pub fn response(&self, status: u16) {
        let class = match status {
            100..=599 => usize::from(status / 100) - 1,
            _ => 5,
        };
        self.responses[class].fetch_add(1, Relaxed);
    }

    /// Adds one response time to the moving average (lock-free).
    pub fn response_time(&self, elapsed: std::time::Duration) {
        let n = (self.timed.fetch_add(1, Relaxed) + 1).min(RESPONSE_WINDOW) as f64;
        let ms = elapsed.as_secs_f64() * 1e3;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(LATENCY_BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Relaxed);
        let _ = self.response_ms.fetch_update(Relaxed, Relaxed, |bits| {
            let avg = f64::from_bits(bits);
            Some((avg + (ms - avg) / n).to_bits())
        });
    }

    /// The average response time in ms, once one response was timed.
    pub fn average_response_ms(&self) -> Option<f64> {
        (self.timed.load(Relaxed) > 0).then(|| f64::from_bits(self.response_ms.load(Relaxed)))
    }

    /// Responses per response-time bucket (see [`LATENCY_BOUNDS_MS`]).
    pub fn latency(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.latency[i].load(Relaxed))
    }

    /// Responses per class, in the order of `RESPONSE_CLASSES`.
    pub fn responses(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.responses[i].load(Relaxed))
    }

    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.connections.load(Relaxed),
            self.bytes_in.load(Relaxed),
            self.bytes_out.load(Relaxed),
            self.errors.load(Relaxed),
        )
    }
}

/// How a connection's ClientHello read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HelloOutcome {
    Ok,
    NoSni,
    NotTls,
    Malformed,
    TooLarge,
    Timeout,
    Closed,
}

impl HelloOutcome {
    pub(crate) const ALL: [HelloOutcome; 7] = [
        HelloOutcome::Ok,
        HelloOutcome::NoSni,
        HelloOutcome::NotTls,
        HelloOutcome::Malformed,
        HelloOutcome::TooLarge,
        HelloOutcome::Timeout,
        HelloOutcome::Closed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HelloOutcome::Ok => "ok",
            HelloOutcome::NoSni => "no_sni",
            HelloOutcome::NotTls => "not_tls",
            HelloOutcome::Malformed => "malformed",
            HelloOutcome::TooLarge => "too_large",
            HelloOutcome::Timeout => "timeout",
            HelloOutcome::Closed => "closed",
        }
    }
}

/// What became of a PostgreSQL client's start on a `postgres = true`
/// listener, and of the router's `SSLRequest` to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostgresOutcome {
    /// `SSLRequest` answered `S`: the ClientHello is routed.
    SslRequest,
    /// `GSSENCRequest` answered `N`.
    GssEncDeclined,
    /// `CancelRequest`: names no server, refused.
    CancelRefused,
    /// Plain-text `StartupMessage`: no name, refused with an error.
    PlaintextRefused,
    /// Bytes that start like a PostgreSQL message but are none.
    Malformed,
    /// A server did not answer the router's `SSLRequest` with `S`.
    ServerRefused,
}

impl PostgresOutcome {
    pub(crate) const ALL: [PostgresOutcome; 6] = [
        PostgresOutcome::SslRequest,
        PostgresOutcome::GssEncDeclined,
        PostgresOutcome::CancelRefused,
        PostgresOutcome::PlaintextRefused,
        PostgresOutcome::Malformed,
        PostgresOutcome::ServerRefused,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PostgresOutcome::SslRequest => "ssl_request",
            PostgresOutcome::GssEncDeclined => "gssenc_declined",
            PostgresOutcome::CancelRefused => "cancel_refused",
            PostgresOutcome::PlaintextRefused => "plaintext_refused",
            PostgresOutcome::Malformed => "malformed",
            PostgresOutcome::ServerRefused => "server_refused",
        }
    }
}

/// Why a client handshake (termination) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    NoCertificate,
    Client,
    Timeout,
    Upstream,
}

impl HandshakeFailure {
    pub(crate) const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::NoCertificate,
        HandshakeFailure::Client,
        HandshakeFailure::Timeout,
        HandshakeFailure::Upstream,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Client => "client",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Upstream => "upstream",
        }
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Global {
    hello: [AtomicU64; 7],
    handshake_failures: [AtomicU64; 4],
    postgres: [AtomicU64; 6],
    pub(crate) route_misses: AtomicU64,
    /// Connections to `accept_proxy` listeners refused for their PROXY
    /// header: missing, malformed, too slow, or from a source not allowed.
    pub(crate) proxy_refused: AtomicU64,
    /// The router's own failures (out of descriptors, buffers or local
    /// ports) on accept or connect: never counted against a server.
    pub(crate) local_failures: AtomicU64,
    /// Connections refused by a listener's per-source limits.
    pub(crate) source_limited: AtomicU64,
    /// Passthrough bytes moved through a kernel pipe (`[relay] splice`).
    pub(crate) spliced_bytes: AtomicU64,
    /// HTTP/1.1 client connections resting now: idle, their HTTP session
    /// ended and its buffers given back.
    pub(crate) http_resting: AtomicU64,
    /// Top unmatched SNIs: bounded memory, heavy hitters kept, no global
    /// lock on the miss path (never one metric label per invented name).
    unmatched: super::top::TopNames,
    /// The most frequent JA4 fingerprints of ClientHellos, the same way.
    fingerprints: super::top::TopNames,
    /// Connections and requests refused for their JA4 (`deny_ja4`).
    pub(crate) ja4_denied: AtomicU64,
    frontends: Mutex<HashMap<String, Arc<Traffic>>>,
}

impl Global {
    pub(crate) fn hello(&self, outcome: HelloOutcome) {
        self.hello[outcome as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn hello_count(&self, outcome: HelloOutcome) -> u64 {
        self.hello[outcome as usize].load(Relaxed)
    }

    pub(crate) fn handshake_failure(&self, why: HandshakeFailure) {
        self.handshake_failures[why as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_failure_count(&self, why: HandshakeFailure) -> u64 {
        self.handshake_failures[why as usize].load(Relaxed)
    }

    pub(crate) fn postgres(&self, outcome: PostgresOutcome) {
        self.postgres[outcome as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn postgres_count(&self, outcome: PostgresOutcome) -> u64 {
        self.postgres[outcome as usize].load(Relaxed)
    }

    pub(crate) fn unmatched(&self, sni: &str) {
        self.route_misses.fetch_add(1, Relaxed);
        self.unmatched.add(sni);
    }

    /// Counts a ClientHello's fingerprint.
    pub(crate) fn fingerprint(&self, ja4: &str) {
        self.fingerprints.add(ja4);
    }

    /// The `n` most frequent JA4 fingerprints with their (approximate)
    /// counts.
    pub(crate) fn top_fingerprints(&self, n: usize) -> Vec<(String, u64)> {
        self.fingerprints.top(n)
    }

    /// The `n` most frequent unmatched SNIs with their (approximate) counts.
    pub(crate) fn top_unmatched(&self, n: usize) -> Vec<(String, u64)> {
        self.unmatched.top(n)
    }

    /// The traffic counters of a listener, created on first use.
    pub(crate) fn frontend(&self, listener: &str) -> Arc<Traffic> {
        let mut map = self.frontends.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(listener.to_string()).or_default())
    }
}

/// The process's counters.
pub(crate) fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(Global::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn average_response_time_is_exact_at_first_then_a_window_of_1024() {
        let t = Traffic::default();
        assert_eq!(t.average_response_ms(), None);
        t.response_time(Duration::from_millis(10));
        t.response_time(Duration::from_millis(30));
        assert!((t.average_response_ms().unwrap_or(0.0) - 20.0).abs() < 1e-9);
        for _ in 0..10_000 {
            t.response_time(Duration::from_millis(100));
        }
        let avg = t.average_response_ms().unwrap_or(0.0);
        assert!((99.0..=100.0).contains(&avg), "{avg}");
    }
}
