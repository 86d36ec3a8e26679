//! The runtime layer: everything that does I/O, over the model below it.
//! The router (`router`) owns the listeners and publishes snapshots
//! (`shared`); a listener (`listener`) accepts and hands each connection
//! to its stages (`connection`), which copy bytes through `relay`; reload,
//! health checks, the stats port and the access log run beside them.

pub(crate) mod access_log;
pub(crate) mod connection;
pub(crate) mod descriptors;
pub(crate) mod health_check;
pub(crate) mod listener;
pub(crate) mod relay;
pub(crate) mod reload;
pub(crate) mod router;
pub(crate) mod shared;
pub(crate) mod stats;
pub(crate) mod throttle;
