//! HTTP traffic counted as HAProxy's exporter counts `mode http`: known
//! bytes moved through an edge route (HTTP/1.1 downloads and an upload),
//! a re-encrypt route (h2, downloads and an upload), a WebSocket tunnel
//! and a passthrough route, then read back from `/metrics` and
//! `/stats.json`: bytes in and out per backend, server and frontend, one
//! session per request.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Response body of a download, and request body of an upload.
const DOWNLOAD: usize = 1 << 20;
const UPLOAD: usize = 3 << 19;
/// What heads add, per request, at most: request and response heads as
/// the test sends and the servers answer them, plus forwarded headers.
const HEADS: u64 = 1024;

/// Answers `GET` with `DOWNLOAD` bytes and `POST` with the length of the
/// body it read (as text), keeping the connection open; `Upgrade:
/// websocket` switches to echoing raw bytes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 || io.read_exact(&mut byte).await.is_err() {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if head.contains("\r\nupgrade: websocket\r\n") {
            let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
            if io.write_all(switch.as_bytes()).await.is_ok() {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
            return;
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if io.read_exact(&mut body).await.is_err() {
            return;
        }
        let answer = if head.starts_with("post") {
            let text = length.to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )
            .into_bytes()
        } else {
            let mut a =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {DOWNLOAD}\r\n\r\n").into_bytes();
            a.resize(a.len() + DOWNLOAD, b'x');
            a
        };
        if io.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A plain server (`tls = None`) or a TLS one running [`serve`].
async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve(tcp).await,
                    Some(config) => {
                        if let Ok(s) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                            serve(s).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A TLS connection to the router for `sni`, offering `alpn`.
async fn tls_to(
    addr: SocketAddr,
    sni: &str,
    pki: &Pki,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.to_string()).expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

/// Reads one response with a Content-Length body; returns its body length.
async fn response<S: AsyncRead + Unpin>(s: &mut S) -> (u16, usize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head[9..12].parse().expect("status");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).await.expect("body");
    (status, length)
}

/// The value of the series of `family` whose labels include `labels`.
fn value(metrics: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    let parsed =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string()))).expect("parse");
    parsed
        .samples
        .iter()
        .find(|s| s.metric == family && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no {family} {labels:?}"))
}

/// `counted` is `moved` plus what heads add for `requests` requests.
fn about(what: &str, counted: f64, moved: usize, requests: u64) {
    let (low, high) = (moved as f64, (moved as u64 + requests * HEADS) as f64);
    println!("{what}: counted {counted}, moved {moved} in bodies and tunnels, {requests} requests");
    assert!(
        (low..=high).contains(&counted),
        "{what}: counted {counted}, moved {moved} in {requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bytes_and_requests_are_counted_per_backend_server_and_frontend() {
    let (front, inner) = (Pki::new(), Pki::new());
    let plain = server(None).await;
    let secure = server(Some(inner.server_config(&["re.inner.test"]))).await;
    let passthrough = named_server("pt", front.server_config(&["pt.count.test"])).await;
    let (listen, stats, dir) = (closed_port(), closed_port(), ConfigDir::new());
    dir.write("default.pem", &front.pem(&["*.count.test"]));
    dir.write("inner-ca.pem", &inner.ca_pem);
    dir.write("maps/os_sni_passthrough.map", "^pt\\.count\\.test$ 1\n");
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:t:pt\n", route_regex("pt.count.test")),
    );
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        &format!(
            "{} be_edge_http:t:dl\n{} be_secure:t:re\n",
            route_regex("dl.count.test"),
            route_regex("re.count.test")
        ),
    );
    let config = edge_config(
        &dir,
        (listen, stats),
        &format!(
            "[[backend]]\nname = \"be_edge_http:t:dl\"\ntermination = \"edge\"\n\
             servers = [{{ name = \"dl-1\", address = \"{plain}\" }}]\n\n\
             [[backend]]\nname = \"be_secure:t:re\"\ntermination = \"reencrypt\"\n\
             verify_host = \"re.inner.test\"\nca_file = \"inner-ca.pem\"\n\
             servers = [{{ name = \"re-1\", address = \"{secure}\" }}]\n\n\
             [[backend]]\nname = \"be_tcp:t:pt\"\nservers = [{{ name = \"pt-1\", address = \"{}\" }}]\n",
            passthrough.addr
        ),
    );
    let _process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);

    // Edge, HTTP/1.1: two downloads and one upload on one connection;
    // then a WebSocket tunnel.
    let mut h1 = tls_to(listen, "dl.count.test", &front, &[b"http/1.1"]).await;
    for _ in 0..2 {
        let get = "GET /file HTTP/1.1\r\nHost: dl.count.test\r\n\r\n";
        h1.write_all(get.as_bytes()).await.expect("get");
        assert_eq!(response(&mut h1).await, (200, DOWNLOAD));
    }
    let post =
        format!("POST /up HTTP/1.1\r\nHost: dl.count.test\r\nContent-Length: {UPLOAD}\r\n\r\n");
    h1.write_all(post.as_bytes()).await.expect("post");
    h1.write_all(&vec![b'u'; UPLOAD]).await.expect("body");
    let (status, _) = response(&mut h1).await;
    assert_eq!(status, 200);
    drop(h1);
    let mut ws = tls_to(listen, "dl.count.test", &front, &[b"http/1.1"]).await;
    let upgrade = "GET /ws HTTP/1.1\r\nHost: dl.count.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    ws.write_all(upgrade.as_bytes()).await.expect("upgrade");
    assert_eq!(response(&mut ws).await.0, 101);
    let frames = vec![b'w'; 100_000];
    ws.write_all(&frames).await.expect("frames");
    let mut echoed = vec![0u8; frames.len()];
    ws.read_exact(&mut echoed).await.expect("echo");
    drop(ws);

    // Re-encrypt, h2: three downloads and one upload on one connection.
    let tls = tls_to(listen, "re.count.test", &front, &[b"h2"]).await;
    let (mut h2, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2");
    let h2_task = tokio::spawn(connection);
    for i in 0..4 {
        let upload = i == 3;
        let body = if upload {
            vec![b'u'; UPLOAD]
        } else {
            Vec::new()
        };
        let req = hyper::Request::builder()
            .method(if upload { "POST" } else { "GET" })
            .uri("https://re.count.test/file")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = h2.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200);
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        let expected = if upload {
            UPLOAD.to_string().len()
        } else {
            DOWNLOAD
        };
        assert_eq!(got.len(), expected);
    }
    drop(h2);
    h2_task.abort();

    // Passthrough, for comparison: TLS bytes both ways.
    let pt = session(
        listen,
        "pt.count.test",
        front.client_config(),
        &vec![b'p'; 50_000],
    )
    .await
    .expect("passthrough");

    // Counters settle as connections end: wait (bounded) for the frontend.
    let started = std::time::Instant::now();
    let metrics = loop {
        let metrics = stats_body(stats, "/metrics").await;
        let fe = [("frontend", "public_ssl")];
        let out = (5 * DOWNLOAD + frames.len() + pt.wire.received.len()) as f64;
        let done = value(&metrics, "haproxy_frontend_bytes_out_total", &fe) >= out
            && value(&metrics, "haproxy_frontend_connections_total", &fe) >= 4.0;
        if done || started.elapsed() > WAIT {
            break metrics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let dl = [("route", "dl"), ("namespace", "t")];
    let re = [("route", "re"), ("namespace", "t")];
    // Edge: 4 requests (2 downloads, 1 upload, 1 upgrade) and the tunnel.
    about(
        "edge bytes out",
        value(&metrics, "haproxy_backend_bytes_out_total", &dl),
        2 * DOWNLOAD + frames.len(),
        4,
    );
    about(
        "edge bytes in",
        value(&metrics, "haproxy_backend_bytes_in_total", &dl),
        UPLOAD + frames.len(),
        4,
    );
    assert_eq!(
        value(&metrics, "haproxy_backend_connections_total", &dl),
        4.0
    );
    about(
        "edge server bytes out",
        value(
            &metrics,
            "haproxy_server_bytes_out_total",
            &[("route", "dl"), ("server", "dl-1")],
        ),
        2 * DOWNLOAD + frames.len(),
        4,
    );
    assert_eq!(
        value(
            &metrics,
            "haproxy_server_connections_total",
            &[("route", "dl"), ("server", "dl-1")]
        ),
        4.0
    );
    // Re-encrypt: 4 h2 requests, counted as HTTP/1.1 would carry them.
    about(
        "re-encrypt bytes out",
        value(&metrics, "haproxy_backend_bytes_out_total", &re),
        3 * DOWNLOAD,
        4,
    );
    about(
        "re-encrypt bytes in",
        value(&metrics, "haproxy_backend_bytes_in_total", &re),
        UPLOAD,
        4,
    );
    assert_eq!(
        value(&metrics, "haproxy_backend_connections_total", &re),
        4.0
    );
    assert_eq!(
        value(&metrics, "haproxy_backend_connection_errors_total", &re),
        0.0
    );
    // Passthrough: the TLS bytes the client sent and got.
    let pt_labels = [("route", "pt"), ("namespace", "t")];
    assert_eq!(
        value(&metrics, "haproxy_backend_bytes_in_total", &pt_labels),
        pt.wire.sent.len() as f64
    );
    assert_eq!(
        value(&metrics, "haproxy_backend_bytes_out_total", &pt_labels),
        pt.wire.received.len() as f64
    );
    // The frontend: every mode's bytes.
    let fe = [("frontend", "public_ssl")];
    about(
        "frontend bytes out",
        value(&metrics, "haproxy_frontend_bytes_out_total", &fe),
        5 * DOWNLOAD + frames.len() + pt.wire.received.len(),
        8,
    );
    about(
        "frontend bytes in",
        value(&metrics, "haproxy_frontend_bytes_in_total", &fe),
        2 * UPLOAD + frames.len() + pt.wire.sent.len(),
        8,
    );

    // The stats page's JSON says the same.
    let json = stats_body(stats, "/stats.json").await;
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    let backend = report["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "be_edge_http:t:dl"))
        .expect("edge backend");
    assert_eq!(
        backend["bytes_out"].as_f64(),
        Some(value(&metrics, "haproxy_backend_bytes_out_total", &dl))
    );
    assert_eq!(backend["connections"].as_u64(), Some(4));
}
