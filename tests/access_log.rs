//! The access log never holds up the data path: its lines are batched and
//! written by a thread of their own, so a router whose stderr nobody reads
//! goes on serving, and every line arrives once stderr drains.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{closed_port, http_ok_server, route_regex, ConfigDir};

/// Far more lines than a pipe holds (64 KiB: about 75 requests, each
/// with its request line and its connection line).
const REQUESTS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_does_not_stall_requests() {
    let server = http_ok_server().await;
    let (listen, stats, dir) = (closed_port(), closed_port(), ConfigDir::new());
    dir.write(
        "maps/http_be.map",
        &format!("{} be_http:shop:web\n", route_regex("web.shop.test")),
    );
    let config = dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"plain\"\nbind = \"{listen}\"\nprotocol = \"http\"\n\n\
             [maps]\nhttp_be = \"maps/http_be.map\"\n\n[stats]\nbind = \"{stats}\"\n\n\
             [[backend]]\nname = \"be_http:shop:web\"\ntermination = \"none\"\n\
             servers = [{{ name = \"web\", address = \"{server}\" }}]\n"
        ),
    );
    // stderr is a pipe this test holds and does not read until the end.
    let mut child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start switchyard"),
    );
    let started = Instant::now();
    while TcpStream::connect(listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "router never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Blocking sockets, off the runtime that serves the backend.
    tokio::task::spawn_blocking(move || requests(listen))
        .await
        .expect("requests");
    let dropped = common::metric(stats, "switchyard_log_lines_dropped_total").await;
    assert_eq!(dropped, 0.0, "lines dropped below the 8 MiB bound");

    // Once read, every request's line is there, each once, in order.
    let stderr = child.0.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut paths = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("\"message\":\"request\"") {
                let path = serde_json::from_str::<serde_json::Value>(&line).expect("JSON line")
                    ["path"]
                    .as_str()
                    .expect("path")
                    .to_string();
                paths.push(path);
                if paths.len() == REQUESTS {
                    break;
                }
            }
        }
        paths
    });
    let wait = Instant::now();
    while !reader.is_finished() && wait.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child);
    let paths = reader.join().expect("reader");
    let expected: Vec<String> = (0..REQUESTS).map(|i| format!("/{i}")).collect();
    assert_eq!(paths, expected);
}

/// The router, killed when the test ends, whichever way it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `REQUESTS` requests, one connection each; every one answered 200.
fn requests(listen: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..REQUESTS {
        assert!(
            Instant::now() < deadline,
            "only {i} requests served in 60 s"
        );
        let mut tcp = TcpStream::connect(listen).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            tcp,
            "GET /{i} HTTP/1.1\r\nHost: web.shop.test\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer)
            .unwrap_or_else(|e| panic!("request {i} not answered while stderr is full: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
    }
}
