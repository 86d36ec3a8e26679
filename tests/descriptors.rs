//! Running out of file descriptors, in a `switchyard` process started with
//! a low limit: the soft limit is raised to the hard one at start, accept
//! errors and checks that could not run are logged at most once a second
//! with a count, the router's own
//! shortage never marks a server down, and clients are served again as
//! soon as descriptors free up.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The router under `ulimit` settings (`sh -c "ulimit …; exec switchyard"`);
/// its stderr lines go to the receiver, those before `listening` to the
/// returned list.
fn start_limited(ulimit: &str, config: &std::path::Path) -> (Process, Vec<String>) {
    use std::io::BufRead;
    let script = format!("{ulimit} && exec \"$0\" --threads 1 run --config \"$1\"",);
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_switchyard")])
        .arg(config)
        .env("RUST_LOG", "info")
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
    let mut early = Vec::new();
    let listening = loop {
        let line = lines.recv_timeout(WAIT).expect("a listening line");
        if line.contains("listening") {
            break line;
        }
        early.push(line);
    };
    let process = Process {
        child,
        lines,
        listening,
        startup: early.clone(),
    };
    (process, early)
}

/// The port a `listening` line names.
fn port_of(line: &str) -> u16 {
    line.rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"))
}

fn config(dir: &ConfigDir, server: std::net::SocketAddr) -> std::path::PathBuf {
    dir.write(
        "maps/os_sni_passthrough.map",
        &format!("{} 1\n", route_regex("fd.test")),
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:f:echo\n", route_regex("fd.test")),
    );
    let extra = format!(
        "[stats]\nenabled = false\n\n[[backend]]\nname = \"be_tcp:f:echo\"\n\
         servers = [{{ name = \"echo\", address = \"{server}\" }}]\n\
         [backend.check]\ninterval = \"100ms\"\ntimeout = \"300ms\"\nfall = 1\nrise = 1\n"
    );
    dir.main("inspect_timeout = \"5s\"\nmax_connections = 1000\n", &extra)
}

#[tokio::test]
async fn the_soft_limit_is_raised_at_start() {
    let inner = Pki::new();
    let server = named_server("echo", inner.server_config(&["fd.test"])).await;
    let dir = ConfigDir::new();
    let config = config(&dir, server.addr);
    let (_process, early) = start_limited("ulimit -S -n 200", &config);
    let line = early
        .iter()
        .find(|l| l.contains("open files"))
        .unwrap_or_else(|| panic!("no open-files line in {early:#?}"));
    assert!(
        line.contains("raised from 200 to") || line.contains("limit 200"),
        "{line}"
    );
}

#[tokio::test]
async fn running_out_of_descriptors_is_the_routers_own_failure() {
    let inner = Pki::new();
    let server = named_server("echo", inner.server_config(&["fd.test"])).await;
    let dir = ConfigDir::new();
    let config = config(&dir, server.addr);
    let (process, _) = start_limited("ulimit -n 40", &config);
    let port = port_of(&process.listening);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // Idle clients (no ClientHello yet) until the router has no
    // descriptors left, and then some: accept fails over and over.
    let mut idle = Vec::new();
    for _ in 0..80 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
            idle.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut accept_lines = Vec::new();
    let mut check_lines = Vec::new();
    let mut down = Vec::new();
    while let Ok(line) = process.lines.try_recv() {
        if line.contains("accept failed") {
            accept_lines.push(line.clone());
        }
        if line.contains("check not run") {
            check_lines.push(line.clone());
        }
        if line.contains("server DOWN") {
            down.push(line);
        }
    }
    assert!(!accept_lines.is_empty(), "the limit was reached");
    assert!(
        accept_lines.len() <= 3,
        "accept errors are logged once a second: {accept_lines:#?}"
    );
    assert!(
        accept_lines
            .iter()
            .any(|l| l.contains("times=") && !l.contains("times=1 ")),
        "with a count: {accept_lines:#?}"
    );
    assert!(
        down.is_empty(),
        "checks that could not run mark nothing down: {down:#?}"
    );
    // The checker (every 100 ms) meets the same shortage: one line a
    // second at most, with a count, not one a check.
    assert!(
        !check_lines.is_empty()
            && check_lines.len() <= 3
            && check_lines.iter().all(|l| l.contains("times=")),
        "checks not run are logged once a second: {check_lines:#?}"
    );
    // Descriptors free again: the next client is served at once (the
    // server was never marked down).
    drop(idle);
    let started = Instant::now();
    let trust_any = {
        let mut c = (*Pki::new().client_config()).clone();
        c.dangerous().set_certificate_verifier(Arc::new(AcceptAny));
        Arc::new(c)
    };
    let open = loop {
        match Open::connect(addr, "fd.test", Arc::clone(&trust_any)).await {
            Ok(open) => break open,
            Err(e) if started.elapsed() < WAIT => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("not served after descriptors freed up: {e}"),
        }
    };
    assert_eq!(open.server, "echo");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// `check` says when the listeners' connection limits cannot fit under the
/// descriptor limit the router could raise itself to.
#[tokio::test]
async fn check_warns_when_max_connections_cannot_fit() {
    let inner = Pki::new();
    let server = named_server("echo", inner.server_config(&["fd.test"])).await;
    let dir = ConfigDir::new();
    let config = config(&dir, server.addr);
    let output = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -n 500 && exec \"$0\" check --config \"$1\"",
            env!("CARGO_BIN_EXE_switchyard"),
        ])
        .arg(&config)
        .output()
        .expect("check");
    assert!(output.status.success(), "a warning, not an error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        // 2,034 for the connections, listeners and the rest; 124 for the
        // relays' pipes (62 of them: an eighth of 500).
        stderr.contains("need up to 2158 open files") && stderr.contains("the limit is 500"),
        "{stderr}"
    );
}
