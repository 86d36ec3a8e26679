//! Slow readers in HTTP mode: 2,000 clients that each ask for a large
//! response and then read none of it hold the router's memory only within
//! bounds, are all closed once `client_timeout` passes, and never stop
//! another client from being served meanwhile.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clients that stop reading.
const SLOW: usize = 2_000;
/// Each asks for this much.
const LARGE: usize = 4 << 20;

/// Answers `GET /large` with `LARGE` bytes and anything else with `ok`,
/// keeping the connection open.
async fn server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let large = Bytes::from(vec![b'x'; LARGE]);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let large = large.clone();
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tcp.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let body: &[u8] = if head.starts_with(b"GET /large ") {
                        &large
                    } else {
                        b"ok"
                    };
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    if tcp.write_all(head.as_bytes()).await.is_err()
                        || tcp.write_all(body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TLS connection to the router for `app.slow.test`.
async fn open(
    listen: SocketAddr,
    connector: tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(listen)
        .await
        .expect("connect");
    let name = ServerName::try_from("app.slow.test").expect("name");
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("in time")
        .expect("handshake")
}

/// The router's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_bounded_and_closed_at_the_client_timeout() {
    let pki = Pki::new();
    let app = server().await;
    let (listen, stats, dir) = (closed_port(), closed_port(), ConfigDir::new());
    dir.write("default.pem", &pki.pem(&["app.slow.test"]));
    dir.write("maps/os_sni_passthrough.map", "# none\n");
    dir.write("maps/os_tcp_be.map", "# none\n");
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        &format!("{} be_edge_http:t:app\n", route_regex("app.slow.test")),
    );
    let config = edge_config(
        &dir,
        (listen, stats),
        &format!(
            "[[backend]]\nname = \"be_edge_http:t:app\"\ntermination = \"edge\"\nclient_timeout = \"3s\"\n\
             servers = [{{ name = \"app-1\", address = \"{app}\" }}]\n"
        ),
    );
    let process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);
    let pid = process.child.id();
    let mut tls = (*pki.client_config()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    // One client, served, to warm the router up before measuring.
    let mut fast = open(listen, connector.clone()).await;
    let small = b"GET /small HTTP/1.1\r\nHost: app.slow.test\r\n\r\n";
    fast.write_all(small).await.expect("request");
    let mut answer = [0u8; 64];
    let n = fast.read(&mut answer).await.expect("answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    drop(fast);
    let before = rss_kib(pid);

    // The slow readers: each asks for a large response, then reads none.
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW / 100 {
        let opened = (0..100).map(|_| {
            let connector = connector.clone();
            async move {
                let mut s = open(listen, connector).await;
                let large = b"GET /large HTTP/1.1\r\nHost: app.slow.test\r\n\r\n";
                s.write_all(large).await.expect("request");
                s.flush().await.expect("flush");
                s
            }
        });
        let opened = tokio::task::JoinSet::from_iter(opened).join_all().await;
        slow.extend(opened);
    }
    let stalled_at = Instant::now();
    // Their responses fill what buffers they may.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = rss_kib(pid);
    let per_reader = (held.saturating_sub(before)) * 1024 / SLOW as u64;
    println!(
        "rss before {before} KiB, with {SLOW} slow readers {held} KiB: {per_reader} bytes each"
    );
    // Bounded by the 64 KiB buffers on its path (the server-side read, a
    // chunk on its way, the client-side write), TLS and task state: about
    // 220 KB measured, not the 4 MiB each asked for (559 KB before the
    // server-side read buffer was bounded).
    assert!(
        per_reader < 320 * 1024,
        "{per_reader} bytes per slow reader"
    );

    // Meanwhile another client is served.
    let mut fast = open(listen, connector.clone()).await;
    fast.write_all(small).await.expect("request");
    let n = tokio::time::timeout(WAIT, fast.read(&mut answer))
        .await
        .expect("served while others stall")
        .expect("answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));

    // At the client timeout every slow reader is closed.
    let open = "haproxy_frontend_current_sessions{frontend=\"public_ssl\"}";
    loop {
        let now = metric(stats, open).await;
        if now <= 1.0 {
            break;
        }
        assert!(
            stalled_at.elapsed() < Duration::from_secs(3) + WAIT,
            "{now} connections still open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stalled_at.elapsed() >= Duration::from_millis(2500),
        "closed only at the deadline"
    );
    let line = process.line_with("client_timeout");
    assert!(line.contains("read none of its response"), "{line}");
    // Their buffers went with them.
    let after = rss_kib(pid);
    println!("rss after they closed: {after} KiB");
    drop(slow);
}
