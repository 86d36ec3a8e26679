//! The shape of the house, checked on the source itself: the model layer
//! (`src/model/`) does no I/O and never imports the layers above it, the
//! loader and TLS material never import the runtime, and no room grows
//! past what a reader takes in at once. A change that breaks the layering
//! fails here with the file and line of the import.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).expect("read src");
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The lines of the files under `dir` that name one of `forbidden`
/// (comments aside), as `file:line: text`; a grouped import
/// (`use crate::{runtime::x, …}`) names `crate::runtime` too.
fn naming(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in sources(&src().join(dir)) {
        let text = std::fs::read_to_string(&file).expect("read");
        let code: Vec<&str> = text
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .collect();
        for (i, line) in code.iter().enumerate() {
            for name in forbidden {
                if line.contains(name) || grouped(&code[i..], name) {
                    found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
    }
    found
}

/// Whether the `crate::{…}` group opening on the first of `lines` names
/// `path` (`crate::runtime` is named by `{runtime::…` or `, runtime::…`).
fn grouped(lines: &[&str], path: &str) -> bool {
    let Some(start) = lines[0].find("crate::{") else {
        return false;
    };
    let Some((root, rest)) = path.split_once("::") else {
        return false;
    };
    let (mut group, mut depth) = (String::new(), 0usize);
    let first = &lines[0][start + "crate::".len()..];
    for line in std::iter::once(first).chain(lines[1..].iter().copied()) {
        for c in line.chars() {
            depth = match c {
                '{' => depth + 1,
                '}' => depth.saturating_sub(1),
                _ => depth,
            };
            group.push(if c.is_whitespace() { ' ' } else { c });
            if depth == 0 {
                let group = group.replace(' ', "");
                let module = format!("{rest}::");
                return root == "crate"
                    && ["{", ","]
                        .iter()
                        .any(|sep| group.contains(&format!("{sep}{module}")));
            }
        }
    }
    false
}

#[test]
fn the_model_imports_nothing_above_it_and_does_no_io() {
    let above = [
        "crate::runtime",
        "crate::config",
        "crate::generate",
        "crate::demo",
        "crate::explain",
        "crate::fuzzing",
        "crate::logging",
    ];
    let io = [
        "tokio::net",
        "tokio::io",
        "tokio::fs",
        "std::fs",
        "std::net::TcpStream",
        "std::net::TcpListener",
        "std::net::UdpSocket",
        "hyper::client",
        "hyper::server",
    ];
    let found = naming("model", &[&above[..], &io[..]].concat());
    assert!(
        found.is_empty(),
        "the model reaches up or out:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_loader_and_tls_never_import_the_runtime() {
    let found = [
        naming("config", &["crate::runtime"]),
        naming("tls", &["crate::runtime", "crate::config"]),
    ]
    .concat();
    assert!(
        found.is_empty(),
        "a lower layer imports a higher one:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_runtime_never_imports_the_command_line() {
    let found = naming(
        "runtime",
        &["crate::generate", "crate::demo", "crate::explain"],
    );
    assert!(
        found.is_empty(),
        "the runtime imports a command:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_room_is_over_700_lines() {
    let long: Vec<String> = sources(&src())
        .into_iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(&file)
                .expect("read")
                .lines()
                .count();
            (lines > 700).then(|| format!("{}: {lines} lines", file.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "rooms over 700 lines:\n{}",
        long.join("\n")
    );
}

/// The checks above would pass on an empty or misplaced tree: make sure
/// they read the layers they speak of.
#[test]
fn the_layers_are_where_the_checks_look() {
    for dir in ["model", "runtime", "config", "tls"] {
        assert!(
            sources(&src().join(dir)).len() > 3,
            "src/{dir} has moved: update tests/layers.rs"
        );
    }
    let probe = naming("runtime", &["crate::model"]);
    assert!(
        !probe.is_empty(),
        "the runtime names the model: the scan must see it"
    );
}
