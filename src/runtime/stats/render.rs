//! What the stats port shows, built once per request from the router's
//! current snapshot and counters: one report, rendered as Prometheus text,
//! as an HTML page, or as JSON.

use std::sync::atomic::Ordering::Relaxed;

use metrics_exporter_prometheus::PrometheusRecorder;
use serde::Serialize;

use crate::model::backend::{Backend, Server};
use crate::model::counters::{global, HandshakeFailure, HelloOutcome, PostgresOutcome};
use crate::model::history::{Entry, History, Kind};
use crate::model::snapshot::{ListenerSpec, Snapshot};
use crate::runtime::reload;
use crate::runtime::router::Router;

#[derive(Serialize)]
pub(crate) struct Report {
    pub(crate) generation: u64,
    pub(crate) live_snapshots: usize,
    pub(crate) open_connections: usize,
    pub(crate) ready: bool,
    pub(crate) reload: ReloadReport,
    pub(crate) frontends: Vec<Frontend>,
    pub(crate) backends: Vec<BackendReport>,
    pub(crate) certificates: Vec<Certificate>,
    pub(crate) client_hello: Vec<(String, u64)>,
    pub(crate) handshake_failures: Vec<(String, u64)>,
    /// PostgreSQL starts on `postgres = true` listeners, by outcome.
    pub(crate) postgres: Vec<(String, u64)>,
    pub(crate) route_misses: u64,
    pub(crate) proxy_refused: u64,
    pub(crate) local_failures: u64,
    pub(crate) source_limited: u64,
    pub(crate) spliced_bytes: u64,
    /// HTTP/1.1 client connections resting now (idle, buffers given back).
    pub(crate) http_resting: u64,
    /// The buffer budget: bytes held now, the limit, work refused.
    pub(crate) buffer_memory: BudgetReport,
    pub(crate) unmatched_sni_top: Vec<(String, u64)>,
    /// The most frequent JA4 fingerprints of ClientHellos (approximate).
    pub(crate) ja4_top: Vec<(String, u64)>,
    /// Connections and requests refused for their JA4 (`deny_ja4`).
    pub(crate) ja4_denied: u64,
}

#[derive(Serialize)]
pub(crate) struct BudgetReport {
    pub(crate) used_bytes: u64,
    pub(crate) limit_bytes: Option<u64>,
    pub(crate) refused: u64,
}

#[derive(Serialize)]
pub(crate) struct ReloadReport {
    pub(crate) applied: u64,
    pub(crate) refused: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) last_duration_ms: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct Frontend {
    pub(crate) name: String,
    pub(crate) bind: String,
    pub(crate) current: u64,
    pub(crate) connections: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) errors: u64,
    pub(crate) rates: Rates,
}

/// What the sampler's history says of a frontend or backend: sessions per
/// second now and at the peak, response-time quantiles over the last
/// minute, and the per-second graph (on the page only).
#[derive(Serialize, Default)]
pub(crate) struct Rates {
    pub(crate) now: u32,
    pub(crate) peak: u32,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    #[serde(skip)]
    pub(crate) graph: Vec<u32>,
    #[serde(skip)]
    pub(crate) errors_graph: Vec<u32>,
}

impl Rates {
    fn of(entry: Option<&Entry>) -> Rates {
        let Some(e) = entry else {
            return Rates::default();
        };
        Rates {
            now: e.sessions.now(),
            peak: e.sessions.peak(),
            p50_ms: e.latency_ms(0.5),
            p99_ms: e.latency_ms(0.99),
            graph: e.sessions.samples().collect(),
            errors_graph: e.errors.samples().collect(),
        }
    }
}

/// Adds the history's rates to `report` (under the history's lock, which
/// only the sampler and rendering take).
pub(crate) fn add_rates(report: &mut Report, history: &History) {
    for f in &mut report.frontends {
        f.rates = Rates::of(history.get(Kind::Frontend, &f.name));
    }
    for b in &mut report.backends {
        b.rates = Rates::of(history.get(Kind::Backend, &b.name));
    }
}

#[derive(Serialize)]
pub(crate) struct BackendReport {
    pub(crate) name: String,
    pub(crate) termination: &'static str,
    pub(crate) balance: &'static str,
    pub(crate) up: bool,
    pub(crate) current: u64,
    pub(crate) connections: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) errors: u64,
    pub(crate) verify_failures: u64,
    /// Refused by the backend's `allow` list.
    pub(crate) denied: u64,
    /// Refused by the backend's per-source limits.
    pub(crate) limited: u64,
    /// Connections waiting for a place on a server now.
    pub(crate) queue_current: u64,
    /// Connections that had to wait, and those refused for it.
    pub(crate) queued: u64,
    pub(crate) queue_refused: u64,
    /// HTTP mode: responses by class (`1xx` … `5xx`, `other`).
    pub(crate) http_responses: [u64; 6],
    /// HTTP mode: average time to the response head, ms.
    pub(crate) http_response_ms: Option<f64>,
    pub(crate) rates: Rates,
    pub(crate) servers: Vec<ServerReport>,
}

#[derive(Serialize)]
pub(crate) struct ServerReport {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) up: bool,
    pub(crate) weight: u16,
    pub(crate) current: u64,
    pub(crate) connections: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) errors: u64,
    pub(crate) check_failures: u64,
    /// Times passed over at `max_connections_per_server`.
    pub(crate) full: u64,
    /// HTTP mode: responses by class.
    pub(crate) http_responses: [u64; 6],
    /// HTTP mode: average time to the response head, ms.
    pub(crate) http_response_ms: Option<f64>,
    pub(crate) last_check: String,
    pub(crate) since_change_seconds: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct Certificate {
    pub(crate) path: String,
    pub(crate) expires_in_days: Option<f64>,
}

pub(crate) fn report(router: &Router, status: &reload::Status) -> Report {
    let snapshot = router.snapshot();
    let g = global();
    let frontends = snapshot
        .listeners
        .iter()
        .map(|l| frontend_report(router, l))
        .collect();
    let backends = snapshot
        .backends
        .iter()
        .map(|b| backend_report(b))
        .collect();
    let reload = status.get();
    Report {
        generation: router.generation(),
        live_snapshots: router.live_snapshots(),
        open_connections: router.open_connections(),
        ready: router.is_ready(),
        reload: ReloadReport {
            applied: reload.applied,
            refused: reload.refused,
            last_error: reload.last_error,
            last_duration_ms: reload.last_duration.map(|d| d.as_secs_f64() * 1e3),
        },
        frontends,
        backends,
        certificates: certificates(&snapshot),
        client_hello: HelloOutcome::ALL
            .iter()
            .map(|o| (o.as_str().to_string(), g.hello_count(*o)))
            .collect(),
        handshake_failures: HandshakeFailure::ALL
            .iter()
            .map(|f| (f.as_str().to_string(), g.handshake_failure_count(*f)))
            .collect(),
        postgres: PostgresOutcome::ALL
            .iter()
            .map(|o| (o.as_str().to_string(), g.postgres_count(*o)))
            .collect(),
        route_misses: g.route_misses.load(Relaxed),
        proxy_refused: g.proxy_refused.load(Relaxed),
        local_failures: g.local_failures.load(Relaxed),
        source_limited: g.source_limited.load(Relaxed),
        spliced_bytes: g.spliced_bytes.load(Relaxed),
        http_resting: g.http_resting.load(Relaxed),
        buffer_memory: {
            let b = crate::model::limits::budget::global();
            BudgetReport {
                used_bytes: b.used() as u64,
                limit_bytes: b.limit().map(|l| l as u64),
                refused: b.refused(),
            }
        },
        unmatched_sni_top: g.top_unmatched(10),
        ja4_top: g.top_fingerprints(10),
        ja4_denied: g.ja4_denied.load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn frontend_report(router: &Router, l: &ListenerSpec) -> Frontend {
    let t = global().frontend(&l.name);
    let (connections, bytes_in, bytes_out, errors) = t.get();
    Frontend {
        name: l.name.to_string(),
        bind: router.local_addr(&l.name).unwrap_or(l.bind).to_string(),
        current: t.current.load(Relaxed),
        connections,
        bytes_in,
        bytes_out,
        errors,
        rates: Rates::default(),
    }
}

fn backend_report(b: &Backend) -> BackendReport {
    let servers: Vec<ServerReport> = b.servers.iter().map(server_report).collect();
    let (connections, bytes_in, bytes_out, errors) = b.traffic.get();
    BackendReport {
        name: b.name.clone(),
        termination: b.termination.as_str(),
        balance: b.algorithm.as_str(),
        up: servers.iter().any(|s| s.up && s.weight > 0),
        current: servers.iter().map(|s| s.current).sum(),
        connections,
        bytes_in,
        bytes_out,
        errors,
        verify_failures: b.verify_failures.load(Relaxed),
        denied: b.traffic.denied.load(Relaxed),
        limited: b.traffic.limited.load(Relaxed),
        queue_current: b.queue.as_ref().map_or(0, |q| q.waiting() as u64),
        queued: b.queue.as_ref().map_or(0, |q| q.queued.load(Relaxed)),
        queue_refused: b.queue.as_ref().map_or(0, |q| q.refused.load(Relaxed)),
        http_responses: b.traffic.responses(),
        http_response_ms: b.traffic.average_response_ms(),
        rates: Rates::default(),
        servers,
    }
}

fn server_report(s: &Server) -> ServerReport {
    let (connections, bytes_in, bytes_out, errors) = s.state.traffic.get();
    ServerReport {
        name: s.name.clone(),
        address: s.addr.to_string(),
        up: s.state.health.is_up(),
        weight: s.weight,
        current: s.state.active() as u64,
        connections,
        bytes_in,
        bytes_out,
        errors,
        check_failures: s.state.health.check_failures.load(Relaxed),
        full: s.state.full.load(Relaxed),
        http_responses: s.state.traffic.responses(),
        http_response_ms: s.state.traffic.average_response_ms(),
        last_check: s.state.health.last(),
        since_change_seconds: s.state.health.since_change(),
    }
}

/// Each certificate the listeners serve, once, with the days it has left.
fn certificates(snapshot: &Snapshot) -> Vec<Certificate> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut certificates: Vec<Certificate> = Vec::new();
    let Some(tls) = snapshot.tls.iter().flatten().next() else {
        return certificates;
    };
    for c in tls.certs.all.iter().chain(tls.certs.default.iter()) {
        let path = c.path.display().to_string();
        if certificates.iter().all(|x| x.path != path) {
            let expires_in_days = c.not_after.map(|t| (t - now) as f64 / 86_400.0);
            certificates.push(Certificate {
                path,
                expires_in_days,
            });
        }
    }
    certificates
}

/// Prometheus text through the `metrics` facade, recorded into the stats
/// port's own recorder at scrape time.
pub(crate) fn prometheus(report: &Report, recorder: &PrometheusRecorder) -> String {
    metrics::with_local_recorder(recorder, || record(report));
    let handle = recorder.handle();
    handle.run_upkeep();
    handle.render()
}

fn record(r: &Report) {
    use metrics::{counter, gauge};
    for f in &r.frontends {
        let l = [("frontend", f.name.clone())];
        gauge!("haproxy_frontend_current_sessions", &l).set(f.current as f64);
        counter!("haproxy_frontend_connections_total", &l).absolute(f.connections);
        counter!("haproxy_frontend_bytes_in_total", &l).absolute(f.bytes_in);
        counter!("haproxy_frontend_bytes_out_total", &l).absolute(f.bytes_out);
        counter!("haproxy_frontend_connection_errors_total", &l).absolute(f.errors);
    }
    for b in &r.backends {
        record_backend(b);
    }
    record_process(r);
}

/// The `haproxy_backend_*` and `haproxy_server_*` families of one backend.
fn record_backend(b: &BackendReport) {
    use metrics::{counter, gauge};
    let l = crate::model::labels::backend(&b.name);
    gauge!("haproxy_backend_up", &l).set(if b.up { 1.0 } else { 0.0 });
    gauge!("haproxy_backend_current_sessions", &l).set(b.current as f64);
    counter!("haproxy_backend_connections_total", &l).absolute(b.connections);
    counter!("haproxy_backend_bytes_in_total", &l).absolute(b.bytes_in);
    counter!("haproxy_backend_bytes_out_total", &l).absolute(b.bytes_out);
    counter!("haproxy_backend_connection_errors_total", &l).absolute(b.errors);
    counter!("switchyard_backend_verify_failures_total", &l).absolute(b.verify_failures);
    counter!("switchyard_backend_denied_total", &l).absolute(b.denied);
    counter!("switchyard_backend_source_limited_total", &l).absolute(b.limited);
    gauge!("haproxy_backend_current_queue", &l).set(b.queue_current as f64);
    counter!("switchyard_backend_queued_total", &l).absolute(b.queued);
    counter!("switchyard_backend_queue_refused_total", &l).absolute(b.queue_refused);
    http_responses(
        "haproxy_backend_http_responses_total",
        &l,
        &b.http_responses,
    );
    if let Some(ms) = b.http_response_ms {
        gauge!(
            "haproxy_backend_http_average_response_latency_milliseconds",
            &l
        )
        .set(ms);
    }
    for s in &b.servers {
        let l = crate::model::labels::server(&b.name, &s.name);
        gauge!("haproxy_server_up", &l).set(if s.up { 1.0 } else { 0.0 });
        gauge!("haproxy_server_weight", &l).set(f64::from(s.weight));
        gauge!("haproxy_server_current_sessions", &l).set(s.current as f64);
        counter!("haproxy_server_connections_total", &l).absolute(s.connections);
        counter!("haproxy_server_bytes_in_total", &l).absolute(s.bytes_in);
        counter!("haproxy_server_bytes_out_total", &l).absolute(s.bytes_out);
        counter!("haproxy_server_connection_errors_total", &l).absolute(s.errors);
        counter!("haproxy_server_check_failures_total", &l).absolute(s.check_failures);
        counter!("switchyard_server_full_total", &l).absolute(s.full);
        http_responses("haproxy_server_http_responses_total", &l, &s.http_responses);
        if let Some(ms) = s.http_response_ms {
            gauge!(
                "haproxy_server_http_average_response_latency_milliseconds",
                &l
            )
            .set(ms);
        }
    }
}

/// The process-wide families: reloads, readiness, ClientHello outcomes,
/// failures, the buffer budget, unmatched names, the most frequent JA4
/// fingerprints and certificates.
fn record_process(r: &Report) {
    use metrics::{counter, gauge};
    counter!("switchyard_reloads_total").absolute(r.reload.applied);
    counter!("switchyard_reload_failures_total").absolute(r.reload.refused);
    gauge!("switchyard_config_generation").set(r.generation as f64);
    gauge!("switchyard_live_snapshots").set(r.live_snapshots as f64);
    gauge!("switchyard_open_connections").set(r.open_connections as f64);
    gauge!("switchyard_ready").set(if r.ready { 1.0 } else { 0.0 });
    if let Some(ms) = r.reload.last_duration_ms {
        gauge!("template_router_reload_seconds").set(ms / 1e3);
    }
    for (outcome, n) in &r.client_hello {
        counter!("switchyard_client_hello_total", "outcome" => outcome.clone()).absolute(*n);
    }
    for (reason, n) in &r.handshake_failures {
        counter!("switchyard_handshake_failures_total", "reason" => reason.clone()).absolute(*n);
    }
    for (outcome, n) in &r.postgres {
        counter!("switchyard_postgres_total", "outcome" => outcome.clone()).absolute(*n);
    }
    counter!("switchyard_route_misses_total").absolute(r.route_misses);
    counter!("switchyard_log_lines_dropped_total").absolute(crate::logging::dropped_lines());
    counter!("switchyard_proxy_header_refused_total").absolute(r.proxy_refused);
    counter!("switchyard_local_failures_total").absolute(r.local_failures);
    counter!("switchyard_source_limited_total").absolute(r.source_limited);
    counter!("switchyard_relay_spliced_bytes_total").absolute(r.spliced_bytes);
    gauge!("switchyard_http_connections_resting").set(r.http_resting as f64);
    gauge!("switchyard_buffer_memory_bytes").set(r.buffer_memory.used_bytes as f64);
    if let Some(limit) = r.buffer_memory.limit_bytes {
        gauge!("switchyard_buffer_memory_limit_bytes").set(limit as f64);
    }
    counter!("switchyard_buffer_memory_refused_total").absolute(r.buffer_memory.refused);
    for (sni, n) in &r.unmatched_sni_top {
        gauge!("switchyard_unmatched_sni_top", "sni" => sni.clone()).set(*n as f64);
    }
    for (ja4, n) in &r.ja4_top {
        gauge!("switchyard_ja4_top", "ja4" => ja4.clone()).set(*n as f64);
    }
    counter!("switchyard_ja4_denied_total").absolute(r.ja4_denied);
    for c in &r.certificates {
        if let Some(days) = c.expires_in_days {
            gauge!("switchyard_certificate_expiry_days", "path" => c.path.clone()).set(days);
        }
    }
}

/// `http_responses_total{code}` for one backend or server, only once it
/// has served HTTP (TCP-mode backends get no such series).
fn http_responses(name: &'static str, labels: &[(&'static str, String)], counts: &[u64; 6]) {
    if counts.iter().all(|&n| n == 0) {
        return;
    }
    for (code, n) in crate::model::counters::RESPONSE_CLASSES.iter().zip(counts) {
        let mut l = labels.to_vec();
        l.push(("code", (*code).to_string()));
        metrics::counter!(name, &l).absolute(*n);
    }
}
