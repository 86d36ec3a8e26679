//! Per-source limits on a listener and on a backend, through real sockets
//! (clients named by PROXY headers, so that one test machine can be many
//! sources): a source over `max_connections_per_source` or
//! `connection_rate_per_source` is closed at once, other sources are not
//! affected, and an IPv6 /64 is one source; a backend's limits apply to its
//! routes only, and an HTTP-mode source over `http_request_rate_per_source`
//! gets 429.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects as `client` (a PROXY v1 header); whether the router keeps the
/// connection (it waits for a ClientHello) or closes it at once.
async fn open_as(addr: SocketAddr, client: &str) -> (TcpStream, bool) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let family = if client.contains(':') { "TCP6" } else { "TCP4" };
    let to = if client.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    let header = format!("PROXY {family} {client} {to} 5000 443\r\n");
    tcp.write_all(header.as_bytes()).await.expect("header");
    let mut byte = [0u8; 1];
    let kept = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut byte))
        .await
        .is_err();
    (tcp, kept)
}

#[tokio::test]
async fn sources_over_their_limits_are_closed_and_others_are_not() {
    let dir = ConfigDir::new();
    dir.write("maps/os_sni_passthrough.map", "# none\n");
    dir.write("maps/os_tcp_be.map", "# none\n");
    let config = dir.main(
        "inspect_timeout = \"10s\"\naccept_proxy = true\nproxy_from = [\"127.0.0.1\"]\n\
         max_connections_per_source = 2\nconnection_rate_per_source = \"4/1h\"\n",
        "[limits]\nipv6_source_prefix = 64\n",
    );
    let (_router, addr) = start(&config);

    let (_a1, kept) = open_as(addr, "203.0.113.1").await;
    assert!(kept, "1st from 203.0.113.1");
    let (_a2, kept) = open_as(addr, "203.0.113.1").await;
    assert!(kept, "2nd from 203.0.113.1");
    let (_a3, kept) = open_as(addr, "203.0.113.1").await;
    assert!(
        !kept,
        "3rd from 203.0.113.1 is over max_connections_per_source"
    );
    let (_b1, kept) = open_as(addr, "203.0.113.2").await;
    assert!(kept, "another source is not affected");

    // One /64 is one source.
    let (_v1, kept) = open_as(addr, "2001:db8::1").await;
    assert!(kept);
    let (_v2, kept) = open_as(addr, "2001:db8::ffff:2").await;
    assert!(kept);
    let (_v3, kept) = open_as(addr, "2001:db8::3").await;
    assert!(!kept, "the same /64");
    let (_w, kept) = open_as(addr, "2001:db8:0:1::1").await;
    assert!(kept, "another /64");

    // The rate: 4 an hour, whether or not the earlier ones are still open.
    for n in 1..=4 {
        let (tcp, kept) = open_as(addr, "198.51.100.9").await;
        assert!(kept, "connection {n} within the rate");
        drop(tcp);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_r5, kept) = open_as(addr, "198.51.100.9").await;
    assert!(
        !kept,
        "the 5th in the hour is over connection_rate_per_source"
    );
}

fn limited(router: &switchyard::Router, backend: &str) -> u64 {
    let snapshot = router.snapshot();
    let b = snapshot
        .backends
        .iter()
        .find(|b| b.name == backend)
        .expect("backend");
    b.traffic.limited.load(Ordering::Relaxed)
}

/// A TLS connection to `sni` as `client` (a PROXY v1 header).
async fn tls_as(
    addr: SocketAddr,
    client: &str,
    sni: &'static str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut tcp = TcpStream::connect(addr).await?;
    let header = format!("PROXY TCP4 {client} 127.0.0.1 5000 443\r\n");
    tcp.write_all(header.as_bytes()).await?;
    let name = ServerName::try_from(sni).expect("name");
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("in time")
}

#[tokio::test]
async fn backend_limits_apply_to_their_routes_and_requests() {
    let front = Pki::new();
    let inner = Pki::new();
    let mut limited_server = named_server("one", inner.server_config(&["one.limit.test"])).await;
    let free_server = named_server("two", inner.server_config(&["two.limit.test"])).await;
    let web = http_ok_server().await;
    let dir = ConfigDir::new();
    dir.write("certs/default.pem", &front.pem(&["*.limit.test"]));
    dir.write(
        "maps/os_sni_passthrough.map",
        &format!(
            "{} 1\n{} 1\n",
            route_regex("one.limit.test"),
            route_regex("two.limit.test")
        ),
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!(
            "{} be_tcp:a:one\n{} be_tcp:a:two\n",
            route_regex("one.limit.test"),
            route_regex("two.limit.test")
        ),
    );
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        &format!("{} be_edge_http:a:web\n", route_regex("web.limit.test")),
    );
    let extra = format!(
        "edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"\n\n\
         [tls]\ndefault_certificate = \"certs/default.pem\"\n\n\
         [[backend]]\nname = \"be_tcp:a:one\"\nmax_connections_per_source = 1\n\
         servers = [{{ name = \"one\", address = \"{}\" }}]\n\n\
         [[backend]]\nname = \"be_tcp:a:two\"\n\
         servers = [{{ name = \"two\", address = \"{}\" }}]\n\n\
         [[backend]]\nname = \"be_edge_http:a:web\"\ntermination = \"edge\"\n\
         http_request_rate_per_source = \"2/1h\"\n\
         servers = [{{ name = \"w\", address = \"{}\" }}]\n",
        limited_server.addr, free_server.addr, web
    );
    let config = dir.main(
        "accept_proxy = true\nproxy_from = [\"127.0.0.1\"]\n",
        &extra,
    );
    let (router, addr) = start(&config);
    let trust_any = {
        let mut c = (*front.client_config()).clone();
        c.dangerous().set_certificate_verifier(Arc::new(AcceptAny));
        Arc::new(c)
    };

    // One connection at a time from 203.0.113.5 to be_tcp:a:one.
    let mut first = tls_as(
        addr,
        "203.0.113.5",
        "one.limit.test",
        Arc::clone(&trust_any),
    )
    .await
    .expect("first connection");
    let mut greeting = [0u8; 4];
    first.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"one\n");
    let second = tls_as(
        addr,
        "203.0.113.5",
        "one.limit.test",
        Arc::clone(&trust_any),
    )
    .await;
    assert!(
        second.is_err(),
        "a second one from the same source is closed"
    );
    assert_eq!(limited(&router, "be_tcp:a:one"), 1);
    // Other routes and other sources are not affected.
    let mut other_route = tls_as(
        addr,
        "203.0.113.5",
        "two.limit.test",
        Arc::clone(&trust_any),
    )
    .await
    .expect("another backend, no limit");
    other_route
        .read_exact(&mut greeting)
        .await
        .expect("greeting");
    assert_eq!(&greeting, b"two\n");
    let mut other_source = tls_as(
        addr,
        "203.0.113.6",
        "one.limit.test",
        Arc::clone(&trust_any),
    )
    .await
    .expect("another source");
    other_source
        .read_exact(&mut greeting)
        .await
        .expect("greeting");
    // The place is given back when the connection ends.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tls_as(
        addr,
        "203.0.113.5",
        "one.limit.test",
        Arc::clone(&trust_any),
    )
    .await
    .expect("a place freed");
    again.read_exact(&mut greeting).await.expect("greeting");
    drop((again, other_source));
    let mut dialed = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_secs(2), limited_server.wires.recv()).await
    {
        dialed += 1;
    }
    assert_eq!(dialed, 3, "the server was never dialed for the refused one");

    // HTTP mode: two requests an hour from one source, then 429.
    let mut http = (*front.client_config()).clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http = Arc::new(http);
    for (client, status) in [
        ("203.0.113.5", "200"),
        ("203.0.113.5", "200"),
        ("203.0.113.5", "429"),
        ("203.0.113.6", "200"),
    ] {
        let mut tls = tls_as(addr, client, "web.limit.test", Arc::clone(&http))
            .await
            .expect("handshake");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: web.limit.test\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(
            answer.starts_with(&format!("http/1.1 {status}")),
            "{client}: {answer}"
        );
        if status == "429" {
            assert!(answer.contains("retry-after: 1800\r\n"), "{answer}");
        }
    }
    assert_eq!(limited(&router, "be_edge_http:a:web"), 1);
}
