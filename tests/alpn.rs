//! Routing by ALPN as well as by name (`[maps] alpn_be`), through a
//! running router and real TLS clients: an ACME TLS-ALPN-01 challenge
//! (`acme-tls/1`) for a route's host reaches the ACME solver while normal
//! traffic for the host reaches the route; a name whose h2 clients go to
//! an h2-only backend while HTTP/1.1-only clients keep the route; the
//! access log and `switchyard route --alpn` say the protocol decided; a
//! line naming a terminating backend is refused with its file and line.

mod common;

use std::sync::Arc;

use common::*;

/// The test CA's client configuration, offering `alpn`.
fn offering(pki: &Pki, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_challenges_and_h2_clients_are_routed_by_alpn() {
    let pki = Pki::new();
    let app = named_server(
        "app",
        pki.server_config(&["app.shop.test", "grpc.shop.test"]),
    )
    .await;
    let solver = named_server(
        "solver",
        pki.server_config(&["app.shop.test", "grpc.shop.test"]),
    )
    .await;
    let h2only = named_server("h2only", pki.server_config(&["grpc.shop.test"])).await;
    let (listen, dir) = (closed_port(), ConfigDir::new());
    dir.write(
        "maps/alpn_be.map",
        "# ACME TLS-ALPN-01 for every host under shop.test\n\
         ^acme-tls/1,[^.]*\\.shop\\.test$ be_tcp:acme:solver\n\
         ^h2,grpc\\.shop\\.test$ be_tcp:shop:h2only\n",
    );
    dir.write(
        "maps/os_sni_passthrough.map",
        "^app\\.shop\\.test$ 1\n^grpc\\.shop\\.test$ 1\n",
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!(
            "{} be_tcp:shop:app\n{} be_tcp:shop:app\n",
            route_regex("app.shop.test"),
            route_regex("grpc.shop.test")
        ),
    );
    let backend = |name: &str, addr| {
        format!("[[backend]]\nname = \"{name}\"\nservers = [{{ name = \"{name}\", address = \"{addr}\" }}]\n\n")
    };
    let config = dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"public_ssl\"\nbind = \"{listen}\"\n\n\
             [maps]\nalpn_be = \"maps/alpn_be.map\"\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\n{}{}{}",
            backend("be_tcp:shop:app", app.addr),
            backend("be_tcp:acme:solver", solver.addr),
            backend("be_tcp:shop:h2only", h2only.addr),
        ),
    );
    let process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);
    let greet = |sni: &'static str, alpn: &'static [&'static str]| {
        let config = offering(&pki, alpn);
        async move {
            session(listen, sni, config, b"ping")
                .await
                .unwrap_or_else(|e| panic!("{sni} {alpn:?}: {e}"))
                .server
        }
    };
    assert_eq!(greet("app.shop.test", &["acme-tls/1"]).await, "solver");
    let line = process.line_with("app.shop.test");
    assert!(
        line.contains("alpn_be.map:2"),
        "the access log names the ALPN line: {line}"
    );
    assert_eq!(greet("app.shop.test", &["h2", "http/1.1"]).await, "app");
    assert_eq!(greet("app.shop.test", &[]).await, "app");
    assert_eq!(greet("grpc.shop.test", &["h2", "http/1.1"]).await, "h2only");
    assert_eq!(greet("grpc.shop.test", &["http/1.1"]).await, "app");
    // The challenge reaches the solver for another host of the domain too.
    assert_eq!(greet("grpc.shop.test", &["acme-tls/1"]).await, "solver");

    let explain = |alpn: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "route",
                "--config",
                config.to_str().expect("utf-8"),
                "app.shop.test",
            ])
            .args(["--alpn", alpn])
            .output()
            .expect("route");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = explain("acme-tls/1");
    assert!(
        said.contains("`acme-tls/1` decided") && said.contains("alpn_be.map:2"),
        "{said}"
    );
    assert!(said.contains("be_tcp:acme:solver"), "{said}");
    let said = explain("h2,http/1.1");
    assert!(
        !said.contains("decided") && said.contains("be_tcp:shop:app"),
        "{said}"
    );
}

/// An `alpn_be` line hands the whole connection, its ALPN included, to a
/// passthrough backend: a terminating one (which would offer the router's
/// own ALPN, or route each request by Host again) is refused, with the
/// map's file and line.
#[test]
fn an_alpn_line_to_a_terminating_backend_is_refused() {
    let dir = ConfigDir::new();
    dir.write(
        "maps/alpn_be.map",
        "^h2,app\\.shop\\.test$ be_edge_http:shop:app\n",
    );
    dir.write("default.pem", &Pki::new().pem(&["*.shop.test"]));
    let config = dir.write(
        "switchyard.toml",
        "[[listener]]\nname = \"public_ssl\"\nbind = \"127.0.0.1:0\"\n\n\
         [maps]\nalpn_be = \"maps/alpn_be.map\"\n\n[tls]\ndefault_certificate = \"default.pem\"\n\n\
         [[backend]]\nname = \"be_edge_http:shop:app\"\ntermination = \"edge\"\n\
         servers = [{ name = \"app\", address = \"127.0.0.1:1\" }]\n",
    );
    let (accepted, said) = check(&config);
    assert!(!accepted, "{said}");
    assert!(
        said.contains("alpn_be.map:1") && said.contains("passthrough"),
        "{said}"
    );
}
