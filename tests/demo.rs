//! `switchyard demo` as a newcomer runs it: the printed commands reach the
//! demo servers through the router. Uses curl and openssl when the machine
//! has them, and a rustls client in any case.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A demo process with the directory it writes its configuration into.
struct DemoProcess {
    process: common::Process,
    listen: SocketAddr,
    dir: tempfile::TempDir,
    http_listen: SocketAddr,
}

impl DemoProcess {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen = common::closed_port();
        let http_listen = common::closed_port();
        let listen_text = listen.to_string();
        let http_text = http_listen.to_string();
        let dir_text = dir.path().to_str().expect("utf-8");
        let process = common::Process::start(&[
            "demo",
            "--dir",
            dir_text,
            "--listen",
            &listen_text,
            "--http-listen",
            &http_text,
        ]);
        DemoProcess {
            process,
            listen,
            http_listen,
            dir,
        }
    }

    /// SIGTERM; whether the demo then exited with status 0.
    fn stop(mut self) -> bool {
        self.process.signal("TERM");
        self.process.wait(common::WAIT).is_some_and(|s| s.success())
    }
}

fn https_get(listen: SocketAddr, ca: &Path, host: &str) -> String {
    https_get_path(listen, ca, host, "/")
}

fn https_get_path(listen: SocketAddr, ca: &Path, host: &str, path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tcp = TcpStream::connect(listen).expect("connect");
    tcp.set_read_timeout(Some(common::WAIT)).expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if tls.write_all(request.as_bytes()).is_err() {
        return String::new(); // closed: no route
    }
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// A plain-HTTP GET; the whole answer as text.
fn http_get(listen: SocketAddr, host: &str, path: &str) -> String {
    let mut tcp = TcpStream::connect(listen).expect("connect");
    tcp.set_read_timeout(Some(common::WAIT)).expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn has(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
        || Command::new(tool).arg("version").output().is_ok()
}

#[test]
fn demo_serves_its_routes_and_stops_cleanly() {
    let demo = DemoProcess::start();
    // Its first screen holds no warning: listeners that set no
    // max_connections are sized to the open files the process has, and
    // that is said at info.
    let startup = &demo.process.startup;
    assert!(startup.iter().all(|l| !l.contains("WARN")), "{startup:#?}");
    for line in startup.iter().filter(|l| l.contains("max_connections")) {
        assert!(line.contains("INFO") && line.contains("take"), "{line}");
    }
    let ca = demo.dir.path().join("certs/demo-ca.pem");
    // The configuration it runs on is on disk and passes `check`.
    let check = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "check",
            "--config",
            demo.dir
                .path()
                .join("switchyard.toml")
                .to_str()
                .expect("utf-8"),
        ])
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Round robin over web-1 and web-2, verified against the demo CA.
    let first = https_get(demo.listen, &ca, "web.demo.test");
    let second = https_get(demo.listen, &ca, "web.demo.test");
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{first}");
    let served_by = |r: &str| {
        r.lines()
            .find(|l| l.starts_with("x-served-by:"))
            .map(str::to_string)
    };
    assert_ne!(
        served_by(&first),
        served_by(&second),
        "web-1 and web-2 take turns"
    );

    if has("curl") {
        let port = demo.listen.port();
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                ca.to_str().expect("utf-8"),
            ])
            .args(["--resolve", &format!("web.demo.test:{port}:127.0.0.1")])
            .arg(format!("https://web.demo.test:{port}/"))
            .output()
            .expect("curl");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            body.starts_with("Hello from web-"),
            "curl: {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // h2 through the edge route, as the printed command does.
        let version = Command::new("curl")
            .arg("--version")
            .output()
            .expect("curl");
        if String::from_utf8_lossy(&version.stdout).contains("HTTP2") {
            let out = Command::new("curl")
                .args(["-sS", "--http2", "--max-time", "10", "-o", "/dev/null"])
                .args(["-w", "%{http_version} %{http_code}"])
                .args(["--cacert", ca.to_str().expect("utf-8")])
                .args(["--resolve", &format!("edge.demo.test:{port}:127.0.0.1")])
                .arg(format!("https://edge.demo.test:{port}/api/x"))
                .output()
                .expect("curl");
            let written = String::from_utf8_lossy(&out.stdout);
            assert_eq!(written, "2 200", "{}", String::from_utf8_lossy(&out.stderr));
        }
    } else {
        eprintln!("curl not installed: the curl check did not run");
    }

    if has("openssl") {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &demo.listen.to_string(),
                "-servername",
                "echo.demo.test",
                "-quiet",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"echo through switchyard\n")
            .expect("write");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let reader = std::thread::spawn(move || {
            let _ = stdout.read_line(&mut line);
            line
        });
        let deadline = Instant::now() + common::WAIT;
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        let line = reader.join().expect("reader");
        assert_eq!(line, "echo through switchyard\n");
    } else {
        eprintln!("openssl not installed: the s_client check did not run");
    }

    // Edge and re-encrypt routes.
    let edge = https_get(demo.listen, &ca, "edge.demo.test");
    assert!(
        edge.contains("Hello from web-plain: this request reached me over plaintext"),
        "{edge}"
    );
    // The demo server shows the request as it arrived: the router's
    // forwarded headers are there to see.
    let seen = edge.to_ascii_lowercase();
    for header in [
        "\nx-forwarded-for: 127.0.0.1",
        "\nx-forwarded-proto: https",
        "\nforwarded: for=127.0.0.1",
        "\nhost: edge.demo.test",
    ] {
        assert!(seen.contains(header), "{header:?} in {edge}");
    }
    // Plain HTTP: a redirect to https, and the insecure (Allow) route.
    let redirect = http_get(demo.http_listen, "secure.demo.test", "/a?b=1");
    assert!(redirect.starts_with("HTTP/1.1 302"), "{redirect}");
    let location = format!(
        "location: https://secure.demo.test:{}/a?b=1\r\n",
        demo.listen.port()
    );
    assert!(
        redirect.to_ascii_lowercase().contains(&location),
        "{redirect}"
    );
    let insecure = http_get(demo.http_listen, "edge.demo.test", "/");
    assert!(insecure.contains("Hello from web-plain"), "{insecure}");

    let api = https_get_path(demo.listen, &ca, "edge.demo.test", "/api/hello");
    assert!(
        api.contains("Hello from api-plain: this request reached me over plaintext"),
        "the /api path route: {api}"
    );
    let secure = https_get(demo.listen, &ca, "secure.demo.test");
    assert!(
        secure.contains("Hello from web-1: this request reached me over TLS"),
        "{secure}"
    );

    // A newcomer adds a route to the demo's map: it is served within a second.
    let before = https_get(demo.listen, &ca, "www.demo.test");
    assert!(
        before.starts_with("HTTP/1.1 503") && before.contains("Application is not available"),
        "no route yet: the 503 page, not a reset: {before}"
    );
    let map = demo.dir.path().join("maps/os_tcp_be.map");
    let mut text = std::fs::read_to_string(&map).expect("map");
    text.push_str("^www\\.demo\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:demo:web\n");
    std::fs::write(&map, text).expect("edit");
    let edited = Instant::now();
    while !https_get(demo.listen, &ca, "www.demo.test").starts_with("HTTP/1.1 200 OK") {
        assert!(
            edited.elapsed() < Duration::from_secs(1),
            "new route served within a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    assert!(demo.stop(), "SIGTERM ends the demo with status 0");
}
