//! The model layer: what a configuration is and every decision made from
//! it, with no I/O. The snapshot and its types, the routing decision (by
//! SNI, by request), route tables, balancers, backends and servers with
//! their live state, counters and labels, limits, and the wire codecs
//! (ClientHello, PROXY header) are all plain data and pure functions over
//! bytes: tested without sockets, and never importing the runtime above.
//! (`tokio::sync` and `tokio::time` are the runtime pieces allowed: slots
//! and queues wait, with deadlines.) Above it only `tls` is imported: the
//! rustls settings a listener terminates with and a re-encrypt backend
//! dials with are part of the snapshot.

pub(crate) mod backend;
pub(crate) mod balance;
pub(crate) mod counters;
pub(crate) mod decide;
pub(crate) mod duration;
pub(crate) mod health;
pub(crate) mod history;
pub(crate) mod labels;
pub(crate) mod limits;
pub(crate) mod route;
pub(crate) mod snapshot;
pub(crate) mod top;
pub(crate) mod wire;
