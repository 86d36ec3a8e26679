//! The stats port and health checks through real sockets: counters equal
//! what was sent, basic auth, the page shows servers and their states, a
//! killed server is marked down within interval × fall and its traffic
//! moves with no client-visible failure, and it comes back after rise.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use switchyard::Router;
use switchyard::{Credentials, StatsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts the stats port of `router` on a free loopback port.
async fn stats_port(router: &Arc<Router>, credentials: Option<Credentials>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = StatsConfig {
        bind: Some(addr),
        credentials,
    };
    let status = Arc::new(switchyard::reload::Status::default());
    tokio::spawn(switchyard::serve_stats(
        listener,
        Arc::clone(router),
        status,
        config,
    ));
    addr
}

/// GET `path`; returns (status, body).
async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: stats\r\n{auth}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One backend `be_tcp:t:app` with servers `a` and `b` for `svc.test`.
async fn two_servers(check: &str) -> (Pki, NamedServer, NamedServer, ConfigDir) {
    let pki = Pki::new();
    let a = named_server("a", pki.server_config(&["svc.test"])).await;
    let b = named_server("b", pki.server_config(&["svc.test"])).await;
    let dir = ConfigDir::new();
    dir.write("maps/os_sni_passthrough.map", "^svc\\.test$ 1\n");
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:t:app\n", route_regex("svc.test")),
    );
    let backends = format!(
        "[[backend]]\nname = \"be_tcp:t:app\"\nbalance = \"roundrobin\"\nretries = 2\n\
         servers = [\n  {{ name = \"a\", address = \"{}\" }},\n  {{ name = \"b\", address = \"{}\" }},\n]\n{check}",
        a.addr, b.addr
    );
    dir.main("", &backends);
    (pki, a, b, dir)
}

/// `/metrics` read as Prometheus reads it.
fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("exposition format")
}

/// The value of the one sample of `metric` carrying all of `labels`.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    let sample = found.next()?;
    assert!(
        found.next().is_none(),
        "{metric} {labels:?} selects one series"
    );
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => Some(v),
        _ => None,
    }
}

/// Scrapes until `metric{labels}` reads `expected` (connections are
/// counted when they end), bounded by `WAIT`.
async fn scrape_until(
    stats: SocketAddr,
    metric: &str,
    labels: &[(&str, &str)],
    expected: f64,
) -> prometheus_parse::Scrape {
    let started = Instant::now();
    loop {
        let (status, body) = get(stats, "/metrics", None).await;
        assert_eq!(status, 200);
        let parsed = scrape(&body);
        if value(&parsed, metric, labels) == Some(expected) {
            return parsed;
        }
        assert!(
            started.elapsed() < WAIT,
            "{metric} {labels:?} never {expected}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// OpenShift's labels: backends by kind, namespace and route; servers by
/// route, pod, service and address.
const ROUTE: [(&str, &str); 3] = [("backend", "tcp"), ("namespace", "t"), ("route", "app")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent() {
    let (pki, _a, _b, dir) = two_servers("").await;
    let (router, addr) = start(&dir.path().join("switchyard.toml"));
    let stats = stats_port(&router, None).await;
    let (mut sent, mut received) = (0u64, 0u64);
    for i in 0..6 {
        let payload = vec![b'x'; 100 * (i + 1)];
        let s = session(addr, "svc.test", pki.client_config(), &payload)
            .await
            .expect("session");
        sent += s.wire.sent.len() as u64;
        received += s.wire.received.len() as u64;
    }
    let metrics = scrape_until(stats, "haproxy_backend_connections_total", &ROUTE, 6.0).await;
    let route = [("route", "app")];
    assert_eq!(
        value(&metrics, "haproxy_backend_bytes_in_total", &route),
        Some(sent as f64)
    );
    assert_eq!(
        value(&metrics, "haproxy_backend_bytes_out_total", &route),
        Some(received as f64)
    );
    assert_eq!(value(&metrics, "haproxy_backend_up", &route), Some(1.0));
    for server in ["a", "b"] {
        let labels = [("route", "app"), ("namespace", "t"), ("server", server)];
        assert_eq!(
            value(&metrics, "haproxy_server_connections_total", &labels),
            Some(3.0),
            "round robin"
        );
        assert_eq!(value(&metrics, "haproxy_server_up", &labels), Some(1.0));
    }
    // Process-wide: the other tests of this binary count here too.
    let hellos = value(
        &metrics,
        "switchyard_client_hello_total",
        &[("outcome", "ok")],
    );
    assert!(hellos.is_some_and(|n| n >= 6.0), "{hellos:?}");
}

/// Server names as OpenShift writes them give the `pod`, `service` and
/// `server` labels dashboards select on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_series_carry_pod_and_service() {
    let (pki, a, b, dir) = two_servers("").await;
    let config = dir.path().join("switchyard.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    let text = text
        .replace(
            "name = \"a\"",
            &format!("name = \"pod:web-a:web:https:{}\"", a.addr),
        )
        .replace(
            "name = \"b\"",
            &format!("name = \"pod:web-b:web:https:{}\"", b.addr),
        );
    std::fs::write(&config, text).expect("write");
    let (router, addr) = start(&config);
    let stats = stats_port(&router, None).await;
    session(addr, "svc.test", pki.client_config(), b"x")
        .await
        .expect("session");
    let metrics = scrape_until(stats, "haproxy_backend_connections_total", &ROUTE, 1.0).await;
    let a_addr = a.addr.to_string();
    let labels = [
        ("route", "app"),
        ("pod", "web-a"),
        ("service", "web"),
        ("server", a_addr.as_str()),
    ];
    assert_eq!(value(&metrics, "haproxy_server_up", &labels), Some(1.0));
    let total: f64 = ["web-a", "web-b"]
        .iter()
        .filter_map(|pod| {
            value(
                &metrics,
                "haproxy_server_connections_total",
                &[("route", "app"), ("pod", pod)],
            )
        })
        .sum();
    assert_eq!(total, 1.0);
}

/// Backend and server totals go on across reloads: Prometheus never sees
/// them go down or stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_continue_across_reloads() {
    let (pki, _a, _b, dir) = two_servers("").await;
    let config = dir.path().join("switchyard.toml");
    let (router, addr) = start(&config);
    let stats = stats_port(&router, None).await;
    let mut sent = 0u64;
    for round in 0..3 {
        for _ in 0..2 {
            let s = session(addr, "svc.test", pki.client_config(), b"payload")
                .await
                .expect("session");
            sent += s.wire.sent.len() as u64;
        }
        let expected = 2.0 * f64::from(round + 1);
        let metrics =
            scrape_until(stats, "haproxy_backend_connections_total", &ROUTE, expected).await;
        assert_eq!(
            value(&metrics, "haproxy_backend_bytes_in_total", &ROUTE),
            Some(sent as f64)
        );
        let loaded =
            switchyard::config::load_after(&config, Some(&router.snapshot())).expect("reload");
        router.apply(loaded.snapshot).expect("apply");
    }
}

#[tokio::test]
async fn basic_auth_guards_all_but_health() {
    let (_pki, _a, _b, dir) = two_servers("").await;
    let (router, _addr) = start(&dir.path().join("switchyard.toml"));
    let credentials = Credentials {
        user: "admin".into(),
        password: "s3cret".into(),
    };
    let stats = stats_port(&router, Some(credentials)).await;
    let basic = |scheme: &str, pair: &str| {
        let token = base64::engine::general_purpose::STANDARD.encode(pair);
        format!("{scheme} {token}")
    };
    let good = basic("Basic", "admin:s3cret");
    let wrong = basic("Basic", "admin:guess");
    for path in ["/metrics", "/stats", "/stats.json"] {
        assert_eq!(
            get(stats, path, None).await.0,
            401,
            "{path} without credentials"
        );
        assert_eq!(
            get(stats, path, Some(&wrong)).await.0,
            401,
            "{path} with a wrong password"
        );
        assert_eq!(
            get(stats, path, Some(&good)).await.0,
            200,
            "{path} with the password"
        );
        for scheme in ["basic", "BASIC"] {
            assert_eq!(
                get(stats, path, Some(&basic(scheme, "admin:s3cret")))
                    .await
                    .0,
                200,
                "{path}: the scheme is case-insensitive ({scheme})"
            );
        }
        assert_eq!(
            get(stats, path, Some(&basic("Basic", "root:s3cret")))
                .await
                .0,
            401,
            "{path} with another user"
        );
    }
    assert_eq!(
        get(stats, "/healthz", None).await,
        (200, "ok\n".to_string())
    );
    assert_eq!(get(stats, "/healthz/ready", None).await.0, 200);
}

#[tokio::test]
async fn stats_page_shows_servers_and_states() {
    let (_pki, _a, _b, dir) = two_servers("").await;
    let (router, _addr) = start(&dir.path().join("switchyard.toml"));
    let stats = stats_port(&router, None).await;
    let (status, page) = get(stats, "/stats", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("http-equiv=\"refresh\""), "refreshes itself");
    assert!(page.contains("be_tcp:t:app"));
    for server in ["a", "b"] {
        assert!(
            page.contains(&format!("&nbsp;&nbsp;{server} <small>127.0.0.1:")),
            "{page}"
        );
    }
    assert_eq!(
        page.matches(">UP<").count(),
        3,
        "backend and both servers up"
    );
    let (_, json) = get(stats, "/stats.json", None).await;
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(report["backends"][0]["servers"][1]["name"], "b");
    assert_eq!(report["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_is_marked_down_traffic_moves_and_it_comes_back() {
    let check = "\n[backend.check]\nkind = \"tls\"\ninterval = \"100ms\"\ntimeout = \"300ms\"\nfall = 2\nrise = 2\n";
    let (pki, _a, mut b, dir) = two_servers(check).await;
    let (router, addr) = start(&dir.path().join("switchyard.toml"));
    let stats = stats_port(&router, None).await;
    let up = |json: &str, i: usize| -> bool {
        let report: serde_json::Value = serde_json::from_str(json).expect("json");
        report["backends"][0]["servers"][i]["up"] == true
    };
    let b_addr = b.addr;
    if let Some(task) = b.task.take() {
        task.abort(); // b stops accepting
    }
    let killed = Instant::now();
    let mut failures = 0;
    let mut served_by_a = 0;
    loop {
        match session(addr, "svc.test", pki.client_config(), b"x").await {
            Ok(s) if s.server == "a" => served_by_a += 1,
            _ => failures += 1,
        }
        let (_, json) = get(stats, "/stats.json", None).await;
        if !up(&json, 1) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "b marked down within interval x fall (+ slack)"
        );
    }
    assert_eq!(failures, 0, "retries hid the dead server from clients");
    for _ in 0..5 {
        let s = session(addr, "svc.test", pki.client_config(), b"x")
            .await
            .expect("session");
        assert_eq!(s.server, "a", "traffic moved to a");
    }
    assert!(served_by_a > 0);
    let page = get(stats, "/stats", None).await.1;
    assert!(page.contains(">DOWN<"), "the page shows b down");

    // b comes back on the same address: up again after `rise` checks.
    let _b2 = named_server_on("b", pki.server_config(&["svc.test"]), &b_addr.to_string()).await;
    let back = Instant::now();
    loop {
        let (_, json) = get(stats, "/stats.json", None).await;
        if up(&json, 1) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(3),
            "b up again after rise"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen_b = false;
    for _ in 0..4 {
        seen_b |= session(addr, "svc.test", pki.client_config(), b"x")
            .await
            .expect("session")
            .server
            == "b";
    }
    assert!(seen_b, "b takes connections again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_draining() {
    let (pki, _a, _b, dir) = two_servers("").await;
    let (router, addr) = start(&dir.path().join("switchyard.toml"));
    let stats = stats_port(&router, None).await;
    let held = Open::connect(addr, "svc.test", pki.client_config())
        .await
        .expect("connect");
    assert_eq!(get(stats, "/healthz/ready", None).await.0, 200);
    let draining = {
        let router = Arc::clone(&router);
        tokio::spawn(async move { router.shutdown(WAIT).await })
    };
    let started = Instant::now();
    while get(stats, "/healthz/ready", None).await.0 != 503 {
        assert!(started.elapsed() < WAIT, "not ready once draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(stats, "/healthz", None).await.0, 200, "still alive");
    drop(held);
    assert_eq!(draining.await.expect("join"), 0);
}

/// A TCP server that counts the connections made to it (health checks).
async fn counting_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(tcp);
        }
    });
    (addr, count)
}

/// `n` backends with a TCP check every `interval`, all on `server`.
fn checked_backends(
    dir: &ConfigDir,
    n: usize,
    server: SocketAddr,
    interval: &str,
) -> std::path::PathBuf {
    dir.write("maps/os_sni_passthrough.map", "# none\n");
    dir.write("maps/os_tcp_be.map", "# none\n");
    let backends: String = (0..n)
        .map(|i| {
            format!(
                "[[backend]]\nname = \"be_tcp:t:b{i}\"\nservers = [{{ name = \"s\", address = \"{server}\" }}]\n\
                 [backend.check]\ninterval = \"{interval}\"\n\n"
            )
        })
        .collect();
    dir.main("", &backends)
}

/// Reloads do not restart the checks of backends they did not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_the_health_checks_of_unchanged_backends() {
    use std::sync::atomic::Ordering::SeqCst;
    let (server, count) = counting_server().await;
    let dir = ConfigDir::new();
    let config = checked_backends(&dir, 1, server, "1s");
    let (router, _addr) = start(&config);
    let started = Instant::now();
    while count.load(SeqCst) == 0 {
        assert!(started.elapsed() < WAIT, "first check");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = count.load(SeqCst);
    for _ in 0..10 {
        let loaded =
            switchyard::config::load_after(&config, Some(&router.snapshot())).expect("load");
        router.apply(loaded.snapshot).expect("apply");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after = count.load(SeqCst);
    assert!(
        after - first <= 1,
        "10 reloads within one interval: {} more checks",
        after - first
    );
}

/// Checkers start at random points of their interval: no connect storm
/// when many backends start (or are changed) at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_start_with_jitter() {
    use std::sync::atomic::Ordering::SeqCst;
    let (server, count) = counting_server().await;
    let dir = ConfigDir::new();
    let config = checked_backends(&dir, 40, server, "4s");
    let (_router, _addr) = start(&config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = count.load(SeqCst);
    assert!(
        early < 20,
        "{early} of 40 backends checked in the first 300 ms"
    );
}
