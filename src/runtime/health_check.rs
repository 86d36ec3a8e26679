//! Health checks. Active: per backend that asks for them, every `interval`
//! each server is checked (`tcp` connect, `tls` handshake with the same
//! verification as traffic for re-encrypt backends, or an `http` request
//! expecting a status range); `rise` successes bring a server up, `fall`
//! failures take it down. Passive: consecutive connect failures on the
//! data path count as failures too, so a dead server is dropped before the
//! next check. A down server gets no new connections; changes are logged
//! once each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use crate::model::backend::{Backend, CheckKind, CheckSpec, Server, Termination};
use crate::model::health::Change;
use crate::model::snapshot::Snapshot;
use rustls::pki_types::ServerName;

/// The running checkers, one per backend that asks for checks. A reload
/// keeps the checker of every backend whose checks it did not change
/// (same check, servers, termination and upstream TLS), so a reload of
/// 10,000 backends starts no connect storm; new checkers start after a
/// random part of their interval.
#[derive(Default)]
pub(crate) struct Checkers {
    running: HashMap<String, (u64, JoinHandle<()>)>,
}

impl Checkers {
    /// Makes the running checkers those of `snapshot`.
    pub(crate) fn update(&mut self, snapshot: &Snapshot) {
        let mut next = HashMap::with_capacity(self.running.len());
        for backend in &snapshot.backends {
            let Some(spec) = backend.check().cloned() else {
                continue;
            };
            let identity = identity(backend);
            let task = match self.running.remove(&backend.name) {
                Some((old, task)) if old == identity => task,
                other => {
                    if let Some((_, task)) = other {
                        task.abort();
                    }
                    tokio::spawn(run(Arc::clone(backend), spec))
                }
            };
            next.insert(backend.name.clone(), (identity, task));
        }
        self.stop();
        self.running = next;
    }

    /// Stops every checker.
    pub(crate) fn stop(&mut self) {
        for (_, (_, task)) in self.running.drain() {
            task.abort();
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a checker depends on: equal identities check the same way. Server
/// state is carried by (backend, name, address), so a kept checker still
/// updates the servers the new snapshot routes to.
fn identity(backend: &Backend) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    backend.termination.hash(&mut h);
    backend.check().hash(&mut h);
    for s in &backend.servers {
        (&s.name, s.addr).hash(&mut h);
    }
    backend.upstream().map(|u| u.fingerprint).hash(&mut h);
    h.finish()
}

/// A random delay in `[0, interval)`.
fn jitter(interval: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    interval.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64)
}

/// Checks every server of `backend` each `spec.interval`, forever.
async fn run(backend: Arc<Backend>, spec: CheckSpec) {
    tokio::time::sleep(jitter(spec.interval)).await;
    loop {
        check_backend(&backend, &spec).await;
        tokio::time::sleep(spec.interval).await;
    }
}

async fn check_backend(backend: &Backend, spec: &CheckSpec) {
    let mut running = tokio::task::JoinSet::new();
    for (i, server) in backend.servers.iter().enumerate() {
        let probe = Probe::new(backend, server, &spec.kind);
        let limit = spec.timeout;
        running.spawn(async move {
            let result = match timeout(limit, probe.run()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {limit:?}").into()),
            };
            (i, result)
        });
    }
    while let Some(done) = running.join_next().await {
        if let Ok((i, result)) = done {
            apply(backend, &backend.servers[i], spec, result);
        }
    }
}

/// Why a check failed; `local` when the router could not even try (out
/// of descriptors…), which says nothing about the server.
struct Failure {
    why: String,
    local: bool,
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure { why, local: false }
    }
}

fn apply(backend: &Backend, server: &Server, spec: &CheckSpec, result: Result<(), Failure>) {
    let health = &server.state.health;
    let result = match result {
        Err(Failure { why, local: true }) => {
            crate::model::counters::global()
                .local_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The router's own shortage (descriptors, ports): every checker
            // meets it at once, so one line a second, with a count.
            static NOT_RUN: crate::runtime::throttle::Throttle =
                crate::runtime::throttle::Throttle::new();
            if let Some(times) = NOT_RUN.tick() {
                tracing::warn!(backend = %backend.name, server = %server.name, times, "check not run: {why}");
            }
            return;
        }
        Err(Failure { why, .. }) => Err(why),
        Ok(()) => Ok(()),
    };
    let change = match &result {
        Ok(()) => {
            health.set_last("ok".into());
            health.success(spec.rise)
        }
        Err(why) => {
            health
                .check_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            health.set_last(why.clone());
            health.failure(spec.fall)
        }
    };
    log_change(
        backend,
        server,
        change,
        result.err().as_deref().unwrap_or("check passed"),
    );
}

/// One check of one server, owning what it needs (checks run concurrently).
struct Probe {
    addr: SocketAddr,
    kind: CheckKind,
    /// TLS client settings and the name to present, when the check speaks TLS.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// `Host` of HTTP checks.
    host: String,
    /// Servers that expect a PROXY header get a `LOCAL` one first.
    send_proxy: Option<crate::model::wire::proxy_header::Version>,
}

impl Probe {
    /// Re-encrypt backends are checked with their own verification; other
    /// TLS servers (passthrough) only have to complete a handshake; edge
    /// servers speak plaintext.
    fn new(backend: &Backend, server: &Server, kind: &CheckKind) -> Self {
        let (tls, host) = match (backend.upstream(), backend.termination) {
            (Some(up), _) => (
                Some((up.config(&[]), up.verify_host.clone())),
                up.verify_host.to_str().into_owned(),
            ),
            (None, Termination::Edge) => (None, server.addr.ip().to_string()),
            (None, _) => {
                let name = ServerName::from(server.addr.ip());
                (
                    Some((crate::tls::upstream::unverified(), name)),
                    server.addr.ip().to_string(),
                )
            }
        };
        let tls = match kind {
            CheckKind::Tcp => None,
            _ => tls,
        };
        Probe {
            send_proxy: backend.send_proxy,
            addr: server.addr,
            kind: kind.clone(),
            tls,
            host,
        }
    }

    async fn run(self) -> Result<(), Failure> {
        let mut tcp = TcpStream::connect(self.addr).await.map_err(|e| Failure {
            local: crate::runtime::descriptors::is_local_failure(&e),
            why: format!("connect: {e}"),
        })?;
        if let Some(version) = self.send_proxy {
            use tokio::io::AsyncWriteExt;
            let header = crate::model::wire::proxy_header::encode(version, None);
            tcp.write_all(&header)
                .await
                .map_err(|e| format!("PROXY header: {e}"))?;
        }
        let Some((config, name)) = self.tls else {
            return match &self.kind {
                CheckKind::Http { path, expect } => Ok(http(tcp, &self.host, path, *expect).await?),
                _ => Ok(()),
            };
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| crate::tls::upstream::describe_failure(self.addr, &e))?;
        match &self.kind {
            CheckKind::Http { path, expect } => Ok(http(stream, &self.host, path, *expect).await?),
            _ => Ok(()),
        }
    }
}

async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
    (low, high): (u16, u16),
) -> Result<(), String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream
            .read(&mut head[got..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let status: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    if (low..=high).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP {status}, expected {low}-{high}"))
    }
}

/// Logs a state change once, with the reason.
pub(crate) fn log_change(backend: &Backend, server: &Server, change: Option<Change>, why: &str) {
    match change {
        Some(Change::WentDown) => {
            tracing::warn!(backend = %backend.name, server = %server.name, addr = %server.addr, "server DOWN: {why}")
        }
        Some(Change::CameUp) => {
            tracing::info!(backend = %backend.name, server = %server.name, addr = %server.addr, "server UP")
        }
        None => {}
    }
}
