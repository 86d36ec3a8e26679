//! `generate`'s invariant, for any input: what it writes is what the
//! router loads. Random and broken objects (hosts the admitter refuses,
//! wildcards, duplicate hosts across namespaces, odd paths, weights out of
//! range, truncated PEM, a key that is not the certificate's, a CA that
//! does not parse, Gateway routes on listeners they may not attach to)
//! go through `generate` and then through the router's own loader, which
//! must accept the result; whatever was left out is named in the report
//! and in `status.json`.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Value};
use switchyard::generate::{self, Options};

/// Certificates made once: (a chain and its key, another key, a CA).
struct Pems {
    cert: String,
    key: String,
    other_key: String,
    ca: String,
}

fn pems() -> &'static Pems {
    static PEMS: OnceLock<Pems> = OnceLock::new();
    PEMS.get_or_init(|| {
        let pki = common::Pki::new();
        let split = |pem: String| {
            let (cert, key) = pem
                .split_once("-----END CERTIFICATE-----")
                .expect("a certificate");
            (
                format!("{cert}-----END CERTIFICATE-----\n"),
                key.trim_start().to_string(),
            )
        };
        let (cert, key) = split(pki.pem(&["x.own.test", "*.own.test"]));
        let (_, other_key) = split(pki.pem(&["y.own.test"]));
        Pems {
            cert,
            key,
            other_key,
            ca: pki.ca_pem.clone(),
        }
    })
}

const HOSTS: &[&str] = &[
    "x.own.test",
    "*.own.test",
    "own.test",
    "a.b.own.test",
    "API.own.test",
    "bad_host.test",
    "-x.test",
    "x.other.test",
    "*.other.test",
    "",
    "x.own.test.",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test",
];
const PATHS: &[&str] = &[
    "", "/", "/api", "/api/", "/a b", "/%", "/(x", "api", "/a$b", "/.*", "/\u{7f}", "/é",
];
const TERMINATIONS: &[&str] = &["", "edge", "passthrough", "reencrypt", "Edge", "bogus"];
const INSECURE: &[&str] = &["", "None", "Allow", "Redirect", "bogus"];
const NAMESPACES: &[&str] = &["a", "b", "c"];
const WEIGHTS: &[i64] = &[-1, 0, 1, 100, 256, 257, 1_000_000];

/// A PEM as a route may carry it: absent, right, truncated or garbage.
fn pem_choice(choice: u8, right: &str) -> Option<String> {
    match choice % 4 {
        0 => None,
        1 => Some(right.to_string()),
        2 => Some(right[..right.len() / 2].to_string()),
        _ => Some("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----".into()),
    }
}

/// One Route from indices into the tables above.
fn route(n: usize, pick: &[u8; 10]) -> Value {
    let at = |table: &[&'static str], i: u8| table[usize::from(i) % table.len()];
    let p = pems();
    let mut tls = serde_json::Map::new();
    let termination = at(TERMINATIONS, pick[3]);
    if !termination.is_empty() {
        tls.insert("termination".into(), json!(termination));
        tls.insert(
            "insecureEdgeTerminationPolicy".into(),
            json!(at(INSECURE, pick[4])),
        );
        let key = if pick[6] % 3 == 0 {
            &p.other_key
        } else {
            &p.key
        };
        if let Some(cert) = pem_choice(pick[5], &p.cert) {
            tls.insert("certificate".into(), json!(cert));
            tls.insert("key".into(), json!(key));
        }
        if let Some(ca) = pem_choice(pick[7], &p.ca) {
            tls.insert("destinationCACertificate".into(), json!(ca));
        }
    }
    let mut spec = json!({
        "host": at(HOSTS, pick[0]),
        "path": at(PATHS, pick[1]),
        "wildcardPolicy": if pick[2] % 3 == 0 { "Subdomain" } else { "None" },
        "to": {"kind": "Service", "name": "web", "weight": WEIGHTS[usize::from(pick[8]) % WEIGHTS.len()]},
    });
    if !tls.is_empty() {
        spec["tls"] = Value::Object(tls);
    }
    json!({
        "apiVersion": "route.openshift.io/v1",
        "kind": "Route",
        "metadata": {
            "name": format!("r{}", n % 5),
            "namespace": at(NAMESPACES, pick[9]),
            "creationTimestamp": format!("2026-01-0{}T00:00:00Z", 1 + pick[9] % 3),
        },
        "spec": spec,
    })
}

/// An Ingress and an HTTPRoute on a Gateway, from the same indices.
fn others(n: usize, pick: &[u8; 10]) -> Vec<Value> {
    let at = |table: &[&'static str], i: u8| table[usize::from(i) % table.len()];
    let namespace = at(NAMESPACES, pick[9]);
    let host = at(HOSTS, pick[0]);
    let path = at(PATHS, pick[1]);
    let path_type = at(
        &["Prefix", "Exact", "ImplementationSpecific", "Regex"],
        pick[2],
    );
    let mut out = vec![json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": format!("i{n}"), "namespace": namespace},
        "spec": {
            "tls": [{"hosts": [host], "secretName": "missing"}],
            "rules": [{"host": host, "http": {"paths": [{
                "path": path,
                "pathType": path_type,
                "backend": {"service": {"name": "web", "port": {"number": 8080}}},
            }]}}],
        },
    })];
    let hostnames: Vec<&str> = if pick[3] % 2 == 0 { vec![] } else { vec![host] };
    let section = at(&["http", "https", "wild"], pick[4]);
    let match_type = at(&["PathPrefix", "Exact", "RegularExpression"], pick[5]);
    out.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": format!("h{n}"), "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "a", "sectionName": section}],
            "hostnames": hostnames,
            "rules": [{
                "matches": [{"path": {"type": match_type, "value": path}}],
                "backendRefs": [{"name": "web", "namespace": at(NAMESPACES, pick[6]), "weight": WEIGHTS[usize::from(pick[8]) % WEIGHTS.len()]}],
            }],
        },
    }));
    out
}

/// The Gateway the HTTPRoutes attach to.
fn gateway() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "a"},
        "spec": {"listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "https", "protocol": "HTTPS", "port": 443, "tls": {"certificateRefs": [{"name": "missing"}]}},
            {"name": "wild", "protocol": "HTTP", "port": 80, "hostname": "*.own.test", "allowedRoutes": {"namespaces": {"from": "All"}}},
        ]},
    })
}

fn options(out: &Path) -> Options {
    Options {
        out: out.to_path_buf(),
        default_certificate: None,
        maps_only: false,
        ingress_class: None,
        service_ca: None,
        https_bind: "127.0.0.1:0".into(),
        http_bind: "127.0.0.1:0".into(),
        https_port: 443,
        stats_bind: "127.0.0.1:0".into(),
        stats_password_file: None,
        namespace_ownership: true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn whatever_generate_writes_the_router_loads(
        picks in proptest::collection::vec(any::<[u8; 10]>(), 1..10),
        ownership in any::<bool>(),
    ) {
        let mut items = vec![gateway()];
        for (n, pick) in picks.iter().enumerate() {
            items.push(route(n, pick));
            if pick[0] % 2 == 0 {
                items.extend(others(n, pick));
            }
        }
        let dir = tempfile::tempdir().expect("dir");
        let input = dir.path().join("objects.json");
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        std::fs::write(&input, list.to_string()).expect("objects");
        let mut report = generate::Report::default();
        let objects = generate::read_inputs(&[input], &mut report).expect("read");
        let mut options = options(&dir.path().join("config"));
        options.namespace_ownership = ownership;
        let (files, generated) = generate::generate(&objects, &options);
        if let Err(problems) = generate::check::loads(&objects, &options) {
            let objects = serde_json::to_string_pretty(&list).unwrap_or_default();
            panic!("the loader refuses what generate wrote: {problems:#?}\nfrom {objects}");
        }
        // Whatever was left out is said, in the report and in status.json.
        let status: Value = serde_json::from_slice(&files["status.json"].0).expect("status.json");
        let routes = status["routes"].as_array().expect("routes");
        for p in generated.problems.iter().filter(|p| p.skipped && p.reason != "ReadTwice") {
            let Some((kind, id)) = p.object.split_once(' ') else { continue };
            if !["Route", "Ingress", "HTTPRoute", "TLSRoute"].contains(&kind) {
                continue;
            }
            let entry = routes
                .iter()
                .find(|r| format!("{} {}/{}", r["kind"].as_str().unwrap_or(""), r["namespace"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or("")) == format!("{kind} {id}"));
            prop_assert!(
                entry.is_some_and(|e| e["admitted"] == false),
                "{} is left out, and status.json says so: {}", p, status
            );
        }
        let refused = routes.iter().filter(|r| r["admitted"] == false).count();
        prop_assert!(refused == 0 || generated.anything_skipped(), "{}", status);
    }
}
