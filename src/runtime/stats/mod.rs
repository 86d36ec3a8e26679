//! The stats port: `/healthz` (alive), `/healthz/ready` (serving, not
//! draining), `/metrics` (Prometheus text through the `metrics` crate, with
//! the `haproxy_*` families OpenShift dashboards read plus `switchyard_*`),
//! `/stats` (a page a person reads) and `/stats.json`. Counters are kept on
//! the data path as atomics (`model::counters`) and only read here.

mod http;
mod render;

pub use http::serve;
