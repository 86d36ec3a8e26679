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
    let tls_hostnames: Vec<&str> = if pick[7] % 2 == 0 { vec![] } else { vec![host] };
    out.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1alpha2",
        "kind": "TLSRoute",
        "metadata": {"name": format!("t{n}"), "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "a", "sectionName": at(&["tls", "tls-wild", "http"], pick[8])}],
            "hostnames": tls_hostnames,
            "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}],
        },
    }));
    out
}

/// The Gateway the HTTPRoutes and TLSRoutes attach to.
fn gateway() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "a"},
        "spec": {"listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "https", "protocol": "HTTPS", "port": 443, "tls": {"certificateRefs": [{"name": "missing"}]}},
            {"name": "wild", "protocol": "HTTP", "port": 80, "hostname": "*.own.test", "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "tls", "protocol": "TLS", "port": 443, "tls": {"mode": "Passthrough"}, "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "tls-wild", "protocol": "TLS", "port": 443, "hostname": "*.test", "tls": {"mode": "Passthrough"}, "allowedRoutes": {"namespaces": {"from": "All"}}},
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
        maps_only in any::<bool>(),
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
        options.maps_only = maps_only;
        let (files, _) = generate::generate(&objects, &options);
        if let Err(problems) = generate::check::loads(&files, &options) {
            let objects = serde_json::to_string_pretty(&list).unwrap_or_default();
            panic!("the loader refuses what generate wrote: {problems:#?}\nfrom {objects}");
        }
        // A Route is admitted exactly when its backend is written.
        let status: Value = serde_json::from_slice(&files["status.json"].0).expect("status.json");
        let backends = String::from_utf8_lossy(&files["backends.toml"].0).to_string();
        let mut hosts: std::collections::HashMap<String, String> = Default::default();
        for r in status["routes"].as_array().expect("routes") {
            if r["kind"] != "Route" {
                continue;
            }
            let (ns, name) = (r["namespace"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or(""));
            let written = backends.contains(&format!(":{ns}:{name}\"\n"));
            prop_assert_eq!(r["admitted"].as_bool(), Some(written), "Route {}/{}: {}", ns, name, backends);
            // With ownership, no exact host is served for two namespaces.
            let Some(item) = items.iter().find(|i| i["kind"] == "Route" && i["metadata"]["namespace"] == ns && i["metadata"]["name"] == name) else { continue };
            if ownership && written && item["spec"]["wildcardPolicy"] == "None" {
                let host = item["spec"]["host"].as_str().unwrap_or("").trim_end_matches('.').to_string();
                let first = hosts.entry(host.clone()).or_insert_with(|| ns.to_string());
                prop_assert_eq!(first.as_str(), ns, "{} is served for two namespaces", host);
            }
        }
    }
}
