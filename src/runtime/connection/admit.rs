//! Stage 2, admission, before anything is dialed: the per-source limits of the
//! listener (at accept) and of the backend (once it is decided), and the
//! backend's allow list. A refusal is logged; the places admitted are
//! held for the connection's life.

use std::net::IpAddr;

use super::decide::Routed;
use crate::model::counters::global;
use crate::model::limits::sources::Admitted;
use crate::model::snapshot::ListenerSpec;
use crate::runtime::access_log::AccessLog;

/// The per-source places a connection holds: the listener's, then its
/// backend's (boxed: only limited connections pay for them).
pub(super) type Places = Option<Box<[Option<Admitted>; 2]>>;

/// A connection turned away (logged).
pub(super) struct Refused;

/// The listener's per-source limits (`rate-limit`, `max connections per
/// source`).
pub(super) fn listener(
    spec: &ListenerSpec,
    client: IpAddr,
    log: &mut AccessLog,
) -> Result<Places, Refused> {
    match spec.sources.as_ref().map(|s| s.admit(client)) {
        None => Ok(None),
        Some(Ok(admitted)) => Ok(Some(Box::new([Some(admitted), None]))),
        Some(Err(refusal)) => {
            global()
                .source_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log.reject(&refusal.to_string(), 0, 0);
            Err(Refused)
        }
    }
}

/// The backend's allow list (HTTP mode checks each request's backend
/// instead) and its own per-source limits (its routes'
/// `rate-limit-connections`), whose place joins `places`.
pub(super) fn backend(
    routed: &Routed,
    client: IpAddr,
    places: &mut Places,
    log: &mut AccessLog,
) -> Result<(), Refused> {
    let backend = &routed.backend;
    if routed.requests.is_none() && !backend.admits(client) {
        log.end(
            "switchyard",
            "client address not in the backend's allow list",
        );
        return Err(Refused);
    }
    match backend.admit_source(client) {
        Ok(None) => Ok(()),
        Ok(Some(place)) => {
            places.get_or_insert_with(Box::default)[1] = Some(place);
            Ok(())
        }
        Err(refusal) => {
            log.end("switchyard", &refusal.to_string());
            Err(Refused)
        }
    }
}
