//! Route choice: from what a connection says (its SNI) to a backend through
//! the map files, in the order the reference router uses (`decision`).
//! Map files are read by `map_file`, each line's regex is classified by
//! `shape` and compiled into a `table` once per configuration; the data
//! path only reads them.

pub(crate) mod map_file;
pub(crate) mod request;
pub(crate) mod shape;
pub(crate) mod table;

use std::path::Path;
use std::sync::Arc;

pub use table::{Entry, Table};

/// Index of a backend in the snapshot's backend list.
pub(crate) type BackendId = usize;

/// A compiled map with the file it came from.
#[derive(Debug)]
pub(crate) struct Map<V> {
    pub(crate) path: Arc<Path>,
    pub(crate) table: Table<V>,
}

impl<V> Map<V> {
    /// The pattern written on `line`, for explanations.
    pub(crate) fn pattern_at(&self, line: usize) -> Option<&str> {
        self.table.pattern_at(line)
    }
}

/// The routing maps of one configuration.
#[derive(Debug, Default)]
///
/// Each compiled map is shared (`Arc`): a reload that leaves a map file
/// unchanged, and every backend it names where it was, reuses it as it is.
pub(crate) struct Routes {
    /// `os_sni_passthrough.map`: names served by passthrough (values unused).
    pub(crate) passthrough: Option<Arc<Map<()>>>,
    /// `os_tcp_be.map`: name → passthrough backend.
    pub(crate) tcp_be: Option<Arc<Map<BackendId>>>,
    /// `os_edge_reencrypt_be.map`: name → edge or re-encrypt backend.
    pub(crate) edge: Option<Arc<Map<BackendId>>>,
    /// The same map for request keys (`host[:port]` + path), built when a
    /// backend serves HTTP.
    pub(crate) edge_requests: Option<Arc<request::RequestTable<BackendId>>>,
    /// `os_http_be.map`: plain-HTTP request → backend in HTTP mode.
    pub(crate) http_be: Option<Arc<RequestMap<BackendId>>>,
    /// `os_route_http_redirect.map`: plain-HTTP request → redirect to https.
    pub(crate) http_redirect: Option<Arc<RequestMap<bool>>>,
    /// `alpn_be`: `<protocol>,<name>` → backend, for each protocol the
    /// client offers; consulted before the maps above.
    pub(crate) alpn: Option<Arc<Map<BackendId>>>,
}

/// A map of request keys with the file it came from.
#[derive(Debug)]
pub(crate) struct RequestMap<V> {
    pub(crate) path: Arc<Path>,
    pub(crate) table: request::RequestTable<V>,
}

impl Routes {
    /// Entries across all maps.
    pub(crate) fn len(&self) -> usize {
        self.alpn.as_ref().map_or(0, |m| m.table.len())
            + self.passthrough.as_ref().map_or(0, |m| m.table.len())
            + self.tcp_be.as_ref().map_or(0, |m| m.table.len())
            + self.edge.as_ref().map_or(0, |m| m.table.len())
    }
}
