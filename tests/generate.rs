//! `switchyard generate`: kubectl-shaped objects in, the configuration
//! directory out. The fixture's output is compared with golden files
//! (`SWITCHYARD_BLESS=1` rewrites them after a deliberate change); the
//! end-to-end test generates from objects with real certificates, runs
//! the router on the result, routes connections and requests as the
//! objects say, then regenerates from a changed object and is served the
//! change after the swap.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switchyard::generate::{self, Options};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate")
}

fn options(out: &Path) -> Options {
    Options {
        out: out.to_path_buf(),
        default_certificate: None,
        maps_only: false,
        ingress_class: Some("switchyard".into()),
        service_ca: Some(PathBuf::from(
            "/var/run/secrets/kubernetes.io/serviceaccount/service-ca.crt",
        )),
        https_bind: "0.0.0.0:443".into(),
        http_bind: "0.0.0.0:80".into(),
        https_port: 443,
        stats_bind: "0.0.0.0:1936".into(),
        stats_password_file: Some(PathBuf::from("/etc/switchyard-stats/password")),
        namespace_ownership: true,
    }
}

/// The PEM body of a PEM block (its lines between BEGIN and END).
fn pem_body(pem: &str) -> String {
    let lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    lines.join("\n")
}

/// The fixture with its placeholder PEM bodies (`store-cert`, `site-key`,
/// …) replaced by real ones made here, written into `dir`; and each
/// placeholder with its real body, to turn generated files back into
/// what the golden files hold.
fn real_fixture(dir: &Path) -> (PathBuf, Vec<(String, String)>) {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let (a, b, c) = (Pki::new(), Pki::new(), Pki::new());
    let pair = |pki: &Pki, name: &str| {
        let pem = pki.pem(&[name]);
        let (cert, key) = pem.split_once("-----END CERTIFICATE-----").expect("cert");
        (pem_body(cert), pem_body(key))
    };
    let (store_cert, store_key) = pair(&a, "store.shop.test");
    let (site_cert, site_key) = pair(&b, "site.shop.test");
    let (gw_cert, gw_key) = pair(&c, "gw.infra.test");
    let bodies: Vec<(String, String)> = [
        ("store-cert", store_cert),
        ("store-key", store_key),
        ("store-ca-cert", pem_body(&a.ca_pem)),
        ("service-ca-cert", pem_body(&b.ca_pem)),
        ("app-ca-cert", pem_body(&c.ca_pem)),
        ("site-cert", site_cert),
        ("site-key", site_key),
        ("gw-cert", gw_cert),
        ("gw-key", gw_key),
    ]
    .into_iter()
    .map(|(token, body)| (token.to_string(), body))
    .collect();
    let text = std::fs::read_to_string(fixture_dir().join("objects.yaml")).expect("fixture");
    let mut out = String::new();
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim();
        if let Some((_, body)) = bodies.iter().find(|(t, _)| t == trimmed) {
            for real in body.lines() {
                out.push_str(&format!("{indent}{real}\n"));
            }
        } else if let Some((key, value)) = trimmed
            .split_once(": ")
            .filter(|(k, _)| *k == "tls.crt" || *k == "tls.key")
        {
            let mut pem = String::from_utf8(engine.decode(value).expect("base64")).expect("PEM");
            for (token, body) in &bodies {
                pem = pem.replace(&format!("\n{token}\n"), &format!("\n{body}\n"));
            }
            out.push_str(&format!("{indent}{key}: {}\n", engine.encode(pem)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let path = dir.join("objects.yaml");
    std::fs::write(&path, out).expect("write");
    (path, bodies)
}

#[test]
fn the_fixture_generates_the_golden_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let (input, bodies) = real_fixture(dir.path());
    let mut report = generate::Report::default();
    let objects = generate::read_inputs(&[input], &mut report).expect("read");
    let (mut files, generated) = generate::generate(&objects, &options(dir.path()));
    for (bytes, _) in files.values_mut() {
        let mut text = String::from_utf8(bytes.clone()).expect("text");
        for (token, body) in &bodies {
            text = text.replace(body, token);
        }
        *bytes = text.into_bytes();
    }
    report.problems.extend(generated.problems);
    let mut problems: String = report.problems.iter().map(|p| format!("{p}\n")).collect();
    problems.insert_str(0, "# What `generate` reports for objects.yaml.\n");
    let golden = fixture_dir().join("golden");
    let bless = std::env::var_os("SWITCHYARD_BLESS").is_some();
    if bless {
        let _ = std::fs::remove_dir_all(&golden);
        std::fs::create_dir_all(&golden).expect("golden dir");
        std::fs::write(golden.join("problems.txt"), &problems).expect("write");
    }
    let mut expected: Vec<String> = std::fs::read_dir(&golden)
        .expect("golden files")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "problems.txt")
        .collect();
    for (name, (bytes, private)) in &files {
        if bless {
            std::fs::write(golden.join(name), bytes).expect("write");
            continue;
        }
        let want = std::fs::read(golden.join(name))
            .unwrap_or_else(|e| panic!("{name} is generated but has no golden file: {e}"));
        assert_eq!(
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&want),
            "{name} differs from its golden file"
        );
        assert_eq!(
            *private,
            name.ends_with(".pem") && !name.ends_with("ca.pem"),
            "{name}: private"
        );
        expected.retain(|n| n != name);
    }
    if !bless {
        assert!(
            expected.is_empty(),
            "golden files not generated: {expected:?}"
        );
        let want = std::fs::read_to_string(golden.join("problems.txt")).expect("problems");
        assert_eq!(problems, want, "the problems reported");
    }
    // The same input twice: the same bytes.
    let (again, _) = generate::generate(&objects, &options(dir.path()));
    let (first, _) = generate::generate(&objects, &options(dir.path()));
    assert_eq!(again, first, "generate is deterministic");
}

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP server that answers every request with its name and the
/// request's path.
async fn http_named(name: &'static str) -> SocketAddr {
    http_server(move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("");
        format!("{name} {path}\n")
    })
    .await
}

/// A request's whole answer over `stream`.
async fn ask<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request over TLS with SNI `host`, the router's certificate verified
/// against the test CA for that name.
async fn ask_tls(addr: SocketAddr, pki: &Pki, host: &str, path: &str) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(pki.client_config())
        .connect(name, tcp)
        .await
        .expect("the route's certificate verifies for its host");
    ask(tls, host, path).await
}

fn endpoint_slice(service: &str, port: u16) -> String {
    endpoint_slice_in("shop", service, port)
}

fn endpoint_slice_in(namespace: &str, service: &str, port: u16) -> String {
    format!(
        "- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata:\n    name: {service}-x1\n    namespace: {namespace}\n    labels:\n      kubernetes.io/service-name: {service}\n  addressType: IPv4\n  ports:\n  - name: main\n    port: {port}\n  endpoints:\n  - addresses: [127.0.0.1]\n    conditions: {{ready: true}}\n    targetRef: {{kind: Pod, name: {service}-pod}}\n  - addresses: [127.0.0.2]\n    conditions: {{ready: false}}\n    targetRef: {{kind: Pod, name: {service}-unready}}\n"
    )
}

fn indented(pem: &str, by: usize) -> String {
    pem.trim_end()
        .replace('\n', &format!("\n{}", " ".repeat(by)))
}

/// The objects of the end-to-end test, with the `store` route pointing at
/// `store_service`.
fn objects(pki_store_pem: &str, store_service: &str, ports: &[(&str, u16)]) -> String {
    let (cert_end, _) = pki_store_pem
        .split_once("-----END CERTIFICATE-----")
        .expect("a certificate");
    let cert = format!("{cert_end}-----END CERTIFICATE-----");
    let key = pki_store_pem[cert.len()..].trim();
    let mut text = format!(
        "apiVersion: v1\nkind: List\nitems:\n\
- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {{name: web, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n  spec:\n    host: www.shop.test\n    to: {{kind: Service, name: web}}\n    tls: {{termination: passthrough}}\n\
- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {{name: store, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n  spec:\n    host: store.shop.test\n    path: /cart\n    to: {{kind: Service, name: {store_service}}}\n    tls:\n      termination: edge\n      insecureEdgeTerminationPolicy: Redirect\n      certificate: |-\n        {}\n      key: |-\n        {}\n\
- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {{name: docs, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n  spec:\n    host: docs.shop.test\n    to: {{kind: Service, name: docs}}\n",
        indented(&cert, 8),
        indented(key, 8),
    );
    for (service, port) in ports {
        text.push_str(&endpoint_slice(service, *port));
    }
    text
}

#[tokio::test]
async fn generated_configuration_is_served_and_regenerated_live() {
    let pki = Pki::new();
    let web = named_server("web", pki.server_config(&["www.shop.test"])).await;
    let (store, store2, docs) = (
        http_named("store").await,
        http_named("store2").await,
        http_named("docs").await,
    );
    let ports = [
        ("web", web.addr.port()),
        ("store", store.port()),
        ("store2", store2.port()),
        ("docs", docs.port()),
    ];
    let store_pem = pki.pem(&["store.shop.test"]);
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("objects.yaml");
    let default = dir.path().join("default.pem");
    std::fs::write(&default, pki.pem(&["default.invalid"])).expect("default");
    let out = dir.path().join("config");
    let (https, http, stats) = (closed_port(), closed_port(), closed_port());
    let generate = |text: String| {
        std::fs::write(&input, text).expect("objects");
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["generate", "--from"])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .arg("--default-certificate")
            .arg(&default)
            .args([
                "--https-bind",
                &https.to_string(),
                "--http-bind",
                &http.to_string(),
            ])
            .args(["--stats-bind", &stats.to_string(), "--https-port", "8443"])
            .status()
            .expect("generate");
        assert!(status.success(), "generate exits 0: {status}");
    };
    generate(objects(&store_pem, "store", &ports));
    use std::os::unix::fs::PermissionsExt;
    let route_pem = out.join("route_shop_store.pem");
    let mode = std::fs::metadata(&route_pem)
        .expect("route pem")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private keys are 0600");

    let config = out.join("switchyard.toml");
    let _router = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);

    // Passthrough: the pod's own certificate, bytes untouched.
    let s = session(https, "www.shop.test", pki.client_config(), b"ping")
        .await
        .expect("passthrough");
    assert_eq!(s.server, "web");
    // Edge with the route's certificate, routed by path.
    let answer = ask_tls(https, &pki, "store.shop.test", "/cart/items").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("store /cart/items\n"), "{answer}");
    // A path no route takes: 503.
    let answer = ask_tls(https, &pki, "store.shop.test", "/elsewhere").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // Port 80: the plain route, and the edge route's redirect.
    let tcp = TcpStream::connect(http).await.expect("port 80");
    let answer = ask(tcp, "docs.shop.test", "/a").await;
    assert!(answer.ends_with("docs /a\n"), "{answer}");
    let tcp = TcpStream::connect(http).await.expect("port 80");
    let answer = ask(tcp, "store.shop.test", "/cart").await;
    assert!(answer.starts_with("HTTP/1.1 302"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("location: https://store.shop.test:8443/cart"),
        "{answer}"
    );

    // The route now points at another service: regenerated, swapped in,
    // served without a restart.
    generate(objects(&store_pem, "store2", &ports));
    let mut answer = String::new();
    for _ in 0..100 {
        answer = ask_tls(https, &pki, "store.shop.test", "/cart").await;
        if answer.contains("store2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answer.ends_with("store2 /cart\n"),
        "after the swap: {answer}"
    );
}

#[test]
fn standard_input_json_and_a_bad_object_exit_1_with_the_rest_written() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config");
    let json = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"route.openshift.io/v1","kind":"Route","metadata":{"name":"good","namespace":"ns"},
       "spec":{"host":"good.test","to":{"kind":"Service","name":"svc"}}},
      {"apiVersion":"route.openshift.io/v1","kind":"Route","metadata":{"name":"bad","namespace":"ns"},
       "spec":{"host":"bad.test","path":"/x","to":{"kind":"Service","name":"svc"},"tls":{"termination":"passthrough"}}}]}"#;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["generate", "--from", "-", "--maps-only", "--out"])
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("generate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("exit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "something was skipped: {stderr}"
    );
    assert!(
        stderr.contains("skipped: Route ns/bad: spec.path: a passthrough route cannot have a path"),
        "{stderr}"
    );
    let http = std::fs::read_to_string(out.join("os_http_be.map")).expect("map");
    assert!(
        http.contains(r"^good\.test\.?(:[0-9]+)?(/.*)?$ be_http:ns:good"),
        "{http}"
    );
    assert!(!out.join("switchyard.toml").exists(), "--maps-only");
}

/// Everything the fixture generates is what the router accepts: the
/// fixture with real PEMs, the directory loads
/// as `switchyard run` would load it, with no warning about the maps.
#[test]
fn the_generated_fixture_loads_in_the_router() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config");
    let (input, _) = real_fixture(dir.path());
    let mut report = generate::Report::default();
    let objects = generate::read_inputs(&[input], &mut report).expect("read");
    let mut options = options(&out);
    options.stats_password_file = None;
    options.https_bind = "127.0.0.1:0".into();
    options.http_bind = "127.0.0.1:0".into();
    options.stats_bind = "127.0.0.1:0".into();
    let service_ca = dir.path().join("service-ca.crt");
    std::fs::write(&service_ca, Pki::new().ca_pem).expect("service CA");
    options.service_ca = Some(service_ca);
    let (files, _) = generate::generate(&objects, &options);
    generate::check::loads(&files, &options).expect("the loader accepts what generate writes");
    generate::write::publish(&out, &files).expect("publish");
    match switchyard::config::load(&out.join("switchyard.toml")) {
        Ok(loaded) => {
            let maps: Vec<String> = loaded
                .warnings
                .iter()
                .map(|w| w.to_string())
                .filter(|w| w.contains(".map"))
                .collect();
            assert!(maps.is_empty(), "{maps:?}");
            let backends = &loaded.snapshot.backends;
            assert!(backends.len() >= 15, "{} backends", backends.len());
        }
        Err(problems) => {
            let errors: Vec<String> = problems.errors.iter().map(|e| e.to_string()).collect();
            panic!("the generated configuration is refused: {errors:#?}");
        }
    }
}

/// Generates from `yaml` for a router on loopback test ports (no stats
/// password, no service CA), to be published to `out`.
fn generate_on_loopback(
    yaml: &str,
    out: &Path,
    default_certificate: Option<Vec<u8>>,
) -> (BTreeMap<String, (Vec<u8>, bool)>, generate::Report) {
    let input = out.with_extension("yaml");
    std::fs::write(&input, yaml).expect("objects");
    let mut report = generate::Report::default();
    let objects = generate::read_inputs(&[input], &mut report).expect("read");
    let mut options = options(out);
    options.stats_password_file = None;
    options.service_ca = None;
    options.https_bind = "127.0.0.1:0".into();
    options.http_bind = "127.0.0.1:0".into();
    options.stats_bind = "127.0.0.1:0".into();
    options.default_certificate = default_certificate;
    generate::generate(&objects, &options)
}

/// A Secret whose `tls.crt` and `tls.key` lack their final newline (as
/// many tools write them) still makes a certificate the router loads, and
/// a Route whose host has an upper-case letter is left out (the reference
/// refuses it as InvalidHost) while the rest is written and loads.
#[test]
fn secrets_without_final_newlines_load_and_upper_case_hosts_are_refused() {
    use base64::Engine;
    let pki = Pki::new();
    let pem = pki.pem(&["shop.test", "*.shop.test"]);
    let (cert, key) = pem
        .split_once("-----END CERTIFICATE-----")
        .map(|(c, k)| {
            (
                format!("{c}-----END CERTIFICATE-----"),
                k.trim().to_string(),
            )
        })
        .expect("a certificate");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.trim_end());
    let yaml = format!(
        "apiVersion: v1\nkind: List\nitems:\n\
- apiVersion: v1\n  kind: Secret\n  metadata: {{name: shop-tls, namespace: shop}}\n  type: kubernetes.io/tls\n  data:\n    tls.crt: {}\n    tls.key: {}\n\
- apiVersion: networking.k8s.io/v1\n  kind: Ingress\n  metadata: {{name: shop, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n  spec:\n    ingressClassName: switchyard\n    tls:\n    - hosts: [www.shop.test]\n      secretName: shop-tls\n    rules:\n    - host: www.shop.test\n      http:\n        paths:\n        - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 8080}}}}}}}}\n\
- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {{name: loud, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n  spec:\n    host: Loud.Shop.test\n    to: {{kind: Service, name: web}}\n",
        b64(&cert),
        b64(&key),
    );
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config");
    let (files, report) = generate_on_loopback(&yaml, &out, None);
    let secret = &files
        .get("secret_shop_shop-tls.pem")
        .expect("the Secret's certificate is written")
        .0;
    let secret = String::from_utf8_lossy(secret);
    assert!(
        secret.contains("-----END CERTIFICATE-----\n-----BEGIN"),
        "the chain and the key on lines of their own: {secret}"
    );
    let said = format!("{report:?}");
    assert!(
        said.contains("InvalidHost") && said.contains("Loud.Shop.test"),
        "the upper-case host is refused by name: {said}"
    );
    let edge = String::from_utf8_lossy(&files.get("os_http_be.map").expect("map").0).to_string();
    assert!(!edge.to_ascii_lowercase().contains("loud"), "{edge}");
    generate::write::publish(&out, &files).expect("publish");
    if let Err(problems) = switchyard::config::load(&out.join("switchyard.toml")) {
        let errors: Vec<String> = problems.errors.iter().map(|e| e.to_string()).collect();
        panic!("the generated configuration is refused: {errors:#?}");
    }
}

/// With `/` redirecting to https and `/api` allowing plain HTTP on one
/// host, port 80 serves `/api` and redirects the rest, as the reference
/// does: the redirect map has a line for every route, `0` for those that
/// do not redirect, and the more specific path comes first.
#[test]
fn a_path_that_allows_http_is_served_under_a_host_that_redirects() {
    let yaml = "apiVersion: v1\nkind: List\nitems:\n\
- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {name: root, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}\n  spec:\n    host: a.shop.test\n    to: {kind: Service, name: web}\n    tls: {termination: edge, insecureEdgeTerminationPolicy: Redirect}\n\
- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {name: api, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}\n  spec:\n    host: a.shop.test\n    path: /api\n    to: {kind: Service, name: api}\n    tls: {termination: edge, insecureEdgeTerminationPolicy: Allow}\n";
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config");
    let default = Pki::new().pem(&["*.shop.test"]).into_bytes();
    let (files, _) = generate_on_loopback(yaml, &out, Some(default));
    let redirect =
        String::from_utf8_lossy(&files.get("os_route_http_redirect.map").expect("map").0)
            .to_string();
    let lines: Vec<&str> = redirect.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            r"^a\.shop\.test\.?(:[0-9]+)?/api(/.*)?$ 0",
            r"^a\.shop\.test\.?(:[0-9]+)?(/.*)?$ 1"
        ],
        "{redirect}"
    );
    generate::write::publish(&out, &files).expect("publish");
    let loaded = switchyard::config::load(&out.join("switchyard.toml")).expect("load");
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    let ask = |path| {
        let (_, said) = switchyard::explain::explain(
            &loaded.snapshot,
            Some("public"),
            "a.shop.test",
            &[],
            Some(path),
            client,
        );
        said
    };
    let api = ask("/api/x");
    assert!(!api.contains("302"), "{api}");
    assert!(api.contains("be_edge_http:shop:api"), "{api}");
    let root = ask("/x");
    assert!(root.contains("302 to https"), "{root}");
}

/// Publishes `files` to `out` and starts a router on them; returns it with
/// the address of its port-80 listener (`public`).
fn serve_generated(
    files: &BTreeMap<String, (Vec<u8>, bool)>,
    out: &Path,
) -> (std::sync::Arc<switchyard::Router>, SocketAddr) {
    generate::write::publish(out, files).expect("publish");
    let loaded = switchyard::config::load(&out.join("switchyard.toml"))
        .unwrap_or_else(|p| panic!("the generated configuration is refused: {p}"));
    let router = switchyard::Router::start(loaded.snapshot).expect("start");
    let http = router.local_addr("public").expect("port 80 listener");
    (router, http)
}

/// What `status.json` says of one object: (admitted, reason, message).
fn status_of(
    files: &BTreeMap<String, (Vec<u8>, bool)>,
    kind: &str,
    id: &str,
) -> (bool, String, String) {
    let json: serde_json::Value =
        serde_json::from_slice(&files.get("status.json").expect("status.json").0).expect("JSON");
    let (namespace, name) = id.split_once('/').expect("namespace/name");
    let routes = json["routes"].as_array().expect("routes");
    let entry = routes
        .iter()
        .find(|r| r["kind"] == kind && r["namespace"] == namespace && r["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {id} is in status.json: {json}"));
    (
        entry["admitted"].as_bool().expect("admitted"),
        entry["reason"].as_str().unwrap_or_default().to_string(),
        format!("{} {}", entry["message"], entry["warnings"]),
    )
}

/// A Route of `namespace` for `host` (port 80, plain), created on day `day`.
fn plain_route(namespace: &str, name: &str, host: &str, subdomain: bool, day: u8) -> String {
    let created = format!("2026-01-{day:02}T00:00:00Z");
    plain_route_at(namespace, name, host, subdomain, &created)
}

/// [`plain_route`] created at `created` (RFC 3339).
fn plain_route_at(
    namespace: &str,
    name: &str,
    host: &str,
    subdomain: bool,
    created: &str,
) -> String {
    let policy = if subdomain { "Subdomain" } else { "None" };
    format!(
        "- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: \"{created}\"}}\n  spec:\n    host: {host}\n    wildcardPolicy: {policy}\n    to: {{kind: Service, name: {name}}}\n"
    )
}

/// The reference's wildcard ownership (its host admitter's
/// TestWildcardSubDomainOwnership): a host under an older wildcard of
/// another namespace is refused, and so is a wildcard over an older host
/// of another namespace, each with HostAlreadyClaimed in status.json;
/// the owner's own names under its wildcard are admitted. Through a real
/// socket, `api.own.test` reaches the wildcard's owner, not the tenant
/// that asked for it. With the ownership check turned off, both are
/// admitted, as with the reference's ROUTER_DISABLE_NAMESPACE_OWNERSHIP_CHECK.
#[tokio::test]
async fn wildcard_ownership_holds_across_namespaces_unless_turned_off() {
    let (owner, intruder) = (http_named("owner").await, http_named("intruder").await);
    let mut yaml = String::from("apiVersion: v1\nkind: List\nitems:\n");
    yaml.push_str(&plain_route("a", "wild", "www.own.test", true, 1));
    yaml.push_str(&plain_route("b", "api", "api.own.test", false, 2));
    yaml.push_str(&plain_route("a", "shop", "shop.own.test", false, 3));
    yaml.push_str(&plain_route("c", "held", "x.other.test", false, 1));
    yaml.push_str(&plain_route("d", "over", "www.other.test", true, 2));
    for (ns, service, addr) in [
        ("a", "wild", owner),
        ("a", "shop", owner),
        ("b", "api", intruder),
        ("c", "held", owner),
        ("d", "over", intruder),
    ] {
        yaml.push_str(&endpoint_slice_in(ns, service, addr.port()));
    }
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config");
    let (files, _) = generate_on_loopback(&yaml, &out, None);
    let (admitted, reason, message) = status_of(&files, "Route", "b/api");
    assert!(
        !admitted && reason == "HostAlreadyClaimed",
        "{reason} {message}"
    );
    assert!(
        message.contains("*.own.test") && message.contains("Route a/wild"),
        "{message}"
    );
    let (admitted, reason, message) = status_of(&files, "Route", "d/over");
    assert!(
        !admitted && reason == "HostAlreadyClaimed",
        "{reason} {message}"
    );
    assert!(message.contains("x.other.test"), "{message}");
    assert!(
        status_of(&files, "Route", "a/shop").0,
        "the owner's own name"
    );
    assert!(status_of(&files, "Route", "c/held").0, "the older host");

    let (_router, http) = serve_generated(&files, &out);
    let answer = ask(
        TcpStream::connect(http).await.expect("connect"),
        "api.own.test",
        "/",
    )
    .await;
    assert!(
        answer.ends_with("owner /\n"),
        "the wildcard's owner serves it: {answer}"
    );

    let mut options = options(&out);
    options.namespace_ownership = false;
    let input = dir.path().join("open.yaml");
    std::fs::write(&input, &yaml).expect("objects");
    let mut report = generate::Report::default();
    let objects = generate::read_inputs(&[input], &mut report).expect("read");
    let (open, _) = generate::generate(&objects, &options);
    assert!(
        status_of(&open, "Route", "b/api").0,
        "admitted without the check"
    );
    assert!(
        status_of(&open, "Route", "d/over").0,
        "admitted without the check"
    );
}

/// A re-encrypt Route without a destinationCACertificate, and no service
/// CA: the reference's template writes `verify none`, so the route is
/// served, and said loudly (a warning naming the route, in status.json
/// too) rather than written as a backend the loader refuses. Through a
/// real socket, a request reaches the server behind TLS.
#[tokio::test]
async fn reencrypt_without_a_ca_is_served_unverified_and_said() {
    let server = https_server_answering(Pki::new().server_config(&["secure.shop.svc"]), |_| {
        "secure\n".to_string()
    })
    .await;
    let yaml = format!(
        "apiVersion: v1\nkind: List\nitems:\n\
- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {{name: secure, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n  spec:\n    host: secure.shop.test\n    to: {{kind: Service, name: secure}}\n    tls: {{termination: reencrypt, insecureEdgeTerminationPolicy: Allow}}\n{}",
        endpoint_slice("secure", server.port())
    );
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config");
    let default = Pki::new().pem(&["*.shop.test"]).into_bytes();
    let (files, report) = generate_on_loopback(&yaml, &out, Some(default));
    let backends =
        String::from_utf8_lossy(&files.get("backends.toml").expect("backends").0).to_string();
    assert!(backends.contains("verify = \"none\""), "{backends}");
    let warned = report
        .problems
        .iter()
        .find(|p| p.object == "Route shop/secure" && p.message.contains("UNVERIFIED"));
    assert!(
        warned.is_some(),
        "a warning names the route: {:?}",
        report.problems
    );
    let (admitted, _, message) = status_of(&files, "Route", "shop/secure");
    assert!(admitted && message.contains("UNVERIFIED"), "{message}");
    let (_router, http) = serve_generated(&files, &out);
    let answer = ask(
        TcpStream::connect(http).await.expect("connect"),
        "secure.shop.test",
        "/",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("secure\n"),
        "{answer}"
    );
}

/// A Route whose certificate is refused by the reference's extended
/// validation (a key that is not the certificate's, a truncated PEM, a
/// destination CA that does not parse) is left out with
/// ExtendedValidationFailed, and the rest is written and loads.
#[tokio::test]
async fn routes_with_unusable_certificates_are_left_out_and_the_rest_loads() {
    let pki = Pki::new();
    let split = |pem: String| {
        let (cert, key) = pem.split_once("-----END CERTIFICATE-----").expect("cert");
        (
            format!("{cert}-----END CERTIFICATE-----"),
            key.trim().to_string(),
        )
    };
    let (cert, _) = split(pki.pem(&["a.shop.test"]));
    let (_, other_key) = split(pki.pem(&["b.shop.test"]));
    let truncated = &cert[..cert.len() / 2];
    let route = |name: &str, tls: String| {
        format!(
            "- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {{name: {name}, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n  spec:\n    host: {name}.shop.test\n    to: {{kind: Service, name: web}}\n    tls:\n{tls}"
        )
    };
    let block = |key: &str, pem: &str| format!("      {key}: |-\n        {}\n", indented(pem, 8));
    let mut yaml = String::from("apiVersion: v1\nkind: List\nitems:\n");
    yaml.push_str(&route(
        "wrongkey",
        format!(
            "      termination: edge\n{}{}",
            block("certificate", &cert),
            block("key", &other_key)
        ),
    ));
    yaml.push_str(&route(
        "truncated",
        format!(
            "      termination: edge\n{}{}",
            block("certificate", truncated),
            block("key", &other_key)
        ),
    ));
    yaml.push_str(&route(
        "badca",
        format!(
            "      termination: reencrypt\n{}",
            block(
                "destinationCACertificate",
                "-----BEGIN CERTIFICATE-----\nnot a CA\n-----END CERTIFICATE-----"
            )
        ),
    ));
    yaml.push_str(&route("fine", "      termination: edge\n".to_string()));
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config");
    let default = Pki::new().pem(&["*.shop.test"]).into_bytes();
    let (files, report) = generate_on_loopback(&yaml, &out, Some(default));
    for name in ["shop/wrongkey", "shop/truncated", "shop/badca"] {
        let (admitted, reason, message) = status_of(&files, "Route", name);
        assert!(
            !admitted && reason == "ExtendedValidationFailed",
            "{name}: {reason} {message}"
        );
    }
    let wrong = report
        .problems
        .iter()
        .find(|p| p.object == "Route shop/wrongkey")
        .expect("reported");
    assert!(wrong.message.contains("does not match"), "{wrong}");
    assert!(
        status_of(&files, "Route", "shop/fine").0,
        "the rest is admitted"
    );
    let (_router, _) = serve_generated(&files, &out);
}

/// Without a password file the generated stats port listens on loopback
/// only, and `generate` says so; with one, the bind asked for is kept
/// behind user `admin`. When the loader would refuse the output (here a
/// service CA that is not there), nothing is published and the previous
/// configuration stays.
#[test]
fn stats_are_protected_and_a_refused_output_is_never_published() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("objects.yaml");
    let yaml = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        plain_route("shop", "web", "web.shop.test", false, 1)
    );
    std::fs::write(&input, yaml).expect("objects");
    let out = dir.path().join("config");
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["generate", "--from"])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(["--stats-bind", "0.0.0.0:1936"])
            .args(extra)
            .output()
            .expect("generate");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, said) = run(&[]);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("stats: 127.0.0.1:1936 only (loopback)"),
        "{said}"
    );
    assert!(
        said.contains("1 of 1 routes admitted"),
        "the status table: {said}"
    );
    let main = std::fs::read_to_string(out.join("switchyard.toml")).expect("toml");
    assert!(main.contains("bind = \"127.0.0.1:1936\""), "{main}");

    let password = dir.path().join("password");
    std::fs::write(&password, "secret\n").expect("password");
    let (code, said) = run(&["--stats-password-file", password.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{said}");
    let main = std::fs::read_to_string(out.join("switchyard.toml")).expect("toml");
    assert!(
        main.contains("bind = \"0.0.0.0:1936\"") && main.contains("user = \"admin\""),
        "{main}"
    );

    let reencrypt = "- apiVersion: route.openshift.io/v1\n  kind: Route\n  metadata: {name: api, namespace: shop}\n  spec:\n    host: api.shop.test\n    to: {kind: Service, name: api}\n    tls: {termination: reencrypt}\n";
    let mut yaml = std::fs::read_to_string(&input).expect("objects");
    yaml.push_str(reencrypt);
    std::fs::write(&input, yaml).expect("objects");
    let missing = dir.path().join("no-such-ca.crt");
    let (code, said) = run(&["--service-ca", missing.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("refused by the loader") && said.contains("not published"),
        "{said}"
    );
    let backends = std::fs::read_to_string(out.join("backends.toml")).expect("backends");
    assert!(
        !backends.contains("api"),
        "the previous configuration stays: {backends}"
    );
}

/// An HTTPRoute of namespace `shop` on listener `section` of Gateway
/// shop/gw, for `hostnames`, to `service` of `service_ns`.
fn http_route(
    name: &str,
    section: &str,
    hostnames: &[&str],
    service_ns: &str,
    service: &str,
) -> String {
    let hostnames = if hostnames.is_empty() {
        String::new()
    } else {
        format!("    hostnames: [{}]\n", hostnames.join(", "))
    };
    format!(
        "- apiVersion: gateway.networking.k8s.io/v1\n  kind: HTTPRoute\n  metadata: {{name: {name}, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n  spec:\n    parentRefs: [{{name: gw, sectionName: {section}}}]\n{hostnames}    rules:\n    - backendRefs: [{{name: {service}, namespace: {service_ns}}}]\n"
    )
}

/// A ReferenceGrant in `namespace` from HTTPRoutes of `shop`, the `from`
/// naming `group`.
fn grant(namespace: &str, group: &str) -> String {
    format!(
        "- apiVersion: gateway.networking.k8s.io/v1beta1\n  kind: ReferenceGrant\n  metadata: {{name: from-shop, namespace: {namespace}}}\n  spec:\n    from: [{{group: {group}, kind: HTTPRoute, namespace: shop}}]\n    to: [{{group: \"\", kind: Service}}]\n"
    )
}

/// Gateway hostnames as the Gateway API's conformance cases read them
/// (listener hostname matching, hostname intersection, routes without a
/// hostname, reference grants), each checked by which server answers a
/// request on port 80:
/// - a wildcard matches one label or more (`a.b.example.test`), and the
///   narrower of two wildcards wins;
/// - a route's `*.wide.test` on a listener for `abc.wide.test` is served as
///   `abc.wide.test` only;
/// - a route with no hostname on a listener with none serves every other
///   name, after the more specific routes;
/// - a ReferenceGrant whose `from` names another API group opens nothing.
#[tokio::test]
async fn gateway_hostnames_are_matched_as_the_gateway_api_reads_them() {
    let mut yaml = String::from("apiVersion: v1\nkind: List\nitems:\n");
    yaml.push_str("- apiVersion: gateway.networking.k8s.io/v1\n  kind: Gateway\n  metadata: {name: gw, namespace: shop}\n  spec:\n    gatewayClassName: switchyard\n    listeners:\n    - {name: any, protocol: HTTP, port: 80}\n    - {name: wild, protocol: HTTP, port: 80, hostname: \"*.example.test\"}\n    - {name: abc, protocol: HTTP, port: 80, hostname: abc.wide.test}\n");
    yaml.push_str(&http_route(
        "deep",
        "wild",
        &["\"*.example.test\""],
        "shop",
        "deep",
    ));
    yaml.push_str(&http_route(
        "deeper",
        "wild",
        &["\"*.a.example.test\""],
        "shop",
        "deeper",
    ));
    yaml.push_str(&http_route(
        "narrow",
        "abc",
        &["\"*.wide.test\""],
        "shop",
        "narrow",
    ));
    yaml.push_str(&http_route("every", "any", &[], "shop", "every"));
    yaml.push_str(&http_route(
        "good",
        "any",
        &["books.test"],
        "ledger",
        "books",
    ));
    yaml.push_str(&http_route(
        "bad",
        "any",
        &["invoices.test"],
        "billing",
        "invoices",
    ));
    yaml.push_str(&grant("ledger", "gateway.networking.k8s.io"));
    yaml.push_str(&grant("billing", "example.com"));
    for (ns, name) in [
        ("shop", "deep"),
        ("shop", "deeper"),
        ("shop", "narrow"),
        ("shop", "every"),
        ("ledger", "books"),
        ("billing", "invoices"),
    ] {
        yaml.push_str(&endpoint_slice_in(ns, name, http_named(name).await.port()));
    }
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config");
    let (files, _) = generate_on_loopback(&yaml, &out, None);
    let (admitted, reason, message) = status_of(&files, "HTTPRoute", "shop/bad");
    assert!(
        !admitted && reason == "RefNotPermitted",
        "{reason} {message}"
    );
    let (_router, http) = serve_generated(&files, &out);
    for (host, server) in [
        ("a.b.example.test", "deep"),
        ("x.example.test", "deep"),
        ("x.a.example.test", "deeper"),
        ("y.x.a.example.test", "deeper"),
        ("abc.wide.test", "narrow"),
        ("other.wide.test", "every"),
        ("example.test", "every"),
        ("anything.test", "every"),
        ("books.test", "books"),
        ("invoices.test", "every"),
    ] {
        let answer = ask(TcpStream::connect(http).await.expect("connect"), host, "/p").await;
        assert!(
            answer.ends_with(&format!("{server} /p\n")),
            "{host} is served by {server}: {answer}"
        );
    }
}

/// The reference host admitter's own wildcard ownership cases (its
/// TestWildcardSubDomainOwnership: the same routes, namespaces, hosts,
/// policies and ages, and the reasons it expects; the cases that test its
/// pluggable blocked-domain admitter and a route with no host are left
/// out). Then an older route of another namespace under the wildcard
/// bounces the wildcard's owner, as in the reference.
#[test]
fn the_reference_wildcard_ownership_cases_are_admitted_as_it_admits_them() {
    // (name, namespace, host, Subdomain, hours after the owner (None:
    // the zero time, older than all), the reason expected).
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        bool,
        Option<u8>,
        &'static str,
    );
    let cases: [Case; 17] = [
        (
            "diffnamespace",
            "notowner",
            "www.namespace.test",
            false,
            Some(2),
            "HostAlreadyClaimed",
        ),
        (
            "diffnamespace2",
            "notowner",
            "www.namespace.test",
            false,
            Some(2),
            "HostAlreadyClaimed",
        ),
        (
            "diffnamespacewildcard",
            "notowner",
            "www.namespace.test",
            true,
            Some(2),
            "HostAlreadyClaimed",
        ),
        (
            "diffns2",
            "fortytwo",
            "www.namespace.test",
            false,
            Some(2),
            "HostAlreadyClaimed",
        ),
        (
            "host2diffns2",
            "fortytwo",
            "api.namespace.test",
            false,
            Some(3),
            "HostAlreadyClaimed",
        ),
        (
            "host2diffns3",
            "fortytwo",
            "api.namespace.test",
            true,
            Some(3),
            "HostAlreadyClaimed",
        ),
        (
            "ownernshost",
            "owner",
            "api.namespace.test",
            false,
            Some(4),
            "",
        ),
        (
            "ownernswildcardhost",
            "owner",
            "wild.namespace.test",
            true,
            Some(4),
            "HostAlreadyClaimed",
        ),
        ("tldhost", "ns1", "ns1.org", false, None, ""),
        ("tldhost2", "ns2", "ns2.org", false, None, ""),
        ("tldhostwildcard", "wild", "wild.play", true, None, ""),
        (
            "anothertldhostwildcard",
            "oscarwilde",
            "oscarwilde.com",
            true,
            None,
            "",
        ),
        ("yatldhostwildcard", "yap", "test.me", true, None, ""),
        (
            "yatldhost2",
            "yap",
            "vinyl.play",
            false,
            None,
            "HostAlreadyClaimed",
        ),
        ("level2sub", "l2s", "test.co.us", false, None, ""),
        ("level2sub2", "l2s", "unit.co.us", false, None, ""),
        ("level2sub3", "l2s", "qe.co.us", true, None, ""),
    ];
    let at = |hours: Option<u8>| match hours {
        Some(h) => format!("2026-01-01T{h:02}:00:00Z"),
        None => "2000-01-01T00:00:00Z".to_string(),
    };
    let mut yaml = String::from("apiVersion: v1\nkind: List\nitems:\n");
    yaml.push_str(&plain_route_at(
        "owner",
        "first",
        "owner.namespace.test",
        true,
        &at(Some(0)),
    ));
    for (name, namespace, host, subdomain, hours, _) in cases {
        yaml.push_str(&plain_route_at(
            namespace,
            name,
            host,
            subdomain,
            &at(hours),
        ));
    }
    let dir = tempfile::tempdir().expect("dir");
    let (files, _) = generate_on_loopback(&yaml, &dir.path().join("config"), None);
    assert!(status_of(&files, "Route", "owner/first").0, "the owner");
    for (name, namespace, _, _, _, reason) in cases {
        let (admitted, got, message) = status_of(&files, "Route", &format!("{namespace}/{name}"));
        assert_eq!(
            (admitted, got.as_str()),
            (reason.is_empty(), reason),
            "{name}: {message}"
        );
    }

    // A newer wildcard of the owner's own domain is refused; an older
    // host of another namespace under it bounces the owner's wildcards.
    yaml.push_str(&plain_route_at(
        "owner",
        "wildcard-owner",
        "wildcard.namespace.test",
        true,
        &at(Some(1)),
    ));
    let (files, _) = generate_on_loopback(&yaml, &dir.path().join("config"), None);
    let (admitted, reason, _) = status_of(&files, "Route", "owner/wildcard-owner");
    assert!(!admitted && reason == "HostAlreadyClaimed");
    yaml.push_str(&plain_route_at(
        "bouncer",
        "hosted",
        "api.namespace.test",
        false,
        "2025-12-31T23:00:00Z",
    ));
    let (files, _) = generate_on_loopback(&yaml, &dir.path().join("config"), None);
    assert!(
        status_of(&files, "Route", "bouncer/hosted").0,
        "the bouncer"
    );
    for bounced in ["owner/first", "owner/wildcard-owner"] {
        let (admitted, reason, message) = status_of(&files, "Route", bounced);
        assert!(
            !admitted && reason == "HostAlreadyClaimed",
            "{bounced}: {message}"
        );
    }
}
