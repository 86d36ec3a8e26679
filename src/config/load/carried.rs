//! What a reload takes over from the configuration it replaces: live state
//! by identity (server counters and health, queues, round-robin positions,
//! TLS session caches), and with the loader's [`Memo`] the compiled maps and
//! backends whose files did not change, reused as they are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::config::problem::Problem;
use crate::model::backend::{Backend, Mode, ServerState, Termination};
use crate::model::route::{BackendId, Map};
use crate::model::snapshot::Snapshot;

use super::{digest_of, Context, Digest, Memo};

impl Carried {
    /// The previous backends' live state by identity, indexed on first use.
    pub(super) fn live(&mut self) -> &Live {
        let previous = &self.previous;
        self.live.get_or_insert_with(|| {
            let mut live = Live::default();
            for b in previous {
                live.rotations
                    .insert(b.name.clone(), Arc::clone(&b.rotation));
                if let Some(queue) = &b.queue {
                    live.queues.insert(b.name.clone(), Arc::clone(queue));
                }
                live.traffic.insert(
                    b.name.clone(),
                    (Arc::clone(&b.traffic), Arc::clone(&b.verify_failures)),
                );
                for s in &b.servers {
                    let key = (b.name.clone(), s.name.clone(), s.addr);
                    live.servers.insert(key, Arc::clone(&s.state));
                }
            }
            live
        })
    }
}

/// Live state of the previous backends by identity, for backends built
/// anew.
#[derive(Default)]
pub(super) struct Live {
    pub(super) rotations: HashMap<String, Arc<AtomicUsize>>,
    pub(super) queues: HashMap<String, Arc<crate::model::backend::Queue>>,
    /// Backend traffic and verify-failure counters by backend name.
    pub(super) traffic: HashMap<
        String,
        (
            Arc<crate::model::counters::Traffic>,
            Arc<std::sync::atomic::AtomicU64>,
        ),
    >,
    pub(super) servers: HashMap<(String, String, SocketAddr), Arc<ServerState>>,
}

/// Live state of the previous configuration, by identity.
#[derive(Default)]
pub(in crate::config) struct Carried {
    /// The previous backends, to carry their live state from (indexed by
    /// name only when some backend is built anew: `live`).
    pub(super) previous: Vec<Arc<Backend>>,
    pub(super) live: Option<Live>,
    /// The previous compiled maps by file and kind, with what they were
    /// built from.
    pub(super) maps: HashMap<MapKey, PreviousMap>,
    /// The previous backend at each id.
    pub(super) kinds: Vec<BackendKind>,
    /// The previous backends with what they were built from.
    pub(super) backends: Option<(Arc<BackendMemo>, Vec<Arc<Backend>>)>,
    /// The previous request table of the edge map, with that map.
    pub(super) edge_requests: Option<EdgeRequests>,
    /// TLS termination of each listener, by name (session resumption).
    pub(in crate::config) tls: HashMap<String, Arc<crate::tls::ServerSide>>,
}

impl Carried {
    /// The live state of `snapshot`, and with `memo` its reusable parts.
    pub(super) fn from_previous(snapshot: &Snapshot, memo: Option<&Memo>) -> Self {
        let mut carried = Carried::default();
        for (listener, tls) in snapshot.listeners.iter().zip(&snapshot.tls) {
            if let Some(tls) = tls {
                carried
                    .tls
                    .insert(listener.name.to_string(), Arc::clone(tls));
            }
        }
        carried.kinds = snapshot.backends.iter().map(|b| kind_of(b)).collect();
        carried.previous = snapshot.backends.clone();
        let Some(memo) = memo else {
            return carried;
        };
        carried.backends = memo
            .backends
            .as_ref()
            .map(|built| (Arc::clone(built), snapshot.backends.clone()));
        let routes = &snapshot.routes;
        let memo = &memo.maps;
        let mut keep = |path: &Path, role, map: Arc<dyn std::any::Any + Send + Sync>| {
            let key = (path.to_path_buf(), role);
            if let Some((digest, warnings)) = memo.get(&key) {
                let previous = PreviousMap {
                    digest: *digest,
                    warnings: warnings.clone(),
                    map,
                };
                carried.maps.insert(key, previous);
            }
        };
        if let Some(m) = &routes.passthrough {
            keep(&m.path, "sni_passthrough", m.clone());
        }
        if let Some(m) = &routes.tcp_be {
            keep(&m.path, "tcp_be", m.clone());
        }
        if let Some(m) = &routes.edge {
            keep(&m.path, "edge_reencrypt_be", m.clone());
        }
        if let Some(m) = &routes.http_be {
            keep(&m.path, "http_be", m.clone());
        }
        if let Some(m) = &routes.http_redirect {
            keep(&m.path, "http_redirect", m.clone());
        }
        if let (Some(edge), Some(requests)) = (&routes.edge, &routes.edge_requests) {
            carried.edge_requests = Some((Arc::clone(edge), Arc::clone(requests)));
        }
        carried
    }
}

impl Context {
    /// The previous backends, when the main file and every backend file
    /// are the text they were built from (and nothing else went in): the
    /// same backends, with their live state, and the warnings they gave.
    pub(super) fn reuse_backends(&mut self, main: Digest) -> Option<BuiltBackends> {
        let (memo, backends) = self.carried.backends.take()?;
        if memo.main != main {
            return None;
        }
        for (path, digest) in &memo.files {
            let text = std::fs::read_to_string(path).ok()?;
            if digest_of(&text) != *digest {
                return None;
            }
        }
        self.files.extend(memo.files.iter().map(|(p, _)| p.clone()));
        self.warnings.extend(memo.warnings.iter().cloned());
        let names = backends
            .iter()
            .enumerate()
            .map(|(id, b)| (b.name.clone(), id))
            .collect();
        self.backends_memo = Some(BackendMemo::clone(&memo));
        Some((backends, names))
    }
}

/// A map by file and by role (`tcp_be`, …: the same file may serve two).
pub(crate) type MapKey = (PathBuf, &'static str);

/// What each compiled map of a snapshot was built from, and the warnings
/// it gave.
pub(crate) type MapMemo = HashMap<MapKey, (Digest, Vec<Problem>)>;

/// A compiled map of the previous configuration.
pub(super) struct PreviousMap {
    pub(super) digest: Digest,
    pub(super) warnings: Vec<Problem>,
    pub(super) map: Arc<dyn std::any::Any + Send + Sync>,
}

/// What a snapshot's backends were built from: the main file, the backend
/// files (in order) and the warnings they gave.
#[derive(Debug, Clone)]
pub(crate) struct BackendMemo {
    pub(super) main: Digest,
    pub(super) files: Vec<(PathBuf, Digest)>,
    pub(super) warnings: Vec<Problem>,
}

/// A configuration's backends and their ids by name.
pub(super) type BuiltBackends = (Vec<Arc<Backend>>, Names);

/// Backend names to ids: every map line's value is looked up here.
pub(super) type Names = HashMap<String, BackendId, foldhash::fast::RandomState>;

/// The edge map and the request table built from it.
pub(super) type EdgeRequests = (
    Arc<Map<BackendId>>,
    Arc<crate::model::route::request::RequestTable<BackendId>>,
);

/// What a map's value for a backend depends on.
pub(super) type BackendKind = (String, Termination, Mode);

pub(super) fn kind_of(b: &Backend) -> BackendKind {
    (b.name.clone(), b.termination, b.mode)
}

/// A map value that a reused map may keep: the same in the new
/// configuration as in the one it was built for.
pub(super) trait Reused: Send + Sync + 'static {
    fn same_in(&self, cx: &Context) -> bool;
}

impl Reused for () {
    fn same_in(&self, _: &Context) -> bool {
        true
    }
}

impl Reused for bool {
    fn same_in(&self, _: &Context) -> bool {
        true
    }
}

impl Reused for BackendId {
    /// The backend at this id has the same name, termination and mode.
    fn same_in(&self, cx: &Context) -> bool {
        match (cx.carried.kinds.get(*self), cx.kinds.get(*self)) {
            (Some(before), Some(now)) => before == now,
            _ => false,
        }
    }
}
