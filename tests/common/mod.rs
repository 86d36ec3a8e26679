//! Test harness: certificates made with rcgen, TLS servers on loopback that
//! say who they are and record the raw bytes they receive, a recording TLS
//! client, and a router started in-process on 127.0.0.1:0 from a
//! configuration written to a temporary directory. Nothing leaves loopback.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Bound on any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A test CA that signs server certificates.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    pub ca_pem: String,
}

impl Pki {
    /// A certificate for `names` signed by this CA, with its key.
    fn issue(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        // Its own subject, not the CA's: OpenSSL clients (psql, curl) take
        // a certificate whose subject is its issuer's for self-signed.
        let mut subject = rcgen::DistinguishedName::new();
        subject.push(
            rcgen::DnType::CommonName,
            names.first().map_or("leaf", String::as_str),
        );
        params.distinguished_name = subject;
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        (cert, key)
    }

    /// A PEM file body with the chain and key of a certificate for `names`.
    pub fn pem(&self, names: &[&str]) -> String {
        let (cert, key) = self.issue(names);
        format!("{}{}", cert.pem(), key.serialize_pem())
    }

    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut subject = rcgen::DistinguishedName::new();
        subject.push(rcgen::DnType::CommonName, "Switchyard test CA");
        params.distinguished_name = subject;
        let ca_key = KeyPair::generate().expect("key");
        let ca = params.self_signed(&ca_key).expect("ca");
        let ca_pem = ca.pem();
        Pki { ca, ca_key, ca_pem }
    }

    /// A rustls server configuration with a certificate for `names`.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.issue(names);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server config");
        Arc::new(config)
    }

    /// A client configuration trusting this CA and presenting a client
    /// certificate with serial number `serial`, signed by this CA.
    pub fn client_with_certificate(&self, serial: u64) -> Arc<rustls::ClientConfig> {
        let mut params = CertificateParams::new(vec!["client.test".to_string()]).expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .expect("root");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert.der().clone()], key)
            .expect("client auth");
        Arc::new(config)
    }

    /// A PEM CRL of this CA revoking `serials`, due again in 2099.
    pub fn crl_pem(&self, serials: &[u64]) -> String {
        let revoked_certs = serials
            .iter()
            .map(|&s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(s),
                revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(serials.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca, &self.ca_key)
        .expect("crl")
        .pem()
        .expect("pem")
    }

    /// A rustls client configuration trusting this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .expect("root");
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// Raw bytes one TLS server connection received and sent.
#[derive(Debug, Default, Clone)]
pub struct Wire {
    pub received: Vec<u8>,
    pub sent: Vec<u8>,
}

/// A TLS server that, after the handshake, sends its name and a newline,
/// then echoes. Each finished connection's raw bytes go to the receiver.
pub struct NamedServer {
    pub addr: SocketAddr,
    pub wires: mpsc::UnboundedReceiver<Wire>,
    /// The accept loop: aborting it closes the listening socket (the
    /// server "dies" for new connections).
    pub task: Option<tokio::task::JoinHandle<()>>,
}

pub async fn named_server(name: &'static str, config: Arc<rustls::ServerConfig>) -> NamedServer {
    named_server_on(name, config, "127.0.0.1:0").await
}

/// `named_server` on a given address (to bring a "dead" server back).
pub async fn named_server_on(
    name: &'static str,
    config: Arc<rustls::ServerConfig>,
    addr: &str,
) -> NamedServer {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, wires) = mpsc::unbounded_channel();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let (rec, wire) = Recorder::new(tcp);
                if let Ok(tls) = acceptor.accept(rec).await {
                    greet_and_echo(tls, name).await;
                }
                let _ = tx.send(wire.lock().expect("lock").clone());
            });
        }
    });
    NamedServer {
        addr,
        wires,
        task: Some(task),
    }
}

/// Sends `name` and a newline, echoes until the peer closes, then closes.
async fn greet_and_echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, name: &str) {
    let _ = stream.write_all(format!("{name}\n").as_bytes()).await;
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
}

/// A plaintext TCP server that sends its name and a newline, then echoes;
/// each finished connection's bytes go to the receiver (what an edge
/// backend gets must be the client's plaintext).
pub async fn plain_named_server(name: &'static str) -> NamedServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, wires) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (rec, wire) = Recorder::new(tcp);
                greet_and_echo(rec, name).await;
                let _ = tx.send(wire.lock().expect("lock").clone());
            });
        }
    });
    NamedServer {
        addr,
        wires,
        task: None,
    }
}

/// What a TLS client saw through the router.
pub struct Session {
    /// The first line the server sent (its name).
    pub server: String,
    /// The raw bytes the client sent and received.
    pub wire: Wire,
    /// Whether the server's close reached the client after the client
    /// half-closed (the read to end of stream finished in time).
    pub eof: bool,
}

/// Connects to `addr` with SNI `sni`, reads the server's name, sends
/// `payload` and expects it echoed, then closes.
pub async fn session(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    payload: &[u8],
) -> io::Result<Session> {
    let tcp = TcpStream::connect(addr).await?;
    let (rec, wire) = Recorder::new(tcp);
    let name = ServerName::try_from(sni.to_string()).map_err(io::Error::other)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, rec)).await??;
    let server = read_line(&mut tls).await?;
    tls.write_all(payload).await?;
    let mut echoed = vec![0u8; payload.len()];
    tls.read_exact(&mut echoed).await?;
    assert_eq!(echoed, payload, "echo through the router");
    tls.shutdown().await?;
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(WAIT, tls.read_to_end(&mut rest))
        .await
        .is_ok();
    drop(tls);
    let wire = wire.lock().expect("lock").clone();
    Ok(Session { server, wire, eof })
}

/// An open TLS connection through the router, with the name of the server
/// that answered; `echo` checks it still carries bytes both ways.
pub struct Open {
    pub server: String,
    tls: tokio_rustls::client::TlsStream<TcpStream>,
}

impl Open {
    pub async fn connect(
        addr: SocketAddr,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<Open> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_string()).map_err(io::Error::other)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await??;
        let server = read_line(&mut tls).await?;
        Ok(Open { server, tls })
    }

    pub async fn echo(&mut self, payload: &[u8]) -> io::Result<()> {
        self.tls.write_all(payload).await?;
        let mut back = vec![0u8; payload.len()];
        tokio::time::timeout(WAIT, self.tls.read_exact(&mut back)).await??;
        if back != payload {
            return Err(io::Error::other("echo differs"));
        }
        Ok(())
    }
}

async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while tokio::time::timeout(WAIT, s.read_exact(&mut byte))
        .await?
        .is_ok()
    {
        if byte[0] == b'\n' {
            return String::from_utf8(line).map_err(io::Error::other);
        }
        line.push(byte[0]);
    }
    Err(io::ErrorKind::UnexpectedEof.into())
}

/// Wraps a stream and keeps a copy of every byte read and written.
pub struct Recorder<S> {
    inner: S,
    wire: Arc<Mutex<Wire>>,
}

impl<S> Recorder<S> {
    pub fn new(inner: S) -> (Self, Arc<Mutex<Wire>>) {
        let wire = Arc::new(Mutex::new(Wire::default()));
        (
            Recorder {
                inner,
                wire: Arc::clone(&wire),
            },
            wire,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let new = buf.filled()[before..].to_vec();
        self.wire
            .lock()
            .expect("lock")
            .received
            .extend_from_slice(&new);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.wire
            .lock()
            .expect("lock")
            .sent
            .extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A configuration directory for a test.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> Self {
        ConfigDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// `switchyard.toml` with one listener on 127.0.0.1:0 and the two
    /// OpenShift maps, plus `extra` appended (backends, listener options).
    pub fn main(&self, listener_extra: &str, extra: &str) -> PathBuf {
        self.write(
            "switchyard.toml",
            &format!(
                "[[listener]]\nname = \"public_ssl\"\nbind = \"127.0.0.1:0\"\n{listener_extra}\n\n\
                 [maps]\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\n{extra}"
            ),
        )
    }
}

/// `switchyard.toml` in `dir`: one TLS listener (`public_ssl`) on
/// `listen` with the passthrough and edge/re-encrypt maps, `default.pem`
/// as its default certificate, the stats port on `stats`, then `backends`.
pub fn edge_config(
    dir: &ConfigDir,
    (listen, stats): (SocketAddr, SocketAddr),
    backends: &str,
) -> PathBuf {
    dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"public_ssl\"\nbind = \"{listen}\"\n\n\
             [maps]\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\
             edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"\n\n\
             [tls]\ndefault_certificate = \"default.pem\"\n\n[stats]\nbind = \"{stats}\"\n\n{backends}"
        ),
    )
}

/// The regex OpenShift writes for a host-only route.
pub fn route_regex(host: &str) -> String {
    format!(r"^{}\.?(:[0-9]+)?(/.*)?$", host.replace('.', r"\."))
}

/// Loads `config` and starts a router; returns it with its listener address.
pub fn start(config: &Path) -> (Arc<switchyard::Router>, SocketAddr) {
    let loaded = switchyard::config::load(config).unwrap_or_else(|p| panic!("config: {p}"));
    let router = switchyard::Router::start(loaded.snapshot).expect("start");
    let addr = router.local_addr("public_ssl").expect("listener");
    (router, addr)
}

/// A `switchyard` process started by a test; killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    /// Every line the process writes to stderr, after `listening`.
    pub lines: std::sync::mpsc::Receiver<String>,
    /// The log line that said it listens.
    pub listening: String,
    /// The lines before it: what a newcomer sees first.
    pub startup: Vec<String>,
}

impl Process {
    /// Runs the binary with `args` and waits for its `listening` log line.
    pub fn start(args: &[&str]) -> Process {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start switchyard");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut process = Process {
            child,
            lines,
            listening: String::new(),
            startup: Vec::new(),
        };
        while process.listening.is_empty() {
            let line = process.lines.recv_timeout(WAIT).unwrap_or_else(|_| {
                panic!("no `listening` line; before it: {:#?}", process.startup)
            });
            if line.contains("listening") {
                process.listening = line;
            } else {
                process.startup.push(line);
            }
        }
        process
    }

    /// The next stderr line containing `text` (bounded by `WAIT`).
    pub fn line_with(&self, text: &str) -> String {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no log line with `{text}`; before it: {seen:#?}"));
            if line.contains(text) {
                return line;
            }
            seen.push(line);
        }
    }

    /// Sends a signal (`TERM`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
        assert!(status.expect("kill").success());
    }

    /// Waits for the process to exit; its status, if it did within `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of a TLS ClientHello for `sni`, as the first bytes of a
/// connection (the hello does not depend on the roots a client trusts).
pub fn client_hello(sni: &str) -> Vec<u8> {
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("hello");
    hello
}

/// The value of the line of the stats port's /metrics that starts with
/// `series` (a name, with its labels if it has any), waiting a second at
/// most for the port to come up.
pub async fn metric(stats: SocketAddr, series: &str) -> f64 {
    let mut tcp = None;
    for _ in 0..50 {
        if let Ok(t) = TcpStream::connect(stats).await {
            tcp = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tcp = tcp.expect("stats port");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut text))
        .await
        .expect("in time")
        .expect("metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

/// The body of `path` on the stats port (one request, connection closed).
pub async fn stats_body(stats: SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(stats).await.expect("stats");
    let request = format!("GET {path} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("read");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// `switchyard check` on `config`: whether it accepted the configuration,
/// and what it printed (stdout, then stderr).
pub fn check(config: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config", config.to_str().expect("utf-8")])
        .output()
        .expect("check");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A client verifier that accepts any server certificate: for tests that
/// look at the certificate presented, or reach a name the certificate
/// does not carry (the default one, a hello without SNI).
#[derive(Debug)]
pub struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A loopback server that runs `handle` on each connection it accepts, in
/// a task of its own; its address.
pub async fn serve_each<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(handle(tcp));
        }
    });
    addr
}

/// One request head (to its blank line, at most 64 KiB), read a byte at
/// a time so that nothing after it is taken; `None` if the peer closes or
/// sends more first.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || stream.read_exact(&mut byte).await.is_err() {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// Answers every request with 200 and closes.
pub async fn http_ok_server() -> std::net::SocketAddr {
    http_server(|_| "ok\n".to_string()).await
}

/// A plain HTTP/1.1 server that answers each request (its head, as text)
/// with 200 and the body `answer` gives, then closes.
pub async fn http_server(
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
) -> std::net::SocketAddr {
    let answer = Arc::new(answer);
    serve_each(move |tcp| answer_once(tcp, Arc::clone(&answer))).await
}

/// [`http_server`] behind TLS with `config` (a re-encrypt route's server).
pub async fn https_server_answering(
    config: Arc<rustls::ServerConfig>,
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
) -> std::net::SocketAddr {
    let answer = Arc::new(answer);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    serve_each(move |tcp| {
        let (acceptor, answer) = (acceptor.clone(), Arc::clone(&answer));
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                answer_once(tls, answer).await;
            }
        }
    })
    .await
}

/// Reads one request head from `stream`, answers it with 200 and the
/// body `answer` gives, and closes.
async fn answer_once<S, F>(mut stream: S, answer: Arc<F>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: Fn(&str) -> String + ?Sized,
{
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let body = answer(&String::from_utf8_lossy(&head));
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// `GET /` over TLS to `addr` with SNI and Host `host`, the router's
/// certificate verified against the test CA: the whole answer.
pub async fn https_get(addr: SocketAddr, pki: &Pki, host: &str) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(host.to_string()).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(pki.client_config())
        .connect(name, tcp)
        .await
        .expect("TLS");
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
