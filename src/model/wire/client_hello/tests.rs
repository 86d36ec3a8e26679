//! Parser tests on real hellos (rustls, and an OpenSSL capture kept as a
//! fixture) and on hand-built hostile ones. No sockets.

use super::*;
use std::sync::Arc;

const LIMIT: usize = DEFAULT_LIMIT;

/// A ClientHello exactly as rustls writes it to the wire.
fn rustls_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let roots = rustls::RootCertStore::empty();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("valid name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("write hello");
    out
}

/// Captured from OpenSSL 3.0 (`server_hostname="Web.Demo.Test"`, ALPN
/// h2,http/1.1).
const OPENSSL_HELLO: &[u8] = include_bytes!("../../../../tests/fixtures/openssl_hello.bin");

/// Re-frames the handshake bytes of `wire` into records of `chunk` bytes.
fn reframe(wire: &[u8], chunk: usize) -> Vec<u8> {
    let handshake = &wire[5..];
    let mut out = Vec::new();
    for piece in handshake.chunks(chunk) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

fn done(buf: &[u8]) -> ClientHello {
    match peek(buf, LIMIT) {
        Ok(Progress::Done(hello)) => hello,
        other => panic!("expected a complete hello, got {other:?}"),
    }
}

/// Every strict prefix asks for more, and the answer never asks for fewer
/// bytes than it was given; the whole input decodes.
fn assert_every_prefix(wire: &[u8]) -> ClientHello {
    for n in 0..wire.len() {
        match peek(&wire[..n], LIMIT) {
            Ok(Progress::NeedMore { at_least }) => assert!(at_least > n, "prefix {n}"),
            other => panic!("prefix {n} of {}: {other:?}", wire.len()),
        }
    }
    done(wire)
}

#[test]
fn rustls_hello_gives_sni_alpn_version() {
    let wire = rustls_hello("Echo.Demo.Test", &["h2", "http/1.1"]);
    let hello = assert_every_prefix(&wire);
    assert_eq!(hello.sni.as_deref(), Some("echo.demo.test"));
    assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    assert_eq!(hello.version, 0x0304);
    assert_eq!(hello.records, 1);
    assert_eq!(hello.len, wire.len());
}

#[test]
fn openssl_hello_every_prefix() {
    let hello = assert_every_prefix(OPENSSL_HELLO);
    assert_eq!(hello.sni.as_deref(), Some("web.demo.test"));
    assert_eq!(hello.alpn, ["h2", "http/1.1"]);
}

#[test]
fn hello_over_many_records_down_to_one_byte() {
    let wire = rustls_hello("a.example.com", &["h2"]);
    for chunk in [1, 2, 3, 4, 5, 7, 100] {
        let framed = reframe(&wire, chunk);
        let hello = assert_every_prefix(&framed);
        assert_eq!(hello.sni.as_deref(), Some("a.example.com"), "chunk {chunk}");
        assert_eq!(hello.len, framed.len());
        assert_eq!(hello.records, (wire.len() - 5).div_ceil(chunk));
    }
}

#[test]
fn post_quantum_sized_hello_over_segments_and_records() {
    // An X25519MLKEM768 key share is 1216 bytes: the hello spans segments.
    let wire = build(Some(b"pq.example.com"), &[b"h2"], 1216);
    assert!(wire.len() > 1300);
    assert_eq!(
        assert_every_prefix(&wire).sni.as_deref(),
        Some("pq.example.com")
    );
    let framed = reframe(&wire, 700);
    assert_eq!(done(&framed).records, 2);
}

#[test]
fn trailing_dot_is_dropped() {
    let hello = done(&build(Some(b"www.example.com."), &[], 0));
    assert_eq!(hello.sni.as_deref(), Some("www.example.com"));
}

#[test]
fn no_sni_is_not_an_error() {
    let hello = done(&build(None, &[b"h2"], 0));
    assert_eq!(hello.sni, None);
    assert_eq!(hello.alpn, ["h2"]);
}

#[test]
fn http_request_is_not_tls() {
    assert_eq!(
        peek(b"GET / HTTP/1.1\r\n", LIMIT),
        Err(HelloError::NotTls(b'G'))
    );
}

#[test]
fn hello_above_the_limit_is_refused_early() {
    let wire = build(Some(b"big.example.com"), &[], 3000);
    assert!(wire.len() > 3000);
    // Only the headers are needed to know it cannot fit.
    assert!(matches!(
        peek(&wire[..9], 2048),
        Err(HelloError::TooLarge { limit: 2048, .. })
    ));
    assert_eq!(done(&wire).sni.as_deref(), Some("big.example.com"));
}

#[test]
fn hostile_alpn_list_keeps_a_bounded_number() {
    let names: Vec<&[u8]> = vec![b"x"; 20_000];
    let wire = reframe(&build(Some(b"a.test"), &names, 0), 16_000);
    let Ok(Progress::Done(hello)) = peek(&wire, 64 * 1024) else {
        panic!("hostile hello should still decode");
    };
    assert_eq!(hello.alpn_offered, 20_000);
    assert_eq!(hello.alpn.len(), 8);
}

#[test]
fn empty_alpn_name_is_malformed() {
    let wire = build(Some(b"a.test"), &[b""], 0);
    assert!(matches!(peek(&wire, LIMIT), Err(HelloError::Malformed(_))));
}

#[test]
fn bad_host_names_are_refused() {
    for name in [&b"a b.test"[..], b"a/b", b"", b".", b"\xff.test"] {
        let wire = build(Some(name), &[], 0);
        assert_eq!(peek(&wire, LIMIT), Err(HelloError::InvalidSni), "{name:?}");
    }
}

#[test]
fn other_record_before_hello_completes() {
    let mut wire = reframe(&rustls_hello("a.test", &[]), 50);
    wire[55] = 23; // second record claims to be application data
    assert_eq!(peek(&wire, LIMIT), Err(HelloError::Interleaved(23)));
}

#[test]
fn server_hello_is_not_a_client_hello() {
    let mut wire = rustls_hello("a.test", &[]);
    wire[5] = 2;
    assert_eq!(peek(&wire, LIMIT), Err(HelloError::NotClientHello(2)));
}

#[test]
fn oversized_record_is_refused() {
    assert_eq!(
        peek(&[22, 3, 1, 0x40, 0x01], LIMIT),
        Err(HelloError::RecordOverflow(0x4001))
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = peek(&bytes, 512);
    }

    #[test]
    fn corrupted_hello_never_panics(pos in 0usize..300, byte in proptest::num::u8::ANY) {
        let mut wire = build(Some(b"a.example.com"), &[b"h2"], 0);
        let pos = pos % wire.len();
        wire[pos] = byte;
        let _ = peek(&wire, LIMIT);
    }
}

/// Builds a ClientHello by hand: optional SNI, ALPN names, and a key share
/// of `key_len` bytes (group X25519MLKEM768) to make it post-quantum sized.
fn build(sni: Option<&[u8]>, alpn: &[&[u8]], key_len: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let mut entry = vec![0u8];
        push16(&mut entry, name);
        let mut list = Vec::new();
        push16(&mut list, &entry);
        ext.extend_from_slice(&0u16.to_be_bytes());
        push16(&mut ext, &list);
    }
    if !alpn.is_empty() {
        let mut list = Vec::new();
        for name in alpn {
            list.push(name.len() as u8);
            list.extend_from_slice(name);
        }
        let mut data = Vec::new();
        push16(&mut data, &list);
        ext.extend_from_slice(&16u16.to_be_bytes());
        push16(&mut ext, &data);
    }
    if key_len > 0 {
        let mut share = 0x11ecu16.to_be_bytes().to_vec();
        push16(&mut share, &vec![0x5a; key_len]);
        let mut data = Vec::new();
        push16(&mut data, &share);
        ext.extend_from_slice(&51u16.to_be_bytes());
        push16(&mut ext, &data);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    push16(&mut body, &[0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    push16(&mut body, &ext);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    // One record as long as it fits; the hostile test re-frames it.
    let mut wire = vec![22, 3, 1];
    wire.extend_from_slice(&(handshake.len().min(0xffff) as u16).to_be_bytes());
    wire.extend_from_slice(&handshake);
    wire
}

fn push16(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// Real hellos from the JA4 specification's captures (Firefox, Chrome,
/// a non-ASCII ALPN, a TLS 1.2 client without ALPN, a hello with many
/// extensions): the fingerprint its test data gives, from our parser.
#[test]
fn ja4_of_the_specifications_captures() {
    let text = include_str!("../../../../tests/fixtures/ja4/vectors.json");
    let vectors: serde_json::Value = serde_json::from_str(text).expect("vectors");
    let vectors = vectors.as_array().expect("a list");
    assert!(vectors.len() >= 6, "{} vectors", vectors.len());
    for v in vectors {
        let hex = v["hello"].as_str().expect("hello");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let hello = done(&bytes);
        assert_eq!(
            hello.ja4.as_str(),
            v["ja4"].as_str().expect("ja4"),
            "{} ({})",
            v["capture"],
            v["sni"]
        );
    }
}

/// A hello rustls writes, fingerprinted: TLS 1.3, a name, its ALPN.
#[test]
fn ja4_of_a_rustls_hello_says_what_it_offers() {
    let with = done(&rustls_hello("a.test", &["h2", "http/1.1"])).ja4;
    assert!(
        with.as_str().starts_with("t13d") && with.as_str()[8..10] == *"h2",
        "{with}"
    );
    let without = done(&rustls_hello("a.test", &[])).ja4;
    assert_eq!(&without.as_str()[8..10], "00", "{without}");
    assert_eq!(
        with.as_str()[11..],
        without.as_str()[11..],
        "ALPN is left out of the hashes"
    );
}
