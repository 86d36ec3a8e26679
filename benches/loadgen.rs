//! Load generator for side-by-side measurements (`benches/compare.sh`):
//! drives real sockets against any SNI proxy and prints one JSON line per
//! run with throughput, latency percentiles (hdrhistogram) and the CPU the
//! generator itself used, so that it can be shown to cost less than the
//! proxy it measures. Also serves the backends (echo, byte source).
//!
//!   cargo bench --bench loadgen -- serve --mode echo --listen 127.0.0.1:9501
//!   cargo bench --bench loadgen -- keepalive --target 127.0.0.1:13443 --sni echo.bench.test
//!   cargo bench --bench loadgen -- connect --target … --sni app.bench.test --tls
//!   cargo bench --bench loadgen -- bulk | hold | routes …
//!
//! Traffic goes only where `--target` says; compare.sh points it at loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Backend: `echo` returns what it gets; `source` answers the first
    /// bytes with an endless stream.
    Serve {
        #[arg(long)]
        mode: String,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Small messages over long-lived connections.
    Keepalive(Common),
    /// One connection per operation (ClientHello + echo, or a full TLS handshake with --tls).
    Connect(Common),
    /// Bytes per second from a `source` backend.
    Bulk(Common),
    /// Open --conns idle connections and report the proxy's resident memory per connection.
    Hold(Common),
    /// New-connection latency with distinct SNIs r<i>.bench.test (i in the upper half of --routes).
    Routes(Common),
    /// New connections with a different unknown SNI each (`<n>.flood.invalid`): the
    /// proxy reads the hello, finds no route and closes.
    Flood(Common),
    /// --conns slow clients announcing 16 KiB ClientHellos and dribbling
    /// them (64 bytes a second each, for --secs), and one healthy client
    /// (--sni, an echo route) served meanwhile: the proxy's resident memory
    /// and the kernel's TCP memory, per slow client.
    Slowloris(Common),
    /// Open --conns TLS connections, send one HTTP request on each (`GET /`,
    /// Host --sni; h2 with --h2, else HTTP/1.1), keep them open, and report
    /// the proxy's resident memory per connection (each proxy fresh).
    HttpHold {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        h2: bool,
    },
}

#[derive(clap::Args, Clone)]
struct Common {
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value = "app.bench.test")]
    sni: String,
    #[arg(long, default_value_t = 32)]
    conns: usize,
    #[arg(long, default_value_t = 6)]
    secs: u64,
    /// Message size (keepalive) or megabytes (bulk).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Speak TLS to the target (edge, or a full handshake through passthrough).
    #[arg(long)]
    tls: bool,
    /// Proxy process ids (comma-separated) for `hold` and CPU accounting.
    #[arg(long, default_value = "")]
    pid: String,
    #[arg(long, default_value_t = 100_000)]
    routes: usize,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The proxy's CPU seconds when this run started: each figure reports the
/// CPU its own run cost the proxy, not the process's running total.
static PROXY_CPU_AT_START: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let cli = Cli::parse_from(args);
    let pid = match &cli.command {
        Mode::Serve { .. } => String::new(),
        Mode::Keepalive(c)
        | Mode::Connect(c)
        | Mode::Bulk(c)
        | Mode::Hold(c)
        | Mode::Routes(c)
        | Mode::Flood(c)
        | Mode::Slowloris(c)
        | Mode::HttpHold { common: c, .. } => c.pid.clone(),
    };
    PROXY_CPU_AT_START.get_or_init(|| proxy_cpu_secs(&pid));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        match cli.command {
            Mode::Serve { mode, listen } => serve(&mode, listen).await,
            Mode::Keepalive(c) => report("keepalive", &c, keepalive(&c).await),
            Mode::Connect(c) => report("connect", &c, connect(&c).await),
            Mode::Bulk(c) => report("bulk", &c, bulk(&c).await),
            Mode::Hold(c) => report("hold", &c, hold(&c).await),
            Mode::Routes(c) => report("routes", &c, routes(&c).await),
            Mode::Flood(c) => report("flood", &c, flood(&c).await),
            Mode::Slowloris(c) => report("slowloris", &c, slowloris(&c).await),
            Mode::HttpHold { common, h2 } => {
                report("http-hold", &common, http_hold(&common, h2).await)
            }
        }
    });
}

/// What a run measured.
#[derive(Default)]
struct Figures {
    ops: u64,
    failures: u64,
    bytes: u64,
    wall: Duration,
    hist: Option<Histogram<u64>>,
    per_conn_bytes: Option<i64>,
    /// Kernel TCP memory (`/proc/net/sockstat`, both ends on loopback), KiB.
    tcp_mem_kb: Option<i64>,
    /// Proxy resident memory at the end, KiB.
    rss_kb: Option<i64>,
}

fn report(mode: &str, c: &Common, f: Figures) {
    let secs = f.wall.as_secs_f64().max(1e-9);
    let pct = |q: f64| f.hist.as_ref().map_or(0, |h| h.value_at_quantile(q));
    let at_start = PROXY_CPU_AT_START.get().copied().flatten();
    let proxy_cpu = proxy_cpu_secs(&c.pid)
        .zip(at_start)
        .map(|(now, then)| now - then);
    let per_cpu = proxy_cpu
        .filter(|&s| s > 0.0)
        .map_or("null".into(), |s| format!("{:.0}", f.ops as f64 / s));
    let mb_per_cpu = proxy_cpu.filter(|&s| s > 0.0).map_or("null".into(), |s| {
        format!("{:.1}", f.bytes as f64 / 1e6 / s)
    });
    println!(
        "{{\"mode\":\"{mode}\",\"target\":\"{}\",\"ops\":{},\"ops_per_s\":{:.0},\"ops_per_proxy_cpu_s\":{per_cpu},\"failures\":{},\"mb_per_s\":{:.1},\"mb_per_proxy_cpu_s\":{mb_per_cpu},\
         \"p50_us\":{},\"p99_us\":{},\"per_conn_bytes\":{},\"rss_kb\":{},\"tcp_mem_kb\":{},\"loadgen_cpu_s\":{:.2},\"proxy_cpu_s\":{},\"wall_s\":{:.2}}}",
        c.target,
        f.ops,
        f.ops as f64 / secs,
        f.failures,
        f.bytes as f64 / secs / 1e6,
        pct(0.5),
        pct(0.99),
        f.per_conn_bytes.map_or("null".into(), |b| b.to_string()),
        f.rss_kb.map_or("null".into(), |b| b.to_string()),
        f.tcp_mem_kb.map_or("null".into(), |b| b.to_string()),
        own_cpu_secs(),
        proxy_cpu.map_or("null".into(), |s| format!("{s:.2}")),
        secs
    );
}

/// CPU seconds this process used.
fn own_cpu_secs() -> f64 {
    cpu_of("self").unwrap_or(0.0)
}

fn proxy_cpu_secs(pids: &str) -> Option<f64> {
    let pids: Vec<&str> = pids.split(',').filter(|p| !p.is_empty()).collect();
    (!pids.is_empty()).then(|| pids.iter().filter_map(|p| cpu_of(p)).sum())
}

fn cpu_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The kernel's TCP memory, KiB (`/proc/net/sockstat`: `TCP: … mem <pages>`).
fn tcp_mem_kb() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = stat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = tcp.split_whitespace();
    words.find(|w| *w == "mem")?;
    let pages: i64 = words.next()?.parse().ok()?;
    Some(pages * 4)
}

fn rss_kb(pids: &str) -> i64 {
    pids.split(',')
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        })
        .sum()
}

async fn serve(mode: &str, listen: SocketAddr) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    let source = mode == "source";
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; 64 * 1024];
            if source {
                if s.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                while s.write_all(&buf).await.is_ok() {}
                return;
            }
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn hello(sni: &str) -> Vec<u8> {
    let config = client_config();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("sni");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

fn client_config() -> Arc<rustls::ClientConfig> {
    client_config_alpn(&[])
}

fn client_config_alpn(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    // Every connection a full handshake, as the peers' figures were taken.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a connection the way the mode needs: TLS to the target, or a raw
/// ClientHello that the (echo) backend sends back.
async fn open(c: &Common, sni: &str, hello_bytes: &[u8]) -> std::io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(c.target).await?;
    tcp.set_nodelay(true)?;
    if c.tls {
        let name = rustls::pki_types::ServerName::try_from(sni.to_string())
            .map_err(std::io::Error::other)?;
        let tls = tokio_rustls::TlsConnector::from(client_config())
            .connect(name, tcp)
            .await?;
        return Ok(Box::new(tls));
    }
    let mut tcp = tcp;
    tcp.write_all(hello_bytes).await?;
    let mut back = vec![0u8; hello_bytes.len()];
    tcp.read_exact(&mut back).await?;
    Ok(Box::new(tcp))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

async fn keepalive(c: &Common) -> Figures {
    let hello_bytes = hello(&c.sni);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..c.conns {
        let mut s = match open(c, &c.sni, &hello_bytes).await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let (stop, size) = (Arc::clone(&stop), c.size);
        tasks.push(tokio::spawn(async move {
            let (msg, mut back) = (vec![7u8; size], vec![0u8; size]);
            let (mut hist, mut ops) = (histogram(), 0u64);
            while !stop.load(Relaxed) {
                let t = Instant::now();
                if s.write_all(&msg).await.is_err() || s.read_exact(&mut back).await.is_err() {
                    return (hist, ops, 1u64);
                }
                let _ = hist.record(t.elapsed().as_micros() as u64);
                ops += 1;
            }
            (hist, ops, 0)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(c.secs)).await;
    stop.store(true, Relaxed);
    collect(tasks, started, c.conns).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64, u64)>>,
    started: Instant,
    wanted: usize,
) -> Figures {
    let wall = started.elapsed();
    let mut f = Figures {
        hist: Some(histogram()),
        wall,
        failures: (wanted - tasks.len()) as u64,
        ..Figures::default()
    };
    for t in tasks {
        if let Ok((h, ops, failures)) = t.await {
            f.ops += ops;
            f.failures += failures;
            if let Some(all) = f.hist.as_mut() {
                let _ = all.add(&h);
            }
        }
    }
    f
}

async fn connect(c: &Common) -> Figures {
    let hello_bytes = Arc::new(hello(&c.sni));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..c.conns)
        .map(|_| {
            let (c, stop, hello_bytes) = (c.clone(), Arc::clone(&stop), Arc::clone(&hello_bytes));
            tokio::spawn(async move {
                let (mut hist, mut ops, mut failures) = (histogram(), 0u64, 0u64);
                while !stop.load(Relaxed) {
                    let t = Instant::now();
                    match open(&c, &c.sni, &hello_bytes).await {
                        Ok(_) => {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                            ops += 1;
                        }
                        Err(_) => failures += 1,
                    }
                }
                (hist, ops, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(c.secs)).await;
    stop.store(true, Relaxed);
    collect(tasks, started, c.conns).await
}

/// A ClientHello template whose SNI is patched per connection: 16 hex
/// digits of a counter, so every connection names a host never seen.
async fn flood(c: &Common) -> Figures {
    const MARK: &str = "0000000000000000.flood.invalid";
    let template = Arc::new(hello(MARK));
    let at = template
        .windows(16)
        .position(|w| w == &MARK.as_bytes()[..16])
        .expect("sni in the hello");
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..c.conns)
        .map(|_| {
            let (c, stop, template, next) = (
                c.clone(),
                Arc::clone(&stop),
                Arc::clone(&template),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let (mut hist, mut ops, mut failures) = (histogram(), 0u64, 0u64);
                let mut bytes = template.to_vec();
                let mut sink = [0u8; 512];
                while !stop.load(Relaxed) {
                    let n = next.fetch_add(1, Relaxed);
                    bytes[at..at + 16].copy_from_slice(format!("{n:016x}").as_bytes());
                    let t = Instant::now();
                    let closed = async {
                        let mut tcp = TcpStream::connect(c.target).await?;
                        tcp.write_all(&bytes).await?;
                        // No route: the proxy closes; a reset counts too.
                        while tcp.read(&mut sink).await? > 0 {}
                        Ok::<_, std::io::Error>(())
                    };
                    match tokio::time::timeout(Duration::from_secs(5), closed).await {
                        Ok(_) => {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                            ops += 1;
                        }
                        Err(_) => failures += 1,
                    }
                }
                (hist, ops, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(c.secs)).await;
    stop.store(true, Relaxed);
    collect(tasks, started, c.conns).await
}

async fn bulk(c: &Common) -> Figures {
    let hello_bytes = hello(&c.sni);
    let want = c.size as u64 * 1_000_000;
    let started = Instant::now();
    let Ok(mut tcp) = TcpStream::connect(c.target).await else {
        return Figures {
            failures: 1,
            wall: started.elapsed(),
            ..Figures::default()
        };
    };
    let _ = tcp.write_all(&hello_bytes).await;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < want {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    Figures {
        ops: 1,
        bytes: got,
        wall: started.elapsed(),
        failures: u64::from(got < want),
        ..Figures::default()
    }
}

async fn hold(c: &Common) -> Figures {
    let hello_bytes = hello(&c.sni);
    let before = rss_kb(&c.pid);
    let mut held = Vec::with_capacity(c.conns);
    let mut failures = 0;
    let started = Instant::now();
    for _ in 0..c.conns {
        match TcpStream::connect(c.target).await {
            Ok(mut s) => {
                let _ = s.write_all(&hello_bytes).await;
                held.push(s);
            }
            Err(_) => failures += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(&c.pid);
    let n = held.len().max(1) as i64;
    // A healthy client is still served.
    let healthy = healthy(c).await;
    Figures {
        ops: held.len() as u64,
        failures: failures + u64::from(healthy.is_none()),
        wall: started.elapsed(),
        per_conn_bytes: Some((after - before) * 1024 / n),
        rss_kb: Some(after),
        tcp_mem_kb: tcp_mem_kb(),
        hist: healthy,
        ..Figures::default()
    }
}

/// One healthy client on --sni (an echo route): hello echoed, then 64 B,
/// its latency in the histogram; `None` if it was not served.
async fn healthy(c: &Common) -> Option<Histogram<u64>> {
    let echo = hello("echo.bench.test");
    let started = Instant::now();
    let mut io = tokio::time::timeout(Duration::from_secs(5), open(c, "echo.bench.test", &echo))
        .await
        .ok()?
        .ok()?;
    io.write_all(&[7u8; 64]).await.ok()?;
    let mut back = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut back))
        .await
        .ok()?
        .ok()?;
    let mut h = histogram();
    let _ = h.record(started.elapsed().as_micros() as u64);
    Some(h)
}

async fn slowloris(c: &Common) -> Figures {
    // A handshake record of 16,384 bytes holding a ClientHello of 16,380,
    // of which only the version ever comes at once.
    const START: [u8; 11] = [
        0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03,
    ];
    let before = rss_kb(&c.pid);
    let started = Instant::now();
    let mut open_conns = Vec::with_capacity(c.conns);
    let mut failures = 0;
    for _ in 0..c.conns {
        match TcpStream::connect(c.target).await {
            Ok(mut s) => {
                if s.write_all(&START).await.is_ok() {
                    open_conns.push(s);
                }
            }
            Err(_) => failures += 1,
        }
    }
    // Dribble: 64 more bytes a second to each that is still open.
    let dribble = [0x42u8; 64];
    let mut peak_rss = rss_kb(&c.pid);
    let mut peak_tcp = tcp_mem_kb().unwrap_or(0);
    for _ in 0..c.secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut kept = Vec::with_capacity(open_conns.len());
        for mut s in open_conns {
            if s.try_write(&dribble).is_ok() {
                kept.push(s);
            } else {
                let _ = s.flush().await;
            }
        }
        open_conns = kept;
        peak_rss = peak_rss.max(rss_kb(&c.pid));
        peak_tcp = peak_tcp.max(tcp_mem_kb().unwrap_or(0));
    }
    // Which are still open (a closed one reads end of stream or a reset).
    let mut still = 0;
    for s in &open_conns {
        let mut byte = [0u8; 1];
        match s.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => still += 1,
            _ => {}
        }
    }
    let healthy = healthy(c).await;
    let n = c.conns.max(1) as i64;
    Figures {
        ops: still as u64,
        failures: failures + u64::from(healthy.is_none()),
        wall: started.elapsed(),
        per_conn_bytes: Some((peak_rss - before) * 1024 / n),
        rss_kb: Some(peak_rss),
        tcp_mem_kb: Some(peak_tcp),
        hist: healthy,
        ..Figures::default()
    }
}

async fn routes(c: &Common) -> Figures {
    // Distinct names in the upper half of the map, so no lookup cache helps.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let hist_ops = Arc::new(AtomicU64::new(0));
    let mut hist = histogram();
    let mut failures = 0;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(c.secs);
    while Instant::now() < deadline {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = c.routes / 2 + (x as usize) % (c.routes / 2).max(1);
        let sni = format!("r{i}.bench.test");
        let hello_bytes = hello(&sni);
        let t = Instant::now();
        match open(c, &sni, &hello_bytes).await {
            Ok(_) => {
                let _ = hist.record(t.elapsed().as_micros() as u64);
                hist_ops.fetch_add(1, Relaxed);
            }
            Err(_) => failures += 1,
        }
    }
    Figures {
        ops: hist_ops.load(Relaxed),
        failures,
        wall: started.elapsed(),
        hist: Some(hist),
        ..Figures::default()
    }
}

/// Something an idle HTTP client keeps so that its connection stays open.
type Held = Box<dyn std::any::Any + Send>;

/// One TLS connection that has had one request answered (status 2xx, body
/// read to its end) and is then left idle, as a browser leaves it.
async fn http_once(c: &Common, config: &Arc<rustls::ClientConfig>, h2: bool) -> Option<Held> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = TcpStream::connect(c.target).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    let name = rustls::pki_types::ServerName::try_from(c.sni.clone()).ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .ok()?;
    let io = TokioIo::new(tls);
    // HTTP/1.1 in origin form (hyper's connection writes the target as
    // given); h2 with its authority.
    let uri = if h2 {
        format!("https://{}/", c.sni)
    } else {
        "/".to_string()
    };
    // h2 carries the name in :authority (from the URI); a Host header
    // beside it is refused by some servers.
    let request = || {
        let mut r = hyper::Request::get(uri.as_str());
        if !h2 {
            r = r.header(hyper::header::HOST, c.sni.as_str());
        }
        r.body(Empty::<bytes::Bytes>::new()).ok()
    };
    let (response, held): (_, Held) = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .ok()?;
        let task = tokio::spawn(conn);
        let response = send.send_request(request()?).await.ok()?;
        (response, Box::new((send, task)))
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        let task = tokio::spawn(conn);
        let response = send.send_request(request()?).await.ok()?;
        (response, Box::new((send, task)))
    };
    if !response.status().is_success() {
        return None;
    }
    response.into_body().collect().await.ok()?;
    Some(held)
}

async fn http_hold(c: &Common, h2: bool) -> Figures {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let config = client_config_alpn(alpn);
    let before = rss_kb(&c.pid);
    let started = Instant::now();
    let mut held = Vec::with_capacity(c.conns);
    let mut failures = 0;
    // 16 at a time: handshakes overlap, as clients arriving together do.
    let mut batch = tokio::task::JoinSet::new();
    let mut started_n = 0;
    while started_n < c.conns || !batch.is_empty() {
        while started_n < c.conns && batch.len() < 16 {
            let (c, config) = (c.clone(), Arc::clone(&config));
            batch.spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), http_once(&c, &config, h2))
                    .await
                    .ok()
                    .flatten()
            });
            started_n += 1;
        }
        match batch.join_next().await {
            Some(Ok(Some(h))) => held.push(h),
            Some(_) => failures += 1,
            None => break,
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(&c.pid);
    let n = held.len().max(1) as i64;
    Figures {
        ops: held.len() as u64,
        failures,
        wall: started.elapsed(),
        per_conn_bytes: Some((after - before) * 1024 / n),
        rss_kb: Some(after),
        tcp_mem_kb: tcp_mem_kb(),
        ..Figures::default()
    }
}
