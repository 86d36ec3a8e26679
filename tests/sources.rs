//! Per-source limits on a listener, through real sockets (clients named by
//! PROXY headers, so that one test machine can be many sources): a source
//! over `max_connections_per_source` or `connection_rate_per_source` is
//! closed at once, other sources are not affected, and an IPv6 /64 is one
//! source.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
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
