//! The data path through real loopback sockets, in-process: a client sends
//! a ClientHello, Switchyard routes it to a plain TCP echo server (bytes are
//! relayed untouched, so the server needs no TLS), then the client measures
//! small round trips, bulk transfer, and whole new connections.
//! `cargo bench --bench relay`; run it before and after any data-path change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

fn hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("echo.bench.test").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Starts Switchyard in front of an echo server; returns it (dropping it
/// stops its listeners) and its address.
fn start(rt: &Runtime, dir: &std::path::Path) -> (Arc<switchyard::Router>, SocketAddr) {
    rt.block_on(async {
        let echo = echo_server().await;
        let config = dir.join("switchyard.toml");
        std::fs::write(dir.join("os_tcp_be.map"), "^echo\\.bench\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:bench:echo\n")
            .expect("map");
        let toml = format!(
            "[[listener]]\nname = \"bench\"\nbind = \"127.0.0.1:0\"\n[maps]\ntcp_be = \"os_tcp_be.map\"\n\
             [[backend]]\nname = \"be_tcp:bench:echo\"\nservers = [{{ name = \"echo\", address = \"{echo}\" }}]\n"
        );
        std::fs::write(&config, toml).expect("config");
        let loaded = switchyard::config::load(&config).expect("load");
        let router = switchyard::Router::start(loaded.snapshot).expect("start");
        let addr = router.local_addr("bench").expect("addr");
        (router, addr)
    })
}

/// A relayed connection whose ClientHello has come back from the echo server.
async fn open(addr: SocketAddr, hello: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(hello).await.expect("hello");
    let mut back = vec![0u8; hello.len()];
    s.read_exact(&mut back).await.expect("hello echoed");
    s
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_router, addr) = start(&rt, dir.path());
    let hello = hello();
    let mut group = c.benchmark_group("relay");

    group.throughput(Throughput::Elements(1));
    group.bench_function("round_trip_64B", |b| {
        let mut s = rt.block_on(open(addr, &hello));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let msg = [7u8; 64];
                let mut back = [0u8; 64];
                let t = Instant::now();
                for _ in 0..iters {
                    s.write_all(&msg).await.expect("write");
                    s.read_exact(&mut back).await.expect("read");
                }
                t.elapsed()
            })
        })
    });

    group.bench_function("new_connection_hello_echoed", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    drop(open(addr, &hello).await);
                }
                t.elapsed()
            })
        })
    });

    const BULK: usize = 4 << 20;
    group.throughput(Throughput::Bytes(BULK as u64));
    group.sample_size(20);
    group.bench_function("bulk_4MiB_echoed", |b| {
        let s = rt.block_on(open(addr, &hello));
        let (mut r, mut w) = s.into_split();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let chunk = vec![1u8; 64 * 1024];
                let mut sink = vec![0u8; 64 * 1024];
                let t = Instant::now();
                for _ in 0..iters {
                    let writer = async {
                        for _ in 0..BULK / chunk.len() {
                            w.write_all(&chunk).await.expect("write");
                        }
                    };
                    let reader = async {
                        let mut got = 0;
                        while got < BULK {
                            got += r.read(&mut sink).await.expect("read");
                        }
                    };
                    tokio::join!(writer, reader);
                }
                t.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = relay
}
criterion_main!(benches);
