//! PostgreSQL routed by SNI on a `postgres = true` listener, with the real
//! `psql` and real PostgreSQL servers (Debian's package, each started here
//! on a loopback port with a certificate made by rcgen): `verify-full`
//! through passthrough against each server's own certificate, two
//! databases behind one port chosen by name, re-encrypt and edge, an
//! unknown name and a plain-text client told why. Then, with raw sockets:
//! a server that refuses SSL, `GSSENCRequest`, `CancelRequest`, and a
//! client that opens with TLS directly (PostgreSQL 17's
//! `sslnegotiation=direct`, ALPN `postgresql`).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The 8 bytes of an `SSLRequest`.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The directory of Debian's PostgreSQL server programs (any version).
fn server_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server (Debian's postgresql package; .ci/run installs it)");
    let mut dirs: Vec<PathBuf> = versions
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL version with bin/postgres")
}

/// `program` with `args`, as the `postgres` user when this runs as root
/// (the server refuses to run as root).
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

/// A PostgreSQL server on a loopback port, with SSL on and a certificate
/// for its name; stopped (fast shutdown) when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(pki: &Pki, name: &str) -> Server {
        let bin = server_bin();
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let pem = dir.path().join("server.pem");
        std::fs::write(&pem, pki.pem(&[name])).expect("pem");
        let chown = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir.path())
            .status();
        // Not root: the files are this user's already.
        let _ = chown;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&pem, mode).expect("chmod");
        let init = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--locale=C",
                "-E",
                "UTF8",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .expect("initdb");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = closed_port().port();
        let settings = [
            "listen_addresses=127.0.0.1".to_string(),
            format!("unix_socket_directories={}", dir.path().display()),
            "ssl=on".into(),
            format!("ssl_cert_file={}", pem.display()),
            format!("ssl_key_file={}", pem.display()),
            "fsync=off".into(),
        ];
        let mut args = vec![
            "-D".to_string(),
            data.display().to_string(),
            "-p".into(),
            port.to_string(),
        ];
        for s in settings {
            args.extend(["-c".to_string(), s]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = as_postgres(&bin.join("postgres"), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let ready = Instant::now();
        loop {
            let probe = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .expect("pg_isready");
            if probe.success() {
                return server;
            }
            assert!(ready.elapsed() < WAIT, "PostgreSQL did not start on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT: a fast shutdown (its backends go with it).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let stopping = Instant::now();
        while stopping.elapsed() < WAIT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `psql` printed (stdout, then stderr) and whether it succeeded,
/// for `query` on `host` through the router at `port`.
fn psql(port: u16, host: &str, options: &str, query: &str) -> (bool, String, String) {
    let conninfo = format!(
        "host={host} hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5 {options}"
    );
    let mut child = Command::new("psql")
        .args([conninfo.as_str(), "-X", "-tA", "-c", query])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql (Debian's postgresql-client)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > 2 * WAIT {
            let _ = child.kill();
            panic!("psql to {host} did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    (status.success(), out.trim().to_string(), err)
}

/// The server's port and whether the server's own session is encrypted.
const WHO: &str =
    "select inet_server_port() || ' ' || ssl from pg_stat_ssl where pid = pg_backend_pid()";

#[test]
fn psql_reaches_databases_behind_one_port_by_name() {
    let pki = Pki::new();
    let db1 = Server::start(&pki, "db1.pg.test");
    let db2 = Server::start(&pki, "db2.pg.test");
    let (listen, stats, dir) = (closed_port(), closed_port(), ConfigDir::new());
    let ca = dir.write("ca.pem", &pki.ca_pem);
    dir.write("default.pem", &pki.pem(&["re.pg.test", "edge.pg.test"]));
    dir.write(
        "maps/os_sni_passthrough.map",
        "^db1\\.pg\\.test$ 1\n^db2\\.pg\\.test$ 1\n",
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!(
            "{} be_tcp:pg:db1\n{} be_tcp:pg:db2\n",
            route_regex("db1.pg.test"),
            route_regex("db2.pg.test")
        ),
    );
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        &format!(
            "{} be_secure:pg:re\n{} be_edge_http:pg:edge\n",
            route_regex("re.pg.test"),
            route_regex("edge.pg.test")
        ),
    );
    let server = |name: &str, s: &Server| {
        format!(
            "servers = [{{ name = \"{name}\", address = \"127.0.0.1:{}\" }}]\n\n",
            s.port
        )
    };
    let config = dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"public_ssl\"\nbind = \"{listen}\"\npostgres = true\n\n\
             [maps]\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\
             edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"\n\n\
             [tls]\ndefault_certificate = \"default.pem\"\n\n[stats]\nbind = \"{stats}\"\n\n\
             [[backend]]\nname = \"be_tcp:pg:db1\"\n{}\
             [[backend]]\nname = \"be_tcp:pg:db2\"\n{}\
             [[backend]]\nname = \"be_secure:pg:re\"\ntermination = \"reencrypt\"\nmode = \"tcp\"\n\
             verify_host = \"db1.pg.test\"\nca_file = \"ca.pem\"\n{}\
             [[backend]]\nname = \"be_edge_http:pg:edge\"\ntermination = \"edge\"\nmode = \"tcp\"\n{}",
            server("db1", &db1),
            server("db2", &db2),
            server("db1", &db1),
            server("db2", &db2),
        ),
    );
    let process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);
    let verify = format!("sslmode=verify-full sslrootcert={}", ca.display());
    let port = listen.port();

    // Passthrough: each name reaches its own server, which does its own
    // TLS, verified by psql against the server's certificate.
    for (host, server) in [("db1.pg.test", &db1), ("db2.pg.test", &db2)] {
        let (ok, out, err) = psql(port, host, &verify, WHO);
        assert!(ok, "{host}: {err}");
        assert_eq!(out, format!("{} true", server.port), "{host}");
    }
    let line = process.line_with("db2.pg.test");
    assert!(
        line.contains("postgres=true") && line.contains("be_tcp:pg:db2"),
        "{line}"
    );
    // Re-encrypt: the router's certificate for the client, and TLS from
    // the router to the server (which sees an encrypted session).
    let (ok, out, err) = psql(port, "re.pg.test", &verify, WHO);
    assert!(ok, "re-encrypt: {err}");
    assert_eq!(out, format!("{} true", db1.port));
    // Edge: the server gets plain PostgreSQL.
    let (ok, out, err) = psql(port, "edge.pg.test", &verify, WHO);
    assert!(ok, "edge: {err}");
    assert_eq!(out, format!("{} false", db2.port));

    // An unknown name is told so in the handshake.
    let (ok, _, err) = psql(port, "db3.pg.test", &verify, WHO);
    assert!(!ok);
    assert!(err.contains("unrecognized name"), "{err}");
    // A plain-text client is told why, in the error psql prints.
    let (ok, _, err) = psql(port, "db1.pg.test", "sslmode=disable", WHO);
    assert!(!ok);
    assert!(
        err.contains("routes PostgreSQL by TLS server name"),
        "{err}"
    );
    let line = process.line_with("plain-text StartupMessage");
    assert!(line.contains("refused"), "{line}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let answered = r#"switchyard_postgres_total{outcome="ssl_request"}"#;
        assert_eq!(metric(stats, answered).await, 5.0);
        let plain = r#"switchyard_postgres_total{outcome="plaintext_refused"}"#;
        assert_eq!(metric(stats, plain).await, 1.0);
    });

    // The route explainer says what a PostgreSQL client gets.
    let explain = |host: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["route", "--config", config.to_str().expect("utf-8"), host])
            .output()
            .expect("route");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = explain("db1.pg.test");
    assert!(
        said.contains("SSLRequest is answered `S`")
            && said.contains("server is sent an SSLRequest"),
        "{said}"
    );
    assert!(explain("re.pg.test").contains("TLS to it is verified"));
    assert!(explain("db3.pg.test").contains("unrecognized_name"));
}

/// A router on a `postgres = true` listener sending `db.pg.test` to
/// `server` (passthrough), with its stats port.
fn router_to(
    server: std::net::SocketAddr,
) -> (
    Process,
    std::net::SocketAddr,
    std::net::SocketAddr,
    ConfigDir,
) {
    let (listen, stats, dir) = (closed_port(), closed_port(), ConfigDir::new());
    dir.write("maps/os_sni_passthrough.map", "^db\\.pg\\.test$ 1\n");
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:pg:db\n", route_regex("db.pg.test")),
    );
    let config = dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"public_ssl\"\nbind = \"{listen}\"\npostgres = true\n\n\
             [maps]\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\n\
             [stats]\nbind = \"{stats}\"\n\n\
             [[backend]]\nname = \"be_tcp:pg:db\"\nservers = [{{ name = \"db\", address = \"{server}\" }}]\n"
        ),
    );
    let process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);
    (process, listen, stats, dir)
}

/// Reads until the peer closes (bounded): what it sent.
fn until_closed(stream: &mut std::net::TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

#[test]
fn a_server_refusing_ssl_and_requests_without_a_name_are_refused() {
    // A "server" that answers every SSLRequest with N, and reports what
    // it received.
    let refusing = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = refusing.local_addr().expect("addr");
    let (seen_tx, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = refusing.accept() {
            let mut request = [0u8; 8];
            let _ = conn.read_exact(&mut request);
            let _ = conn.write_all(b"N");
            let rest = until_closed(&mut conn);
            let _ = seen_tx.send((request, rest));
        }
    });
    let (process, listen, stats, _dir) = router_to(addr);

    // GSSENCRequest gets N; the SSLRequest after it gets S.
    let mut client = std::net::TcpStream::connect(listen).expect("connect");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    client
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .expect("gssenc");
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).expect("answer");
    assert_eq!(&answer, b"N");
    client.write_all(&SSL_REQUEST).expect("ssl request");
    client.read_exact(&mut answer).expect("answer");
    assert_eq!(&answer, b"S");
    // The hello goes nowhere: the server refused SSL; the client is closed.
    client
        .write_all(&client_hello("db.pg.test"))
        .expect("hello");
    assert_eq!(until_closed(&mut client), b"");
    let (request, rest) = seen.recv_timeout(WAIT).expect("the server was asked");
    assert_eq!(request, SSL_REQUEST, "the server got an SSLRequest first");
    assert!(rest.is_empty(), "nothing after its refusal: {rest:?}");
    // The warning, then the connection's line.
    let warning = process.line_with("refused SSL");
    assert!(warning.contains("be_tcp:pg:db"), "{warning}");
    let line = process.line_with("refused SSL");
    assert!(line.contains("db.pg.test"), "{line}");

    // A CancelRequest names no server: closed without an answer.
    let mut cancel = std::net::TcpStream::connect(listen).expect("connect");
    cancel
        .write_all(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0, 0, 0, 9])
        .expect("cancel");
    assert_eq!(until_closed(&mut cancel), b"");
    process.line_with("CancelRequest refused");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        for (outcome, n) in [
            ("ssl_request", 1.0),
            ("gssenc_declined", 1.0),
            ("server_refused", 1.0),
            ("cancel_refused", 1.0),
        ] {
            let series = format!("switchyard_postgres_total{{outcome=\"{outcome}\"}}");
            assert_eq!(metric(stats, &series).await, n, "{series}");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_opens_with_tls_directly_is_routed_as_before() {
    // PostgreSQL 17's direct SSL: a ClientHello first, ALPN `postgresql`.
    let pki = Pki::new();
    let mut server = named_server("db", pki.server_config(&["db.pg.test"])).await;
    let (_process, listen, _stats, _dir) = router_to(server.addr);
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let reached = session(listen, "db.pg.test", std::sync::Arc::new(config), b"ping")
        .await
        .expect("direct TLS");
    assert_eq!(reached.server, "db");
    let wire = tokio::time::timeout(WAIT, server.wires.recv())
        .await
        .expect("in time")
        .expect("wire");
    // The server got the client's bytes untouched: the ClientHello
    // first, no SSLRequest before it.
    assert_eq!(wire.received.first(), Some(&0x16));
    assert_eq!(wire.received, reached.wire.sent);
}

/// `postgres = true` on a plain-HTTP listener is refused with its file and
/// line: its clients send no ClientHello to route by.
#[test]
fn postgres_on_a_plain_http_listener_is_refused_at_its_line() {
    let dir = ConfigDir::new();
    let config = dir.write(
        "switchyard.toml",
        "[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npostgres = true\n",
    );
    let (accepted, said) = check(&config);
    assert!(!accepted, "{said}");
    assert!(
        said.contains("switchyard.toml:5") && said.contains("postgres = true needs a TLS listener"),
        "{said}"
    );
}

/// A TLS server that starts as PostgreSQL does: it reads an SSLRequest,
/// answers `S`, then does TLS, sends its name and echoes.
async fn ssl_request_server(config: std::sync::Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    common::serve_each(move |mut tcp| {
        let acceptor = acceptor.clone();
        async move {
            let mut request = [0u8; 8];
            if tcp.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                return;
            }
            if tcp.write_all(b"S").await.is_err() {
                return;
            }
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = tls.write_all(b"db\n").await;
            let mut buf = [0u8; 1024];
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// A client that sends its ClientHello in the same write as its
/// SSLRequest, without waiting for the `S`, and one whose SSLRequest
/// arrives a byte at a time: both are answered, routed and relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_and_dribbled_ssl_requests_are_routed() {
    let pki = Pki::new();
    let server = ssl_request_server(pki.server_config(&["db.pg.test"])).await;
    let (_process, listen, _stats, _dir) = router_to(server);
    let client = pki.client_config();
    let relayed = tokio::task::spawn_blocking(move || {
        let mut said = Vec::new();
        for dribble in [false, true] {
            let name = rustls::pki_types::ServerName::try_from("db.pg.test").expect("name");
            let mut conn = rustls::ClientConnection::new(client.clone(), name).expect("client");
            let mut hello = Vec::new();
            conn.write_tls(&mut hello).expect("hello");
            let mut tcp = std::net::TcpStream::connect(listen).expect("connect");
            tcp.set_read_timeout(Some(WAIT)).expect("timeout");
            if dribble {
                for byte in SSL_REQUEST {
                    tcp.write_all(&[byte]).expect("byte");
                    std::thread::sleep(Duration::from_millis(20));
                }
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).expect("answer");
                assert_eq!(&answer, b"S");
                tcp.write_all(&hello).expect("hello");
            } else {
                let mut eager = SSL_REQUEST.to_vec();
                eager.extend_from_slice(&hello);
                tcp.write_all(&eager).expect("request and hello");
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).expect("answer");
                assert_eq!(&answer, b"S");
            }
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            let mut line = [0u8; 3];
            tls.read_exact(&mut line).expect("the server's name");
            tls.write_all(b"ping").expect("ping");
            let mut echoed = [0u8; 4];
            tls.read_exact(&mut echoed).expect("echo");
            said.push((line, echoed));
        }
        said
    })
    .await
    .expect("client");
    for (line, echoed) in relayed {
        assert_eq!((&line, &echoed), (b"db\n", b"ping"));
    }
}
