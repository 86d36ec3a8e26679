//! What bounds the router's work: connection slots under a listener's
//! `max_connections` (`slots`), per-source limits (`sources`), the
//! process's buffer budget (`budget`) and address blocks (`cidr`).

pub(crate) mod budget;
pub(crate) mod cidr;
pub(crate) mod slots;
pub(crate) mod sources;
