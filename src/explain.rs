//! `switchyard route`: explains a decision with the code the data path
//! runs: by ALPN and SNI (`Snapshot::decide`), then, in HTTP mode or on a
//! plain-HTTP listener and with `--path`, by request
//! (`Snapshot::decide_request`, `decide_plain_request`): which map lines
//! matched, which backend and termination, how it balances, which server a
//! given client would get and its sticky cookie.

use std::fmt::Write;
use std::net::IpAddr;

use crate::model::backend::{Backend, Mode};
use crate::model::decide::{Decision, Hello, Hit, PlainDecision, Via};
use crate::model::route::Map;
use crate::model::snapshot::{Protocol, Snapshot};
use crate::model::wire::client_hello;

/// The explanation, as lines of text, for a connection on `listener` (the
/// first listener when `None`) from a client offering the ALPN protocols
/// `alpn`. Returns whether a map line routed it.
pub fn explain(
    snapshot: &Snapshot,
    listener: Option<&str>,
    sni: &str,
    alpn: &[String],
    path: Option<&str>,
    client: IpAddr,
) -> (bool, String) {
    let mut out = String::new();
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
    if snapshot.listeners.get(index).map(|l| l.protocol) == Some(Protocol::Http) {
        return plain(snapshot, sni, path.unwrap_or("/"), client);
    }
    let host = sni;
    let Some(key) = sni_key(host, &mut out) else {
        return (false, out);
    };
    let Some(spec) = snapshot.listeners.get(index) else {
        let _ = writeln!(out, "listener:    none configured");
        return (false, out);
    };
    let decision = match snapshot.decide(index, Hello::Sni(&key), alpn) {
        Ok(decision) => decision,
        Err(miss) => {
            let _ = writeln!(out, "route:       none ({})", miss.as_str());
            if spec.postgres {
                let _ = writeln!(
                    out,
                    "postgres:    a PostgreSQL client (SSLRequest first) is answered `S`, then told `unrecognized_name` in its handshake"
                );
            }
            if snapshot.tls.get(index).is_some_and(Option::is_some) {
                let _ = writeln!(
                    out,
                    "result:      terminated with the default certificate, HTTP mode"
                );
                let routed = request(snapshot, index, host, path.unwrap_or("/"), client, &mut out);
                return (routed, out);
            }
            let _ = writeln!(
                out,
                "result:      connection closed (listener {} has no default backend)",
                spec.name
            );
            return (false, out);
        }
    };
    let routed = matched(snapshot, &decision, &spec.name, &mut out);
    let backend = &decision.backend;
    if spec.postgres {
        postgres(backend, &mut out);
    }
    if backend.termination != crate::model::backend::Termination::Passthrough
        && backend.mode == Mode::Http
    {
        let _ = writeln!(
            out,
            "mode:        http (the connection's requests are routed one by one)"
        );
        let routed = request(snapshot, index, host, path.unwrap_or("/"), client, &mut out);
        return (routed, out);
    }
    describe(backend, client, &mut out);
    (routed, out)
}

/// What a PostgreSQL client that opens with an `SSLRequest` gets on a
/// `postgres = true` listener, routed to `backend`.
fn postgres(backend: &Backend, out: &mut String) {
    use crate::model::backend::Termination;
    let then = match (backend.termination, backend.mode) {
        (Termination::Passthrough, _) => {
            "the server is sent an SSLRequest and must answer `S` before the ClientHello is relayed"
        }
        (_, Mode::Http) => "refused: an HTTP-mode backend cannot serve it",
        (Termination::Reencrypt, _) => {
            "TLS ends here; the server is sent an SSLRequest, then TLS to it is verified"
        }
        (Termination::Edge | Termination::Plain, _) => {
            "TLS ends here; the server gets plain PostgreSQL"
        }
    };
    let _ = writeln!(
        out,
        "postgres:    a PostgreSQL client's SSLRequest is answered `S` here, then its SNI decides as above; {then}"
    );
}

/// The name a client would send for `host` (its port dropped), as the
/// data path normalises it; `None` (explained) if no client could.
fn sni_key(host: &str, out: &mut String) -> Option<String> {
    let sni = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    match client_hello::host_name(sni.as_bytes()) {
        Ok(key) => {
            let _ = writeln!(out, "sni:         {key}");
            Some(key.to_string())
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "sni:         {sni:?} is not a server name a client can send ({e})"
            );
            None
        }
    }
}

/// The map lines that decided, or the default backend; whether a map line
/// routed the connection.
fn matched(snapshot: &Snapshot, decision: &Decision, listener: &str, out: &mut String) -> bool {
    let routes = &snapshot.routes;
    match &decision.via {
        Via::Passthrough { listed, backend } => {
            if let (Some(hit), Some(map)) = (listed, &routes.passthrough) {
                line(out, "passthrough:", hit, map);
            }
            if let Some(map) = &routes.tcp_be {
                line(out, "matched:", backend, map);
            }
            true
        }
        Via::Terminated { backend } => {
            if let Some(map) = &routes.edge {
                line(out, "matched:", backend, map);
            }
            true
        }
        Via::Alpn { protocol, backend } => {
            let _ = writeln!(
                out,
                "alpn:        `{protocol}` decided, before the name's maps"
            );
            if let Some(map) = &routes.alpn {
                line(out, "matched:", backend, map);
            }
            true
        }
        Via::Default(miss) => {
            let _ = writeln!(out, "route:       none ({})", miss.as_str());
            let _ = writeln!(out, "result:      default backend of listener {listener}");
            false
        }
    }
}

/// Stage two on a TLS listener: the request for `host` + `path`.
fn request(
    snapshot: &Snapshot,
    listener: usize,
    host: &str,
    path: &str,
    client: IpAddr,
    out: &mut String,
) -> bool {
    let host = host.to_ascii_lowercase();
    let _ = writeln!(out, "request:     {host}{path}");
    match snapshot.decide_request(&host, path) {
        Some(decision) => {
            request_line(snapshot, &decision, out);
            describe(&decision.backend, client, out);
            true
        }
        None => fallback(snapshot, listener, client, out),
    }
}

/// A request on a plain-HTTP listener: redirect or `os_http_be.map`.
fn plain(snapshot: &Snapshot, host: &str, path: &str, client: IpAddr) -> (bool, String) {
    let mut out = String::new();
    let host = host.to_ascii_lowercase();
    let _ = writeln!(out, "request:     http://{host}{path}");
    match snapshot.decide_plain_request(&host, path) {
        Some(PlainDecision::Redirect) => {
            let _ = writeln!(
                out,
                "result:      302 to https (os_route_http_redirect.map)"
            );
            (true, out)
        }
        Some(PlainDecision::Route(decision)) => {
            request_line(snapshot, &decision, &mut out);
            describe(&decision.backend, client, &mut out);
            (true, out)
        }
        None => {
            let _ = writeln!(out, "result:      503 (no line of os_http_be.map matches)");
            (false, out)
        }
    }
}

/// No line routed the request: the listener's HTTP default or 503.
fn fallback(snapshot: &Snapshot, listener: usize, client: IpAddr, out: &mut String) -> bool {
    let default = snapshot
        .listeners
        .get(listener)
        .and_then(|l| l.default_backend)
        .map(|id| snapshot.backend(id))
        .filter(|b| b.mode == Mode::Http);
    match default {
        Some(backend) => {
            let _ = writeln!(out, "result:      the listener's default backend");
            describe(backend, client, out);
        }
        None => {
            let _ = writeln!(out, "result:      503 (no map line matches the request)");
        }
    }
    false
}

/// The map line a request decision came from.
fn request_line(snapshot: &Snapshot, decision: &Decision, out: &mut String) {
    if let Some(hit) = decision.hit() {
        let routes = &snapshot.routes;
        let from_edge = routes.edge.as_ref().is_some_and(|m| m.path == hit.file);
        let table = if from_edge {
            routes.edge_requests.as_deref()
        } else {
            routes.http_be.as_ref().map(|m| &m.table)
        };
        let pattern = table.and_then(|t| t.pattern_at(hit.line)).unwrap_or("?");
        let _ = writeln!(
            out,
            "matched:     {}:{}  {pattern}",
            hit.file.display(),
            hit.line
        );
    }
}

/// Backend, server for `client` and, in HTTP mode, its sticky cookie.
fn describe(backend: &Backend, client: IpAddr, out: &mut String) {
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
                crate::model::balance::Algorithm::Source => "always, for this client",
                _ => "next, for a fresh process; it depends on traffic",
            };
            let _ = writeln!(
                out,
                "server:      {} {} weight {} ({how}: client {client})",
                s.name, s.addr, s.weight
            );
            if let (Some(name), Some(value)) = (&backend.cookie, backend.cookie_value(i)) {
                let _ = writeln!(out, "cookie:      {name}={value}");
            }
        }
        None => {
            let _ = writeln!(
                out,
                "server:      none available: the connection would be closed"
            );
        }
    }
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
