//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, inputs found by the
//! coverage-guided runs, crashes fixed included) through the same checks
//! the fuzz targets run (`switchyard::fuzzing`), on stable, in every CI run.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{} fails the {target} check",
            path.display()
        );
        inputs += 1;
    }
    assert!(inputs > 0, "{} is empty", dir.display());
}

#[test]
fn client_hello_corpus() {
    replay("client_hello", switchyard::fuzzing::client_hello);
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", switchyard::fuzzing::proxy_header);
}

#[test]
fn map_table_corpus() {
    replay("map_table", switchyard::fuzzing::map_table);
}

#[test]
fn crt_line_corpus() {
    replay("crt_line", switchyard::fuzzing::crt_line);
}

#[test]
fn http_request_corpus() {
    replay("http_request", switchyard::fuzzing::http_request);
}

#[test]
fn config_file_corpus() {
    replay("config_file", switchyard::fuzzing::config_file);
}
