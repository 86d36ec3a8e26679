//! Configuration: files in, one immutable [`Snapshot`](crate::Snapshot) out. `raw` mirrors
//! the TOML, `load` reads every file the configuration names (TOML, map
//! files, backend files), validates all of it and reports each problem as
//! `file:line: message`; a configuration with any problem is refused whole.
//! Connections take an `Arc<Snapshot>` when accepted and never see it change.

mod load;
mod ops;
mod problem;
mod raw;
mod tls;

pub use load::{load, load_after, reload, size_to_open_files, Loaded, Memo};

pub use problem::{Problem, Problems};
