//! The routing decision: one function, [`Snapshot::decide`], that every
//! caller uses (the data path, the close-removed-routes watch and
//! `switchyard route`), so that they cannot disagree.
//!
//! Stage one, at the handshake, routes by what the ClientHello says: a name
//! in `os_sni_passthrough.map` goes to the backend `os_tcp_be.map` names
//! (relayed untouched); any other name to the edge or re-encrypt backend
//! `os_edge_reencrypt_be.map` names (terminated); no SNI, not TLS or no
//! route to the listener's `default_backend`. The result owns what the
//! connection needs after routing (an `Arc` to the backend and where the
//! route came from) and borrows nothing from the snapshot.

use std::path::Path;
use std::sync::Arc;

use crate::model::backend::{Backend, Termination};
use crate::model::snapshot::Snapshot;

use crate::model::route::{Map, Routes};

/// What the preread learned about the connection: the only input of the
/// decision besides the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hello<'a> {
    /// A complete ClientHello naming this (normalised) host.
    Sni(&'a str),
    /// A complete ClientHello without SNI.
    NoSni,
    /// Bytes that are not a usable ClientHello: only a passthrough default
    /// backend can take them.
    NotTls,
}

/// The same, owned, for a decision that must be made again after a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedHello {
    Sni(Box<str>),
    NoSni,
    NotTls,
}

impl OwnedHello {
    pub(crate) fn as_hello(&self) -> Hello<'_> {
        match self {
            OwnedHello::Sni(s) => Hello::Sni(s),
            OwnedHello::NoSni => Hello::NoSni,
            OwnedHello::NotTls => Hello::NotTls,
        }
    }
}

impl From<Hello<'_>> for OwnedHello {
    fn from(hello: Hello<'_>) -> Self {
        match hello {
            Hello::Sni(s) => OwnedHello::Sni(s.into()),
            Hello::NoSni => OwnedHello::NoSni,
            Hello::NotTls => OwnedHello::NotTls,
        }
    }
}

/// A map line that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) file: Arc<Path>,
    pub(crate) line: usize,
}

/// Why this backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// Listed in `os_sni_passthrough.map` (when configured) and named by
    /// `os_tcp_be.map`.
    Passthrough { listed: Option<Hit>, backend: Hit },
    /// Named by `os_edge_reencrypt_be.map`.
    Terminated { backend: Hit },
    /// Named by the `alpn_be` map for this protocol the client offered.
    Alpn { protocol: Box<str>, backend: Hit },
    /// The listener's `default_backend`, for this reason.
    Default(Miss),
}

/// The decision for one connection.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub(crate) backend: Arc<Backend>,
    pub(crate) via: Via,
    /// The generation of the snapshot it was made from.
    pub(crate) generation: u64,
}

impl Decision {
    /// The map line that named the backend, if a map did.
    pub(crate) fn hit(&self) -> Option<&Hit> {
        match &self.via {
            Via::Passthrough { backend, .. }
            | Via::Terminated { backend }
            | Via::Alpn { backend, .. } => Some(backend),
            Via::Default(_) => None,
        }
    }
}

/// Why no map line routed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The ClientHello names no host.
    NoSni,
    /// Not a ClientHello this router can read.
    NotTls,
    /// No map line matches the name.
    NoRoute,
}

impl Miss {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Miss::NoSni => "ClientHello without SNI",
            Miss::NotTls => "not a usable ClientHello",
            Miss::NoRoute => "no map line matches",
        }
    }
}

impl Snapshot {
    /// The decision for a connection on listener `listener` (an index into
    /// `listeners`) whose ClientHello offered the ALPN protocols `alpn`, or
    /// why it is closed.
    pub(crate) fn decide(
        &self,
        listener: usize,
        hello: Hello<'_>,
        alpn: &[String],
    ) -> Result<Decision, Miss> {
        let decided = |backend: usize, via| Decision {
            backend: Arc::clone(&self.backends[backend]),
            via,
            generation: self.generation,
        };
        let miss = match hello {
            Hello::Sni(name) => match self.routes.decide(name, alpn) {
                Some((id, via)) => return Ok(decided(id, via)),
                None => Miss::NoRoute,
            },
            Hello::NoSni => Miss::NoSni,
            Hello::NotTls => Miss::NotTls,
        };
        let default = self.listeners.get(listener).and_then(|l| l.default_backend);
        match default {
            // Bytes that are not TLS cannot be terminated.
            Some(id)
                if miss != Miss::NotTls
                    || self.backends[id].termination == Termination::Passthrough =>
            {
                Ok(decided(id, Via::Default(miss)))
            }
            _ => Err(miss),
        }
    }
}

impl Snapshot {
    /// Stage two, in HTTP mode: the backend for a request whose lowercased
    /// `host[:port]` is `host` and whose path (no query) is `path`, from
    /// `os_edge_reencrypt_be.map`, first match wins. `None` when no line
    /// matches or the line's backend does not serve HTTP (then the
    /// listener's HTTP default backend, or 503).
    pub(crate) fn decide_request(&self, host: &str, path: &str) -> Option<Decision> {
        let table = self.routes.edge_requests.as_ref()?;
        let map = self.routes.edge.as_ref()?;
        let entry = table.lookup(host, path)?;
        let backend = &self.backends[entry.value];
        if backend.mode != crate::model::backend::Mode::Http {
            return None;
        }
        Some(Decision {
            backend: Arc::clone(backend),
            via: Via::Terminated {
                backend: Hit {
                    file: Arc::clone(&map.path),
                    line: entry.line,
                },
            },
            generation: self.generation,
        })
    }
}

/// What a plain-HTTP request (port 80) gets.
#[derive(Debug, Clone)]
pub(crate) enum PlainDecision {
    /// `os_route_http_redirect.map` says 1: redirect to https.
    Redirect,
    /// `os_http_be.map` names this backend.
    Route(Decision),
}

impl Snapshot {
    /// A plain-HTTP request: redirected if `os_route_http_redirect.map`
    /// says so, else routed by `os_http_be.map`; `None` gets 503.
    pub(crate) fn decide_plain_request(&self, host: &str, path: &str) -> Option<PlainDecision> {
        let redirect = self.routes.http_redirect.as_ref();
        if redirect
            .and_then(|m| m.table.lookup(host, path))
            .is_some_and(|e| e.value)
        {
            return Some(PlainDecision::Redirect);
        }
        let map = self.routes.http_be.as_ref()?;
        let entry = map.table.lookup(host, path)?;
        Some(PlainDecision::Route(Decision {
            backend: Arc::clone(&self.backends[entry.value]),
            via: Via::Terminated {
                backend: Hit {
                    file: Arc::clone(&map.path),
                    line: entry.line,
                },
            },
            generation: self.generation,
        }))
    }
}

impl Routes {
    /// Stage one: a protocol the client offers with its name in the
    /// `alpn_be` map first, then by name: passthrough, then terminated
    /// routes.
    fn decide(&self, name: &str, alpn: &[String]) -> Option<(usize, Via)> {
        if let Some(found) = self
            .alpn
            .as_ref()
            .and_then(|map| by_protocol(map, name, alpn))
        {
            return Some(found);
        }
        let listed = match &self.passthrough {
            Some(map) => lookup(map, name).map(|(hit, _)| Some(hit)),
            None => Some(None),
        };
        if let (Some(listed), Some(map)) = (listed, &self.tcp_be) {
            if let Some((backend, &id)) = lookup(map, name) {
                return Some((id, Via::Passthrough { listed, backend }));
            }
        }
        let (backend, &id) = lookup(self.edge.as_ref()?, name)?;
        Some((id, Via::Terminated { backend }))
    }
}

/// The `alpn_be` line for `<protocol>,<name>` of the protocols offered:
/// of those that match, the earliest line (the map's order decides, as
/// everywhere; the client's preference does not).
fn by_protocol(map: &Map<usize>, name: &str, alpn: &[String]) -> Option<(usize, Via)> {
    if alpn.is_empty() {
        return None;
    }
    let mut key = String::with_capacity(name.len() + 24);
    let mut best: Option<(Hit, usize, &str)> = None;
    // A protocol with a comma (the key's separator) or bytes that are not
    // UTF-8 (kept as U+FFFD) could pose as another key: never routed on.
    let plain = |p: &&String| !p.contains([',', '\u{fffd}']);
    for protocol in alpn.iter().filter(plain) {
        key.clear();
        key.push_str(protocol);
        key.push(',');
        key.push_str(name);
        if let Some((hit, &id)) = lookup(map, &key) {
            if best.as_ref().is_none_or(|(b, _, _)| hit.line < b.line) {
                best = Some((hit, id, protocol));
            }
        }
    }
    best.map(|(backend, id, protocol)| {
        let via = Via::Alpn {
            protocol: protocol.into(),
            backend,
        };
        (id, via)
    })
}

fn lookup<'a, V>(map: &'a Map<V>, key: &str) -> Option<(Hit, &'a V)> {
    map.table.lookup(key).map(|entry| {
        let hit = Hit {
            file: Arc::clone(&map.path),
            line: entry.line,
        };
        (hit, entry.value)
    })
}
