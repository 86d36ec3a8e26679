//! `switchyard generate`: kubectl-shaped objects in, the configuration
//! directory out. The fixture's output is compared with golden files
//! (`SWITCHYARD_BLESS=1` rewrites them after a deliberate change); the
//! end-to-end test generates from objects with real certificates, runs
//! the router on the result, routes connections and requests as the
//! objects say, then regenerates from a changed object and is served the
//! change after the swap.

mod common;

use std::path::{Path, PathBuf};

use switchyard::generate::{self, Options};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate")
}

fn options(out: &Path) -> Options {
    Options {
        out: out.to_path_buf(),
        default_certificate: None,
        maps_only: false,
        ingress_class: Some("switchyard".into()),
        service_ca: Some(PathBuf::from(
            "/var/run/secrets/kubernetes.io/serviceaccount/service-ca.crt",
        )),
        https_bind: "0.0.0.0:443".into(),
        http_bind: "0.0.0.0:80".into(),
        https_port: 443,
        stats_bind: "0.0.0.0:1936".into(),
    }
}

#[test]
fn the_fixture_generates_the_golden_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let mut report = generate::Report::default();
    let objects =
        generate::read_inputs(&[fixture_dir().join("objects.yaml")], &mut report).expect("read");
    let (files, generated) = generate::generate(&objects, &options(dir.path()));
    report.problems.extend(generated.problems);
    let mut problems: String = report.problems.iter().map(|p| format!("{p}\n")).collect();
    problems.insert_str(0, "# What `generate` reports for objects.yaml.\n");
    let golden = fixture_dir().join("golden");
    let bless = std::env::var_os("SWITCHYARD_BLESS").is_some();
    if bless {
        let _ = std::fs::remove_dir_all(&golden);
        std::fs::create_dir_all(&golden).expect("golden dir");
        std::fs::write(golden.join("problems.txt"), &problems).expect("write");
    }
    let mut expected: Vec<String> = std::fs::read_dir(&golden)
        .expect("golden files")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "problems.txt")
        .collect();
    for (name, (bytes, private)) in &files {
        if bless {
            std::fs::write(golden.join(name), bytes).expect("write");
            continue;
        }
        let want = std::fs::read(golden.join(name))
            .unwrap_or_else(|e| panic!("{name} is generated but has no golden file: {e}"));
        assert_eq!(
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&want),
            "{name} differs from its golden file"
        );
        assert_eq!(
            *private,
            name.ends_with(".pem") && !name.contains("-ca") && !name.contains(".ca."),
            "{name}: private"
        );
        expected.retain(|n| n != name);
    }
    if !bless {
        assert!(
            expected.is_empty(),
            "golden files not generated: {expected:?}"
        );
        let want = std::fs::read_to_string(golden.join("problems.txt")).expect("problems");
        assert_eq!(problems, want, "the problems reported");
    }
    // The same input twice: the same bytes.
    let (again, _) = generate::generate(&objects, &options(dir.path()));
    assert_eq!(again, files, "generate is deterministic");
}
