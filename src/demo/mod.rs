//! `switchyard demo`: a working router in one command. It makes its own
//! certificates, starts demo TLS servers on loopback, writes a complete
//! configuration (TOML, backends, map files, certificates) into a directory
//! the user can read and edit, and serves it like any other configuration.

mod certs;
mod servers;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use certs::DemoCerts;

/// Where the demo's configuration went and what to tell the user.
pub struct Demo {
    pub config: PathBuf,
    pub dir: PathBuf,
}

/// Makes certificates, starts the demo servers and writes the configuration
/// for a router listening on `listen`.
pub async fn prepare(
    dir: Option<PathBuf>,
    listen: SocketAddr,
    http_listen: SocketAddr,
) -> anyhow::Result<Demo> {
    let dir = match dir {
        Some(d) => d,
        None => fresh_dir(),
    };
    std::fs::create_dir_all(dir.join("maps"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("certs"))?;
    let certs = DemoCerts::generate(&["echo.demo.test", "web.demo.test", "*.demo.test"])?;
    let echo = servers::echo(Arc::new(certs.server_config(&[])?)).await?;
    let web_config = Arc::new(certs.server_config(&[b"http/1.1"])?);
    let web1 = servers::web(Arc::clone(&web_config), "web-1").await?;
    let web2 = servers::web(web_config, "web-2").await?;
    let plain = servers::web_plain("web-plain").await?;
    let api = servers::web_plain("api-plain").await?;
    write(&dir, "certs/demo-ca.pem", &certs.ca_pem)?;
    // The router presents the same demo certificate (chain and key in one file).
    let server_pem = format!("{}{}", certs.server_pem, certs.server_key_pem);
    write(&dir, "certs/demo-server.pem", &server_pem)?;
    write(&dir, "switchyard.toml", &main_toml(listen, http_listen))?;
    write(
        &dir,
        "backends.toml",
        &backends_toml(echo, web1, web2, plain, api),
    )?;
    write(&dir, "maps/os_tcp_be.map", TCP_BE_MAP)?;
    write(&dir, "maps/os_edge_reencrypt_be.map", EDGE_REENCRYPT_MAP)?;
    write(&dir, "maps/cert_config.map", CERT_CONFIG)?;
    write(&dir, "maps/os_http_be.map", HTTP_BE_MAP)?;
    write(&dir, "maps/os_route_http_redirect.map", HTTP_REDIRECT_MAP)?;
    Ok(Demo {
        config: dir.join("switchyard.toml"),
        dir,
    })
}

/// What the demo prints once it listens: commands that work as pasted.
pub fn instructions(demo: &Demo, listen: SocketAddr, http_listen: SocketAddr) -> String {
    let (ip, port) = (listen.ip(), listen.port());
    let exe =
        std::env::current_exe().map_or_else(|_| "switchyard".into(), |p| p.display().to_string());
    let dir = demo.dir.display();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nSwitchyard demo is listening on {listen} (TLS) and {http_listen} (plain HTTP)"
    );
    let _ = writeln!(s, "Configuration (read it, edit it): {dir}");
    let _ = writeln!(s, "\nTry, from another terminal:");
    let _ = writeln!(
        s,
        "  curl -k --resolve web.demo.test:{port}:{ip} https://web.demo.test:{port}/"
    );
    let _ = writeln!(s, "  curl --cacert {dir}/certs/demo-ca.pem --resolve web.demo.test:{port}:{ip} https://web.demo.test:{port}/");
    let _ = writeln!(s, "  openssl s_client -connect {listen} -servername echo.demo.test -quiet   # type a line: it comes back");
    let _ = writeln!(s, "  curl --cacert {dir}/certs/demo-ca.pem --resolve edge.demo.test:{port}:{ip} https://edge.demo.test:{port}/     # edge");
    let _ = writeln!(s, "  curl --cacert {dir}/certs/demo-ca.pem --resolve edge.demo.test:{port}:{ip} https://edge.demo.test:{port}/api/hello   # /api: another server");
    let _ = writeln!(s, "  curl --http2 -sv --cacert {dir}/certs/demo-ca.pem --resolve edge.demo.test:{port}:{ip} https://edge.demo.test:{port}/ 2>&1 | grep '< HTTP'   # h2");
    let _ = writeln!(s, "  curl --cacert {dir}/certs/demo-ca.pem --resolve secure.demo.test:{port}:{ip} https://secure.demo.test:{port}/ # re-encrypt");
    let _ = writeln!(s, "  curl -k --resolve nothing.demo.test:{port}:{ip} https://nothing.demo.test:{port}/   # no route: the 503 page");
    let (hip, hport) = (http_listen.ip(), http_listen.port());
    let _ = writeln!(s, "  curl -i --resolve secure.demo.test:{hport}:{hip} http://secure.demo.test:{hport}/   # plain HTTP: 302 to https");
    let _ = writeln!(s, "  curl --resolve edge.demo.test:{hport}:{hip} http://edge.demo.test:{hport}/   # an insecure (Allow) route on {http_listen}");
    let _ = writeln!(
        s,
        "  {exe} route --config {} web.demo.test --client 203.0.113.7",
        demo.config.display()
    );
    let _ = writeln!(s, "  {exe} check --config {}", demo.config.display());
    let _ = writeln!(
        s,
        "  curl http://127.0.0.1:1936/stats   # live counters (also /metrics, /healthz)"
    );
    let _ = writeln!(
        s,
        "\nweb.demo.test is passthrough (web-1 and web-2 take turns: balance roundrobin);"
    );
    let _ = writeln!(
        s,
        "edge.demo.test is terminated here and each request routed by path (/api to api-plain,"
    );
    let _ = writeln!(
        s,
        "the rest to web-plain) over plaintext; secure.demo.test is terminated and re-encrypted"
    );
    let _ = writeln!(s, "to web-1, verified as web.demo.test.");
    let _ = writeln!(
        s,
        "Add a line to {dir}/maps/os_tcp_be.map and the new name is routed within a second."
    );
    let _ = writeln!(s, "Ctrl-C stops the demo.");
    s
}

fn fresh_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("switchyard-demo-{}-{nanos}", std::process::id()))
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn main_toml(listen: SocketAddr, http_listen: SocketAddr) -> String {
    let https_port = listen.port();
    format!(
        r#"# Switchyard demo configuration, written by `switchyard demo`.
# Paths are relative to this file.

backend_files = ["backends.toml"]

[[listener]]
name = "public_ssl"
bind = "{listen}"
inspect_timeout = "5s"

# Plain HTTP: os_route_http_redirect.map sends https routes to https,
# os_http_be.map serves the routes that allow insecure traffic.
[[listener]]
name = "public_http"
bind = "{http_listen}"
protocol = "http"
https_port = {https_port}

# The demo has no os_sni_passthrough.map: a name in os_tcp_be.map is
# passthrough, any other is terminated and routed by os_edge_reencrypt_be.map.
[maps]
tcp_be = "maps/os_tcp_be.map"
edge_reencrypt_be = "maps/os_edge_reencrypt_be.map"
cert_config = "maps/cert_config.map"
http_be = "maps/os_http_be.map"
http_redirect = "maps/os_route_http_redirect.map"

[tls]
default_certificate = "certs/demo-server.pem"

[defaults]
balance = "source"
connect_timeout = "5s"
"#
    )
}

fn backends_toml(
    echo: SocketAddr,
    web1: SocketAddr,
    web2: SocketAddr,
    plain: SocketAddr,
    api: SocketAddr,
) -> String {
    format!(
        r#"# Demo backends: TLS servers started by the demo on loopback.

[[backend]]
name = "be_tcp:demo:echo"
termination = "passthrough"
servers = [{{ name = "echo-1", address = "{echo}", weight = 256 }}]

[[backend]]
name = "be_tcp:demo:web"
termination = "passthrough"
balance = "roundrobin"
servers = [
  {{ name = "web-1", address = "{web1}", weight = 256 }},
  {{ name = "web-2", address = "{web2}", weight = 256 }},
]

# Edge and re-encrypt backends are served in HTTP mode: each request is
# routed by Host and path through os_edge_reencrypt_be.map.
[[backend]]
name = "be_edge_http:demo:plain"
termination = "edge"
servers = [{{ name = "web-plain", address = "{plain}" }}]

[[backend]]
name = "be_edge_http:demo:api"
termination = "edge"
servers = [{{ name = "api-plain", address = "{api}" }}]

# Re-encrypt: the servers are dialed by IP; their certificate is checked
# against verify_host and the demo CA.
[[backend]]
name = "be_secure:demo:web"
termination = "reencrypt"
verify_host = "web.demo.test"
ca_file = "certs/demo-ca.pem"
servers = [{{ name = "web-1", address = "{web1}" }}]
"#
    )
}

const TCP_BE_MAP: &str = r"# SNI regex -> passthrough backend, first match wins.
^echo\.demo\.test\.?(:[0-9]+)?(/.*)?$ be_tcp:demo:echo
^web\.demo\.test\.?(:[0-9]+)?(/.*)?$ be_tcp:demo:web
";

const EDGE_REENCRYPT_MAP: &str = r"# Host + path regex -> edge or re-encrypt backend, first match wins.
^edge\.demo\.test\.?(:[0-9]+)?/api(/.*)?$ be_edge_http:demo:api
^edge\.demo\.test\.?(:[0-9]+)?(/.*)?$ be_edge_http:demo:plain
^secure\.demo\.test\.?(:[0-9]+)?(/.*)?$ be_secure:demo:web
";

const CERT_CONFIG: &str = "# crt-list: <pem (chain and key)> [alpn …] <SNI filters>
certs/demo-server.pem [alpn h2,http/1.1] edge.demo.test secure.demo.test
";

const HTTP_BE_MAP: &str = r"# Plain-HTTP request regex -> backend (routes that allow insecure traffic).
^edge\.demo\.test\.?(:[0-9]+)?(/.*)?$ be_edge_http:demo:plain
";

const HTTP_REDIRECT_MAP: &str = r"# Plain-HTTP request regex -> 1: redirect to https.
^secure\.demo\.test\.?(:[0-9]+)?(/.*)?$ 1
";
