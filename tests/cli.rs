//! The `switchyard` command as a user runs it: `check` on the shipped
//! example and on broken files, `route` explaining a decision.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::ConfigDir;

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run switchyard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/switchyard.toml");

#[test]
fn check_accepts_the_shipped_example() {
    let out = switchyard(&["check", "--config", EXAMPLE]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ok: 1 listeners, 6 routes, 4 backends, 7 servers"),
        "{stdout}"
    );
}

/// A copy of the example whose map and backends the test then breaks.
fn example_copy() -> ConfigDir {
    let dir = ConfigDir::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for name in [
        "switchyard.toml",
        "backends.toml",
        "maps/os_sni_passthrough.map",
        "maps/os_tcp_be.map",
    ] {
        dir.write(
            name,
            &std::fs::read_to_string(src.join(name)).expect("read example"),
        );
    }
    dir
}

#[test]
fn check_names_file_and_line_of_every_problem() {
    let dir = example_copy();
    let map = "# broken\n^ok\\.test$ be_tcp:shop:web\n^(bad$ be_tcp:shop:web\n^x\\.test$ be_tcp:nope:gone\nlonely\n";
    dir.write("maps/os_tcp_be.map", map);
    let backends = std::fs::read_to_string(dir.path().join("backends.toml"))
        .expect("read")
        .replace("weight = 10 }", "weight = 300 }")
        .replace("name = \"api-2\"", "name = \"api-1\"");
    dir.write("backends.toml", &backends);
    let config = dir.path().join("switchyard.toml");
    let out = switchyard(&["check", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let map_path = dir.path().join("maps/os_tcp_be.map");
    let backends_path = dir.path().join("backends.toml");
    for expected in [
        format!("{}:3: invalid regex", map_path.display()),
        format!(
            "{}:4: backend `be_tcp:nope:gone` is not defined",
            map_path.display()
        ),
        format!("{}:5: `lonely` has no value", map_path.display()),
        format!(
            "{}:21: server `api-1` appears twice",
            backends_path.display()
        ),
        format!(
            "{}:22: weight 300 is outside 0..=256",
            backends_path.display()
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn run_refuses_a_broken_configuration() {
    let dir = example_copy();
    dir.write("maps/os_tcp_be.map", "^a\\.test$ be_tcp:missing\n");
    let config = dir.path().join("switchyard.toml");
    let out = switchyard(&["run", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("os_tcp_be.map:1: backend `be_tcp:missing` is not defined"));
}

#[test]
fn check_reports_a_missing_file() {
    let dir = example_copy();
    std::fs::remove_file(dir.path().join("maps/os_sni_passthrough.map")).expect("rm");
    let config = dir.path().join("switchyard.toml");
    let out = switchyard(&["check", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("os_sni_passthrough.map: cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn route_explains_the_decision() {
    let out = switchyard(&[
        "route",
        "--config",
        EXAMPLE,
        "Shop.Wild.Apps.Example.Com.",
        "--client",
        "203.0.113.7",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("sni:         shop.wild.apps.example.com\n"),
        "{stdout}"
    );
    assert!(stdout.contains("maps/os_tcp_be.map:7"), "{stdout}");
    assert!(stdout.contains("be_tcp:apps:wildcard"), "{stdout}");

    let out = switchyard(&["route", "--config", EXAMPLE, "a.b.wild.apps.example.com"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "two labels must not match a one-label wildcard"
    );

    let out = switchyard(&[
        "route",
        "--config",
        EXAMPLE,
        "www.apps.example.com",
        "--client",
        "203.0.113.7",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("os_tcp_be.map:5"), "{stdout}");
    assert!(
        stdout.contains(
            "backend:     be_tcp:shop:web (termination passthrough, balance source, 2 servers)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("server:      web-5d9f-"), "{stdout}");

    let out = switchyard(&["route", "--config", EXAMPLE, "unknown.example.org"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("route:       none"));
}

#[test]
fn version_and_help() {
    let out = switchyard(&["--version"]);
    assert!(text(&out.stdout).starts_with("switchyard "));
    let out = switchyard(&["--help"]);
    let help = text(&out.stdout);
    for sub in ["run", "check", "route", "demo"] {
        assert!(help.contains(sub), "{help}");
    }
}

/// Logs written to a pipe or a file (kubectl logs, journald) carry no
/// terminal colour codes.
#[test]
fn text_logs_are_plain_when_stderr_is_not_a_terminal() {
    let dir = ConfigDir::new();
    let config = dir.write(
        "switchyard.toml",
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n",
    );
    let process = common::Process::start(&["run", "--config", config.to_str().expect("utf-8")]);
    assert!(
        process.listening.contains("listening") && !process.listening.contains('\u{1b}'),
        "{:?}",
        process.listening
    );
}

/// The demo says it is listening only once it is: on a taken port it
/// fails without claiming to listen.
#[test]
fn demo_banner_only_after_the_port_is_bound() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = ConfigDir::new();
    let out = switchyard(&[
        "demo",
        "--dir",
        dir.path().to_str().expect("utf-8"),
        "--listen",
        &addr,
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot bind"), "{stderr}");
    assert!(!stderr.contains("is listening on"), "{stderr}");
}

/// `check` says, per line, that a path route in an SNI-only map can never
/// route a connection; in the edge map path routes serve requests.
#[test]
fn check_flags_path_routes_in_sni_maps() {
    let dir = ConfigDir::new();
    dir.write(
        "maps/os_tcp_be.map",
        "^a\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:t:a\n^a\\.test\\.?(:[0-9]+)?/api(/.*)?$ be_tcp:t:a\n",
    );
    dir.write("maps/os_sni_passthrough.map", "^a\\.test$ 1\n");
    let config = dir.main(
        "",
        "[stats]\nenabled = false\n[[backend]]\nname = \"be_tcp:t:a\"\nservers = [{ name = \"s\", address = \"127.0.0.1:9\" }]\n",
    );
    let out = switchyard(&["check", "--config", config.to_str().expect("utf-8")]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "warnings only: {stderr}");
    assert!(
        stderr.contains("os_tcp_be.map:2: warning: this line cannot match a server name"),
        "{stderr}"
    );
    assert!(!stderr.contains("os_tcp_be.map:1: warning"), "{stderr}");
}
