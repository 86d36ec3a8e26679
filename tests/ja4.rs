//! JA4 fingerprints through a running router, from real ClientHellos (the
//! JA4 specification's captures, `tests/fixtures/ja4/`, and rustls's):
//! each connection's fingerprint in its access-log line and in the
//! `switchyard_ja4_top` family; `deny_ja4` on a listener closes a client
//! before anything is decided or dialed, on a passthrough backend before
//! the server is dialed, and on an HTTP-mode backend answers its requests
//! 403, each counted in `switchyard_ja4_denied_total`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A captured hello: its SNI, the fingerprint expected, its bytes.
struct Vector {
    sni: String,
    ja4: String,
    hello: Vec<u8>,
}

fn vector(sni: &str) -> Vector {
    let text = include_str!("fixtures/ja4/vectors.json");
    let list: serde_json::Value = serde_json::from_str(text).expect("vectors");
    let v = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|v| v["sni"] == sni)
        .unwrap_or_else(|| panic!("a vector for {sni}"));
    let hex = v["hello"].as_str().expect("hello");
    Vector {
        sni: sni.to_string(),
        ja4: v["ja4"].as_str().expect("ja4").to_string(),
        hello: (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect(),
    }
}

/// A server that counts the connections it accepts and keeps what each
/// first sent.
async fn sink() -> (
    SocketAddr,
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (count, firsts) = (Arc::new(AtomicUsize::new(0)), Arc::default());
    let (c, f): (_, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) =
        (Arc::clone(&count), Arc::clone(&firsts));
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while got.len() < 5
                    || got.len() < 5 + usize::from(u16::from_be_bytes([got[3], got[4]]))
                {
                    match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                f.lock().expect("lock").push(got);
                // Held open, as a server would: the router keeps the client.
                let _ = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await;
            });
        }
    });
    (addr, count, firsts)
}

/// Sends `hello` to the router and says whether the router closed the
/// connection without a byte (refused) rather than keeping it open to a
/// server.
async fn closed_at_once(router: SocketAddr, hello: &[u8]) -> bool {
    let mut tcp = TcpStream::connect(router).await.expect("connect");
    tcp.write_all(hello).await.expect("hello");
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(700), tcp.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprints_are_logged_counted_and_denied_by_listener_and_backend() {
    let firefox = vector("contile.services.mozilla.com");
    let slack = vector("app.slack.com");
    let chrome = vector("pdx-col.eum-appdynamics.com");
    let curveball = vector("bad.curveballtest.com");
    let (open, open_count, open_firsts) = sink().await;
    let (guarded, guarded_count, _) = sink().await;
    let (listen, stats) = (closed_port(), closed_port());
    let dir = ConfigDir::new();
    let mut sni = String::new();
    let mut tcp = String::new();
    for (v, backend) in [
        (&firefox, "open"),
        (&slack, "open"),
        (&chrome, "guarded"),
        (&curveball, "guarded"),
    ] {
        sni.push_str(&format!("^{}$ 1\n", v.sni.replace('.', r"\.")));
        tcp.push_str(&format!("{} be_tcp:t:{backend}\n", route_regex(&v.sni)));
    }
    dir.write("maps/os_sni_passthrough.map", &sni);
    dir.write("maps/os_tcp_be.map", &tcp);
    let config = dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"public_ssl\"\nbind = \"{listen}\"\ndeny_ja4 = [\"{}\"]\n\n\
             [maps]\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\n\
             [stats]\nbind = \"{stats}\"\n\n\
             [[backend]]\nname = \"be_tcp:t:open\"\nservers = [{{ name = \"open\", address = \"{open}\" }}]\n\n\
             [[backend]]\nname = \"be_tcp:t:guarded\"\ndeny_ja4 = [\"{}\"]\nservers = [{{ name = \"guarded\", address = \"{guarded}\" }}]\n",
            firefox.ja4, chrome.ja4
        ),
    );
    let process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);

    // The listener denies Firefox's fingerprint: closed, nothing dialed.
    assert!(
        closed_at_once(listen, &firefox.hello).await,
        "Firefox is refused"
    );
    // One warning a second at most, with the count, before the line.
    let warned = process.line_with("client refused for its JA4 fingerprint");
    assert!(
        warned.contains(&firefox.ja4) && warned.contains("times=1"),
        "{warned}"
    );
    let line = process.line_with("denied by listener");
    assert!(line.contains(&firefox.ja4), "{line}");
    // Another client on the same route is relayed, its hello untouched.
    assert!(
        !closed_at_once(listen, &slack.hello).await,
        "Slack's client is relayed"
    );
    let line = process.line_with("app.slack.com");
    assert!(
        line.contains(&slack.ja4),
        "the access-log line has its fingerprint: {line}"
    );
    // The guarded backend denies Chrome's, not the other client's.
    assert!(
        closed_at_once(listen, &chrome.hello).await,
        "Chrome is refused by the backend"
    );
    let line = process.line_with("denied by backend");
    assert!(line.contains(&chrome.ja4), "{line}");
    assert!(
        !closed_at_once(listen, &curveball.hello).await,
        "the other client reaches the backend"
    );

    assert_eq!(
        open_count.load(Ordering::SeqCst),
        1,
        "only Slack's client was dialed to"
    );
    assert_eq!(
        guarded_count.load(Ordering::SeqCst),
        1,
        "only the admitted client was dialed to"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while open_firsts.lock().expect("lock").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server got the hello"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        open_firsts.lock().expect("lock")[0],
        slack.hello,
        "the hello is replayed as sent"
    );
    assert_eq!(metric(stats, "switchyard_ja4_denied_total").await, 2.0);
    let top = format!("switchyard_ja4_top{{ja4=\"{}\"}}", slack.ja4);
    assert!(metric(stats, &top).await >= 1.0);
}

/// HTTP mode: a backend's `deny_ja4` answers that client's requests 403
/// while another backend on the same connection serves it, and an edit
/// of the list applies without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_backend_denies_a_fingerprint_per_request() {
    let pki = Pki::new();
    let (app, other) = (
        http_server(|_| "app\n".to_string()).await,
        http_server(|_| "other\n".to_string()).await,
    );
    let (listen, stats) = (closed_port(), closed_port());
    let dir = ConfigDir::new();
    dir.write("default.pem", &pki.pem(&["*.shop.test"]));
    dir.write(
        "maps/edge.map",
        &format!(
            "{} be_edge_http:t:app\n{} be_edge_http:t:other\n",
            route_regex("app.shop.test"),
            route_regex("other.shop.test")
        ),
    );
    let write = |deny: &str| {
        dir.write(
            "switchyard.toml",
            &format!(
                "[[listener]]\nname = \"public_ssl\"\nbind = \"{listen}\"\n\n\
                 [maps]\nedge_reencrypt_be = \"maps/edge.map\"\n\n[tls]\ndefault_certificate = \"default.pem\"\n\n\
                 [stats]\nbind = \"{stats}\"\n\n\
                 [[backend]]\nname = \"be_edge_http:t:app\"\ntermination = \"edge\"\n{deny}\nservers = [{{ name = \"app\", address = \"{app}\" }}]\n\n\
                 [[backend]]\nname = \"be_edge_http:t:other\"\ntermination = \"edge\"\nservers = [{{ name = \"other\", address = \"{other}\" }}]\n"
            ),
        )
    };
    let config = write("");
    let process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);
    let get = |host: &'static str| https_get(listen, &pki, host);
    assert!(get("app.shop.test").await.ends_with("app\n"));
    // This client's fingerprint, as the router logged it.
    let line = process.line_with("ja4=");
    assert!(line.contains("app.shop.test"), "{line}");
    let ja4 = line
        .split("ja4=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a ja4 field")
        .trim_matches('"')
        .to_string();
    assert_eq!(ja4.len(), 36, "{line}");
    write(&format!("deny_ja4 = [\"{ja4}\"]"));
    process.line_with("configuration applied");
    let denied = get("app.shop.test").await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(
        get("other.shop.test").await.ends_with("other\n"),
        "the other backend serves it"
    );
    assert_eq!(metric(stats, "switchyard_ja4_denied_total").await, 1.0);
}
