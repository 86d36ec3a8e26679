//! Reload at scale: loading (read, parse, validate, compile) a configuration
//! of 100,000 OpenShift-shaped routes and 10,000 backends, fresh and as a
//! reload that carries state over from the previous snapshot, a reload
//! after one map line changed, and a million routes. Also prints
//! the heap bytes the loaded snapshot holds (a counting allocator around
//! mimalloc) and the resident memory after loading.
//! `cargo bench --bench reload`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

/// The allocator the router runs with, so that the figures are its own,
/// counting the bytes live so that a snapshot's own size can be told from
/// what the allocator keeps of the load's transient memory.
#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Counting;

// SAFETY: every method forwards its arguments unchanged to mimalloc, a
// sound `GlobalAlloc`, and returns its result unchanged; the only addition
// is an atomic counter that neither reads nor writes the memory. The
// caller's obligations (layout, pointer provenance) pass through as they
// are.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, std::sync::atomic::Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new) }
    }
}

fn live_bytes() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

const ROUTES: usize = 100_000;
const BACKENDS: usize = 10_000;

/// Writes the configuration into `dir` and returns the main file.
fn write_config(dir: &Path) -> std::path::PathBuf {
    write_routes(dir, ROUTES)
}

/// The configuration with `routes` routes.
fn write_routes(dir: &Path, routes: usize) -> std::path::PathBuf {
    let mut backends = String::new();
    for b in 0..BACKENDS {
        let _ = writeln!(
            backends,
            "[[backend]]\nname = \"be_tcp:ns{b}:app\"\nbalance = \"roundrobin\"\nservers = [\n  \
             {{ name = \"pod-a\", address = \"10.{}.{}.1:8443\", weight = 256 }},\n  \
             {{ name = \"pod-b\", address = \"10.{}.{}.2:8443\", weight = 256 }},\n]",
            b / 256,
            b % 256,
            b / 256,
            b % 256
        );
    }
    std::fs::write(dir.join("backends.toml"), backends).expect("backends");
    let (mut sni, mut tcp) = (String::new(), String::new());
    for r in 0..routes {
        let host = format!("r{r}\\.apps\\.bench\\.test");
        let _ = writeln!(sni, "^{host}$ 1");
        let _ = writeln!(
            tcp,
            "^{host}\\.?(:[0-9]+)?(/.*)?$ be_tcp:ns{}:app",
            r % BACKENDS
        );
    }
    std::fs::write(dir.join("os_sni_passthrough.map"), sni).expect("map");
    std::fs::write(dir.join("os_tcp_be.map"), tcp).expect("map");
    let main = dir.join("switchyard.toml");
    std::fs::write(
        &main,
        "backend_files = [\"backends.toml\"]\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
         [maps]\nsni_passthrough = \"os_sni_passthrough.map\"\ntcp_be = \"os_tcp_be.map\"\n",
    )
    .expect("main");
    main
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn reload(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write_config(dir.path());
    let (before, live_before) = (rss_kb(), live_bytes());
    // The snapshot and the loader's memo of it, as the reloader keeps them.
    let switchyard::config::Loaded {
        snapshot: first,
        memo,
        ..
    } = switchyard::config::load(&main).expect("load");
    let (after, live_after) = (rss_kb(), live_bytes());
    eprintln!(
        "snapshot of {ROUTES} routes x2 maps and {BACKENDS} backends: {:.1} MB on the heap, {} MB resident after loading",
        live_after.saturating_sub(live_before) as f64 / 1e6,
        (after.saturating_sub(before)) / 1024
    );
    {
        // The same backends with no routes: the share of each.
        let bare = tempfile::tempdir().expect("tempdir");
        let main = write_routes(bare.path(), 0);
        let before = live_bytes();
        let backends = switchyard::config::load(&main).expect("load").snapshot;
        let held = live_bytes().saturating_sub(before);
        let total = live_after.saturating_sub(live_before);
        eprintln!(
            "  of which {BACKENDS} backends (2 servers each): {:.1} MB; the routes: {:.1} MB",
            held as f64 / 1e6,
            total.saturating_sub(held) as f64 / 1e6
        );
        drop(backends);
    }
    let mut group = c.benchmark_group("reload");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("load_100k_routes_10k_backends", |b| {
        b.iter(|| switchyard::config::load(&main).expect("load"))
    });
    group.bench_function("reload_100k_routes_10k_backends_carrying_state", |b| {
        b.iter(|| switchyard::config::reload(&main, &first, &memo).expect("load"))
    });
    // One line of os_tcp_be.map changed (the route of r50000 moved to
    // another backend): the edited file is swapped in by rename, reloaded
    // after the first snapshot, and swapped back.
    let tcp = dir.path().join("os_tcp_be.map");
    let edited = dir.path().join("os_tcp_be.map.edited");
    let original = dir.path().join("os_tcp_be.map.original");
    let text = std::fs::read_to_string(&tcp).expect("map");
    let one_line = text.replacen(
        &format!("be_tcp:ns{}:app\n", 50_000 % BACKENDS),
        &format!("be_tcp:ns{}:app\n", 50_001 % BACKENDS),
        1,
    );
    assert_ne!(text, one_line);
    std::fs::write(&edited, one_line).expect("edited");
    group.bench_function("reload_100k_routes_one_line_edited", |b| {
        b.iter(|| {
            std::fs::rename(&tcp, &original).expect("rename");
            std::fs::rename(&edited, &tcp).expect("rename");
            let loaded = switchyard::config::reload(&main, &first, &memo).expect("load");
            std::fs::rename(&tcp, &edited).expect("rename");
            std::fs::rename(&original, &tcp).expect("rename");
            loaded
        })
    });
    group.finish();
}

/// One scrape of the stats port with 10,000 backends (20,000 servers):
/// the report is built and rendered on a blocking thread, so this is what
/// a scrape costs, not time taken from the workers that relay traffic.
fn stats_render(c: &mut Criterion) {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write_config(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let stats = rt.block_on(async {
        let snapshot = switchyard::config::load(&main).expect("load").snapshot;
        let router = switchyard::Router::start(snapshot).expect("router");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = switchyard::StatsConfig {
            bind: Some(addr),
            credentials: None,
        };
        let status = Arc::new(switchyard::reload::Status::default());
        tokio::spawn(switchyard::serve_stats(listener, router, status, config));
        addr
    });
    let get = |path: &'static str| async move {
        let mut tcp = tokio::net::TcpStream::connect(stats)
            .await
            .expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("send");
        let mut body = Vec::new();
        tcp.read_to_end(&mut body).await.expect("read");
        assert!(
            body.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&body[..40.min(body.len())])
        );
        body.len()
    };
    let mut group = c.benchmark_group("stats_10k_backends");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("metrics", |b| b.iter(|| rt.block_on(get("/metrics"))));
    group.bench_function("stats_page", |b| b.iter(|| rt.block_on(get("/stats"))));
    group.finish();
}

/// A million routes (two maps of 1,000,000 lines) and 10,000 backends:
/// the full load's time and the heap its snapshot holds.
fn million(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write_routes(dir.path(), 1_000_000);
    let live_before = live_bytes();
    let started = std::time::Instant::now();
    let snapshot = switchyard::config::load(&main).expect("load").snapshot;
    let took = started.elapsed();
    eprintln!(
        "1,000,000 routes x2 maps and {BACKENDS} backends: loaded in {:.2} s, {:.1} MB on the heap",
        took.as_secs_f64(),
        live_bytes().saturating_sub(live_before) as f64 / 1e6
    );
    drop(snapshot);
    let mut group = c.benchmark_group("reload_1m");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("load_1m_routes_10k_backends", |b| {
        b.iter(|| switchyard::config::load(&main).expect("load"))
    });
    group.finish();
}

criterion_group!(benches, reload, million, stats_render);
criterion_main!(benches);
