//! The loader's tests: defaults per mode, and reloads that answer as a
//! fresh load (reusing what did not change).

mod defaults {
    use crate::model::balance::Algorithm;

    fn algorithms(defaults: &str) -> Vec<(String, Algorithm)> {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("s.toml");
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n{defaults}\n\
             [[backend]]\nname = \"tcp\"\nservers = [{{ name = \"a\", address = \"127.0.0.1:1\" }}]\n\
             [[backend]]\nname = \"web\"\ntermination = \"none\"\nservers = [{{ name = \"a\", address = \"127.0.0.1:1\" }}]\n\
             [[backend]]\nname = \"own\"\ntermination = \"none\"\nbalance = \"leastconn\"\n\
             servers = [{{ name = \"a\", address = \"127.0.0.1:1\" }}]\n"
        );
        std::fs::write(&config, text).expect("write");
        let loaded = crate::config::load(&config).expect("load");
        let backends = &loaded.snapshot.backends;
        backends
            .iter()
            .map(|b| (b.name.clone(), b.algorithm))
            .collect()
    }

    /// `[limits]` is read before the backends that use it.
    #[test]
    fn backends_group_ipv6_sources_by_the_configured_prefix() {
        let dir = tempfile::tempdir().expect("dir");
        let main = dir.path().join("s.toml");
        std::fs::write(
            &main,
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n\
             [limits]\nipv6_source_prefix = 48\n\
             [[backend]]\nname = \"b\"\nmax_connections_per_source = 3\nservers = []\n",
        )
        .expect("write");
        let snapshot = super::super::load(&main).expect("load").snapshot;
        let limits = &snapshot.backends[0]
            .source_limits()
            .expect("limited")
            .limits;
        assert_eq!(limits.ipv6_prefix, 48);
    }

    /// HTTP backends take `http_balance` (random by default), others
    /// `balance`; a backend's own `balance` wins over both.
    #[test]
    fn http_backends_have_their_own_default_balance() {
        let by_default = algorithms("");
        assert_eq!(
            by_default,
            [
                ("tcp".to_string(), Algorithm::Source),
                ("web".to_string(), Algorithm::Random),
                ("own".to_string(), Algorithm::LeastConn),
            ]
        );
        let set = algorithms("[defaults]\nbalance = \"roundrobin\"\nhttp_balance = \"source\"\n");
        assert_eq!(
            set,
            [
                ("tcp".to_string(), Algorithm::RoundRobin),
                ("web".to_string(), Algorithm::Source),
                ("own".to_string(), Algorithm::LeastConn),
            ]
        );
    }
}

/// A reload reuses the maps whose files did not change: whatever the
/// sequence of edits, it must answer exactly as a load from scratch.
mod reuse {
    use proptest::prelude::*;
    use std::path::Path;

    use crate::model::decide::Hello;

    const HOSTS: [&str; 5] = ["a.test", "b.test", "c.test", "x.w.test", "d.test"];

    /// One configuration: backends (name, edge or passthrough) and three
    /// maps' lines (host index, backend index).
    #[derive(Debug, Clone)]
    struct Config {
        backends: Vec<(String, bool)>,
        sni: Vec<usize>,
        tcp: Vec<(usize, usize)>,
        edge: Vec<(usize, usize)>,
        in_file: bool,
    }

    fn line(host: &str) -> String {
        match host.strip_prefix("x.") {
            Some(domain) => format!(
                r"^[^\.]*\.{}\.?(:[0-9]+)?(/.*)?$",
                domain.replace('.', r"\.")
            ),
            None => format!(r"^{}\.?(:[0-9]+)?(/.*)?$", host.replace('.', r"\.")),
        }
    }

    fn write(dir: &Path, c: &Config) {
        if !dir.join("cert.pem").exists() {
            let cert =
                rcgen::generate_simple_self_signed(vec!["*.test".to_string()]).expect("cert");
            let pem = format!("{}{}", cert.cert.pem(), cert.key_pair.serialize_pem());
            std::fs::write(dir.join("cert.pem"), pem).expect("pem");
        }
        let mut main = String::from(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n\
             [tls]\ndefault_certificate = \"cert.pem\"\n\
             [maps]\nsni_passthrough = \"sni.map\"\ntcp_be = \"tcp.map\"\nedge_reencrypt_be = \"edge.map\"\n",
        );
        let mut backends = String::new();
        for (name, edge) in &c.backends {
            let termination = if *edge { "edge" } else { "passthrough" };
            backends.push_str(&format!(
                "[[backend]]\nname = \"{name}\"\ntermination = \"{termination}\"\n\
                 servers = [{{ name = \"s\", address = \"127.0.0.1:9\" }}]\n"
            ));
        }
        // In the main file, or in a backend file the main file names.
        if c.in_file {
            main.insert_str(0, "backend_files = [\"backends.toml\"]\n");
            std::fs::write(dir.join("backends.toml"), backends).expect("backends");
        } else {
            main.push_str(&backends);
        }
        // Lines name backends by name (passthrough p and q, edge r and s;
        // 7: one that is not there), whatever their order in the file.
        let name = |b: usize, edge: bool| match (b, edge) {
            (7, _) => "missing".to_string(),
            (b, false) => ["p", "q"][b % 2].to_string(),
            (b, true) => ["r", "s"][b % 2].to_string(),
        };
        let sni: String = c
            .sni
            .iter()
            .map(|&h| format!("^{}$ 1\n", HOSTS[h].replace('.', r"\.")))
            .collect();
        let tcp: String = c
            .tcp
            .iter()
            .map(|&(h, b)| format!("{} {}\n", line(HOSTS[h]), name(b, false)))
            .collect();
        let edge: String = c
            .edge
            .iter()
            .map(|&(h, b)| format!("{} {}\n", line(HOSTS[h]), name(b, true)))
            .collect();
        std::fs::write(dir.join("sni.map"), sni).expect("sni");
        std::fs::write(dir.join("tcp.map"), tcp).expect("tcp");
        std::fs::write(dir.join("edge.map"), edge).expect("edge");
        std::fs::write(dir.join("s.toml"), main).expect("main");
    }

    fn config() -> impl Strategy<Value = Config> {
        // Distinct names (a name twice is an error of its own) in any
        // order, so ids move between edits; one may be left out, and one
        // may change its kind.
        let backends = (
            Just(vec!["p", "q", "r", "s"]).prop_shuffle(),
            0..5usize,
            0..6usize,
        )
            .prop_map(|(names, dropped, flipped)| {
                names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != dropped)
                    .map(|(i, n)| (n.to_string(), (*n == "r" || *n == "s") != (i == flipped)))
                    .collect::<Vec<_>>()
            });
        (
            backends,
            prop::collection::vec(0..5usize, 0..4),
            prop::collection::vec((0..5usize, 0..8usize), 0..5),
            prop::collection::vec((0..5usize, 0..8usize), 0..5),
            any::<bool>(),
        )
            .prop_map(|(backends, sni, tcp, edge, in_file)| Config {
                in_file,
                backends,
                sni,
                tcp,
                edge,
            })
    }

    /// What a loaded configuration answers for every host, or its errors.
    fn answers(
        loaded: &Result<super::super::Loaded, super::super::Problems>,
    ) -> Result<Vec<String>, usize> {
        match loaded {
            Err(problems) => Err(problems.errors.len()),
            Ok(loaded) => Ok(HOSTS
                .iter()
                .map(|h| match loaded.snapshot.decide(0, Hello::Sni(h), &[]) {
                    Ok(d) => format!("{h} {} {:?}", d.backend.name, d.via),
                    Err(miss) => format!("{h} {}", miss.as_str()),
                })
                .chain(loaded.warnings.iter().map(|w| w.to_string()))
                .collect()),
        }
    }

    /// Reloads that loaded, so the property is not only ever checked on
    /// configurations both loads refuse.
    static LOADED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn most_generated_configurations_load() {
        let before = LOADED.load(std::sync::atomic::Ordering::Relaxed);
        reloads_answer_as_fresh_loads();
        let loaded = LOADED.load(std::sync::atomic::Ordering::Relaxed) - before;
        // About a quarter of the generated reloads load (47 in one run of 64 cases;
        // the others are refused by both loads, which the
        // property also checks); the bound rules out a generator whose
        // every configuration is refused. Run alone, or the property
        // test running beside it adds its own count.
        assert!(loaded >= 16, "only {loaded} reloads loaded");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn reloads_answer_as_fresh_loads(
            edits in prop::collection::vec((config(), any::<bool>()), 1..6)
        ) {
            let dir = tempfile::tempdir().expect("dir");
            let main = dir.path().join("s.toml");
            let mut previous: Option<(crate::model::snapshot::Snapshot, super::super::Memo)> = None;
            let mut last: Option<Config> = None;
            for (c, keep_maps) in &edits {
                // Often only the backends change: the maps' text stays.
                let mut c = c.clone();
                if let (true, Some(last)) = (keep_maps, &last) {
                    c.sni = last.sni.clone();
                    c.tcp = last.tcp.clone();
                    c.edge = last.edge.clone();
                }
                last = Some(c.clone());
                let c = &c;
                write(dir.path(), c);
                let fresh = super::super::load(&main);
                let reloaded = match &previous {
                    Some((snapshot, memo)) => super::super::reload(&main, snapshot, memo),
                    None => super::super::load(&main),
                };
                prop_assert_eq!(answers(&reloaded), answers(&fresh), "{:?}", c);
                if let Ok(loaded) = reloaded {
                    LOADED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    previous = Some((loaded.snapshot, loaded.memo));
                }
            }
        }
    }

    /// An unchanged map is the same compiled map after a reload; an edited
    /// one is rebuilt.
    #[test]
    fn unchanged_maps_are_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let main = dir.path().join("s.toml");
        let c = Config {
            backends: vec![("p".into(), false), ("r".into(), true)],
            sni: vec![0],
            tcp: vec![(0, 0)],
            edge: vec![(1, 0)],
            in_file: true,
        };
        write(dir.path(), &c);
        let loaded = super::super::load(&main).expect("load");
        let first = loaded.snapshot;
        std::fs::write(
            dir.path().join("edge.map"),
            format!("{} r\n", line("c.test")),
        )
        .expect("edit");
        let second = super::super::reload(&main, &first, &loaded.memo)
            .expect("reload")
            .snapshot;
        let same =
            |a: &Option<std::sync::Arc<crate::model::route::Map<usize>>>,
             b: &Option<std::sync::Arc<crate::model::route::Map<usize>>>| {
                std::sync::Arc::ptr_eq(a.as_ref().expect("a"), b.as_ref().expect("b"))
            };
        assert!(
            same(&first.routes.tcp_be, &second.routes.tcp_be),
            "tcp_be reused"
        );
        assert!(
            !same(&first.routes.edge, &second.routes.edge),
            "edge rebuilt"
        );
        assert_eq!(
            second
                .decide(0, Hello::Sni("c.test"), &[])
                .map(|d| d.backend.name.clone())
                .ok(),
            Some("r".into())
        );
    }

    /// Only a backend with `max_connections_per_server` has a queue, and
    /// one that loses its limit and gets it back waits where its servers'
    /// freed places wake (the queue they were given first).
    #[test]
    fn a_queue_follows_the_limit_and_stays_the_servers_one() {
        let dir = tempfile::tempdir().expect("dir");
        let main = dir.path().join("s.toml");
        let write = |limit: &str| {
            let text = format!(
                "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[stats]\nenabled = false\n\
                 [[backend]]\nname = \"b\"\n{limit}\
                 servers = [{{ name = \"s\", address = \"127.0.0.1:9\" }}]\n"
            );
            std::fs::write(&main, text).expect("write");
        };
        write("max_connections_per_server = 2\n");
        let limited = super::super::load(&main).expect("load").snapshot;
        let queue = std::sync::Arc::clone(limited.backends[0].queue.as_ref().expect("a queue"));
        write("");
        let unlimited = super::super::load_after(&main, Some(&limited))
            .expect("reload")
            .snapshot;
        assert!(unlimited.backends[0].queue.is_none(), "no limit, no queue");
        write("max_connections_per_server = 3\n");
        let again = super::super::load_after(&main, Some(&unlimited))
            .expect("reload")
            .snapshot;
        let back = again.backends[0].queue.as_ref().expect("a queue again");
        assert!(std::sync::Arc::ptr_eq(back, &queue), "the servers' queue");
        let woken = again.backends[0].servers[0].state.queue.get().expect("set");
        assert!(std::sync::Arc::ptr_eq(woken, &queue));
    }
}
