//! One line per connection, the same for every termination: who connected,
//! what the ClientHello offered, which map line routed it, which server
//! took it, how long it lasted, bytes each way, and who closed and why.
//! Connections turned away before routing (scanners, probes) log at debug.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::backend::Backend;
use crate::model::decide::{Decision, Hello, Hit};
use crate::model::wire::client_hello::{ClientHello, Ja4};
use crate::runtime::relay::{End, Outcome};

/// The fields of the access-log line, filled in as the connection advances.
pub(crate) struct AccessLog {
    start: Instant,
    client: SocketAddr,
    listener: Arc<str>,
    hello: Option<ClientHello>,
    /// Reads the ClientHello took (TCP segments, or more when coalesced).
    hello_reads: u32,
    /// Bytes buffered when the preread ended.
    hello_bytes: u32,
    map: Option<Hit>,
    backend: Option<Arc<Backend>>,
    /// Index of the server in the backend's list.
    server: Option<usize>,
    connect_time: Option<Duration>,
    bytes_in: u64,
    bytes_out: u64,
    closed_by: &'static str,
    reason: String,
    /// Set when the preread failed: the line goes out at debug.
    rejected: bool,
    /// The connection ended in an error (counted per backend and server).
    failed: bool,
    /// HTTP mode: each request was counted for its own backend and
    /// server; the connection counts for its listener only.
    http: bool,
    /// A PostgreSQL client: its `SSLRequest` was answered before its
    /// ClientHello, and the server is asked the same before TLS.
    postgres: bool,
    /// Bytes of the ClientHello replayed to the server before the relay.
    preread_forwarded: u64,
}

impl AccessLog {
    /// The client a PROXY header named, in place of the socket's peer.
    pub(crate) fn set_client(&mut self, client: SocketAddr) {
        self.client = client;
    }

    /// When the connection was accepted.
    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    pub(crate) fn new(client: SocketAddr, listener: Arc<str>) -> Self {
        AccessLog {
            start: Instant::now(),
            client,
            listener,
            hello: None,
            hello_reads: 0,
            hello_bytes: 0,
            map: None,
            backend: None,
            server: None,
            connect_time: None,
            bytes_in: 0,
            bytes_out: 0,
            closed_by: "-",
            reason: String::new(),
            rejected: false,
            failed: false,
            postgres: false,
            http: false,
            preread_forwarded: 0,
        }
    }

    pub(crate) fn hello(&mut self, hello: ClientHello, reads: usize) {
        self.hello_bytes = saturate(hello.len);
        self.hello_reads = saturate(reads);
        self.hello = Some(hello);
    }

    /// An HTTP-mode connection ended having moved these bytes over its
    /// requests (each already counted for its backend and server).
    pub(crate) fn served_http(&mut self, bytes_in: u64, bytes_out: u64) {
        self.http = true;
        self.bytes_in = bytes_in;
        self.bytes_out = bytes_out;
    }

    /// The client opened with a PostgreSQL `SSLRequest` (answered `S`).
    pub(crate) fn postgres_start(&mut self) {
        self.postgres = true;
    }

    /// Whether the client opened with a PostgreSQL `SSLRequest`.
    pub(crate) fn is_postgres(&self) -> bool {
        self.postgres
    }

    pub(crate) fn sni(&self) -> Option<&str> {
        self.hello.as_ref()?.sni.as_deref()
    }

    /// The ALPN protocols the client offered (the first few), if any.
    pub(crate) fn alpn(&self) -> &[String] {
        self.hello.as_ref().map_or(&[], |h| &h.alpn)
    }

    /// The JA4 fingerprint of the client's ClientHello, if it sent one.
    pub(crate) fn ja4(&self) -> Option<Ja4> {
        Some(self.hello.as_ref()?.ja4)
    }

    /// What the client's first bytes said, as the decision takes it: a
    /// ClientHello naming a host, one without SNI, or bytes that are not
    /// a usable ClientHello.
    pub(crate) fn said(&self) -> Hello<'_> {
        match &self.hello {
            Some(hello) => hello.sni.as_deref().map_or(Hello::NoSni, Hello::Sni),
            None => Hello::NotTls,
        }
    }

    /// The preread ended without a usable SNI.
    pub(crate) fn reject(&mut self, reason: &str, bytes: usize, reads: usize) {
        self.rejected = true;
        self.hello_bytes = self.hello_bytes.max(saturate(bytes));
        self.hello_reads = saturate(reads);
        self.end("switchyard", reason);
    }

    /// The route is decided: the line goes out at info from now on.
    pub(crate) fn decided(&mut self, decision: &Decision) {
        self.map = decision.hit().cloned();
        self.backend = Some(Arc::clone(&decision.backend));
        self.rejected = false;
    }

    /// Server `index` of the backend took the connection.
    pub(crate) fn server(&mut self, index: usize, connect_time: Duration) {
        self.server = Some(index);
        self.connect_time = Some(connect_time);
    }

    pub(crate) fn end(&mut self, closed_by: &'static str, reason: &str) {
        self.closed_by = closed_by;
        self.reason = reason.to_string();
    }

    /// Like `end`, for an error: counted in the backend's and server's
    /// connection errors.
    pub(crate) fn fail(&mut self, closed_by: &'static str, reason: &str) {
        self.failed = true;
        self.end(closed_by, reason);
    }

    /// Client bytes forwarded outside the relay (the replayed ClientHello).
    pub(crate) fn forwarded(&mut self, bytes: u64) {
        self.preread_forwarded = bytes;
    }

    pub(crate) fn relayed(&mut self, outcome: &Outcome) {
        self.bytes_in = self.preread_forwarded + outcome.client_to_server;
        self.bytes_out = outcome.server_to_client;
        match outcome.end {
            End::Closed { first } => self.end(first.as_str(), "closed"),
            End::Error { side, kind } => self.end(side.as_str(), &kind.to_string()),
            End::ServerTimeout => {
                self.end("switchyard", "server timeout: no answer from the server")
            }
            End::IdleTimeout => self.end("switchyard", "tunnel timeout: idle"),
            End::RouteRemoved => self.end("switchyard", "route removed by a reload"),
        }
    }

    /// Writes the line and adds the connection to its backend's and
    /// server's counters; returns (bytes in, bytes out, failed) for the
    /// listener's.
    pub(crate) fn finish(self) -> (u64, u64, bool) {
        if let Some(b) = self.backend.as_ref().filter(|_| !self.http) {
            b.traffic.record(self.bytes_in, self.bytes_out, self.failed);
            if let Some(s) = self.server.and_then(|i| b.servers.get(i)) {
                s.state
                    .traffic
                    .record(self.bytes_in, self.bytes_out, self.failed);
            }
        }
        // HTTP mode: the listener's bytes were counted with each request.
        let counted = if self.http {
            (0, 0, self.failed)
        } else {
            (self.bytes_in, self.bytes_out, self.failed)
        };
        self.write();
        counted
    }

    fn write(self) {
        let hello = self.hello.as_ref();
        let sni = hello.and_then(|h| h.sni.as_deref()).unwrap_or("-");
        let alpn = hello.map(|h| h.alpn.join(",")).unwrap_or_default();
        let version = hello.map(|h| version_name(h.version)).unwrap_or("-");
        let ja4 = hello.map_or("-", |h| h.ja4.as_str());
        let records = hello.map_or(0, |h| h.records);
        let map = self
            .map
            .as_ref()
            .map(|h| format!("{}:{}", h.file.display(), h.line));
        let backend = self.backend.as_deref();
        let server = backend
            .zip(self.server)
            .and_then(|(b, i)| b.servers.get(i))
            .map(|s| format!("{} {}", s.name, s.addr));
        let termination = backend.map_or("-", |b| b.termination.as_str());
        let backend = backend.map_or("-", |b| b.name.as_str());
        let connect_ms = self.connect_time.map(|d| d.as_secs_f64() * 1e3);
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "access",
                    $level,
                    client = %self.client,
                    listener = &*self.listener,
                    sni,
                    alpn = alpn.as_str(),
                    tls_version = version,
                    postgres = self.postgres,
                    ja4,
                    hello_bytes = self.hello_bytes,
                    hello_reads = self.hello_reads,
                    hello_records = records,
                    map = map.as_deref().unwrap_or("-"),
                    backend,
                    termination,
                    server = server.as_deref().unwrap_or("-"),
                    connect_ms = connect_ms.map_or(-1.0, |ms| (ms * 1000.0).round() / 1000.0),
                    duration_ms = self.start.elapsed().as_millis() as u64,
                    bytes_in = self.bytes_in,
                    bytes_out = self.bytes_out,
                    closed_by = self.closed_by,
                    reason = self.reason.as_str(),
                    "connection"
                )
            };
        }
        if self.rejected {
            line!(tracing::Level::DEBUG);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}

/// `TLSv1.3` for 0x0304 and so on.
fn version_name(v: u16) -> &'static str {
    match v {
        0x0304 => "TLSv1.3",
        0x0303 => "TLSv1.2",
        0x0302 => "TLSv1.1",
        0x0301 => "TLSv1.0",
        0x0300 => "SSLv3",
        _ => "unknown",
    }
}

/// Counts kept in 32 bits (the access log of every connection is part of
/// its task's memory); bounded by the preread limit in practice.
fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
