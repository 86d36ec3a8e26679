//! The `switchyard run` process and its signals: SIGHUP reloads (here with
//! the file watcher off, so only the signal can have done it), SIGTERM stops
//! accepting, lets open connections finish, then exits 0.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// `switchyard run` on `config` with a drain deadline.
fn run(config: &std::path::Path, drain_secs: u64) -> Process {
    let drain = drain_secs.to_string();
    Process::start(&[
        "run",
        "--config",
        config.to_str().expect("utf-8"),
        "--drain",
        &drain,
    ])
}

struct Setup {
    pki: Pki,
    alpha: NamedServer,
    beta: NamedServer,
    dir: ConfigDir,
    addr: SocketAddr,
}

async fn setup(reload_section: &str) -> Setup {
    let pki = Pki::new();
    let alpha = named_server("alpha", pki.server_config(&["svc.test"])).await;
    let beta = named_server("beta", pki.server_config(&["svc.test"])).await;
    let dir = ConfigDir::new();
    let addr = closed_port();
    dir.write("maps/os_sni_passthrough.map", "^svc\\.test$ 1\n");
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:t:alpha\n", route_regex("svc.test")),
    );
    dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"public_ssl\"\nbind = \"{addr}\"\n\n\
             [maps]\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\n\
             {reload_section}\n\
             [stats]\nbind = \"{}\"\n\n\
             [[backend]]\nname = \"be_tcp:t:alpha\"\nservers = [{{ name = \"a\", address = \"{}\" }}]\n\n\
             [[backend]]\nname = \"be_tcp:t:beta\"\nservers = [{{ name = \"b\", address = \"{}\" }}]\n",
            closed_port(),
            alpha.addr,
            beta.addr
        ),
    );
    Setup {
        pki,
        alpha,
        beta,
        dir,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let s = setup("[reload]\nwatch = false\n").await;
    let _ = (&s.alpha, &s.beta);
    let process = run(&s.dir.path().join("switchyard.toml"), 5);
    let server = |s: &Setup| {
        let (addr, config) = (s.addr, s.pki.client_config());
        async move {
            Open::connect(addr, "svc.test", config)
                .await
                .expect("connect")
                .server
        }
    };
    assert_eq!(server(&s).await, "alpha");
    s.dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:t:beta\n", route_regex("svc.test")),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        server(&s).await,
        "alpha",
        "watching is off: the edit waits for SIGHUP"
    );
    process.signal("HUP");
    let started = Instant::now();
    while server(&s).await != "beta" {
        assert!(started.elapsed() < WAIT, "SIGHUP applied the edit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_connections_then_exits_zero() {
    let s = setup("").await;
    let mut process = run(&s.dir.path().join("switchyard.toml"), 20);
    let mut held = Open::connect(s.addr, "svc.test", s.pki.client_config())
        .await
        .expect("connect");
    process.signal("TERM");
    // New connections are refused once the listener is closed.
    let started = Instant::now();
    while tokio::net::TcpStream::connect(s.addr).await.is_ok() {
        assert!(started.elapsed() < WAIT, "listener closed after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held.echo(b"still served while draining")
        .await
        .expect("open connection keeps working");
    assert!(
        process.wait(Duration::from_millis(300)).is_none(),
        "waits for the open connection"
    );
    drop(held);
    let status = tokio::task::spawn_blocking(move || process.wait(WAIT))
        .await
        .expect("join");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exits 0 once drained"
    );
}
