//! The checks the fuzz targets (`fuzz/`, cargo-fuzz on nightly) run on
//! arbitrary bytes, kept here so that `tests/fuzz_corpus.rs` replays the
//! saved corpus through exactly the same code on stable, in every CI run.
//! Each one panics only on a real defect: a parser that panics, claims
//! more bytes than it was given, or a route table that answers differently
//! from an ordered scan of its regexes.

/// The ClientHello reader on arbitrary bytes, whole and in two pieces.
pub fn client_hello(data: &[u8]) {
    use crate::model::wire::client_hello::{peek, Progress};
    let limit = crate::model::wire::client_hello::DEFAULT_LIMIT;
    match peek(data, limit) {
        Ok(Progress::NeedMore { at_least }) => {
            assert!(
                at_least > data.len(),
                "asks for {at_least} having {}",
                data.len()
            );
            assert!(at_least <= limit, "asks past the limit: {at_least}");
        }
        Ok(Progress::Done(hello)) => {
            if let Some(sni) = &hello.sni {
                assert!(!sni.is_empty());
            }
        }
        Err(_) => {}
    }
    // A prefix never has a different answer than "need more" or an error.
    if data.len() > 1 {
        let _ = peek(&data[..data.len() / 2], limit);
    }
}

/// The PROXY header parser: never claims more than it was given, and a
/// header it read is read the same with any bytes after it.
pub fn proxy_header(data: &[u8]) {
    use crate::model::wire::proxy_header::{parse, Progress};
    if let Ok(Progress::Complete(header)) = parse(data) {
        assert!(header.len <= data.len(), "{} > {}", header.len, data.len());
        assert_eq!(parse(&data[..header.len]), Ok(Progress::Complete(header)));
    }
}

/// Map lines (one per line, the first line is the key) through the route
/// table, against an ordered scan of the same regexes.
pub fn map_table(data: &[u8]) {
    use crate::model::route::table::{Entry, Table};
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let Some(first) = lines.next() else {
        return;
    };
    // Keys are what the ClientHello reader hands over: lowercase names.
    let key: String = first
        .bytes()
        .map(|b| b"abcdefghijklmnopqrstuvwxyz0123456789.-_"[usize::from(b) % 39] as char)
        .collect();
    let patterns: Vec<&str> = lines.take(32).collect();
    let entries = patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| regex::Regex::new(p).is_ok())
        .map(|(i, p)| Entry {
            line: i + 1,
            pattern: p.to_string(),
            value: i,
        })
        .collect();
    let (table, errors) = Table::build(entries);
    let refused: Vec<usize> = errors.iter().map(|e| e.line - 1).collect();
    let expected = patterns.iter().enumerate().position(|(i, p)| {
        !refused.contains(&i) && regex::Regex::new(p).is_ok_and(|re| re.is_match(&key))
    });
    assert_eq!(
        table.lookup(&key).map(|e| *e.value),
        expected,
        "key {key:?} patterns {patterns:?}"
    );
}

/// A crt-list line.
pub fn crt_line(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::tls::certs::parse_crt_line(&text);
}

/// A request head (HTTP/1.1 text, parsed as hyper's parser does) through
/// what the request path does before forwarding it, under every forwarded
/// policy: the host chosen is a plain `name[:port]` or `[v6]:port`, the
/// server gets that host, no hop-by-hop header (nor one `Connection`
/// names) and no `X-SSL-*` header the client sent, `X-Forwarded-For` ends
/// with the client (only the client under `replace`); the sticky cookie
/// taken out is gone from what is forwarded.
pub fn http_request(data: &[u8]) {
    use crate::model::backend::Forwarded;
    let Some(builder) = request_head(data) else {
        return;
    };
    let named_by_connection: Vec<String> = builder
        .headers()
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| hyper::header::HeaderName::from_bytes(n.as_bytes()).is_ok())
        .collect();
    let client = std::net::SocketAddr::from(([203, 0, 113, 9], 5555));
    for policy in [
        Forwarded::Append,
        Forwarded::Replace,
        Forwarded::IfNone,
        Forwarded::Never,
    ] {
        let mut req = builder.clone();
        let Some(host) = crate::runtime::connection::forwardable(&mut req, client, false, policy)
        else {
            continue;
        };
        forwarded_as_promised(&req, &host, policy, &named_by_connection);
        let mut headers = req.headers().clone();
        if crate::runtime::connection::take_cookie(&mut headers, "sticky").is_some() {
            let left = headers
                .get_all(hyper::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .any(|pair| {
                    pair.split_once('=')
                        .is_some_and(|(n, _)| n.trim() == "sticky")
                });
            assert!(!left, "the sticky cookie is forwarded");
        }
    }
}

/// A request head as hyper would build it from `data`; `None` for what
/// hyper refuses before the router sees it.
fn request_head(data: &[u8]) -> Option<hyper::Request<()>> {
    use hyper::header::{HeaderName, HeaderValue};
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return None;
    };
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return None;
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .ok()?;
    for field in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return None;
        };
        builder.headers_mut().append(name, value);
    }
    Some(builder)
}

/// What a server gets: the routed host, no hop-by-hop header, no client
/// `X-SSL-*`, and `X-Forwarded-For` as `policy` says.
fn forwarded_as_promised(
    req: &hyper::Request<()>,
    host: &str,
    policy: crate::model::backend::Forwarded,
    named_by_connection: &[String],
) {
    use crate::model::backend::Forwarded;
    assert!(
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b':' | b'[' | b']')),
        "host {host:?}"
    );
    let headers = req.headers();
    assert_eq!(
        headers.get(hyper::header::HOST).map(|v| v.as_bytes()),
        Some(host.as_bytes()),
        "the server gets the routed host"
    );
    for hop in [
        "connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(named_by_connection.iter().cloned())
    {
        assert!(!headers.contains_key(hop.as_str()), "{hop} forwarded");
    }
    assert!(
        headers.keys().all(|n| !n.as_str().starts_with("x-ssl")),
        "a client's X-SSL-* header forwarded"
    );
    let xff: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    match policy {
        Forwarded::Append => {
            assert_eq!(xff.len(), 1);
            assert!(xff[0].ends_with(b"203.0.113.9"), "{xff:?}");
        }
        Forwarded::Replace => assert_eq!(xff, [b"203.0.113.9"]),
        Forwarded::IfNone | Forwarded::Never => {}
    }
}

/// A configuration file (the main TOML) through the loader: never a
/// panic, and every problem it reports in that file points at one of its
/// lines. Inputs that name absolute paths or leave the directory are not
/// loaded (a fuzzer could name /dev/zero).
pub fn config_file(data: &[u8]) {
    use std::sync::OnceLock;
    static DIR: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains('/') || text.contains('\\') || text.contains("..") {
        return;
    }
    let Some(dir) = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchyard-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        // A map and a backend file the inputs may name.
        std::fs::write(dir.join("tcp.map"), "^a\\.test$ be_a\n^b\\.test$ be_b\n").ok()?;
        std::fs::write(
            dir.join("backends.toml"),
            "[[backend]]\nname = \"be_b\"\nservers = [{ name = \"s\", address = \"127.0.0.1:1\" }]\n",
        )
        .ok()?;
        Some(dir)
    }) else {
        return;
    };
    let path = dir.join("switchyard.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let lines = text.lines().count().max(1) + 1;
    if let Err(problems) = crate::config::load(&path) {
        assert!(!problems.errors.is_empty(), "refused without an error");
        for p in problems.errors.iter().chain(&problems.warnings) {
            if p.file == path {
                if let Some(line) = p.line {
                    assert!((1..=lines).contains(&line), "{p} is past the file's end");
                }
            }
        }
    }
}
