//! `max_connections_per_server` with its bounded queue, through real
//! sockets and TLS: connections beyond a server's maximum go to another
//! server with room, else wait in the backend's queue for a place; a full
//! queue refuses at once, a wait longer than `queue_timeout` is refused, a
//! place freed is taken by the one waiting; in HTTP mode the maximum counts
//! requests in flight and a request refused by the queue gets 503; all of
//! it counted.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A limited backend's queue.
fn queue(b: &switchyard::parts::Backend) -> &switchyard::parts::Queue {
    b.queue
        .as_deref()
        .expect("a backend with max_connections_per_server has a queue")
}

/// A TLS connection through the router to `svc.queue.test`, and the name
/// of the server that answered.
async fn open(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(Tls, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("svc.queue.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let mut greeting = [0u8; 2];
    tls.read_exact(&mut greeting).await?;
    Ok((tls, String::from_utf8_lossy(&greeting).trim().to_string()))
}

fn backend(router: &switchyard::Router) -> Arc<switchyard::parts::Backend> {
    backend_named(router, "be_tcp:q:svc")
}

fn backend_named(router: &switchyard::Router, name: &str) -> Arc<switchyard::parts::Backend> {
    let snapshot = router.snapshot();
    Arc::clone(
        snapshot
            .backends
            .iter()
            .find(|b| b.name == name)
            .expect("backend"),
    )
}

/// Polls `check` until it holds (bounded).
async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 2s");
}

#[tokio::test]
async fn full_servers_queue_connections_then_refuse_them() {
    let pki = Pki::new();
    let a = named_server("a", pki.server_config(&["svc.queue.test"])).await;
    let b = named_server("b", pki.server_config(&["svc.queue.test"])).await;
    let dir = ConfigDir::new();
    dir.write(
        "maps/os_sni_passthrough.map",
        &format!("{} 1\n", route_regex("svc.queue.test")),
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:q:svc\n", route_regex("svc.queue.test")),
    );
    let extra = format!(
        "[[backend]]\nname = \"be_tcp:q:svc\"\nbalance = \"roundrobin\"\n\
         max_connections_per_server = 1\nmax_queue = 1\nqueue_timeout = \"1s\"\n\
         servers = [{{ name = \"a\", address = \"{}\" }}, {{ name = \"b\", address = \"{}\" }}]\n",
        a.addr, b.addr
    );
    let config = dir.main("", &extra);
    let (router, addr) = start(&config);
    let client = pki.client_config();

    // One on each server: the second goes to the server with room.
    let (first, on_first) = open(addr, Arc::clone(&client)).await.expect("first");
    let (_second, on_second) = open(addr, Arc::clone(&client)).await.expect("second");
    let mut on = [on_first.clone(), on_second];
    on.sort();
    assert_eq!(on, ["a", "b"], "one connection per server");

    // Both full: the third waits in the queue...
    let waiter = tokio::spawn(open(addr, Arc::clone(&client)));
    until("one connection queued", || {
        queue(&backend(&router)).waiting() == 1
    })
    .await;
    // ...and the queue (max_queue = 1) is full: a fourth is refused at once.
    let refused = tokio::time::timeout(WAIT, open(addr, Arc::clone(&client)))
        .await
        .expect("refused at once, not queued");
    assert!(refused.is_err(), "queue full");
    assert_eq!(queue(&backend(&router)).refused.load(Ordering::Relaxed), 1);

    // A place freed goes to the one waiting, on the server that freed it.
    drop(first);
    let (_third, on_third) = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("in time")
        .expect("join")
        .expect("the waiting connection got a place");
    assert_eq!(on_third, on_first);

    // Nothing frees now: a wait longer than queue_timeout is refused.
    let started = tokio::time::Instant::now();
    let timed_out = tokio::time::timeout(WAIT, open(addr, Arc::clone(&client)))
        .await
        .expect("refused after the queue timeout");
    assert!(timed_out.is_err());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited ~1s"
    );
    let b = backend(&router);
    assert_eq!(queue(&b).queued.load(Ordering::Relaxed), 2);
    assert_eq!(queue(&b).refused.load(Ordering::Relaxed), 2);
    assert_eq!(queue(&b).waiting(), 0);
    assert!(
        b.servers
            .iter()
            .all(|s| s.state.full.load(Ordering::Relaxed) > 0),
        "each server was passed over at its maximum"
    );
    assert!(
        b.servers.iter().all(|s| s.state.active() == 1),
        "never more than one at a time on a server"
    );
}

/// Answers each request after `delay`, 200 `ok`.
async fn slow_http_server(delay: Duration) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    serve_each(move |mut tcp| async move {
        if read_head(&mut tcp).await.is_none() {
            return;
        }
        tokio::time::sleep(delay).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            .await;
    })
    .await
}

/// HTTP mode: the maximum counts requests in flight; a request that finds
/// the server full waits, and gets 503 when no place frees in time.
#[tokio::test]
async fn http_requests_wait_for_a_place_then_get_503() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new();
    let web = slow_http_server(Duration::from_millis(800)).await;
    let dir = ConfigDir::new();
    dir.write("certs/default.pem", &pki.pem(&["*.queue.test"]));
    dir.write("maps/os_sni_passthrough.map", "# none\n");
    dir.write("maps/os_tcp_be.map", "# none\n");
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        &format!("{} be_edge_http:q:web\n", route_regex("web.queue.test")),
    );
    let extra = format!(
        "edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"\n\n\
         [tls]\ndefault_certificate = \"certs/default.pem\"\n\n\
         [[backend]]\nname = \"be_edge_http:q:web\"\ntermination = \"edge\"\n\
         max_connections_per_server = 1\nqueue_timeout = \"300ms\"\n\
         servers = [{{ name = \"w\", address = \"{web}\" }}]\n"
    );
    let config = dir.main("", &extra);
    let (router, addr) = start(&config);
    let mut http = (*pki.client_config()).clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http = Arc::new(http);
    let get = |config: Arc<rustls::ClientConfig>| async move {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("web.queue.test").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: web.queue.test\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).to_string()
    };
    let first = tokio::spawn(get(Arc::clone(&http)));
    until("the first request holds the server", || {
        backend_named(&router, "be_edge_http:q:web").servers[0]
            .state
            .active()
            == 1
    })
    .await;
    let second = get(Arc::clone(&http)).await;
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    let first = first.await.expect("join");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let b = backend_named(&router, "be_edge_http:q:web");
    assert_eq!(queue(&b).queued.load(Ordering::Relaxed), 1);
    assert_eq!(queue(&b).refused.load(Ordering::Relaxed), 1);
}
