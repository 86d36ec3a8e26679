//! Route choice: from an SNI to a backend through the map files, in the
//! order the reference router uses. `os_sni_passthrough.map` says whether a
//! name is passthrough; `os_tcp_be.map` names its backend. Tables are
//! compiled once per configuration (`table`) and only read here.

pub mod map_file;
pub mod shape;
pub mod table;

use std::path::{Path, PathBuf};

pub use table::{Entry, Table};

/// Index of a backend in the snapshot's backend list.
pub type BackendId = usize;

/// A compiled map with the file it came from.
#[derive(Debug)]
pub struct Map<V> {
    pub path: PathBuf,
    pub table: Table<V>,
}

/// Where a matching line was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapHit<'a> {
    pub file: &'a Path,
    pub line: usize,
    pub pattern: &'a str,
}

/// A route found for an SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub backend: BackendId,
    /// The `os_tcp_be.map` line that named the backend.
    pub hit: MapHit<'a>,
    /// The `os_sni_passthrough.map` line, when that map is configured.
    pub passthrough: Option<MapHit<'a>>,
}

/// Why no route was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The passthrough map is configured and does not list the name.
    NotPassthrough,
    /// No backend map line matches.
    NoBackend,
}

impl Miss {
    pub fn as_str(self) -> &'static str {
        match self {
            Miss::NotPassthrough => "not in the passthrough map",
            Miss::NoBackend => "no backend map line matches",
        }
    }
}

/// The routing maps of one configuration.
#[derive(Debug, Default)]
pub struct Routes {
    /// `os_sni_passthrough.map`: names served by passthrough (values unused).
    pub passthrough: Option<Map<()>>,
    /// `os_tcp_be.map`: name → passthrough backend.
    pub tcp_be: Option<Map<BackendId>>,
    /// `os_edge_reencrypt_be.map`: name → edge or re-encrypt backend.
    pub edge: Option<Map<BackendId>>,
}

impl Routes {
    /// The route for a normalised SNI (lowercase, no trailing dot).
    pub fn find(&self, sni: &str) -> Result<Route<'_>, Miss> {
        let passthrough = match &self.passthrough {
            Some(map) => Some(hit(map, sni).ok_or(Miss::NotPassthrough)?.0),
            None => None,
        };
        let map = self.tcp_be.as_ref().ok_or(Miss::NoBackend)?;
        let (hit, backend) = hit(map, sni).ok_or(Miss::NoBackend)?;
        Ok(Route {
            backend: *backend,
            hit,
            passthrough,
        })
    }

    /// The edge or re-encrypt backend for a name that is not passthrough.
    pub fn find_terminated(&self, sni: &str) -> Option<(MapHit<'_>, BackendId)> {
        let (hit, backend) = hit(self.edge.as_ref()?, sni)?;
        Some((hit, *backend))
    }

    /// Entries across all maps.
    pub fn len(&self) -> usize {
        self.passthrough
            .as_ref()
            .map_or(0, |m| m.table.entries().len())
            + self.tcp_be.as_ref().map_or(0, |m| m.table.entries().len())
            + self.edge.as_ref().map_or(0, |m| m.table.entries().len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hit<'a, V>(map: &'a Map<V>, key: &str) -> Option<(MapHit<'a>, &'a V)> {
    map.table.lookup(key).map(|entry| {
        let hit = MapHit {
            file: &map.path,
            line: entry.line,
            pattern: &entry.pattern,
        };
        (hit, &entry.value)
    })
}
