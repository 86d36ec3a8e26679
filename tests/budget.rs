//! The buffer budget (`[limits] buffer_memory`), through a `switchyard run`
//! process (the budget is the process's) and real sockets: slow clients
//! announcing 16 KiB ClientHellos get a quarter of the budget between them
//! and the rest are closed and counted, while a healthy client is still
//! served and an established connection keeps relaying; the bytes held
//! never pass the limit. A ClientHello waiting for a server stays charged
//! until it is handed on.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first bytes of a ClientHello that announces 16 KiB, and no more.
const SLOW_HELLO: [u8; 11] = [
    0x16, 0x03, 0x01, 0x40, 0x00, // handshake record of 16,384 bytes
    0x01, 0x00, 0x3f, 0xfc, // ClientHello of 16,380
    0x03, 0x03, // its version; the rest never comes
];

/// A `switchyard run` process routing `svc.budget.test` by passthrough to
/// a named server; stopped when dropped.
struct Router {
    addr: SocketAddr,
    stats: SocketAddr,
    _process: Process,
    _dir: ConfigDir,
    _server: NamedServer,
}

/// The router with `main_extra` in its TOML and `backend_extra` in its
/// backend.
async fn router(pki: &Pki, main_extra: &str, backend_extra: &str) -> Router {
    let server = named_server("svc", pki.server_config(&["svc.budget.test"])).await;
    let dir = ConfigDir::new();
    let (addr, stats) = (closed_port(), closed_port());
    dir.write(
        "maps/os_sni_passthrough.map",
        &format!("{} 1\n", route_regex("svc.budget.test")),
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:b:svc\n", route_regex("svc.budget.test")),
    );
    dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"public_ssl\"\nbind = \"{addr}\"\ninspect_timeout = \"30s\"\n\n\
             [maps]\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\n\
             {main_extra}\n\
             [stats]\nbind = \"{stats}\"\n\n\
             [[backend]]\nname = \"be_tcp:b:svc\"\n{backend_extra}\
             servers = [{{ name = \"s\", address = \"{}\" }}]\n",
            server.addr
        ),
    );
    let config = dir.path().join("switchyard.toml");
    Router {
        addr,
        stats,
        _process: Process::start(&["run", "--config", config.to_str().expect("utf-8")]),
        _dir: dir,
        _server: server,
    }
}

#[tokio::test]
async fn slow_large_hellos_cannot_take_the_budget() {
    let pki = Pki::new();
    let router = router(&pki, "[limits]\nbuffer_memory = \"256KiB\"\n", "").await;
    let (addr, stats) = (router.addr, router.stats);
    let client = pki.client_config();
    assert_eq!(
        metric(stats, "switchyard_buffer_memory_limit_bytes").await,
        262_144.0
    );

    // Established before the flood.
    let mut established = Open::connect(addr, "svc.budget.test", client.clone())
        .await
        .expect("established");
    established.echo(b"before").await.expect("relays");

    // 40 slow clients, each announcing a 16 KiB hello.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&SLOW_HELLO).await.expect("slow hello");
        slow.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut kept = 0;
    for tcp in &mut slow {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(50), tcp.read(&mut byte)).await;
        // Closed: end of stream or reset. Kept: nothing to read yet.
        if read.is_err() {
            kept += 1;
        }
    }
    // A quarter of 256 KiB holds four 16 KiB hellos.
    assert!(
        (1..=4).contains(&kept),
        "{kept} slow clients kept: a quarter of the budget holds 4"
    );
    assert!(metric(stats, "switchyard_buffer_memory_refused_total").await >= 36.0);
    let used = metric(stats, "switchyard_buffer_memory_bytes").await;
    assert!(used <= 262_144.0, "{used} bytes held");

    // Meanwhile a healthy client is served, and the established one relays.
    let healthy = session(addr, "svc.budget.test", client.clone(), b"hello")
        .await
        .expect("a healthy client is served during the flood");
    assert_eq!(healthy.server, "svc");
    established.echo(b"during").await.expect("still relays");
    drop(slow);
}

#[tokio::test]
async fn a_hello_waiting_for_a_place_stays_charged() {
    let pki = Pki::new();
    let backend = "max_connections_per_server = 1\nqueue_timeout = \"10s\"\n";
    let router = router(&pki, "", backend).await;
    let (addr, stats) = (router.addr, router.stats);
    let client = pki.client_config();
    let mut first = Open::connect(addr, "svc.budget.test", client.clone())
        .await
        .expect("first");
    first.echo(b"holds the place").await.expect("relays");
    let before = metric(stats, "switchyard_buffer_memory_bytes").await;

    // The second waits in the queue with its ClientHello read.
    let second = tokio::spawn(Open::connect(addr, "svc.budget.test", client));
    let mut during = before;
    for _ in 0..50 {
        during = metric(stats, "switchyard_buffer_memory_bytes").await;
        if during > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        during >= before + 2048.0,
        "the waiting hello's buffer is charged: {before} then {during} bytes"
    );

    // The place frees: the hello is handed on and its charge released.
    drop(first);
    let mut second = tokio::time::timeout(WAIT, second)
        .await
        .expect("in time")
        .expect("task")
        .expect("the waiting connection is served");
    second.echo(b"served").await.expect("relays");
}
