//! The checks the fuzz targets (`fuzz/`, cargo-fuzz on nightly) run on
//! arbitrary bytes, kept here so that `tests/fuzz_corpus.rs` replays the
//! saved corpus through exactly the same code on stable, in every CI run.
//! Each one panics only on a real defect: a parser that panics, claims
//! more bytes than it was given, or a route table that answers differently
//! from an ordered scan of its regexes.

/// The ClientHello reader on arbitrary bytes, whole and in two pieces.
pub fn client_hello(data: &[u8]) {
    use crate::client_hello::{peek, Progress};
    let limit = crate::client_hello::DEFAULT_LIMIT;
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
    use crate::proxy_header::{parse, Progress};
    if let Ok(Progress::Complete(header)) = parse(data) {
        assert!(header.len <= data.len(), "{} > {}", header.len, data.len());
        assert_eq!(parse(&data[..header.len]), Ok(Progress::Complete(header)));
    }
}

/// Map lines (one per line, the first line is the key) through the route
/// table, against an ordered scan of the same regexes.
pub fn map_table(data: &[u8]) {
    use crate::route::table::{Entry, Table};
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
        table.lookup(&key).map(|e| e.value),
        expected,
        "key {key:?} patterns {patterns:?}"
    );
}

/// A crt-list line.
pub fn crt_line(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::tls::certs::parse_crt_line(&text);
}
