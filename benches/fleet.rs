//! The fleet-scale reload figure: 100,000 routes, 2,000 long-lived
//! passthrough connections spread over 1,000 backends, and 30 reloads that
//! each change one map line, with the router in this process (on its own
//! allocator). Prints the resident memory after the first and the 30th
//! reload, the route tables alive at the end, and whether every connection
//! still relays. All traffic stays on loopback.
//!
//!   cargo bench --bench fleet

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUTES: usize = 100_000;
const BACKENDS: usize = 1_000;
const CONNS: usize = 2_000;
const RELOADS: usize = 30;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The bytes of a ClientHello for `sni`.
fn hello(sni: &str) -> Vec<u8> {
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

/// The route map with route `ROUTES - 1` sent to backend `edit`.
fn tcp_map(edit: usize) -> String {
    let mut map = String::with_capacity(ROUTES * 64);
    for i in 0..ROUTES {
        let backend = if i == ROUTES - 1 {
            edit % BACKENDS
        } else {
            i % BACKENDS
        };
        let _ = writeln!(
            map,
            "^r{i}\\.fleet\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:fleet:b{backend}"
        );
    }
    map
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = echo.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().expect("dir");
    let mut sni = String::new();
    for i in 0..ROUTES {
        let _ = writeln!(sni, "^r{i}\\.fleet\\.test$ 1");
    }
    std::fs::write(dir.path().join("sni.map"), sni).expect("sni");
    std::fs::write(dir.path().join("tcp.map"), tcp_map(0)).expect("tcp");
    let mut main = String::from(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nmax_connections = 10000\n\
         [stats]\nenabled = false\n\
         [maps]\nsni_passthrough = \"sni.map\"\ntcp_be = \"tcp.map\"\n",
    );
    for b in 0..BACKENDS {
        let _ = writeln!(
            main,
            "[[backend]]\nname = \"be_tcp:fleet:b{b}\"\nservers = [{{ name = \"s\", address = \"{server}\" }}]"
        );
    }
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, main).expect("main");
    let loaded = switchyard::config::load(&config).expect("load");
    let mut memo = loaded.memo;
    let router = switchyard::Router::start(loaded.snapshot).expect("router");
    let addr = router.local_addr("l").expect("listener");

    let mut open: Vec<TcpStream> = Vec::with_capacity(CONNS);
    let (mut after_first, mut reload_ms) = (0, Vec::new());
    for edit in 1..=RELOADS {
        // Connections accepted under every generation, over many backends.
        for i in (edit - 1) * CONNS / RELOADS..edit * CONNS / RELOADS {
            let hello = hello(&format!("r{i}.fleet.test"));
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(&hello).await.expect("hello");
            let mut back = vec![0u8; hello.len()];
            tcp.read_exact(&mut back).await.expect("relayed");
            open.push(tcp);
        }
        std::fs::write(dir.path().join("tcp.map"), tcp_map(edit)).expect("edit");
        let started = Instant::now();
        // As the reloader does: what did not change is reused.
        let loaded = switchyard::config::reload(&config, &router.snapshot(), &memo).expect("load");
        router.apply(loaded.snapshot).expect("apply");
        memo = loaded.memo;
        reload_ms.push(started.elapsed().as_secs_f64() * 1e3);
        if edit == 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            after_first = rss_kb();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_last = rss_kb();
    let mut relaying = 0;
    for tcp in &mut open {
        let mut back = [0u8; 14];
        let ok = tcp.write_all(b"still relaying").await.is_ok()
            && tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut back))
                .await
                .is_ok_and(|r| r.is_ok());
        relaying += usize::from(ok && &back == b"still relaying");
    }
    reload_ms.sort_by(f64::total_cmp);
    println!(
        "fleet: {ROUTES} routes, {CONNS} connections over {BACKENDS} backends, {RELOADS} one-line reloads: \
         RSS after the 1st {after_first} kB, after the {RELOADS}th {after_last} kB ({:.2}x); \
         route tables alive {}; {relaying}/{CONNS} connections relaying; reload (load + apply) median {:.1} ms, max {:.1} ms",
        after_last as f64 / after_first.max(1) as f64,
        router.live_snapshots(),
        reload_ms[reload_ms.len() / 2],
        reload_ms[reload_ms.len() - 1],
    );
}
