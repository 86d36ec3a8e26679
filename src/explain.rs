//! `switchyard route`: explains the decision for one SNI with the code the
//! data path runs (`Snapshot::decide`): which map lines matched, which
//! backend and termination, how it balances, and which server a given
//! client would get.

use std::fmt::Write;
use std::net::IpAddr;

use crate::client_hello;
use crate::config::Snapshot;
use crate::route::{Hello, Hit, Map, Via};

/// The explanation, as lines of text, for a connection on `listener` (the
/// first listener when `None`). Returns whether a map line routed it.
pub fn explain(
    snapshot: &Snapshot,
    listener: Option<&str>,
    sni: &str,
    client: IpAddr,
) -> (bool, String) {
    let mut out = String::new();
    let key = match client_hello::host_name(sni.as_bytes()) {
        Ok(key) => key,
        Err(e) => {
            let _ = writeln!(
                out,
                "sni:         {sni:?} is not a server name a client can send ({e})"
            );
            return (false, out);
        }
    };
    let _ = writeln!(out, "sni:         {key}");
    let index = match listener {
        None => 0,
        Some(name) => match snapshot.listeners.iter().position(|l| &*l.name == name) {
            Some(i) => i,
            None => {
                let _ = writeln!(out, "listener:    `{name}` is not configured");
                return (false, out);
            }
        },
    };
    let Some(spec) = snapshot.listeners.get(index) else {
        let _ = writeln!(out, "listener:    none configured");
        return (false, out);
    };
    let decision = match snapshot.decide(index, Hello::Sni(&key)) {
        Ok(decision) => decision,
        Err(miss) => {
            let _ = writeln!(out, "route:       none ({})", miss.as_str());
            let _ = writeln!(
                out,
                "result:      connection closed (listener {} has no default backend)",
                spec.name
            );
            return (false, out);
        }
    };
    let routes = &snapshot.routes;
    let routed = match &decision.via {
        Via::Passthrough { listed, backend } => {
            if let (Some(hit), Some(map)) = (listed, &routes.passthrough) {
                line(&mut out, "passthrough:", hit, map);
            }
            if let Some(map) = &routes.tcp_be {
                line(&mut out, "matched:", backend, map);
            }
            true
        }
        Via::Terminated { backend } => {
            if let Some(map) = &routes.edge {
                line(&mut out, "matched:", backend, map);
            }
            true
        }
        Via::Default(miss) => {
            let _ = writeln!(out, "route:       none ({})", miss.as_str());
            let _ = writeln!(
                out,
                "result:      default backend of listener {}",
                spec.name
            );
            false
        }
    };
    let backend = &decision.backend;
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
    (routed, out)
}

fn line<V>(out: &mut String, label: &str, hit: &Hit, map: &Map<V>) {
    let pattern = map.pattern_at(hit.line).unwrap_or("?");
    let _ = writeln!(
        out,
        "{label:<12} {}:{}  {pattern}",
        hit.file.display(),
        hit.line
    );
}
