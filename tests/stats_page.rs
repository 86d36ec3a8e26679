//! The stats page in a real browser (Debian's `chromium`, headless): after
//! known traffic through an edge HTTP route (successes and server 5xx
//! spread over a few seconds) and a passthrough route, the page loads and
//! shows those figures, the rates and a graph per backend; a screenshot
//! is kept as a test artifact (`target/tmp/stats-page.png`). The `;csv`
//! view has HAProxy's columns in HAProxy's order, and `;json` the rates.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers `/fail` with 503 and anything else with 200, keeping the
/// connection open.
async fn server() -> SocketAddr {
    serve_each(|mut tcp| async move {
        while let Some(head) = read_head(&mut tcp).await {
            let answer: &[u8] = if head.starts_with(b"GET /fail ") {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
            };
            if tcp.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Runs headless Chromium on `url` with `args`; what it printed.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1600,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (Debian's package; .ci/run installs it)");
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > 6 * WAIT {
            let _ = child.kill();
            panic!("chromium did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_page_shows_the_traffic_in_a_real_browser() {
    let pki = Pki::new();
    let app = server().await;
    let echo = named_server("echo", pki.server_config(&["pt.page.test"])).await;
    let (listen, stats, dir) = (closed_port(), closed_port(), ConfigDir::new());
    dir.write("default.pem", &pki.pem(&["*.page.test"]));
    dir.write("maps/os_sni_passthrough.map", "^pt\\.page\\.test$ 1\n");
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:shop:pt\n", route_regex("pt.page.test")),
    );
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        &format!("{} be_edge_http:shop:app\n", route_regex("app.page.test")),
    );
    let config = edge_config(
        &dir,
        (listen, stats),
        &format!(
            "[[backend]]\nname = \"be_edge_http:shop:app\"\ntermination = \"edge\"\n\
             servers = [{{ name = \"app-1\", address = \"{app}\" }}]\n\n\
             [[backend]]\nname = \"be_tcp:shop:pt\"\nservers = [{{ name = \"pt-1\", address = \"{}\" }}]\n",
            echo.addr
        ),
    );
    let _process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);

    // 36 requests over 3 seconds, one in six a server 503; 3 passthrough
    // connections.
    let mut tls = (*pki.client_config()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(listen)
        .await
        .expect("connect");
    let name = ServerName::try_from("app.page.test").expect("name");
    let mut client = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("handshake");
    for i in 0..36 {
        let path = if i % 6 == 5 { "/fail" } else { "/" };
        let request = format!("GET {path} HTTP/1.1\r\nHost: app.page.test\r\n\r\n");
        client.write_all(request.as_bytes()).await.expect("send");
        let mut answer = [0u8; 256];
        let n = client.read(&mut answer).await.expect("answer");
        assert!(answer[..n].starts_with(b"HTTP/1.1 "));
        if i % 12 == 11 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }
    for _ in 0..3 {
        session(listen, "pt.page.test", pki.client_config(), b"ping")
            .await
            .expect("passthrough");
    }
    // The sampler's next second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let csv = stats_body(stats, "/stats;csv").await;
    let header = csv.lines().next().expect("header");
    assert!(
        header.starts_with("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,"),
        "{header}"
    );
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name).expect("column");
    let row = csv
        .lines()
        .find(|l| l.starts_with("be_edge_http:shop:app,BACKEND,"))
        .expect("backend row");
    let fields: Vec<&str> = row.split(',').collect();
    assert_eq!(fields.len(), columns.len(), "{row}");
    assert_eq!(fields[column("stot")], "36", "{row}");
    assert_eq!(fields[column("hrsp_2xx")], "30", "{row}");
    assert_eq!(fields[column("hrsp_5xx")], "6", "{row}");
    assert_eq!(fields[column("type")], "1", "{row}");
    let peak: u32 = fields[column("rate_max")].parse().expect("rate_max");
    assert!((1..=36).contains(&peak), "{row}");
    assert!(csv.contains("\nbe_tcp:shop:pt,pt-1,"), "{csv}");

    let json: serde_json::Value =
        serde_json::from_str(&stats_body(stats, "/stats;json").await).expect("json");
    let backend = json["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "be_edge_http:shop:app"))
        .expect("backend");
    assert_eq!(backend["rates"]["peak"].as_u64(), Some(u64::from(peak)));
    assert!(backend["rates"]["p99_ms"].as_f64().is_some(), "{backend}");

    // The page, as a browser renders it.
    let url = format!("http://{stats}/stats");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&url, &["--dump-dom"])
    })
    .await
    .expect("chromium");
    for shown in [
        "be_edge_http:shop:app",
        "be_tcp:shop:pt",
        "<svg",
        "<td>36</td>",
        "<td>30</td>",
        "<td class=\"bad\">6</td>",
        "p50 · p99",
    ] {
        assert!(dom.contains(shown), "{shown:?} not on the page: {dom}");
    }
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("stats-page.png");
    let _ = std::fs::remove_file(&shot);
    let flag = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || chromium(&url, &[&flag]))
        .await
        .expect("chromium");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
