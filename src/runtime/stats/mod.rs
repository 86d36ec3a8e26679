//! The stats port: `/healthz` (alive), `/healthz/ready` (serving, not
//! draining), `/metrics` (Prometheus text through the `metrics` crate, with
//! the `haproxy_*` families OpenShift dashboards read plus `switchyard_*`),
//! `/stats` (the page an operator keeps open: `page.rs`), its `;csv` and
//! `;json` views, and `/stats.json`. Counters are kept on the data path as
//! atomics (`model::counters`) and only read here; `sampler.rs` turns them
//! into per-second history once a second.

mod http;
mod page;
mod render;
mod sampler;

pub use http::serve;
