//! Switchyard: an SNI-routing TCP/TLS ingress router driven by HAProxy-style
//! map files.
//!
//! Two layers, arrows pointing down only:
//! - [`model`] does no I/O: the snapshot a configuration becomes, the
//!   routing decision, route tables, balancers, backend and server state,
//!   counters, limits and the wire codecs (ClientHello, PROXY header).
//! - [`runtime`] does the I/O: the router and its listeners, each
//!   connection's stages (`runtime::connection`: preread → admit → decide →
//!   passthrough | terminate → tunnel | http), the relay, reload, health
//!   checks, the stats port and the access log.
//!
//! `config` (files → a snapshot) and `tls` (certificates and rustls
//! settings) sit between them; `generate`, `demo` and `explain` serve the
//! command line. This file exports only what `main`, the tests, the
//! benchmarks and the fuzz targets use.
#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod explain;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod logging;
pub(crate) mod model;
pub(crate) mod runtime;
pub(crate) mod tls;

pub use model::snapshot::{Credentials, Snapshot, StatsConfig};
pub use runtime::router::Router;
pub use runtime::stats::serve as serve_stats;

/// Reloads: the watcher `run` starts, and one reload on demand.
pub mod reload {
    pub use crate::runtime::reload::{reload, spawn, Reloader, Status};
}

/// The open-files limit: what a configuration needs, and raising it.
pub mod descriptors {
    pub use crate::runtime::descriptors::{current, hard, needed, raise, shortfall};
}

/// Model pieces the benchmarks and tests measure on their own.
#[doc(hidden)]
pub mod parts {
    pub use crate::model::backend::{Backend, Queue};
    pub use crate::model::balance::{Algorithm, Balancer, Member, View};
    pub use crate::model::route::{Entry, Table};
    pub use crate::model::top::TopNames;
    pub use crate::model::wire::client_hello::{peek, DEFAULT_LIMIT};
    pub use crate::model::wire::proxy_header::{parse as parse_proxy_header, Progress};
}
