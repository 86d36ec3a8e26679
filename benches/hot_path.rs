//! Criterion benches for the pure parts of the data path: the ClientHello
//! reader, the route lookup at 10 to 1,000,000 routes, the map compile, the
//! balancers, and the route-miss counter under a flood. `cargo bench --bench hot_path`; figures go in the notes.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use switchyard::parts::{peek, DEFAULT_LIMIT};
use switchyard::parts::{Algorithm, Balancer, Member, View};
use switchyard::parts::{Entry, Table};

fn rustls_hello(sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

fn reframe(wire: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in wire[5..].chunks(chunk) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

fn parser(c: &mut Criterion) {
    let hello = rustls_hello("www.apps.example.com");
    let openssl = include_bytes!("../tests/fixtures/openssl_hello.bin");
    let records = reframe(&hello, 64);
    let mut group = c.benchmark_group("client_hello");
    group.bench_function("rustls_one_record", |b| {
        b.iter(|| peek(black_box(&hello), DEFAULT_LIMIT))
    });
    group.bench_function("openssl_one_record", |b| {
        b.iter(|| peek(black_box(openssl), DEFAULT_LIMIT))
    });
    group.bench_function("rustls_64_byte_records", |b| {
        b.iter(|| peek(black_box(&records), DEFAULT_LIMIT))
    });
    group.finish();
}

/// An OpenShift-shaped map of `n` routes: exact hosts, every tenth a
/// one-label wildcard, and a few path routes.
fn openshift_entries(n: usize) -> Vec<Entry<usize>> {
    (0..n)
        .map(|i| {
            let pattern = match i % 10 {
                9 => format!(r"^[^\.]*\.w{i}\.bench\.test\.?(:[0-9]+)?(/.*)?$"),
                8 => format!(r"^r{i}\.bench\.test\.?(:[0-9]+)?/api(/.*)?$"),
                _ => format!(r"^r{i}\.bench\.test\.?(:[0-9]+)?(/.*)?$"),
            };
            Entry {
                line: i + 1,
                pattern,
                value: i,
            }
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [10usize, 10_000, 100_000, 1_000_000] {
        let (table, errors) = Table::build(openshift_entries(n));
        assert!(errors.is_empty());
        let hit = format!("r{}.bench.test", n / 2 + 1);
        let wildcard = format!("anything.w{}.bench.test", n - 1);
        group.bench_with_input(BenchmarkId::new("exact_hit", n), &hit, |b, k| {
            b.iter(|| table.lookup(black_box(k)))
        });
        group.bench_with_input(BenchmarkId::new("wildcard_hit", n), &wildcard, |b, k| {
            b.iter(|| table.lookup(black_box(k)))
        });
        group.bench_function(BenchmarkId::new("miss", n), |b| {
            b.iter(|| table.lookup(black_box("nothing.example.org")))
        });
    }
    // Ten general regexes ahead of 100k OpenShift lines: the scan covers them only.
    let mut entries: Vec<Entry<usize>> = (0..10)
        .map(|i| Entry {
            line: i + 1,
            pattern: format!(r"^(x|y){i}\.legacy\..*$"),
            value: i,
        })
        .collect();
    entries.extend(openshift_entries(100_000));
    let (table, _) = Table::build(entries);
    group.bench_function("exact_hit_behind_10_regexes/100000", |b| {
        b.iter(|| table.lookup(black_box("r50001.bench.test")))
    });
    group.finish();

    let mut group = c.benchmark_group("route_compile");
    group.sample_size(10);
    group.bench_function("100000_routes", |b| {
        b.iter_batched(
            || openshift_entries(100_000),
            Table::build,
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

struct Idle;
impl View for Idle {
    fn eligible(&self, _: usize) -> bool {
        true
    }
    fn active(&self, i: usize) -> usize {
        i % 3
    }
}

fn balancers(c: &mut Criterion) {
    let names: Vec<String> = (0..10)
        .map(|i| format!("pod-{i} 10.128.0.{i}:8443"))
        .collect();
    let members: Vec<Member<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Member {
            identity: n,
            weight: 100 + i as u16 * 10,
        })
        .collect();
    let mut group = c.benchmark_group("balance_pick_10_servers");
    for algorithm in [
        Algorithm::Source,
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::Random,
    ] {
        let balancer = Balancer::new(algorithm, &members, Default::default());
        let mut ip = 0u32;
        group.bench_function(algorithm.as_str(), |b| {
            b.iter(|| {
                ip = ip.wrapping_add(7919);
                balancer.pick(IpAddr::V4(Ipv4Addr::from(ip)), &Idle)
            })
        });
    }
    group.finish();
}

/// The route-miss counter under a flood of distinct unknown names from two
/// workers at once: the lock-free sketch against the single-mutex
/// space-saving list it replaced (kept here as the baseline).
fn route_miss(c: &mut Criterion) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use switchyard::parts::TopNames;

    #[derive(Default)]
    struct MutexTop(Mutex<HashMap<String, u64>>);
    impl MutexTop {
        fn add(&self, sni: &str) {
            let mut top = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = top.get_mut(sni) {
                *count += 1;
                return;
            }
            if top.len() < 64 {
                top.insert(sni.to_string(), 1);
                return;
            }
            let least = top
                .iter()
                .min_by_key(|(_, c)| **c)
                .map(|(k, c)| (k.clone(), *c));
            if let Some((name, count)) = least {
                top.remove(&name);
                top.insert(sni.to_string(), count + 1);
            }
        }
    }

    let names: Vec<Vec<String>> = (0..2)
        .map(|t| {
            (0..10_000)
                .map(|i| format!("{t}-{i:08x}.flood.invalid"))
                .collect()
        })
        .collect();
    let mut group = c.benchmark_group("route_miss_2_threads_20000_names");
    group.sample_size(20);
    group.bench_function("mutex_space_saving", |b| {
        let top = MutexTop::default();
        b.iter(|| {
            std::thread::scope(|s| {
                for list in &names {
                    let top = &top;
                    s.spawn(move || list.iter().for_each(|n| top.add(n)));
                }
            })
        })
    });
    group.bench_function("sketch", |b| {
        let top = TopNames::default();
        b.iter(|| {
            std::thread::scope(|s| {
                for list in &names {
                    let top = &top;
                    s.spawn(move || list.iter().for_each(|n| top.add(n)));
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, parser, lookup, balancers, route_miss);
criterion_main!(benches);
