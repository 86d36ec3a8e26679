//! `switchyard route`: explains the decision for one SNI with the same code
//! the data path uses: which map line matched, which backend, how it
//! balances, and which server a given client would get.

use std::fmt::Write;
use std::net::IpAddr;

use crate::config::Snapshot;

/// The explanation, as lines of text. Returns whether a route was found.
pub fn explain(snapshot: &Snapshot, sni: &str, client: IpAddr) -> (bool, String) {
    let key = normalise(sni);
    let mut out = String::new();
    let _ = writeln!(out, "sni:         {key}");
    let route = match snapshot.routes.find(&key) {
        Ok(route) => route,
        Err(miss) => {
            let _ = writeln!(out, "route:       none ({})", miss.as_str());
            let fallback = snapshot.listeners.iter().filter_map(|l| {
                l.default_backend
                    .map(|b| format!("{} → {}", l.name, snapshot.backend(b).name))
            });
            let fallback: Vec<String> = fallback.collect();
            if fallback.is_empty() {
                let _ = writeln!(out, "result:      connection closed (no default backend)");
            } else {
                let _ = writeln!(
                    out,
                    "result:      default backend of listener {}",
                    fallback.join(", ")
                );
            }
            return (false, out);
        }
    };
    if let Some(p) = route.passthrough {
        let _ = writeln!(
            out,
            "passthrough: {}:{}  {}",
            p.file.display(),
            p.line,
            p.pattern
        );
    }
    let hit = route.hit;
    let _ = writeln!(
        out,
        "matched:     {}:{}  {}",
        hit.file.display(),
        hit.line,
        hit.pattern
    );
    let backend = snapshot.backend(route.backend);
    let _ = writeln!(
        out,
        "backend:     {} (termination {}, balance {}, {} servers)",
        backend.name,
        backend.termination.as_str(),
        backend.algorithm.as_str(),
        backend.servers.len()
    );
    match backend.pick(client, &[]) {
        Some(i) => {
            let s = &backend.servers[i];
            let how = match backend.algorithm {
                crate::balance::Algorithm::Source => "always, for this client",
                _ => "next, for a fresh process; it depends on traffic",
            };
            let _ = writeln!(
                out,
                "server:      {} {} weight {} ({how}: client {client})",
                s.name, s.addr, s.weight
            );
        }
        None => {
            let _ = writeln!(
                out,
                "server:      none available: the connection would be closed"
            );
        }
    }
    (true, out)
}

/// The key the data path would look up: lowercase, no trailing dot.
fn normalise(sni: &str) -> String {
    sni.trim_end_matches('.').to_ascii_lowercase()
}
