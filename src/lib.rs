//! Switchyard: an SNI-routing TCP/TLS ingress router driven by HAProxy-style
//! map files.
//!
//! A connection goes `listener` (accept) → `client_hello` (read the SNI
//! without consuming it) → `route` (map files → backend) → `balance`
//! (backend → server) → `relay` (copy bytes both ways), with `connection`
//! walking it through those stages and `access_log` writing its line.
//! `config` builds the immutable snapshot all of them read; `server` holds
//! the current snapshot and the listeners.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod backend;
pub mod balance;
pub mod budget;
pub mod cidr;
pub mod client_hello;
pub mod config;
pub mod connection;
pub mod demo;
pub mod descriptors;
pub mod explain;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod health;
pub mod listener;
pub mod logging;
pub mod proxy_header;
pub mod relay;
pub mod reload;
pub mod route;
pub mod server;
pub mod shared;
pub mod sources;
pub mod stats;
pub mod tls;
