//! The close-removed-routes watch (`[reload] close_removed_after`): a
//! passthrough or TCP-mode connection whose route a reload took away is
//! closed after a grace period, unless a reload brings it back. Routes are
//! decided again with the same code as at accept, from the listener and
//! the ClientHello kept here; no snapshot is held.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::decide::OwnedHello;
use crate::runtime::shared::Shared;

/// What a connection's route was decided from, to decide it again.
pub(super) struct Followed {
    pub(super) listener: Arc<str>,
    pub(super) hello: OwnedHello,
    /// The ALPN protocols it offered (the `alpn_be` map).
    pub(super) alpn: Vec<String>,
    /// The backend it was decided to.
    pub(super) backend: String,
    /// The generation of the snapshot it was decided from.
    pub(super) generation: u64,
}

/// Resolves once a reload has taken this connection's route away (the same
/// listener and ClientHello no longer lead to its backend) and `grace` has
/// passed without it coming back. A reload applied between the decision
/// and the start of this watch is seen: generations are compared, no
/// snapshot is held. Only built when `close_removed_after` is set.
pub(super) async fn route_removed(shared: Arc<Shared>, followed: Followed, grace: Duration) {
    let mut applied = shared.subscribe();
    let mut seen = followed.generation;
    loop {
        let now = *applied.borrow_and_update();
        if now != seen {
            seen = now;
            if !still_routed(&shared, &followed) {
                // Removed: close after `grace`, unless a reload within it
                // brings the route back (then a later removal starts anew).
                let deadline = Instant::now() + grace;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {
                            if !still_routed(&shared, &followed) {
                                return;
                            }
                            break;
                        }
                        changed = applied.changed() => {
                            if changed.is_err() {
                                return std::future::pending().await;
                            }
                            seen = *applied.borrow_and_update();
                            if still_routed(&shared, &followed) {
                                break;
                            }
                        }
                    }
                }
                continue;
            }
        }
        if applied.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn still_routed(shared: &Shared, followed: &Followed) -> bool {
    let now = shared.snapshot();
    let Some(listener) = now
        .listeners
        .iter()
        .position(|l| l.name == followed.listener)
    else {
        return false;
    };
    now.decide(listener, followed.hello.as_hello(), &followed.alpn)
        .is_ok_and(|d| d.backend.name == followed.backend)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{route_removed, Followed};
    use crate::model::decide::OwnedHello;
    use crate::runtime::shared::Shared;

    /// A snapshot whose passthrough map routes `svc.test` to `backend`.
    fn snapshot(
        dir: &std::path::Path,
        backend: &str,
        generation: u64,
    ) -> crate::model::snapshot::Snapshot {
        std::fs::write(dir.join("tcp.map"), format!("^svc\\.test$ {backend}\n")).expect("map");
        let config = dir.join("s.toml");
        let text = "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
                    [maps]\ntcp_be = \"tcp.map\"\n[stats]\nenabled = false\n\
                    [[backend]]\nname = \"a\"\nservers = []\n\
                    [[backend]]\nname = \"b\"\nservers = []\n";
        std::fs::write(&config, text).expect("config");
        let mut snapshot = crate::config::load(&config).expect("load").snapshot;
        snapshot.generation = generation;
        snapshot
    }

    fn followed(generation: u64) -> Followed {
        Followed {
            listener: "l".into(),
            hello: OwnedHello::Sni("svc.test".into()),
            alpn: Vec::new(),
            backend: "a".into(),
            generation,
        }
    }

    /// A reload applied after the decision but before the watch starts is
    /// still seen: the watch compares generations.
    #[tokio::test]
    async fn a_reload_before_the_watch_starts_is_not_missed() {
        let dir = tempfile::tempdir().expect("dir");
        let shared = Arc::new(Shared::new(Arc::new(snapshot(dir.path(), "a", 1))));
        shared.publish(Arc::new(snapshot(dir.path(), "b", 2)));
        let watch = route_removed(Arc::clone(&shared), followed(1), Duration::from_millis(10));
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("the moved route is noticed");
    }

    /// A route removed, restored and removed again within the grace gets a
    /// full grace from the second removal.
    #[tokio::test]
    async fn the_grace_starts_again_when_a_route_comes_back() {
        let dir = tempfile::tempdir().expect("dir");
        let shared = Arc::new(Shared::new(Arc::new(snapshot(dir.path(), "a", 1))));
        let grace = Duration::from_millis(400);
        let started = tokio::time::Instant::now();
        let watch = tokio::spawn(route_removed(Arc::clone(&shared), followed(1), grace));
        shared.publish(Arc::new(snapshot(dir.path(), "b", 2)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        shared.publish(Arc::new(snapshot(dir.path(), "a", 3)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let removed_again = tokio::time::Instant::now();
        shared.publish(Arc::new(snapshot(dir.path(), "b", 4)));
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("closed after the second removal's grace")
            .expect("join");
        assert!(
            removed_again.elapsed() >= grace,
            "a whole grace after the second removal"
        );
        assert!(started.elapsed() >= Duration::from_millis(600));
    }

    #[tokio::test]
    async fn a_reload_that_keeps_the_route_keeps_the_connection() {
        let dir = tempfile::tempdir().expect("dir");
        let shared = Arc::new(Shared::new(Arc::new(snapshot(dir.path(), "a", 1))));
        shared.publish(Arc::new(snapshot(dir.path(), "a", 2)));
        let watch = route_removed(Arc::clone(&shared), followed(1), Duration::from_millis(10));
        let ended = tokio::time::timeout(Duration::from_millis(300), watch).await;
        assert!(ended.is_err(), "the route is the same: keep the connection");
    }
}
