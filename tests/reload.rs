//! Live configuration through real sockets: edits made the ways real tools
//! make them are applied in-process while a client keeps connecting, with
//! no failed connection and every connection routed by the old or the new
//! map; bad edits are refused; long connections outlive reloads.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use switchyard::reload;
use switchyard::Router;

const SNI: &str = "svc.test";

/// Two backends, `alpha` and `beta`, both with certificates for `svc.test`;
/// the map sends `svc.test` to one of them.
struct Setup {
    pki: Pki,
    alpha: NamedServer,
    beta: NamedServer,
    dir: ConfigDir,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let alpha = named_server("alpha", pki.server_config(&[SNI])).await;
    let beta = named_server("beta", pki.server_config(&[SNI])).await;
    let dir = ConfigDir::new();
    dir.write("maps/os_sni_passthrough.map", "^svc\\.test$ 1\n");
    Setup {
        pki,
        alpha,
        beta,
        dir,
    }
}

fn backends(s: &Setup) -> String {
    format!(
        "[[backend]]\nname = \"be_tcp:t:alpha\"\nservers = [{{ name = \"a\", address = \"{}\" }}]\n\n\
         [[backend]]\nname = \"be_tcp:t:beta\"\nservers = [{{ name = \"b\", address = \"{}\" }}]\n",
        s.alpha.addr, s.beta.addr
    )
}

/// The map text that routes `svc.test` to `target`, with padding routes so
/// that a half-written file would be visibly incomplete.
fn map_to(target: &str) -> String {
    let mut text = String::from("# generated\n");
    for i in 0..200 {
        text.push_str(&format!(
            "{} be_tcp:t:alpha\n",
            route_regex(&format!("pad{i}.test"))
        ));
    }
    text.push_str(&format!("{} be_tcp:t:{target}\n", route_regex(SNI)));
    text
}

/// Starts router and reloader on the configuration in `s.dir`.
fn start_live(s: &Setup, first: &str) -> (Arc<Router>, reload::Reloader, std::net::SocketAddr) {
    s.dir.write("maps/os_tcp_be.map", &map_to(first));
    let config = s.dir.main("", &backends(s));
    let (router, addr) = start(&config);
    let reloader = reload::spawn(config, Arc::clone(&router), Default::default());
    (router, reloader, addr)
}

/// Connects until a connection lands on `expected` (bounded by `WAIT`).
async fn until_routed_to(addr: std::net::SocketAddr, pki: &Pki, expected: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < WAIT {
        let open = Open::connect(addr, SNI, pki.client_config())
            .await
            .expect("connect");
        if open.server == expected {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never routed to {expected}");
}

/// A client that connects continuously until stopped; counts connections
/// and failures, and checks every answer is one of the two servers.
fn hammer(
    addr: std::net::SocketAddr,
    pki: &Pki,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(usize, usize)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let config = pki.client_config();
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let (mut ok, mut failed) = (0, 0);
        let started = Instant::now();
        while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
            match Open::connect(addr, SNI, Arc::clone(&config)).await {
                Ok(mut open) if open.server == "alpha" || open.server == "beta" => {
                    match open.echo(b"x").await {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                _ => failed += 1,
            }
        }
        (ok, failed)
    });
    (stop, task)
}

/// Truncates and rewrites in place, pausing halfway through a line, as a
/// generator that writes its maps directly does.
fn write_in_place(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("truncate");
    let half = text.len() / 2;
    f.write_all(&text.as_bytes()[..half]).expect("first half");
    f.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(250));
    f.write_all(&text.as_bytes()[half..]).expect("second half");
}

/// Writes a temporary file and renames it over, as editors do.
fn write_and_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("map.tmp~");
    std::fs::write(&tmp, text).expect("tmp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Deletes, then recreates a moment later.
fn delete_and_recreate(path: &Path, text: &str) {
    std::fs::remove_file(path).expect("rm");
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(path, text).expect("recreate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_edit_applies_with_no_failed_connection() {
    let s = setup().await;
    let (router, reloader, addr) = start_live(&s, "alpha");
    let (stop, client) = hammer(addr, &s.pki);
    let map = s.dir.path().join("maps/os_tcp_be.map");
    let mut target = "alpha";
    let mut latencies = Vec::new();
    for round in 0..2 {
        for edit in [write_in_place, write_and_rename, delete_and_recreate] {
            target = if target == "alpha" { "beta" } else { "alpha" };
            let text = map_to(target);
            let path = map.clone();
            tokio::task::spawn_blocking(move || edit(&path, &text))
                .await
                .expect("edit");
            latencies.push(until_routed_to(addr, &s.pki, target).await);
            assert_eq!(
                reloader.status.get().refused,
                0,
                "round {round}: no half-written file was read"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.await.expect("client");
    assert_eq!(failed, 0, "{ok} connections succeeded, {failed} failed");
    assert!(ok > 0);
    assert!(
        router.generation() >= 7,
        "six edits applied, generation {}",
        router.generation()
    );
    let slowest = latencies.iter().max().expect("latencies");
    assert!(
        *slowest < Duration::from_secs(3),
        "slowest edit took {slowest:?}"
    );
}

/// Lays out `maps/` as a ConfigMap volume: the files are symlinks through
/// `..data`, which points at a timestamped directory.
fn configmap_publish(maps: &Path, version: u32, files: &[(&str, String)]) {
    let dir_name = format!("..2026_11_22_v{version}");
    let target = maps.join(&dir_name);
    std::fs::create_dir_all(&target).expect("mkdir");
    for (name, text) in files {
        std::fs::write(target.join(name), text).expect("write");
    }
    let tmp = maps.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&dir_name, &tmp).expect("symlink");
    std::fs::rename(&tmp, maps.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = maps.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(PathBuf::from("..data").join(name), &link).expect("link");
        }
    }
    if version > 1 {
        let _ = std::fs::remove_dir_all(maps.join(format!("..2026_11_22_v{}", version - 1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_applies() {
    let s = setup().await;
    let maps = s.dir.path().join("maps");
    std::fs::remove_file(maps.join("os_sni_passthrough.map")).expect("rm");
    let files = |target: &str| {
        vec![
            ("os_sni_passthrough.map", "^svc\\.test$ 1\n".to_string()),
            ("os_tcp_be.map", map_to(target)),
        ]
    };
    configmap_publish(&maps, 1, &files("alpha"));
    let config = s.dir.main("", &backends(&s));
    let (router, addr) = start(&config);
    let _reloader = reload::spawn(config, Arc::clone(&router), Default::default());
    let (stop, client) = hammer(addr, &s.pki);
    until_routed_to(addr, &s.pki, "alpha").await;
    for (version, target) in [(2, "beta"), (3, "alpha"), (4, "beta")] {
        configmap_publish(&maps, version, &files(target));
        until_routed_to(addr, &s.pki, target).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.await.expect("client");
    assert_eq!(failed, 0, "{ok} ok, {failed} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_edit_is_refused_then_fixed() {
    let s = setup().await;
    let (router, reloader, addr) = start_live(&s, "alpha");
    let map = s.dir.path().join("maps/os_tcp_be.map");
    let generation = router.generation();
    let bad = format!("{}\n^(broken$ be_tcp:t:beta\n", map_to("beta"));
    write_and_rename(&map, &bad);
    let started = Instant::now();
    while reloader.status.get().refused == 0 && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = reloader.status.get();
    assert_eq!(status.refused, 1);
    let error = status.last_error.expect("error kept");
    assert!(
        error.contains("os_tcp_be.map:204: invalid regex"),
        "{error}"
    );
    assert_eq!(router.generation(), generation, "nothing applied");
    let open = Open::connect(addr, SNI, s.pki.client_config())
        .await
        .expect("connect");
    assert_eq!(open.server, "alpha", "the last good map keeps serving");

    write_and_rename(&map, &map_to("beta"));
    until_routed_to(addr, &s.pki, "beta").await;
    assert!(
        reloader.status.get().last_error.is_none(),
        "a good edit clears the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_connection_outlives_reloads_and_pins_no_snapshot() {
    let s = setup().await;
    let (router, _reloader, addr) = start_live(&s, "alpha");
    let mut long = Open::connect(addr, SNI, s.pki.client_config())
        .await
        .expect("connect");
    assert_eq!(long.server, "alpha");
    let map = s.dir.path().join("maps/os_tcp_be.map");
    for target in ["beta", "alpha", "beta"] {
        write_and_rename(&map, &map_to(target));
        until_routed_to(addr, &s.pki, target).await;
        long.echo(b"still here")
            .await
            .expect("long connection carries bytes");
    }
    // The connection keeps its route, not its configuration: the old
    // snapshots are freed while it is still open.
    let started = Instant::now();
    while router.live_snapshots() > 1 && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        router.live_snapshots(),
        1,
        "an open connection pins no old route table"
    );
    long.echo(b"and still relaying")
        .await
        .expect("long connection carries bytes");
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A TCP echo server: passthrough relays bytes, TLS or not.
async fn echo_server() -> std::net::SocketAddr {
    common::serve_each(|mut tcp| async move {
        let (mut r, mut w) = tcp.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// Long-lived connections across many reloads of a large map, with new
/// connections accepted under every generation: memory stays flat (no
/// route table is kept per reload) and every connection relays. A smaller
/// version of the fleet-scale figure (20,000 routes, 200 connections over
/// 50 backends, 10 one-line edits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_connections_do_not_pin_route_tables() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ROUTES: usize = 20_000;
    const BACKENDS: usize = 50;
    const CONNS: usize = 200;
    let server = echo_server().await;
    let dir = ConfigDir::new();
    let passthrough: String = (0..ROUTES)
        .map(|i| format!("^r{i}\\.big\\.test$ 1\n"))
        .collect();
    dir.write("maps/os_sni_passthrough.map", &passthrough);
    let map = |edit: usize| -> String {
        (0..ROUTES)
            .map(|i| {
                let backend = if i == ROUTES - 1 {
                    edit % BACKENDS
                } else {
                    i % BACKENDS
                };
                format!(
                    "{} be_tcp:t:b{backend}\n",
                    route_regex(&format!("r{i}.big.test"))
                )
            })
            .collect()
    };
    dir.write("maps/os_tcp_be.map", &map(0));
    let backends: String = (0..BACKENDS)
        .map(|b| {
            format!(
                "[[backend]]\nname = \"be_tcp:t:b{b}\"\nservers = [{{ name = \"s\", address = \"{server}\" }}]\n"
            )
        })
        .collect();
    let config = dir.main("", &backends);
    let (router, addr) = start(&config);
    let mut open = Vec::with_capacity(CONNS);
    let mut after_first = 0;
    for edit in 1..=10 {
        for i in (edit - 1) * CONNS / 10..edit * CONNS / 10 {
            let hello = client_hello(&format!("r{i}.big.test"));
            let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(&hello).await.expect("hello");
            let mut back = vec![0u8; hello.len()];
            tokio::time::timeout(WAIT, tcp.read_exact(&mut back))
                .await
                .expect("in time")
                .expect("the hello comes back through the route");
            open.push(tcp);
        }
        dir.write("maps/os_tcp_be.map", &map(edit));
        let loaded =
            switchyard::config::load_after(&config, Some(&router.snapshot())).expect("load");
        router.apply(loaded.snapshot).expect("apply");
        if edit == 1 {
            after_first = rss_kb();
        }
    }
    let after_last = rss_kb();
    assert_eq!(
        router.live_snapshots(),
        1,
        "no route table kept by connections"
    );
    assert!(
        after_last * 10 <= after_first * 12,
        "RSS after the 10th reload {after_last} kB vs after the first {after_first} kB"
    );
    for tcp in &mut open {
        tcp.write_all(b"still relaying").await.expect("write");
        let mut back = [0u8; 14];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("every connection relays");
        assert_eq!(&back, b"still relaying");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_state_and_rotation_survive_a_reload() {
    let s = setup().await;
    let (router, _reloader, addr) = start_live(&s, "alpha");
    let _held = Open::connect(addr, SNI, s.pki.client_config())
        .await
        .expect("connect");
    let before = router.snapshot();
    let alpha_before = Arc::clone(&before.backends[0].servers[0].state);
    assert_eq!(alpha_before.active(), 1);
    drop(before);
    write_and_rename(&s.dir.path().join("maps/os_tcp_be.map"), &map_to("beta"));
    until_routed_to(addr, &s.pki, "beta").await;
    let after = router.snapshot();
    assert!(
        Arc::ptr_eq(&alpha_before, &after.backends[0].servers[0].state),
        "same counters"
    );
    assert_eq!(
        after.backends[0].servers[0].state.active(),
        1,
        "the held connection is still counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_without_touching_the_others() {
    let s = setup().await;
    let (router, reloader, addr) = start_live(&s, "alpha");
    let mut held = Open::connect(addr, SNI, s.pki.client_config())
        .await
        .expect("connect");
    let config = s.dir.path().join("switchyard.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    let second = "\n[[listener]]\nname = \"second\"\nbind = \"127.0.0.1:0\"\n";
    let with_second = text.replacen("\n[maps]", &format!("{second}\n[maps]"), 1);
    std::fs::write(&config, &with_second).expect("write");
    let started = Instant::now();
    while router.local_addr("second").is_none() && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second_addr = router.local_addr("second").expect("second listener bound");
    assert_eq!(
        router.local_addr("public_ssl"),
        Some(addr),
        "first listener kept its socket"
    );
    let open = Open::connect(second_addr, SNI, s.pki.client_config())
        .await
        .expect("second serves");
    assert_eq!(open.server, "alpha");
    held.echo(b"x").await.expect("held connection unaffected");

    std::fs::write(&config, &text).expect("write back");
    while router.local_addr("second").is_some() && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        router.local_addr("second").is_none(),
        "second listener closed"
    );
    assert!(reloader.status.get().refused == 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(second_addr).await.is_err(),
        "its port is closed"
    );
    Open::connect(addr, SNI, s.pki.client_config())
        .await
        .expect("first still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_route_connections_close_after_grace_when_asked() {
    let pki = Pki::new();
    let alpha = named_server("alpha", pki.server_config(&["svc.test", "other.test"])).await;
    let dir = ConfigDir::new();
    dir.write(
        "maps/os_sni_passthrough.map",
        "^svc\\.test$ 1\n^other\\.test$ 1\n",
    );
    let both = format!(
        "{} be_tcp:t:alpha\n{} be_tcp:t:alpha\n",
        route_regex("svc.test"),
        route_regex("other.test")
    );
    dir.write("maps/os_tcp_be.map", &both);
    let backends = format!(
        "[reload]\nclose_removed_after = \"200ms\"\n\n\
         [[backend]]\nname = \"be_tcp:t:alpha\"\nservers = [{{ name = \"a\", address = \"{}\" }}]\n",
        alpha.addr
    );
    let config = dir.main("", &backends);
    let (router, addr) = start(&config);
    let _reloader = reload::spawn(config, Arc::clone(&router), Default::default());
    let mut removed = Open::connect(addr, "svc.test", pki.client_config())
        .await
        .expect("svc");
    let mut kept = Open::connect(addr, "other.test", pki.client_config())
        .await
        .expect("other");
    write_and_rename(
        &dir.path().join("maps/os_tcp_be.map"),
        &format!("{} be_tcp:t:alpha\n", route_regex("other.test")),
    );
    let started = Instant::now();
    while removed.echo(b"x").await.is_ok() {
        assert!(
            started.elapsed() < WAIT,
            "connection of the removed route closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "not before the grace period"
    );
    kept.echo(b"kept")
        .await
        .expect("a route that stays keeps its connections");
}
