//! HTTP mode (`mode = "http"` on an edge backend) through real sockets and
//! real TLS: requests on one keep-alive connection routed by path to
//! different servers, forwarded headers, the 503 page for a name no line
//! routes, and a map edit seen by the next request of an open connection.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// An HTTP/1.1 server that answers every request with its name, then the
/// request head it received, keeping the connection open.
async fn http_server(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while let Ok((head, _)) = read_message(&mut tcp).await {
                    if head
                        .to_ascii_lowercase()
                        .contains("\r\nupgrade: websocket\r\n")
                    {
                        // Switch, then echo raw bytes: a stand-in for WebSocket frames.
                        let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
                        if tcp.write_all(switch.as_bytes()).await.is_ok() {
                            let (mut r, mut w) = tcp.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                        return;
                    }
                    let body = format!("{name}\n{head}");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// The same server behind TLS, for re-encrypt backends.
async fn https_server(name: &'static str, config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    serve_each(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            while let Ok((head, _)) = read_message(&mut tls).await {
                let body = format!("{name}\n{head}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if tls.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// Reads one HTTP/1.1 message: its head (as text) and its body (by
/// Content-Length).
async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return Err(std::io::Error::other("head too long"));
        }
        tokio::time::timeout(WAIT, s.read_exact(&mut byte)).await??;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(WAIT, s.read_exact(&mut body)).await??;
    Ok((head, body))
}

/// An h2 connection through the router to `sni` (ALPN must choose h2).
async fn h2_connect(
    addr: SocketAddr,
    sni: &str,
    pki: &Pki,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "h2 offered"
    );
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// Sends a GET and returns (status, body as text).
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
    path: &str,
) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send");
    let (head, body) = read_message(s).await.expect("response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

struct Setup {
    front: Pki,
    dir: ConfigDir,
    config: std::path::PathBuf,
    /// Connections the `web` server accepted.
    web_connections: Arc<AtomicUsize>,
}

fn edge_map(api_backend: &str) -> String {
    format!(
        "^www\\.http\\.test\\.?(:[0-9]+)?/api(/.*)?$ {api_backend}\n\
         ^www\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ be_edge_http:t:web\n"
    )
}

async fn setup() -> Setup {
    let front = Pki::new();
    let (api, _) = http_server("api").await;
    let (web, web_connections) = http_server("web").await;
    let dir = ConfigDir::new();
    dir.write("certs/default.pem", &front.pem(&["*.http.test"]));
    dir.write("maps/os_sni_passthrough.map", "# none\n");
    dir.write("maps/os_tcp_be.map", "# none\n");
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        &edge_map("be_edge_http:t:api"),
    );
    let extra = format!(
        "[tls]\ndefault_certificate = \"certs/default.pem\"\n\n\
         [[backend]]\nname = \"be_edge_http:t:api\"\ntermination = \"edge\"\nmode = \"http\"\n\
         servers = [{{ name = \"api-1\", address = \"{api}\" }}]\n\n\
         [[backend]]\nname = \"be_edge_http:t:web\"\ntermination = \"edge\"\nmode = \"http\"\n\
         servers = [{{ name = \"web-1\", address = \"{web}\" }}]\n"
    );
    let config = dir.main("", &extra);
    let text = std::fs::read_to_string(&config).expect("read");
    let text = text.replace(
        "tcp_be = \"maps/os_tcp_be.map\"",
        "tcp_be = \"maps/os_tcp_be.map\"\nedge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"",
    );
    std::fs::write(&config, text).expect("write");
    Setup {
        front,
        dir,
        config,
        web_connections,
    }
}

async fn connect(
    addr: SocketAddr,
    sni: &str,
    pki: &Pki,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "HTTP mode speaks http/1.1"
    );
    tls
}

#[tokio::test]
async fn requests_on_one_connection_are_routed_by_path() {
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (status, _, body) = get(&mut tls, "www.http.test", "/api/users?id=7").await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("api\nGET /api/users?id=7 HTTP/1.1\r\n"),
        "{body}"
    );
    let (status, _, body) = get(&mut tls, "WWW.http.test:8443", "/apis").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("web\nGET /apis HTTP/1.1\r\n"), "{body}");
    let lower = body.to_ascii_lowercase();
    for header in [
        "x-forwarded-for: 127.0.0.1\r\n",
        "x-forwarded-proto: https\r\n",
        "x-forwarded-host: www.http.test:8443\r\n",
        "forwarded: for=127.0.0.1;host=\"www.http.test:8443\";proto=https\r\n",
    ] {
        assert!(lower.contains(header), "{header:?} in {body}");
    }
    let (status, _, body) = get(&mut tls, "www.http.test", "/api").await;
    assert_eq!(
        (status, &body[..4]),
        (200, "api\n"),
        "still the same connection"
    );
}

#[tokio::test]
async fn unknown_names_get_the_503_page() {
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    // The SNI routes to an HTTP backend; the request names another host.
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (status, head, body) = get(&mut tls, "nothing.http.test", "/").await;
    assert_eq!(status, 503);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("Application is not available"), "{body}");
}

#[tokio::test]
async fn a_map_edit_applies_to_the_next_request_of_an_open_connection() {
    let s = setup().await;
    let (router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (_, _, body) = get(&mut tls, "www.http.test", "/api/v1").await;
    assert!(body.starts_with("api\n"), "{body}");
    s.dir.write(
        "maps/os_edge_reencrypt_be.map",
        &edge_map("be_edge_http:t:web"),
    );
    let loaded = switchyard::config::load_after(&s.config, Some(&router.snapshot())).expect("load");
    router.apply(loaded.snapshot).expect("apply");
    let (_, _, body) = get(&mut tls, "www.http.test", "/api/v1").await;
    assert!(
        body.starts_with("web\n"),
        "the edit routes the next request: {body}"
    );
}

/// A re-encrypt backend in HTTP mode: TLS to a server addressed by IP,
/// verified against `verify_host`; a request without a host is refused.
#[tokio::test]
async fn reencrypt_http_and_a_request_without_host() {
    let s = setup().await;
    let inner = Pki::new();
    let secure = https_server("secure", inner.server_config(&["secure.svc"])).await;
    s.dir.write("certs/inner-ca.pem", &inner.ca_pem);
    let map = format!(
        "^secure\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ be_secure:t:secure\n{}",
        edge_map("be_edge_http:t:api")
    );
    s.dir.write("maps/os_edge_reencrypt_be.map", &map);
    let mut text = std::fs::read_to_string(&s.config).expect("read");
    text.push_str(&format!(
        "\n[[backend]]\nname = \"be_secure:t:secure\"\ntermination = \"reencrypt\"\nmode = \"http\"\n\
         verify_host = \"secure.svc\"\nca_file = \"certs/inner-ca.pem\"\n\
         servers = [{{ name = \"s1\", address = \"{secure}\" }}]\n"
    ));
    std::fs::write(&s.config, text).expect("write");
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "secure.http.test", &s.front).await;
    let (status, _, body) = get(&mut tls, "secure.http.test", "/x").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("secure\nGET /x HTTP/1.1\r\n"), "{body}");
    tls.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    let (head, _) = read_message(&mut tls).await.expect("answer");
    assert!(
        head.starts_with("HTTP/1.1 400") || head.starts_with("HTTP/1.0 400"),
        "{head}"
    );
}

/// Server connections are kept alive and reused: many requests, from one
/// client connection or several, over one server connection.
#[tokio::test]
async fn server_connections_are_pooled() {
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    for _ in 0..3 {
        let mut tls = connect(addr, "www.http.test", &s.front).await;
        for _ in 0..4 {
            let (status, _, body) = get(&mut tls, "www.http.test", "/").await;
            assert_eq!((status, &body[..4]), (200, "web\n"));
        }
    }
    // One, or a few when a request arrives before the previous response's
    // connection is back in the pool; without a pool it would be 12.
    let opened = s.web_connections.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&opened),
        "12 requests over {opened} server connections"
    );
}

/// Sticky cookies: the first answer sets a cookie naming the server; with
/// it every request goes there (roundrobin would alternate), the server
/// never sees it, another router with the same configuration honours it,
/// and when its server is gone the request is redispatched and the cookie
/// replaced.
#[tokio::test]
async fn sticky_cookies_pin_a_server_on_every_replica() {
    let front = Pki::new();
    let (a, _) = http_server("web-a").await;
    let (b, _) = http_server("web-b").await;
    let dir = ConfigDir::new();
    dir.write("certs/default.pem", &front.pem(&["*.http.test"]));
    dir.write("maps/os_sni_passthrough.map", "# none\n");
    dir.write("maps/os_tcp_be.map", "# none\n");
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        "^www\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ be_edge_http:t:web\n",
    );
    let backend = |servers: &str| {
        format!(
            "[tls]\ndefault_certificate = \"certs/default.pem\"\n\n\
             [[backend]]\nname = \"be_edge_http:t:web\"\ntermination = \"edge\"\nmode = \"http\"\n\
             balance = \"roundrobin\"\nservers = [{servers}]\n"
        )
    };
    let both = format!(
        "{{ name = \"web-a\", address = \"{a}\" }}, {{ name = \"web-b\", address = \"{b}\" }}"
    );
    let config = dir.main("", &backend(&both));
    let text = std::fs::read_to_string(&config).expect("read").replace(
        "tcp_be = \"maps/os_tcp_be.map\"",
        "tcp_be = \"maps/os_tcp_be.map\"\nedge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"",
    );
    std::fs::write(&config, text).expect("write");
    let (router, addr) = start(&config);
    let mut tls = connect(addr, "www.http.test", &front).await;

    // Without a cookie, roundrobin alternates, and each answer sets one.
    let (_, head1, body1) = get(&mut tls, "www.http.test", "/").await;
    let (_, _, body2) = get(&mut tls, "www.http.test", "/").await;
    assert_ne!(body1.lines().next(), body2.lines().next(), "roundrobin");
    let set_cookie = head1
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie is set")
        .to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("Secure"),
        "{set_cookie}"
    );
    let pair = set_cookie
        .split_once(':')
        .map(|(_, v)| v.trim())
        .and_then(|v| v.split(';').next())
        .expect("name=value")
        .to_string();
    let first = body1.lines().next().expect("server").to_string();

    // With it, always the same server; the cookie is not passed on.
    for _ in 0..4 {
        let request =
            format!("GET / HTTP/1.1\r\nHost: www.http.test\r\nCookie: other=1; {pair}\r\n\r\n");
        tls.write_all(request.as_bytes()).await.expect("send");
        let (head, body) = read_message(&mut tls).await.expect("answer");
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(body.lines().next(), Some(first.as_str()), "sticky");
        assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
        let forwarded = body.to_ascii_lowercase();
        assert!(forwarded.contains("cookie: other=1\r\n"), "{body}");
        assert!(!forwarded.contains(&pair.to_ascii_lowercase()), "{body}");
    }

    // Another router with the same configuration sends it to the same server.
    let (_other, other_addr) = start(&config);
    let mut tls2 = connect(other_addr, "www.http.test", &front).await;
    let request = format!("GET / HTTP/1.1\r\nHost: www.http.test\r\nCookie: {pair}\r\n\r\n");
    tls2.write_all(request.as_bytes()).await.expect("send");
    let (_, body) = read_message(&mut tls2).await.expect("answer");
    assert_eq!(
        String::from_utf8_lossy(&body).lines().next(),
        Some(first.as_str()),
        "replicas agree"
    );

    // Its server removed: redispatched, and the cookie replaced.
    let remaining = if first == "web-a" {
        format!("{{ name = \"web-b\", address = \"{b}\" }}")
    } else {
        format!("{{ name = \"web-a\", address = \"{a}\" }}")
    };
    let text = std::fs::read_to_string(&config)
        .expect("read")
        .replace(&both, &remaining);
    std::fs::write(&config, text).expect("write");
    let loaded = switchyard::config::load_after(&config, Some(&router.snapshot())).expect("load");
    router.apply(loaded.snapshot).expect("apply");
    tls.write_all(request.as_bytes()).await.expect("send");
    let (head, body) = read_message(&mut tls).await.expect("answer");
    assert_ne!(
        String::from_utf8_lossy(&body).lines().next(),
        Some(first.as_str())
    );
    assert!(head.to_ascii_lowercase().contains("set-cookie"), "{head}");
}

/// An h2 client: requests on one connection (streams) routed by path, the
/// h2 `:authority` as the host, and `X-Forwarded-Proto-Version: h2`.
#[tokio::test]
async fn h2_clients_are_routed_per_request() {
    use http_body_util::{BodyExt, Empty};
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    let mut sender = h2_connect(addr, "www.http.test", &s.front).await;
    for (path, server) in [("/api/x", "api"), ("/", "web"), ("/api", "api")] {
        let request = hyper::Request::get(format!("https://www.http.test{path}"))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = String::from_utf8_lossy(&body).to_ascii_lowercase();
        assert!(
            body.starts_with(&format!("{server}\nget {path} http/1.1\r\n")),
            "{body}"
        );
        assert!(body.contains("x-forwarded-proto-version: h2\r\n"), "{body}");
        assert!(body.contains("host: www.http.test\r\n"), "{body}");
    }
}

/// A request for a host the connection's certificate does not cover, and
/// another certificate serves, gets 421 (h1 and h2: the coalesced
/// connection case), and an h1 connection stays open after it. A host the
/// presented certificate covers is served; so is every host on a
/// connection without a usable SNI (none, or an address), routed by Host;
/// a 503 keeps the connection too.
#[tokio::test]
async fn requests_get_421_only_where_the_certificate_does_not_cover_the_host() {
    use http_body_util::Empty;
    let s = setup().await;
    s.dir
        .write("certs/other.pem", &s.front.pem(&["other.http.test"]));
    s.dir
        .write("certs/www.pem", &s.front.pem(&["www.http.test"]));
    s.dir.write(
        "maps/cert_config.map",
        "certs/other.pem other.http.test\ncerts/www.pem www.http.test\n",
    );
    let text = std::fs::read_to_string(&s.config).expect("read").replace(
        "edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"",
        "edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"\ncert_config = \"maps/cert_config.map\"",
    );
    std::fs::write(&s.config, text).expect("write");
    let (_router, addr) = start(&s.config);
    // Made for www (its own certificate): other.http.test is not covered.
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (status, head, _) = get(&mut tls, "other.http.test", "/").await;
    assert_eq!(status, 421, "other.http.test has its own certificate");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let (status, _, _) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!(status, 200, "the same connection after the 421");
    let (status, head, _) = get(&mut tls, "unknown.http.test", "/").await;
    assert_eq!(status, 503, "no certificate of its own: not misdirected");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let (status, _, _) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!(status, 200, "the same connection after the 503");

    // Made for a name the wildcard default certificate serves: it covers
    // www.http.test, which is served though it has a certificate of its own.
    let mut tls = connect(addr, "z.http.test", &s.front).await;
    let (status, _, body) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!((status, body.lines().next()), (200, Some("web")));

    // No SNI: routed by Host, whatever certificate each host has.
    let mut config = (*s.front.client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_sni = false;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("z.http.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake without SNI");
    let (status, _, body) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!((status, body.lines().next()), (200, Some("web")));
    let (status, _, _) = get(&mut tls, "other.http.test", "/").await;
    assert_eq!(status, 503, "routed by Host (no route), not 421");

    // An address as SNI (wrk, monitors): openssl sends it; routed by Host.
    if std::path::Path::new("/usr/bin/openssl").exists() {
        let out = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args(["s_client", "-quiet", "-connect", &addr.to_string()])
                .args(["-servername", "127.0.0.1", "-alpn", "http/1.1"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("openssl");
            let mut stdin = child.stdin.take().expect("stdin");
            let request = "GET / HTTP/1.1\r\nHost: www.http.test\r\nConnection: close\r\n\r\n";
            stdin.write_all(request.as_bytes()).expect("request");
            let waited = std::time::Instant::now();
            let output = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break child.wait_with_output().expect("output");
                }
                if waited.elapsed() > WAIT {
                    let _ = child.kill();
                    break child.wait_with_output().expect("output");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            drop(stdin);
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .await
        .expect("s_client");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("\r\n\r\nweb\n"), "{out}");
    } else {
        panic!("openssl is needed for the address-as-SNI case (.ci/run installs it)");
    }

    // Coalesced h2: the connection for www.http.test, a request for
    // other.http.test.
    let mut sender = h2_connect(addr, "www.http.test", &s.front).await;
    let request = hyper::Request::get("https://other.http.test/")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 421);
}

/// A WebSocket upgrade becomes a tunnel after the server's 101; an h2c
/// upgrade is not passed on.
#[tokio::test]
async fn websocket_upgrades_become_tunnels_and_h2c_is_stripped() {
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let request = "GET /h2c HTTP/1.1\r\nHost: www.http.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n";
    tls.write_all(request.as_bytes()).await.expect("send");
    let (head, body) = read_message(&mut tls).await.expect("answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(
        !seen.contains("upgrade") && !seen.contains("http2-settings"),
        "{seen}"
    );

    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let request = "GET /ws HTTP/1.1\r\nHost: www.http.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    tls.write_all(request.as_bytes()).await.expect("send");
    let (head, _) = read_message(&mut tls).await.expect("101");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for frame in [&b"first frame"[..], b"second"] {
        tls.write_all(frame).await.expect("frame");
        echoed(&mut tls, frame).await;
    }
}

/// Reads `frame` back through a tunnel whose server echoes.
async fn echoed<S: AsyncRead + Unpin>(s: &mut S, frame: &[u8]) {
    let mut back = vec![0u8; frame.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("echoed through the tunnel");
    assert_eq!(back, frame);
}

/// An HTTP/1.1 connection idle for a second rests (its HTTP session ends
/// and gives back its buffers; the stream stays open): the next request on
/// it is served, whether it comes whole, in pieces, pipelined, or asks for
/// a WebSocket upgrade with its first frame right behind it.
#[tokio::test]
async fn resting_connections_serve_their_next_requests() {
    use std::time::Duration;
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let rest = || tokio::time::sleep(Duration::from_millis(1500));
    let (status, _, body) = get(&mut tls, "www.http.test", "/first").await;
    assert_eq!((status, &body[..4]), (200, "web\n"));
    rest().await;
    let (status, _, body) = get(&mut tls, "www.http.test", "/api/after-rest").await;
    assert_eq!(status, 200, "served after resting");
    assert!(
        body.starts_with("api\nGET /api/after-rest HTTP/1.1\r\n"),
        "{body}"
    );

    // A head in two pieces: the first wakes the connection.
    rest().await;
    tls.write_all(b"GET /pieces HTTP/1.1\r\nHo")
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    tls.write_all(b"st: www.http.test\r\n\r\n")
        .await
        .expect("send");
    let (head, body) = read_message(&mut tls).await.expect("answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("web\nGET /pieces HTTP/1.1\r\n"), "{body}");

    // Two requests in one write: both answered, in order.
    rest().await;
    let two = "GET /one HTTP/1.1\r\nHost: www.http.test\r\n\r\nGET /api/two HTTP/1.1\r\nHost: www.http.test\r\n\r\n";
    tls.write_all(two.as_bytes()).await.expect("send");
    for (name, path) in [("web", "/one"), ("api", "/api/two")] {
        let (head, body) = read_message(&mut tls).await.expect("answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.starts_with(&format!("{name}\nGET {path} HTTP/1.1\r\n")),
            "{body}"
        );
    }

    // An upgrade with its first frame in the same write: the frame is
    // relayed once the tunnel stands.
    rest().await;
    let upgrade = "GET /ws HTTP/1.1\r\nHost: www.http.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly frame";
    tls.write_all(upgrade.as_bytes()).await.expect("send");
    let (head, _) = read_message(&mut tls).await.expect("101");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echoed(&mut tls, b"early frame").await;
    tls.write_all(b"later").await.expect("frame");
    echoed(&mut tls, b"later").await;
}

/// A response the router ends the connection after (`Connection: close`)
/// reaches a client that reads slowly whole: what the session had still
/// to write when the response ended is sent before the close.
#[tokio::test]
async fn a_closing_response_reaches_a_slow_reader_whole() {
    const SIZE: usize = 8 << 20;
    let big = serve_each(|mut tcp| async move {
        if read_head(&mut tcp).await.is_none() {
            return;
        }
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n");
        if tcp.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..SIZE / chunk.len() {
            if tcp.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let s = setup_with(&format!(
        "\n[[backend]]\nname = \"be_edge_http:t:big\"\ntermination = \"edge\"\nmode = \"http\"\n\
         servers = [{{ name = \"big-1\", address = \"{big}\" }}]\n"
    ))
    .await;
    s.dir.write(
        "maps/os_edge_reencrypt_be.map",
        &format!("{} be_edge_http:t:big\n", route_regex("big.http.test")),
    );
    let (_router, addr) = start(&s.config);
    // A small receive buffer and slow reads: the router's writes are
    // always waiting on the client, as on a slow link.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("rcvbuf");
    let tcp = socket.connect(addr).await.expect("connect");
    let name = ServerName::try_from("big.http.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(s.front.client_config())
        .connect(name, tcp)
        .await
        .expect("handshake");
    let request = "GET /big HTTP/1.1\r\nHost: big.http.test\r\nConnection: close\r\n\r\n";
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut all = Vec::with_capacity(SIZE + 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < 3 * WAIT, "read in time");
        let n = tokio::time::timeout(WAIT, tls.read(&mut chunk))
            .await
            .expect("in time")
            .expect("read to the close");
        if n == 0 {
            break;
        }
        all.extend_from_slice(&chunk[..n]);
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    assert!(all.starts_with(b"HTTP/1.1 200"), "status");
    assert_eq!(
        all.len() - head_end,
        SIZE,
        "the whole body before the close"
    );
}

/// Resting connections are counted on the stats port (a router process of
/// its own: no other test's connections count).
#[tokio::test]
async fn resting_connections_are_counted() {
    let s = setup().await;
    let (listen, stats) = (closed_port(), closed_port());
    let text = std::fs::read_to_string(&s.config).expect("read").replacen(
        "bind = \"127.0.0.1:0\"",
        &format!("bind = \"{listen}\""),
        1,
    ) + &format!("\n[stats]\nbind = \"{stats}\"\n");
    std::fs::write(&s.config, text).expect("write");
    let _process = Process::start(&["run", "--config", s.config.to_str().expect("utf-8")]);
    let resting = || metric(stats, "switchyard_http_connections_resting");
    let mut tls = connect(listen, "www.http.test", &s.front).await;
    let (status, _, _) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!(status, 200);
    assert_eq!(resting().await, 0.0, "just served: not resting");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(resting().await, 1.0, "idle for a second: resting");
    let (status, _, _) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!(status, 200);
    assert_eq!(resting().await, 0.0, "woken by its next request");
    drop(tls);
}

/// The port-80 listener: `os_route_http_redirect.map` sends https routes
/// to https (host without its port, `https_port`, path and query kept);
/// `os_http_be.map` serves plain routes (`termination = "none"`) and
/// edge routes whose insecure policy is Allow; anything else gets 503.
#[tokio::test]
async fn the_plain_http_listener_redirects_and_serves() {
    let s = setup().await;
    let (plain, _) = http_server("plain").await;
    s.dir.write(
        "maps/os_http_be.map",
        "^plain\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ be_http:t:plain\n\
         ^www\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ be_edge_http:t:web\n",
    );
    s.dir.write(
        "maps/os_route_http_redirect.map",
        "^secure\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ 1\n^plain\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ 0\n",
    );
    let mut text = std::fs::read_to_string(&s.config).expect("read").replace(
        "edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"",
        "edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"\nhttp_be = \"maps/os_http_be.map\"\nhttp_redirect = \"maps/os_route_http_redirect.map\"",
    );
    text.push_str(&format!(
        "\n[[listener]]\nname = \"public_http\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nhttps_port = 8443\n\n\
         [[backend]]\nname = \"be_http:t:plain\"\ntermination = \"none\"\n\
         servers = [{{ name = \"plain-1\", address = \"{plain}\" }}]\n"
    ));
    std::fs::write(&s.config, text).expect("write");
    let (router, _) = start(&s.config);
    let addr = router.local_addr("public_http").expect("http listener");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");

    let (status, head, _) = get(&mut tcp, "secure.http.test:80", "/a/b?c=1").await;
    assert_eq!(status, 302);
    assert!(
        head.to_ascii_lowercase()
            .contains("location: https://secure.http.test:8443/a/b?c=1\r\n"),
        "{head}"
    );
    let (status, _, body) = get(&mut tcp, "plain.http.test", "/x").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("plain\nGET /x HTTP/1.1\r\n"), "{body}");
    let lower = body.to_ascii_lowercase();
    assert!(lower.contains("x-forwarded-proto: http\r\n"), "{body}");
    let (status, _, body) = get(&mut tcp, "www.http.test", "/").await;
    assert_eq!(
        (status, &body[..4]),
        (200, "web\n"),
        "an Allow route on port 80"
    );
    let (status, _, _) = get(&mut tcp, "nothing.http.test", "/").await;
    assert_eq!(status, 503);
}

/// A name that no line routes at the handshake is still terminated (with
/// the default certificate) and served in HTTP mode: a browser gets the
/// 503 page, not a reset, and a request for a routed host on that
/// connection is routed. A hello without SNI is treated the same.
#[tokio::test]
async fn unrouted_names_and_hellos_without_sni_get_http_mode() {
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "nothing.http.test", &s.front).await;
    let (status, _, body) = get(&mut tls, "nothing.http.test", "/").await;
    assert_eq!(status, 503);
    assert!(body.contains("Application is not available"), "{body}");
    let mut tls = connect(addr, "nothing.http.test", &s.front).await;
    let (status, _, body) = get(&mut tls, "www.http.test", "/api").await;
    assert_eq!((status, &body[..4]), (200, "api\n"), "routed per request");

    // No SNI at all: rustls sends none for an IP address.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("ip");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake with the default certificate");
    let (status, _, _) = get(&mut tls, "nothing.http.test", "/").await;
    assert_eq!(status, 503);
}

/// `switchyard route NAME --path P` explains the request decision of HTTP
/// mode: the map line, the backend, the server and its sticky cookie.
#[tokio::test]
async fn route_command_explains_requests() {
    let s = setup().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["route", "--config"])
            .arg(&s.config)
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["www.http.test", "--path", "/api/users"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("mode:        http"), "{out}");
    assert!(
        out.contains("request:     www.http.test/api/users"),
        "{out}"
    );
    assert!(out.contains("os_edge_reencrypt_be.map:1  ^www"), "{out}");
    assert!(out.contains("backend:     be_edge_http:t:api"), "{out}");
    assert!(out.contains("cookie:      "), "{out}");
    let (_, out) = run(&["www.http.test", "--path", "/"]);
    assert!(out.contains("backend:     be_edge_http:t:web"), "{out}");
    let (code, out) = run(&["nothing.http.test", "--path", "/"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("503"), "{out}");
}

/// Only a host name (or bracketed IPv6 address) with an optional port may
/// reach the route key and the forwarded headers; the server sees the host
/// the request was routed by; CONNECT is not proxied.
#[tokio::test]
async fn bad_hosts_are_refused_and_the_routed_host_is_sent() {
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    for head in [
        "GET /x HTTP/1.1\r\nHost: www.http.test/api\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: www.http.test\r\nHost: other.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: www.http.test:80, for=1.2.3.4\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: www.http.test:x\r\n\r\n",
    ] {
        let mut tls = connect(addr, "www.http.test", &s.front).await;
        tls.write_all(head.as_bytes()).await.expect("send");
        let (answer, _) = read_message(&mut tls).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
    }
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    tls.write_all(b"CONNECT www.http.test:443 HTTP/1.1\r\nHost: www.http.test:443\r\n\r\n")
        .await
        .expect("send");
    let (answer, _) = read_message(&mut tls).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    // Absolute-form: routed by its authority, and that is the Host sent on.
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    tls.write_all(b"GET https://www.http.test/api/v1 HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n")
        .await
        .expect("send");
    let (answer, body) = read_message(&mut tls).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(body.starts_with("api\nget /api/v1 http/1.1\r\n"), "{body}");
    assert!(body.contains("host: www.http.test\r\n"), "{body}");
    assert!(!body.contains("elsewhere"), "{body}");
}

/// Forwarded-header policies per backend, and HSTS on TLS routes.
#[tokio::test]
async fn forwarded_policies_and_hsts() {
    let s = setup().await;
    let text = std::fs::read_to_string(&s.config).expect("read")
        .replace(
            "name = \"be_edge_http:t:api\"\ntermination = \"edge\"\nmode = \"http\"\n",
            "name = \"be_edge_http:t:api\"\ntermination = \"edge\"\nmode = \"http\"\nforwarded = \"replace\"\nhsts = \"max-age=600\"\n",
        )
        .replace(
            "name = \"be_edge_http:t:web\"\ntermination = \"edge\"\nmode = \"http\"\n",
            "name = \"be_edge_http:t:web\"\ntermination = \"edge\"\nmode = \"http\"\nforwarded = \"if-none\"\n",
        );
    std::fs::write(&s.config, text).expect("write");
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: www.http.test\r\nX-Forwarded-For: 192.0.2.9\r\nX-Forwarded-Proto: gopher\r\n\r\n")
    };
    tls.write_all(request("/api").as_bytes())
        .await
        .expect("send");
    let (head, body) = read_message(&mut tls).await.expect("answer");
    let body = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(
        body.contains("x-forwarded-for: 127.0.0.1\r\n"),
        "replace: {body}"
    );
    assert!(
        body.contains("x-forwarded-proto: https\r\n"),
        "replace: {body}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=600\r\n"),
        "{head}"
    );
    tls.write_all(request("/").as_bytes()).await.expect("send");
    let (head, body) = read_message(&mut tls).await.expect("answer");
    let body = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(
        body.contains("x-forwarded-for: 192.0.2.9\r\n"),
        "if-none: {body}"
    );
    assert!(
        body.contains("x-forwarded-proto: gopher\r\n"),
        "if-none: {body}"
    );
    assert!(
        body.contains("x-forwarded-host: www.http.test\r\n"),
        "if-none adds the missing: {body}"
    );
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{head}"
    );
}

/// Responses are counted per backend and server by class, with the
/// OpenShift labels: `haproxy_backend_http_responses_total{code}`.
#[tokio::test]
async fn responses_are_counted_by_class() {
    let s = setup().await;
    let (router, addr) = start(&s.config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stats = listener.local_addr().expect("addr");
    let config = switchyard::StatsConfig {
        bind: Some(stats),
        credentials: None,
    };
    let status = Arc::new(switchyard::reload::Status::default());
    tokio::spawn(switchyard::serve_stats(
        listener,
        Arc::clone(&router),
        status,
        config,
    ));
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    for _ in 0..3 {
        let (code, _, _) = get(&mut tls, "www.http.test", "/").await;
        assert_eq!(code, 200);
    }
    let mut scrape = tokio::net::TcpStream::connect(stats).await.expect("stats");
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut text = String::new();
    scrape.read_to_string(&mut text).await.expect("metrics");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let parsed =
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parse");
    let value = |metric: &str, labels: &[(&str, &str)]| {
        parsed
            .samples
            .iter()
            .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => -1.0,
            })
    };
    let web = [("route", "web"), ("namespace", "t"), ("code", "2xx")];
    assert_eq!(
        value("haproxy_backend_http_responses_total", &web),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        value(
            "haproxy_server_http_responses_total",
            &[("route", "web"), ("code", "2xx")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            "haproxy_backend_http_responses_total",
            &[("route", "web"), ("code", "5xx")]
        ),
        Some(0.0)
    );
    for family in [
        "haproxy_backend_http_average_response_latency_milliseconds",
        "haproxy_server_http_average_response_latency_milliseconds",
    ] {
        let ms = value(family, &[("route", "web")]);
        assert!(
            ms.is_some_and(|ms| (0.0..1000.0).contains(&ms)),
            "{family}: {ms:?}"
        );
    }
}

/// On shutdown, HTTP connections finish and close instead of holding the
/// drain until its deadline: an idle keep-alive connection is closed and
/// the router reports none left.
#[tokio::test]
async fn draining_closes_idle_keep_alive_connections() {
    let s = setup().await;
    let (router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (status, _, _) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!(status, 200);
    assert_eq!(router.open_connections(), 1);
    let started = std::time::Instant::now();
    let left = router.shutdown(std::time::Duration::from_secs(10)).await;
    assert_eq!(left, 0, "no connection left at the end of the drain");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the keep-alive connection was closed, not waited for: {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the client sees the close");
}

/// On a listener that asks for client certificates, servers get the
/// `X-SSL-*` headers describing the one presented; headers of that name
/// sent by a client never reach a server.
#[tokio::test]
async fn client_certificates_are_described_to_servers() {
    let s = setup().await;
    s.dir.write("certs/front-ca.pem", &s.front.ca_pem);
    let text = std::fs::read_to_string(&s.config).expect("read").replacen(
        "bind = \"127.0.0.1:0\"\n",
        "bind = \"127.0.0.1:0\"\nclient_auth = \"optional\"\nclient_ca = \"certs/front-ca.pem\"\n",
        1,
    );
    std::fs::write(&s.config, text).expect("write");
    let (_router, addr) = start(&s.config);
    let forged = "GET / HTTP/1.1\r\nHost: www.http.test\r\nX-SSL-Client-CN: \"admin\"\r\nX-SSL-Client-Verify: 0\r\n\r\n";

    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("www.http.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(s.front.client_with_certificate(0x77))
        .connect(name, tcp)
        .await
        .expect("handshake with a client certificate");
    tls.write_all(forged.as_bytes()).await.expect("send");
    let (_, body) = read_message(&mut tls).await.expect("answer");
    let body = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(body.contains("x-ssl-client-verify: 0\r\n"), "{body}");
    assert!(
        !body.contains("\"admin\""),
        "the client's own claim is gone: {body}"
    );
    let sha1 = body
        .lines()
        .find_map(|l| l.strip_prefix("x-ssl-client-sha1: "))
        .expect("sha1 header");
    assert_eq!(sha1.trim().len(), 42, "quoted 40 hex digits: {sha1}");
    assert!(body.contains("x-ssl-client-der: \"miib"), "{body}");
    assert!(body.contains("x-ssl-issuer: \""), "{body}");

    // Without a certificate: nothing about one, forged or not.
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    tls.write_all(forged.as_bytes()).await.expect("send");
    let (_, body) = read_message(&mut tls).await.expect("answer");
    let body = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(!body.contains("x-ssl"), "{body}");
}

/// `setup()` with `text` appended to the configuration.
async fn setup_with(text: &str) -> Setup {
    let s = setup().await;
    let mut config = std::fs::read_to_string(&s.config).expect("read");
    config.push_str(text);
    std::fs::write(&s.config, config).expect("write");
    s
}

/// Reads until the router closes the connection; fails after `limit`.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: std::time::Duration) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(limit, s.read_to_end(&mut rest)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

/// `http_keep_alive_timeout` bounds an idle connection, and is not cut
/// short by the shorter `http_request_timeout`, which bounds a request
/// head from its first byte.
#[tokio::test]
async fn idle_connections_and_slow_heads_are_closed_at_their_timeouts() {
    let s = setup_with(
        "\n[defaults]\nhttp_request_timeout = \"500ms\"\nhttp_keep_alive_timeout = \"1500ms\"\n",
    )
    .await;
    let (_router, addr) = start(&s.config);
    // Idle for longer than the head timeout: still served.
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (status, _, _) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let (status, _, _) = get(&mut tls, "www.http.test", "/").await;
    assert_eq!(status, 200, "idle 0.9 s < keep-alive 1.5 s");
    // Then idle past the keep-alive timeout: closed by the router.
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut tls, WAIT).await,
        "idle connection closed"
    );
    let idle = started.elapsed();
    assert!(
        idle >= std::time::Duration::from_millis(1300),
        "closed after {idle:?}"
    );
    // Half a request head, then nothing: closed at the head timeout.
    let mut slow = connect(addr, "www.http.test", &s.front).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: www.ht")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    assert!(closed_within(&mut slow, WAIT).await, "slow head closed");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1300),
        "the head timeout (0.5 s), not keep-alive, closed it: {took:?}"
    );
}

/// An h2 connection with no stream open is closed (GOAWAY) after
/// `http_keep_alive_timeout`.
#[tokio::test]
async fn idle_h2_connections_are_closed() {
    use http_body_util::Empty;
    let s = setup_with("\n[defaults]\nhttp_keep_alive_timeout = \"500ms\"\n").await;
    let (_router, addr) = start(&s.config);
    let mut sender = h2_connect(addr, "www.http.test", &s.front).await;
    let request = hyper::Request::get("https://www.http.test/")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    drop(response);
    let closed = tokio::time::timeout(WAIT, async {
        while !sender.is_closed() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "idle h2 connection closed by the router");
}

/// A request body that stops arriving gets 408 after
/// `http_request_timeout`; one that keeps arriving, for longer than the
/// server timeout in all, is forwarded whole (the server timeout starts
/// after the body).
#[tokio::test]
async fn slow_bodies_are_bounded_and_uploads_outlast_the_server_timeout() {
    let s =
        setup_with("\n[defaults]\nhttp_request_timeout = \"700ms\"\nserver_timeout = \"600ms\"\n")
            .await;
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: www.http.test\r\nContent-Length: 8\r\n\r\n")
        .await
        .expect("head");
    for piece in [b"ab", b"cd", b"ef", b"gh"] {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        tls.write_all(piece).await.expect("piece");
    }
    let (head, body) = read_message(&mut tls).await.expect("response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("web\nPOST /upload HTTP/1.1\r\n"), "{body}");

    let mut stalled = connect(addr, "www.http.test", &s.front).await;
    stalled
        .write_all(b"POST / HTTP/1.1\r\nHost: www.http.test\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .expect("write");
    let (head, _) = read_message(&mut stalled).await.expect("response");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

/// `[http] error_page_503` is the body of 503 answers; a missing file is
/// a configuration error that names the key's line.
#[tokio::test]
async fn the_503_page_can_be_configured() {
    let s = setup_with("\n[http]\nerror_page_503 = \"pages/503.html\"\n").await;
    s.dir.write(
        "pages/503.html",
        "<html><body>down for a moment</body></html>\n",
    );
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (status, head, body) = get(&mut tls, "nothing.http.test", "/").await;
    assert_eq!(status, 503);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert_eq!(body, "<html><body>down for a moment</body></html>\n");

    std::fs::remove_file(s.dir.path().join("pages/503.html")).expect("remove");
    let problems = switchyard::config::load(&s.config).expect_err("missing page");
    let text = problems.to_string();
    let line = std::fs::read_to_string(&s.config)
        .expect("read")
        .lines()
        .position(|l| l.starts_with("error_page_503"))
        .expect("line")
        + 1;
    assert!(
        text.contains(&format!("switchyard.toml:{line}")) && text.contains("error_page_503"),
        "{text}"
    );
}

/// h2 clients may send one `cookie` field per pair: the server gets them
/// joined in one line.
#[tokio::test]
async fn h2_cookie_fields_reach_the_server_joined() {
    use http_body_util::{BodyExt, Empty};
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    let mut sender = h2_connect(addr, "www.http.test", &s.front).await;
    let request = hyper::Request::get("https://www.http.test/")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(body.contains("\r\ncookie: a=1; b=2\r\n"), "{body}");
    assert_eq!(body.matches("\r\ncookie:").count(), 1, "{body}");
}

/// A server that records every byte it receives and answers each request
/// head with 200 (reading a chunked body through to its last chunk).
async fn recording_server() -> (SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(Ok(n)) = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    record.lock().expect("lock").extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    let complete = match text.find("\r\n\r\n") {
                        Some(_) if text.contains("transfer-encoding: chunked") => {
                            text.ends_with("\r\n0\r\n\r\n")
                        }
                        Some(_) => true,
                        None => false,
                    };
                    if complete {
                        got.clear();
                        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// The usual setup with www.http.test routed to a recording server: the
/// setup, what the server received, the router and its address.
async fn raw_setup() -> (
    Setup,
    Arc<std::sync::Mutex<Vec<u8>>>,
    Arc<switchyard::Router>,
    SocketAddr,
) {
    let (server, seen) = recording_server().await;
    let s = setup().await;
    s.dir.write(
        "maps/os_edge_reencrypt_be.map",
        "^www\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ be_edge_http:t:raw\n",
    );
    let mut config = std::fs::read_to_string(&s.config).expect("read");
    config.push_str(&format!(
        "\n[[backend]]\nname = \"be_edge_http:t:raw\"\ntermination = \"edge\"\n\
         servers = [{{ name = \"raw-1\", address = \"{server}\" }}]\n"
    ));
    std::fs::write(&s.config, config).expect("write");
    let (router, addr) = start(&s.config);
    (s, seen, router, addr)
}

/// Requests that could be read two ways never reach a server: a head over
/// 32 KiB gets 431, two different lengths or a body encoding that does not
/// end in chunked get 400. A length beside `Transfer-Encoding: chunked` is
/// dropped, the body goes on chunked, and the client connection is closed
/// after the answer (RFC 9112 §6.1), so no second request can hide in it.
#[tokio::test]
async fn ambiguous_requests_are_refused_or_made_unambiguous() {
    let (s, seen, _router, addr) = raw_setup().await;

    let big = "a".repeat(40 * 1024);
    let refused = [
        (format!("GET / HTTP/1.1\r\nHost: www.http.test\r\nX-Big: {big}\r\n\r\n"), "431"),
        (
            "POST / HTTP/1.1\r\nHost: www.http.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_string(),
            "400",
        ),
        (
            "POST / HTTP/1.1\r\nHost: www.http.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_string(),
            "400",
        ),
    ];
    for (request, status) in refused {
        let mut tls = connect(addr, "www.http.test", &s.front).await;
        tls.write_all(request.as_bytes()).await.expect("send");
        let (head, _) = read_message(&mut tls).await.expect("response");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {head}"
        );
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached the server"
    );

    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let smuggle = "POST / HTTP/1.1\r\nHost: www.http.test\r\nContent-Length: 4\r\n\
                   Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
                   GET /hidden HTTP/1.1\r\nHost: www.http.test\r\n\r\n";
    tls.write_all(smuggle.as_bytes()).await.expect("send");
    let (head, body) = read_message(&mut tls).await.expect("response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok\n");
    assert!(
        closed_within(&mut tls, WAIT).await,
        "connection closed after the answer"
    );
    let seen = String::from_utf8_lossy(&seen.lock().expect("lock")).to_ascii_lowercase();
    assert!(seen.contains("transfer-encoding: chunked\r\n"), "{seen}");
    assert!(seen.contains("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{seen}");
    assert!(!seen.contains("content-length"), "{seen}");
    assert!(!seen.contains("/hidden"), "{seen}");
}

/// Request targets at the edges of RFC 9112's grammar: a bare name
/// (`GET x`), `*` outside OPTIONS and a `#fragment` get 400 and reach no
/// server; an empty
/// port in `Host` is no port; an absolute URL with a query and no path
/// reaches the server as `/?q`.
#[tokio::test]
async fn request_targets_at_the_edges_of_the_grammar() {
    let (s, seen, _router, addr) = raw_setup().await;
    for request in [
        "GET x HTTP/1.1\r\nHost: www.http.test\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: www.http.test\r\n\r\n",
        "GET /page#top HTTP/1.1\r\nHost: www.http.test\r\n\r\n",
    ] {
        let mut tls = connect(addr, "www.http.test", &s.front).await;
        tls.write_all(request.as_bytes()).await.expect("send");
        let (head, _) = read_message(&mut tls).await.expect("response");
        assert!(head.starts_with("HTTP/1.1 400"), "{request:?}: {head}");
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached the server"
    );

    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (status, _, _) = get(&mut tls, "www.http.test:", "/empty-port").await;
    assert_eq!(status, 200, "an empty port is no port");
    let absolute = "GET https://www.http.test?q=1 HTTP/1.1\r\nHost: www.http.test\r\n\r\n";
    tls.write_all(absolute.as_bytes()).await.expect("send");
    let (head, _) = read_message(&mut tls).await.expect("response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A fragment on a later request of a kept-alive connection too.
    let fragment = "GET /later#part HTTP/1.1\r\nHost: www.http.test\r\n\r\n";
    tls.write_all(fragment.as_bytes()).await.expect("send");
    let (head, _) = read_message(&mut tls).await.expect("response");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // A fragment however the request line is split: over two writes, and
    // past the bytes that wake a resting connection.
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    tls.write_all(b"GET /split").await.expect("send");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tls.write_all(b"#part HTTP/1.1\r\nHost: www.http.test\r\n\r\n")
        .await
        .expect("send");
    let (head, _) = read_message(&mut tls).await.expect("response");
    assert!(head.starts_with("HTTP/1.1 400"), "split line: {head}");
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    let (status, _, _) = get(&mut tls, "www.http.test", "/before-rest").await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let long = format!(
        "GET /{}#part HTTP/1.1\r\nHost: www.http.test\r\n\r\n",
        "a".repeat(100)
    );
    tls.write_all(long.as_bytes()).await.expect("send");
    let (head, _) = read_message(&mut tls).await.expect("response");
    assert!(head.starts_with("HTTP/1.1 400"), "after a rest: {head}");
    let seen = String::from_utf8_lossy(&seen.lock().expect("lock")).to_ascii_lowercase();
    assert!(seen.contains("get /empty-port http/1.1\r\n"), "{seen}");
    assert!(!seen.contains("host: www.http.test:\r\n"), "{seen}");
    assert!(
        seen.matches("\r\nhost: www.http.test\r\n").count() == 3,
        "{seen}"
    );
    assert!(seen.contains("get /?q=1 http/1.1\r\n"), "{seen}");
    assert!(
        !seen.contains("/later") && !seen.contains("/page"),
        "{seen}"
    );
    assert!(!seen.contains("/split") && !seen.contains("/aaa"), "{seen}");
}

/// A TLS server that speaks h2 (ALPN) and answers each request with the
/// version, method, target and headers it received; counts connections.
async fn h2_server(config: Arc<rustls::ServerConfig>) -> (SocketAddr, Arc<AtomicUsize>) {
    use http_body_util::{BodyExt, Full};
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut text =
                            format!("{:?} {} {}\n", req.version(), req.method(), req.uri());
                        for (name, value) in req.headers() {
                            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                        }
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from(text),
                        )))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
            });
        }
    });
    (addr, accepted)
}

/// A re-encrypt server that chooses h2 by ALPN is spoken to in h2: with
/// `:scheme https` and the routed host as `:authority`, request bodies
/// included, every request of every client over one shared connection.
#[tokio::test]
async fn reencrypt_servers_that_choose_h2_get_h2() {
    let s = setup().await;
    let inner = Pki::new();
    let (secure, connections) = h2_server(inner.server_config(&["secure.svc"])).await;
    s.dir.write("certs/inner-ca.pem", &inner.ca_pem);
    let map = format!(
        "^secure\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ be_secure:t:secure\n{}",
        edge_map("be_edge_http:t:api")
    );
    s.dir.write("maps/os_edge_reencrypt_be.map", &map);
    let mut text = std::fs::read_to_string(&s.config).expect("read");
    text.push_str(&format!(
        "\n[[backend]]\nname = \"be_secure:t:secure\"\ntermination = \"reencrypt\"\n\
         verify_host = \"secure.svc\"\nca_file = \"certs/inner-ca.pem\"\n\
         servers = [{{ name = \"s1\", address = \"{secure}\" }}]\n"
    ));
    std::fs::write(&s.config, text).expect("write");
    let (_router, addr) = start(&s.config);
    for client in 0..2 {
        let mut tls = connect(addr, "secure.http.test", &s.front).await;
        let (status, _, body) = get(&mut tls, "secure.http.test", "/x?y=1").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.starts_with("HTTP/2.0 GET https://secure.http.test/x?y=1\n"),
            "client {client}: {body}"
        );
        assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
        tls.write_all(
            b"POST /up HTTP/1.1\r\nHost: secure.http.test\r\nTE: trailers\r\nConnection: TE\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await
        .expect("post");
        let (head, body) = read_message(&mut tls).await.expect("response");
        let body = String::from_utf8_lossy(&body);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            body.starts_with("HTTP/2.0 POST https://secure.http.test/up\n"),
            "{body}"
        );
        assert!(body.ends_with("body: hello\n"), "{body}");
        assert!(
            body.contains("\nte: trailers\n"),
            "te: trailers goes on to h2 servers: {body}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one shared h2 connection"
    );
}

/// A server that reads a request head and then neither reads the body nor
/// answers: the request gets 504 after the server timeout, although the
/// upload never finished.
#[tokio::test]
async fn a_server_that_stops_reading_an_upload_times_out() {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    let stuck = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut head = [0u8; 512];
            let _ = tcp.read(&mut head).await;
            held.push(tcp);
        }
    });
    let s = setup_with("\n[defaults]\nserver_timeout = \"700ms\"\n").await;
    s.dir.write(
        "maps/os_edge_reencrypt_be.map",
        "^www\\.http\\.test\\.?(:[0-9]+)?(/.*)?$ be_edge_http:t:stuck\n",
    );
    let mut config = std::fs::read_to_string(&s.config).expect("read");
    config.push_str(&format!(
        "\n[[backend]]\nname = \"be_edge_http:t:stuck\"\ntermination = \"edge\"\n\
         servers = [{{ name = \"stuck-1\", address = \"{stuck}\" }}]\n"
    ));
    std::fs::write(&s.config, config).expect("write");
    let (_router, addr) = start(&s.config);
    let tls = connect(addr, "www.http.test", &s.front).await;
    let (mut reader, mut writer) = tokio::io::split(tls);
    let size = 64 * 1024 * 1024;
    let upload = tokio::spawn(async move {
        let head =
            format!("POST / HTTP/1.1\r\nHost: www.http.test\r\nContent-Length: {size}\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            writer.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let started = std::time::Instant::now();
    let (head, _) = read_message(&mut reader)
        .await
        .expect("an answer before the upload ends");
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    upload.abort();
}

/// `Expect: 100-continue`: the client waits for the router's 100 before
/// sending its body, which then reaches the server whole.
#[tokio::test]
async fn expect_continue_uploads_reach_the_server() {
    let s = setup_with("\n[defaults]\nhttp_request_timeout = \"500ms\"\n").await;
    let (_router, addr) = start(&s.config);
    let mut tls = connect(addr, "www.http.test", &s.front).await;
    tls.write_all(
        b"POST /up HTTP/1.1\r\nHost: www.http.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("head");
    let mut interim = vec![0u8; 25];
    tokio::time::timeout(WAIT, tls.read_exact(&mut interim))
        .await
        .expect("in time")
        .expect("100");
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    tls.write_all(b"hello").await.expect("body");
    let (head, body) = read_message(&mut tls).await.expect("response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).starts_with("web\nPOST /up HTTP/1.1\r\n"));
}

/// A client offering only ALPN protocols the router does not speak
/// (`curl --http1.0` offers `http/1.0`) completes the handshake without
/// ALPN and is served, as HAProxy and nginx serve it, instead of being
/// refused with no_application_protocol: a raw HTTP/1.0 request, then the
/// real curl.
#[tokio::test]
async fn clients_offering_only_http_1_0_are_served_without_alpn() {
    let s = setup().await;
    let (_router, addr) = start(&s.config);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut config = (*s.front.client_config()).clone();
    config.alpn_protocols = vec![b"http/1.0".to_vec()];
    let name = ServerName::try_from("www.http.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the handshake completes");
    assert_eq!(tls.get_ref().1.alpn_protocol(), None, "no ALPN negotiated");
    tls.write_all(b"GET /old HTTP/1.0\r\nHost: www.http.test\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
        .await
        .expect("an HTTP/1.0 exchange ends with the connection")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
        "{answer}"
    );
    assert!(answer.contains("web\nGET /old"), "{answer}");

    let port = addr.port();
    let curl = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["--http1.0", "-sk", "--max-time", "10", "--resolve"])
            .arg(format!("www.http.test:{port}:127.0.0.1"))
            .arg(format!("https://www.http.test:{port}/by-curl"))
            .output()
            .expect("curl (installed by .ci/run)")
    })
    .await
    .expect("curl ran");
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success() && body.starts_with("web\nGET /by-curl"),
        "{body}"
    );
}
