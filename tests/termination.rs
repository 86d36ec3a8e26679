//! Edge and re-encrypt termination as TCP tunnels (`mode = "tcp"`; HTTP
//! mode is in tests/http.rs) through real sockets and real TLS:
//! certificates by SNI (exact, wildcard, default, strict), plaintext to
//! edge servers, verified TLS to re-encrypt servers addressed by IP whose
//! certificates carry DNS names only, ALPN end to end, client certificates,
//! and certificate replacement by a reload.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Names and files of the test configuration.
struct Setup {
    /// Signs the certificates the router presents to clients.
    front: Pki,
    /// Signs the re-encrypt servers' certificates (the backends' ca_file).
    inner: Pki,
    dir: ConfigDir,
    edge: NamedServer,
    secure: NamedServer,
    wrong: NamedServer,
}

/// A TLS server that greets with its name and the ALPN it negotiated.
async fn alpn_server(name: &'static str, pki: &Pki, names: &[&str]) -> NamedServer {
    let mut config = (*pki.server_config(names)).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (_tx, wires) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let greeting = format!("{name} alpn={}\n", alpn.unwrap_or_else(|| "-".into()));
                let _ = tls.write_all(greeting.as_bytes()).await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    NamedServer {
        addr,
        wires,
        task: None,
    }
}

async fn setup(listener_extra: &str) -> Setup {
    let front = Pki::new();
    let inner = Pki::new();
    let dir = ConfigDir::new();
    let edge = plain_named_server("plain-edge").await;
    // Addressed by IP; the certificate carries DNS names only.
    let secure = alpn_server("secure", &inner, &["secure.apps.svc", "secure"]).await;
    let wrong = alpn_server(
        "wrong",
        &inner,
        &["goldmane.calico-system.svc.example.com", "goldmane"],
    )
    .await;
    dir.write("certs/front-ca.pem", &front.ca_pem);
    dir.write("certs/inner-ca.pem", &inner.ca_pem);
    dir.write("certs/default.pem", &front.pem(&["default.test"]));
    dir.write("certs/edge.pem", &front.pem(&["edge.test"]));
    dir.write("certs/wild.pem", &front.pem(&["*.wild.test"]));
    dir.write("certs/secure.pem", &front.pem(&["secure.test"]));
    dir.write(
        "maps/cert_config.map",
        "# crt-list\ncerts/edge.pem edge.test\ncerts/wild.pem *.wild.test\ncerts/secure.pem [alpn h2,http/1.1] secure.test\n",
    );
    dir.write("maps/os_sni_passthrough.map", "# none\n");
    dir.write("maps/os_tcp_be.map", "# none\n");
    let edge_map = [
        ("edge.test", "be_edge_http:t:edge"),
        ("unlisted.test", "be_edge_http:t:edge"),
        ("a.wild.test", "be_edge_http:t:edge"),
        ("secure.test", "be_secure:t:secure"),
        ("wrong.test", "be_secure:t:wrong"),
    ]
    .iter()
    .map(|(host, backend)| format!("{} {backend}\n", route_regex(host)))
    .collect::<String>();
    dir.write("maps/os_edge_reencrypt_be.map", &edge_map);
    let extra = format!(
        "[stats]\nbind = \"{}\"\n\n\
         [tls]\ndefault_certificate = \"certs/default.pem\"\n\n\
         [[backend]]\nname = \"be_edge_http:t:edge\"\ntermination = \"edge\"\nmode = \"tcp\"\n\
         servers = [{{ name = \"e1\", address = \"{}\" }}]\n\n\
         [[backend]]\nname = \"be_secure:t:secure\"\ntermination = \"reencrypt\"\nmode = \"tcp\"\n\
         verify_host = \"secure.apps.svc\"\nca_file = \"certs/inner-ca.pem\"\n\
         servers = [{{ name = \"s1\", address = \"{}\" }}]\n\n\
         [[backend]]\nname = \"be_secure:t:wrong\"\ntermination = \"reencrypt\"\nmode = \"tcp\"\n\
         verify_host = \"goldmane.calico-system.svc.cluster.local\"\nca_file = \"certs/inner-ca.pem\"\n\
         servers = [{{ name = \"w1\", address = \"{}\" }}]\n",
        closed_port(),
        edge.addr,
        secure.addr,
        wrong.addr
    );
    let listener = format!("{listener_extra}\n");
    let main = dir.main(&listener, &extra);
    let text = std::fs::read_to_string(&main).expect("main");
    let text = text.replace(
        "tcp_be = \"maps/os_tcp_be.map\"",
        "tcp_be = \"maps/os_tcp_be.map\"\nedge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"\ncert_config = \"maps/cert_config.map\"",
    );
    std::fs::write(&main, text).expect("main");
    Setup {
        front,
        inner,
        dir,
        edge,
        secure,
        wrong,
    }
}

fn client(pki: &Pki, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Handshakes with `sni`, accepting any certificate, and returns the leaf
/// presented (None if the handshake failed).
async fn presented(addr: SocketAddr, sni: &str) -> Option<Vec<u8>> {
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from(sni.to_string()).ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    tls.get_ref()
        .1
        .peer_certificates()?
        .first()
        .map(|c| c.to_vec())
}

fn leaf_of(pem_path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut certs = CertificateDer::pem_file_iter(pem_path).expect("pem");
    certs.next().expect("leaf").expect("pem").to_vec()
}

#[tokio::test]
async fn edge_terminates_and_forwards_plaintext() {
    let mut s = setup("").await;
    let (_router, addr) = start(&s.dir.path().join("switchyard.toml"));
    let session = session(
        addr,
        "edge.test",
        s.front.client_config(),
        b"GET / plaintext",
    )
    .await
    .expect("edge");
    assert_eq!(session.server, "plain-edge");
    let wire = tokio::time::timeout(WAIT, s.edge.wires.recv())
        .await
        .expect("done")
        .expect("wire");
    assert_eq!(
        wire.received, b"GET / plaintext",
        "the edge server got the client's plaintext"
    );
    assert_eq!(
        presented(addr, "edge.test").await,
        Some(leaf_of(&s.dir.path().join("certs/edge.pem")))
    );
}

#[tokio::test]
async fn reencrypt_verifies_the_configured_name_not_the_ip() {
    let s = setup("").await;
    let (_router, addr) = start(&s.dir.path().join("switchyard.toml"));
    let mut open = Open::connect(addr, "secure.test", client(&s.front, &[]))
        .await
        .expect("re-encrypt");
    assert_eq!(open.server, "secure alpn=-");
    open.echo(b"through two TLS sessions").await.expect("echo");
    let _ = (&s.inner, &s.secure);
}

#[tokio::test]
async fn alpn_h2_is_negotiated_end_to_end() {
    let s = setup("").await;
    let (_router, addr) = start(&s.dir.path().join("switchyard.toml"));
    let config = client(&s.front, &["h2", "http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("secure.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "client negotiated h2"
    );
    let mut line = vec![0u8; "secure alpn=h2\n".len()];
    tls.read_exact(&mut line).await.expect("greeting");
    assert_eq!(
        line, b"secure alpn=h2\n",
        "the server negotiated h2 with the router"
    );
}

#[tokio::test]
async fn wildcard_and_default_certificates() {
    let s = setup("").await;
    let (_router, addr) = start(&s.dir.path().join("switchyard.toml"));
    let open = Open::connect(addr, "a.wild.test", s.front.client_config())
        .await
        .expect("wildcard");
    assert_eq!(open.server, "plain-edge");
    assert_eq!(
        presented(addr, "a.wild.test").await,
        Some(leaf_of(&s.dir.path().join("certs/wild.pem")))
    );
    let default = leaf_of(&s.dir.path().join("certs/default.pem"));
    assert_eq!(
        presented(addr, "unlisted.test").await,
        Some(default),
        "unknown SNI gets the default certificate"
    );
}

#[tokio::test]
async fn strict_sni_refuses_names_without_a_certificate() {
    let s = setup("strict_sni = true").await;
    let (_router, addr) = start(&s.dir.path().join("switchyard.toml"));
    assert_eq!(
        presented(addr, "unlisted.test").await,
        None,
        "no default certificate under strict SNI"
    );
    let open = Open::connect(addr, "edge.test", s.front.client_config())
        .await
        .expect("listed name works");
    assert_eq!(open.server, "plain-edge");
}

#[tokio::test]
async fn client_certificates_required() {
    let s = setup("client_auth = \"required\"\nclient_ca = \"certs/front-ca.pem\"").await;
    let (_router, addr) = start(&s.dir.path().join("switchyard.toml"));
    // Without a certificate: the server refuses; the client sees it on first read.
    let without = Open::connect(addr, "edge.test", s.front.client_config()).await;
    assert!(without.is_err(), "no client certificate, no session");
    // With one signed by the client CA.
    let pem = s.front.pem(&["client.test"]);
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(s.front.ca_pem.as_bytes()) {
        roots.add(ca.expect("ca")).expect("root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    let open = Open::connect(addr, "edge.test", Arc::new(config))
        .await
        .expect("with a certificate");
    assert_eq!(open.server, "plain-edge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_is_served_by_the_next_handshake() {
    let s = setup("").await;
    let config = s.dir.path().join("switchyard.toml");
    let (router, addr) = start(&config);
    let _reloader = switchyard::reload::spawn(config, Arc::clone(&router), Default::default());
    let path = s.dir.path().join("certs/edge.pem");
    let old = leaf_of(&path);
    assert_eq!(presented(addr, "edge.test").await, Some(old.clone()));
    let tmp = s.dir.path().join("certs/edge.pem.new");
    std::fs::write(&tmp, s.front.pem(&["edge.test"])).expect("new cert");
    std::fs::rename(&tmp, &path).expect("replace");
    let new = leaf_of(&path);
    assert_ne!(old, new);
    let started = Instant::now();
    while presented(addr, "edge.test").await != Some(new.clone()) {
        assert!(started.elapsed() < WAIT, "the new certificate is served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_mismatch_closes_the_client_and_says_which_names() {
    let s = setup("").await;
    let config = s.dir.path().join("switchyard.toml");
    let process = Process::start(&[
        "--log-format",
        "json",
        "run",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    let addr: SocketAddr = process
        .listening
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|a| a.parse().ok())
        .expect("listening address");
    // wrong.test has no certificate of its own: accept the default one.
    let any = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    let result = Open::connect(addr, "wrong.test", Arc::new(any)).await;
    assert!(result.is_err(), "the client sees a closed connection");
    let expected = format!(
        "certificate for {} is valid for goldmane.calico-system.svc.example.com, goldmane; expected goldmane.calico-system.svc.cluster.local",
        s.wrong.addr
    );
    let line = process.line_with("is valid for");
    assert!(line.contains(&expected), "{line}");
}

#[tokio::test]
async fn idle_terminated_connection_is_closed_at_the_tunnel_timeout() {
    let s = setup("").await;
    let config = s.dir.path().join("switchyard.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    let edge = "termination = \"edge\"\nmode = \"tcp\"\n";
    std::fs::write(
        &config,
        text.replacen(edge, &format!("{edge}tunnel_timeout = \"300ms\"\n"), 1),
    )
    .expect("write");
    let (_router, addr) = start(&config);
    let mut open = Open::connect(addr, "edge.test", s.front.client_config())
        .await
        .expect("edge");
    open.echo(b"active").await.expect("echo while active");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        open.echo(b"after idling").await.is_err(),
        "closed after 300 ms of silence"
    );
}

/// Applies the configuration as it is on disk now, as the reloader does.
fn reload_now(router: &Arc<switchyard::Router>, config: &std::path::Path) {
    let loaded = switchyard::config::load_after(config, Some(&router.snapshot()))
        .unwrap_or_else(|p| panic!("reload: {p}"));
    router.apply(loaded.snapshot).expect("apply");
}

/// With `close_removed_after`, a terminated connection survives reloads
/// that leave its route alone and is closed when a reload moves it.
#[tokio::test]
async fn close_removed_after_closes_terminated_connections_only_when_their_route_moves() {
    let s = setup("").await;
    let config = s.dir.path().join("switchyard.toml");
    let mut text = std::fs::read_to_string(&config).expect("read");
    text.push_str("\n[reload]\nclose_removed_after = \"200ms\"\n");
    std::fs::write(&config, text).expect("write");
    let (router, addr) = start(&config);
    let mut edge = Open::connect(addr, "edge.test", s.front.client_config())
        .await
        .expect("edge");
    let mut secure = Open::connect(addr, "secure.test", client(&s.front, &[]))
        .await
        .expect("secure");
    assert_eq!(edge.server, "plain-edge");

    // An unrelated edit: a route for another name.
    let added = format!("{} be_secure:t:secure\n", route_regex("new.test"));
    let edge_map = s.dir.path().join("maps/os_edge_reencrypt_be.map");
    let before = std::fs::read_to_string(&edge_map).expect("map");
    std::fs::write(&edge_map, format!("{before}{added}")).expect("map");
    reload_now(&router, &config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    edge.echo(b"still routed")
        .await
        .expect("an edge connection whose route a reload kept stays open");
    secure
        .echo(b"still routed")
        .await
        .expect("a re-encrypt connection whose route a reload kept stays open");

    // Now move edge.test to another backend.
    let moved = before.replace(
        &format!("{} be_edge_http:t:edge", route_regex("edge.test")),
        &format!("{} be_secure:t:secure", route_regex("edge.test")),
    );
    assert_ne!(moved, before);
    std::fs::write(&edge_map, moved).expect("map");
    reload_now(&router, &config);
    let started = Instant::now();
    while edge.echo(b"x").await.is_ok() {
        assert!(
            started.elapsed() < WAIT,
            "the moved route's connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "after the grace"
    );
    secure
        .echo(b"kept")
        .await
        .expect("the route that stayed keeps its connection");
}

/// `switchyard route` explains terminated names from the edge map, and
/// says where a name without a route would go.
#[tokio::test]
async fn route_command_explains_edge_and_reencrypt_names() {
    let s = setup("").await;
    let config = s.dir.path().join("switchyard.toml");
    let run = |sni: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["route", "--config"])
            .arg(&config)
            .arg(sni)
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), stdout)
    };
    let (code, out) = run("Secure.Test");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("os_edge_reencrypt_be.map:4"), "{out}");
    assert!(
        out.contains("backend:     be_secure:t:secure (termination reencrypt"),
        "{out}"
    );
    let (code, out) = run("a.wild.test");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("be_edge_http:t:edge (termination edge"),
        "{out}"
    );
    let (code, out) = run("nothing.test");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("route:       none (no map line matches)"),
        "{out}"
    );
    let (code, out) = run("bad name");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not a server name"), "{out}");
}

/// A plain TCP server that counts the connections it accepts and keeps
/// them open, echoing.
async fn counting_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = tcp.write_all(b"counted\n").await;
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, count)
}

/// A terminated route dials its server only once the client's handshake
/// is complete: a bare ClientHello, or a client without the certificate
/// a listener requires, never reaches a backend.
#[tokio::test]
async fn servers_are_dialed_only_after_the_client_handshake() {
    use std::sync::atomic::Ordering::SeqCst;
    let s = setup("client_auth = \"optional\"\nclient_ca = \"certs/front-ca.pem\"").await;
    let (counter, count) = counting_server().await;
    let config = s.dir.path().join("switchyard.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    let text = text.replace(&s.edge.addr.to_string(), &counter.to_string());
    std::fs::write(&config, text).expect("write");
    let (_router, addr) = start(&config);

    // A ClientHello and nothing more.
    let name = ServerName::try_from("edge.test").expect("name");
    let mut hello = Vec::new();
    rustls::ClientConnection::new(s.front.client_config(), name)
        .expect("client")
        .write_tls(&mut hello)
        .expect("hello");
    let mut bare = tokio::net::TcpStream::connect(addr).await.expect("connect");
    bare.write_all(&hello).await.expect("send hello");
    let mut first = [0u8; 1];
    let answered = tokio::time::timeout(WAIT, bare.read(&mut first)).await;
    assert!(
        matches!(answered, Ok(Ok(1))),
        "the router answers the hello"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count.load(SeqCst),
        0,
        "no server dialed for a bare ClientHello"
    );

    // A completed handshake dials exactly one.
    let open = Open::connect(addr, "edge.test", s.front.client_config())
        .await
        .expect("edge");
    assert_eq!(open.server, "counted");
    assert_eq!(count.load(SeqCst), 1);
    drop(bare);

    // Required client certificates: a client without one never reaches a server.
    let s = setup("client_auth = \"required\"\nclient_ca = \"certs/front-ca.pem\"").await;
    let (counter, count) = counting_server().await;
    let config = s.dir.path().join("switchyard.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    let text = text.replace(&s.edge.addr.to_string(), &counter.to_string());
    std::fs::write(&config, text).expect("write");
    let (_router, addr) = start(&config);
    let without = Open::connect(addr, "edge.test", s.front.client_config()).await;
    assert!(without.is_err(), "no client certificate, no session");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        count.load(SeqCst),
        0,
        "no server dialed without the certificate"
    );
}

/// Re-encrypt offers the server exactly the protocol negotiated with the
/// client, which the crt-list line decides: both ends speak the same one.
#[tokio::test]
async fn reencrypt_offers_upstream_only_the_negotiated_protocol() {
    let s = setup("").await;
    let crt = s.dir.path().join("maps/cert_config.map");
    let text = std::fs::read_to_string(&crt).expect("read");
    let text = text.replace(
        "[alpn h2,http/1.1] secure.test",
        "[alpn http/1.1] secure.test",
    );
    std::fs::write(&crt, text).expect("write");
    let (_router, addr) = start(&s.dir.path().join("switchyard.toml"));
    for (offered, expected) in [(&["h2", "http/1.1"][..], "http/1.1"), (&[][..], "-")] {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("secure.test").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(client(&s.front, offered))
            .connect(name, tcp)
            .await
            .expect("handshake");
        let client_side = tls
            .get_ref()
            .1
            .alpn_protocol()
            .map_or("-".to_string(), |p| String::from_utf8_lossy(p).into_owned());
        assert_eq!(client_side, expected, "client offered {offered:?}");
        let greeting = format!("secure alpn={expected}\n");
        let mut line = vec![0u8; greeting.len()];
        tls.read_exact(&mut line).await.expect("greeting");
        assert_eq!(String::from_utf8_lossy(&line), greeting, "server side");
    }
}

/// Handshakes with `sni` and reads the server's greeting line. Returns
/// whether the session was resumed, or the error that ended it.
async fn greet(
    addr: SocketAddr,
    sni: &str,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<bool> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    let mut tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(name, tcp),
    )
    .await??;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    // TLS 1.3: a refused client certificate shows on the first read.
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(WAIT, tls.read(&mut byte)).await??;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(resumed)
}

/// A session made on a listener without client authentication must not
/// resume once the listener requires a certificate; while the policy is
/// unchanged, sessions resume across reloads.
#[tokio::test]
async fn resumption_never_skips_client_authentication() {
    let s = setup("").await;
    let config = s.dir.path().join("switchyard.toml");
    let (router, addr) = start(&config);
    let client = s.front.client_config();
    assert!(!greet(addr, "edge.test", &client).await.expect("first"));
    assert!(
        greet(addr, "edge.test", &client).await.expect("second"),
        "the second session resumes"
    );
    reload_now(&router, &config);
    assert!(
        greet(addr, "edge.test", &client)
            .await
            .expect("after a reload"),
        "an unchanged policy keeps resumption across reloads"
    );

    let text = std::fs::read_to_string(&config).expect("read");
    let text = text.replacen(
        "bind = \"127.0.0.1:0\"\n",
        "bind = \"127.0.0.1:0\"\nclient_auth = \"required\"\nclient_ca = \"certs/front-ca.pem\"\n",
        1,
    );
    std::fs::write(&config, text).expect("write");
    reload_now(&router, &config);
    let after = greet(addr, "edge.test", &client).await;
    assert!(
        after.is_err(),
        "a session from before client_auth = required must not resume: {after:?}"
    );
}

/// A revoked client certificate fails the handshake and is logged with its
/// serial; a CRL change rotates the tickets, so the revoked client cannot
/// resume a session made before.
#[tokio::test]
async fn revoked_client_certificates_are_refused_even_when_resuming() {
    let s = setup("client_auth = \"required\"\nclient_ca = \"certs/front-ca.pem\"\nclient_crl = \"certs/crl.pem\"").await;
    let serial = 0x5eed_0001_u64;
    s.dir.write("certs/crl.pem", &s.front.crl_pem(&[42]));
    let config = s.dir.path().join("switchyard.toml");
    let process = Process::start(&[
        "--log-format",
        "json",
        "run",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    let addr: SocketAddr = process
        .listening
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|a| a.parse().ok())
        .expect("listening address");
    let client = s.front.client_with_certificate(serial);
    assert!(!greet(addr, "edge.test", &client)
        .await
        .expect("not revoked yet"));
    assert!(greet(addr, "edge.test", &client).await.expect("resumes"));
    let revoked = s.front.client_with_certificate(42);
    assert!(
        greet(addr, "edge.test", &revoked).await.is_err(),
        "serial 42 is on the CRL"
    );
    let line = process.line_with("client certificate revoked");
    assert!(line.contains("\"serial\":\"2a\""), "{line}");

    s.dir
        .write("certs/crl.pem", &s.front.crl_pem(&[42, serial]));
    process.line_with("configuration applied");
    let after = greet(addr, "edge.test", &client).await;
    assert!(after.is_err(), "revoked after the CRL change: {after:?}");
    let line = process.line_with("client certificate revoked");
    assert!(line.contains("\"serial\":\"5e:ed:00:01\""), "{line}");
}

/// A re-encrypt server that does not do ALPN speaks HTTP/1.1: a client
/// that negotiated http/1.1 is served; one that negotiated h2 is refused
/// with a log line rather than relayed to a server that cannot speak it.
#[tokio::test]
async fn reencrypt_to_a_server_without_alpn() {
    let s = setup("").await;
    let plain = named_server("no-alpn", s.inner.server_config(&["secure.apps.svc"])).await;
    let dir = s.dir.path();
    let crt = dir.join("maps/cert_config.map");
    let mut text = std::fs::read_to_string(&crt).expect("read");
    text.push_str("certs/edge.pem [alpn h2,http/1.1] noalpn.test\n");
    std::fs::write(&crt, text).expect("write");
    let map = dir.join("maps/os_edge_reencrypt_be.map");
    let mut text = std::fs::read_to_string(&map).expect("read");
    text.push_str(&format!(
        "{} be_secure:t:noalpn\n",
        route_regex("noalpn.test")
    ));
    std::fs::write(&map, text).expect("write");
    let config = dir.join("switchyard.toml");
    let mut text = std::fs::read_to_string(&config).expect("read");
    text.push_str(&format!(
        "\n[[backend]]\nname = \"be_secure:t:noalpn\"\ntermination = \"reencrypt\"\nmode = \"tcp\"\n\
         verify_host = \"secure.apps.svc\"\nca_file = \"certs/inner-ca.pem\"\n\
         servers = [{{ name = \"n1\", address = \"{}\" }}]\n",
        plain.addr
    ));
    std::fs::write(&config, text).expect("write");
    let (_router, addr) = start(&config);
    let any = |alpn: &[&str]| {
        let mut c = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(c)
    };
    let open = Open::connect(addr, "noalpn.test", any(&["http/1.1"]))
        .await
        .expect("http/1.1 to a server without ALPN");
    assert_eq!(open.server, "no-alpn");
    let h2 = Open::connect(addr, "noalpn.test", any(&["h2"])).await;
    assert!(
        h2.is_err(),
        "h2 cannot be relayed to an HTTP/1.1-only server"
    );
}
