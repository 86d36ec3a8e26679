//! Passthrough through real sockets: a rustls client → Switchyard → rustls
//! servers, all on loopback with rcgen certificates.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;

/// Two routes, `alpha.test` and `beta.test`, each to its own server.
struct Setup {
    pki: Pki,
    alpha: NamedServer,
    beta: NamedServer,
    dir: ConfigDir,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let alpha = named_server("alpha", pki.server_config(&["alpha.test"])).await;
    let beta = named_server("beta", pki.server_config(&["beta.test"])).await;
    let dir = ConfigDir::new();
    dir.write(
        "maps/os_sni_passthrough.map",
        "^alpha\\.test$ 1\n^beta\\.test$ 1\n",
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!(
            "# routes\n{} be_tcp:t:alpha\n{} be_tcp:t:beta\n",
            route_regex("alpha.test"),
            route_regex("beta.test")
        ),
    );
    Setup {
        pki,
        alpha,
        beta,
        dir,
    }
}

fn backends(alpha: SocketAddr, beta: SocketAddr) -> String {
    format!(
        "[[backend]]\nname = \"be_tcp:t:alpha\"\nservers = [{{ name = \"a1\", address = \"{alpha}\" }}]\n\n\
         [[backend]]\nname = \"be_tcp:t:beta\"\nservers = [{{ name = \"b1\", address = \"{beta}\" }}]\n"
    )
}

#[tokio::test]
async fn each_sni_reaches_its_server_with_the_exact_bytes() {
    let mut s = setup().await;
    let config = s.dir.main("", &backends(s.alpha.addr, s.beta.addr));
    let (router, addr) = start(&config);
    let client = s.pki.client_config();
    for (sni, name, server) in [
        ("alpha.test", "alpha", &mut s.alpha),
        ("BETA.test.", "beta", &mut s.beta),
    ] {
        let sni_for_rustls = sni.trim_end_matches('.');
        let session = session(
            addr,
            sni_for_rustls,
            Arc::clone(&client),
            b"ping through the router",
        )
        .await
        .expect("session");
        assert_eq!(session.server, name, "SNI {sni} routed to {name}");
        let wire = tokio::time::timeout(WAIT, server.wires.recv())
            .await
            .expect("server done")
            .expect("wire");
        assert_eq!(
            wire.received, session.wire.sent,
            "server got exactly what the client sent"
        );
        assert_eq!(
            session.wire.received, wire.sent,
            "client got exactly what the server sent"
        );
    }
    assert_eq!(router.shutdown(WAIT).await, 0);
}

#[tokio::test]
async fn unknown_sni_is_closed_without_a_default_backend() {
    let s = setup().await;
    let config = s.dir.main("", &backends(s.alpha.addr, s.beta.addr));
    let (_router, addr) = start(&config);
    let pki = Pki::new();
    let result = session(addr, "nobody.test", pki.client_config(), b"x").await;
    assert!(
        result.is_err(),
        "an unrouted name must not reach any server"
    );
}

#[tokio::test]
async fn unknown_sni_goes_to_the_default_backend_when_set() {
    let mut s = setup().await;
    let config = s.dir.main(
        "default_backend = \"be_tcp:t:beta\"",
        &backends(s.alpha.addr, s.beta.addr),
    );
    let (_router, addr) = start(&config);
    // beta's certificate does not cover the name, so verify against beta.test
    // with a client that sends nobody.test: only the routing is under test.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let hello = client_hello("nobody.test");
    tokio::io::AsyncWriteExt::write_all(&mut { tcp }, &hello)
        .await
        .expect("send");
    let wire = tokio::time::timeout(WAIT, s.beta.wires.recv())
        .await
        .expect("beta saw it")
        .expect("wire");
    assert_eq!(&wire.received[..hello.len()], &hello[..]);
}

/// A ClientHello as rustls writes it, for tests that send it by hand.
/// Completes a TLS session over a blocking socket, sending the ClientHello
/// as `segments` (each written separately, with a pause so that they travel
/// as separate TCP segments) and the rest normally. Returns the server's name.
fn handshake_in_pieces(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    split: impl FnOnce(Vec<u8>) -> Vec<Vec<u8>>,
) -> std::io::Result<String> {
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello)?;
    for piece in split(hello) {
        tcp.write_all(&piece)?;
        std::thread::sleep(Duration::from_micros(300));
    }
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[tokio::test]
async fn hello_sent_one_byte_at_a_time() {
    let s = setup().await;
    let config = s.dir.main("", &backends(s.alpha.addr, s.beta.addr));
    let (_router, addr) = start(&config);
    let client = s.pki.client_config();
    let name = tokio::task::spawn_blocking(move || {
        handshake_in_pieces(addr, "beta.test", client, |h| {
            h.into_iter().map(|b| vec![b]).collect()
        })
    })
    .await
    .expect("join")
    .expect("handshake");
    assert_eq!(name, "beta");
}

#[tokio::test]
async fn hello_split_over_two_records() {
    let s = setup().await;
    let config = s.dir.main("", &backends(s.alpha.addr, s.beta.addr));
    let (_router, addr) = start(&config);
    let client = s.pki.client_config();
    let name = tokio::task::spawn_blocking(move || {
        handshake_in_pieces(addr, "alpha.test", client, |hello| {
            // Same handshake bytes, framed as two records: the first ends
            // in the middle of the extensions.
            let body = &hello[5..];
            let cut = body.len() / 2;
            let mut out = Vec::new();
            for part in [&body[..cut], &body[cut..]] {
                out.extend_from_slice(&[22, 3, 1]);
                out.extend_from_slice(&(part.len() as u16).to_be_bytes());
                out.extend_from_slice(part);
            }
            vec![out]
        })
    })
    .await
    .expect("join")
    .expect("handshake");
    assert_eq!(name, "alpha");
}

#[tokio::test]
async fn silent_client_is_closed_at_the_inspect_timeout() {
    let s = setup().await;
    let config = s.dir.main(
        "inspect_timeout = \"300ms\"",
        &backends(s.alpha.addr, s.beta.addr),
    );
    let (_router, addr) = start(&config);
    for prefix in [0usize, 40] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let hello = client_hello("alpha.test");
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &hello[..prefix])
            .await
            .expect("send");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "closed, not answered: {read:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "not before the timeout"
        );
    }
}

#[tokio::test]
async fn not_tls_is_closed() {
    let s = setup().await;
    let config = s.dir.main("", &backends(s.alpha.addr, s.beta.addr));
    let (_router, addr) = start(&config);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
        .await
        .expect("send");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn dead_server_is_skipped() {
    let s = setup().await;
    let dead = closed_port();
    let backends = format!(
        "[[backend]]\nname = \"be_tcp:t:alpha\"\nbalance = \"roundrobin\"\nretries = 1\nservers = [\n  \
         {{ name = \"dead\", address = \"{dead}\" }},\n  {{ name = \"a1\", address = \"{}\" }},\n]\n\n\
         [[backend]]\nname = \"be_tcp:t:beta\"\nservers = [{{ name = \"b1\", address = \"{}\" }}]\n",
        s.alpha.addr, s.beta.addr
    );
    let config = s.dir.main("", &backends);
    let (router, addr) = start(&config);
    for _ in 0..4 {
        let session = session(addr, "alpha.test", s.pki.client_config(), b"x")
            .await
            .expect("session");
        assert_eq!(session.server, "alpha");
    }
    let snapshot = router.snapshot();
    let servers = &snapshot.backends[0].servers;
    assert_eq!(
        servers[1].state.total(),
        4,
        "every connection ended on the live server"
    );
    assert!(servers[0].state.total() >= 1, "the dead server was tried");
}

#[tokio::test]
async fn weight_zero_server_gets_no_connections() {
    let s = setup().await;
    let backends = format!(
        "[[backend]]\nname = \"be_tcp:t:alpha\"\nbalance = \"roundrobin\"\nservers = [\n  \
         {{ name = \"drained\", address = \"{}\", weight = 0 }},\n  {{ name = \"a1\", address = \"{}\" }},\n]\n\n\
         [[backend]]\nname = \"be_tcp:t:beta\"\nservers = [{{ name = \"b1\", address = \"{}\" }}]\n",
        s.beta.addr, s.alpha.addr, s.beta.addr
    );
    let config = s.dir.main("", &backends);
    let (_router, addr) = start(&config);
    for _ in 0..4 {
        let session = session(addr, "alpha.test", s.pki.client_config(), b"x")
            .await
            .expect("session");
        assert_eq!(session.server, "alpha");
    }
}

#[tokio::test]
async fn half_close_is_passed_on() {
    let s = setup().await;
    let config = s.dir.main("", &backends(s.alpha.addr, s.beta.addr));
    let (_router, addr) = start(&config);
    // The client sends close_notify and shuts its write side; the server's
    // echo loop sees end of stream, replies with its own close and closes:
    // `session` reads to the end, which only returns if the FIN came through.
    let session = session(addr, "alpha.test", s.pki.client_config(), b"bye")
        .await
        .expect("session");
    assert_eq!(session.server, "alpha");
    assert!(
        session.eof,
        "the server's close came back after the client's half-close"
    );
}

/// A TCP server that accepts and then says nothing (and keeps the socket).
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test]
async fn silent_server_is_cut_at_the_server_timeout() {
    let s = setup().await;
    let silent = silent_server().await;
    let backends = format!(
        "[[backend]]\nname = \"be_tcp:t:alpha\"\nserver_timeout = \"300ms\"\nservers = [{{ name = \"mute\", address = \"{silent}\" }}]\n\n\
         [[backend]]\nname = \"be_tcp:t:beta\"\nservers = [{{ name = \"b1\", address = \"{}\" }}]\n",
        s.beta.addr
    );
    let (_router, addr) = start(&s.dir.main("", &backends));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &client_hello("alpha.test"))
        .await
        .expect("hello");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the server timeout"
    );
}

#[tokio::test]
async fn idle_tunnel_is_closed_at_the_tunnel_timeout() {
    let s = setup().await;
    let backends = format!(
        "[[backend]]\nname = \"be_tcp:t:alpha\"\ntunnel_timeout = \"300ms\"\nservers = [{{ name = \"a1\", address = \"{}\" }}]\n\n\
         [[backend]]\nname = \"be_tcp:t:beta\"\nservers = [{{ name = \"b1\", address = \"{}\" }}]\n",
        s.alpha.addr, s.beta.addr
    );
    let (_router, addr) = start(&s.dir.main("", &backends));
    let mut open = Open::connect(addr, "alpha.test", s.pki.client_config())
        .await
        .expect("connect");
    open.echo(b"active").await.expect("echo while active");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        open.echo(b"after idling").await.is_err(),
        "closed after 300 ms of silence"
    );
}

#[tokio::test]
async fn accept_pauses_at_max_connections() {
    let s = setup().await;
    let (router, addr) = start(
        &s.dir
            .main("max_connections = 1", &backends(s.alpha.addr, s.beta.addr)),
    );
    let first = Open::connect(addr, "alpha.test", s.pki.client_config())
        .await
        .expect("first");
    // The second connection waits in the kernel's queue: no answer yet.
    let second = tokio::spawn({
        let config = s.pki.client_config();
        async move {
            Open::connect(addr, "beta.test", config)
                .await
                .map(|o| o.server)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "not served while the first holds the only slot"
    );
    assert_eq!(router.open_connections(), 1);
    drop(first);
    let served = tokio::time::timeout(WAIT, second)
        .await
        .expect("served once the slot frees");
    assert_eq!(
        served.expect("join").expect("session"),
        "beta",
        "queued, not refused"
    );
}

/// Lowering `max_connections` under load takes effect as connections end;
/// the open ones are not closed.
#[tokio::test]
async fn lowered_max_connections_applies_as_connections_end() {
    let s = setup().await;
    let backends = backends(s.alpha.addr, s.beta.addr);
    let config = s.dir.main("max_connections = 2", &backends);
    let (router, addr) = start(&config);
    let mut first = Open::connect(addr, "alpha.test", s.pki.client_config())
        .await
        .expect("first");
    let second = Open::connect(addr, "alpha.test", s.pki.client_config())
        .await
        .expect("second");
    s.dir.main("max_connections = 1", &backends);
    let loaded = switchyard::config::load_after(&config, Some(&router.snapshot())).expect("load");
    router.apply(loaded.snapshot).expect("apply");
    drop(second);
    let third = tokio::spawn({
        let config = s.pki.client_config();
        async move {
            Open::connect(addr, "beta.test", config)
                .await
                .map(|o| o.server)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "one open under a limit of one: the third waits"
    );
    first.echo(b"open ones keep working").await.expect("first");
    drop(first);
    let served = tokio::time::timeout(WAIT, third)
        .await
        .expect("served once the first ends");
    assert_eq!(served.expect("join").expect("session"), "beta");
}
