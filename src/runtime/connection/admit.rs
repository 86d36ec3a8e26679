//! Stage 2, admission, before anything is dialed: the per-source limits of the
//! listener (at accept) and of the backend (once it is decided), the
//! backend's allow list, and the JA4 fingerprints the listener or the
//! backend denies. A refusal is logged; the places admitted are held for
//! the connection's life.

use std::net::IpAddr;

use super::decide::Routed;
use crate::model::counters::global;
use crate::model::limits::sources::Admitted;
use crate::model::snapshot::ListenerSpec;
use crate::model::wire::client_hello::Ja4;
use crate::runtime::access_log::AccessLog;
use crate::runtime::throttle::Throttle;

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

/// The listener's `deny_ja4`: a client whose ClientHello has one of these
/// fingerprints is closed right after it, before anything is decided or
/// dialed.
pub(super) fn fingerprint(spec: &ListenerSpec, log: &mut AccessLog) -> Result<(), Refused> {
    let (Some(deny), Some(ja4)) = (&spec.deny_ja4, log.ja4()) else {
        return Ok(());
    };
    if deny.contains(&ja4) {
        refuse_fingerprint(ja4, "listener", &spec.name, log);
        return Err(Refused);
    }
    Ok(())
}

/// Ends a connection refused for its fingerprint (counted and logged).
pub(super) fn refuse_fingerprint(ja4: Ja4, by: &str, name: &str, log: &mut AccessLog) {
    note_fingerprint(ja4, by, name);
    log.end("switchyard", &format!("JA4 {ja4} denied by {by} `{name}`"));
}

/// Counts a client refused for its fingerprint and logs it: one warning a
/// second at most, with how many were refused since the last.
pub(super) fn note_fingerprint(ja4: Ja4, by: &str, name: &str) {
    static REFUSED: Throttle = Throttle::new();
    global()
        .ja4_denied
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(times) = REFUSED.tick() {
        tracing::warn!(%ja4, by, name, times, "client refused for its JA4 fingerprint (deny_ja4)");
    }
}

/// The backend's allow list and `deny_ja4` (HTTP mode checks each
/// request's backend instead) and its own per-source limits (its routes'
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
    if let (None, Some(ja4)) = (&routed.requests, log.ja4()) {
        if backend.denies(&ja4) {
            refuse_fingerprint(ja4, "backend", &backend.name, log);
            return Err(Refused);
        }
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
