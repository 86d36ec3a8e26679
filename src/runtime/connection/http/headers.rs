//! The request head as servers get it: host and authority checks, origin
//! form, `X-Forwarded-*` and `Forwarded` under the backend's policy,
//! `X-SSL-*` for client certificates, and hop-by-hop headers removed.

use std::net::SocketAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};

use crate::model::backend::Forwarded;

/// About the size of a request head as an HTTP/1.1 client sends it.
pub(super) fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri
            .authority()
            .map_or(0, |a| a.as_str().len() + "https://".len());
    let line = req.method().as_str().len() + target + " HTTP/1.1\r\n ".len();
    req.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

/// The size of a response head as HTTP/1.1 carries it (status line,
/// fields, blank line): what the traffic counters add for it, whatever
/// the client's protocol.
pub(super) fn response_head_size<B>(response: &hyper::Response<B>) -> usize {
    let line =
        "HTTP/1.1 200 \r\n".len() + response.status().canonical_reason().map_or(0, str::len) + 2;
    response.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

/// The request's host, lowercased, with its port if it has one: the
/// authority of an absolute-form target, else `Host` (RFC 9112 §3.2.2).
/// `None` when it has none, more than one `Host`, or one that is not a
/// host name or bracketed IPv6 address with an optional port: nothing
/// else may reach the route key or the forwarded headers.
pub(super) fn host_of<B>(req: &Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            let host = hosts.next()?.to_str().ok()?.to_string();
            if hosts.next().is_some() {
                return None;
            }
            host
        }
    };
    let mut authority = authority.trim().to_ascii_lowercase();
    // An empty port is valid and means none (RFC 3986 §3.2.3, §6.2.3).
    if authority.ends_with(':') && !authority.ends_with("::") {
        authority.pop();
    }
    valid_authority(&authority).then_some(authority)
}

/// `name[:port]` or `[v6]:port`: letters, digits, `-`, `_`, `.` in a name.
pub(super) fn valid_authority(authority: &str) -> bool {
    let (name, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => {
                if v6.is_empty()
                    || !v6
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                ("v6", port)
            }
            None => return false,
        },
        None => match authority.find(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        },
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let port_ok = match port.strip_prefix(':') {
        Some(digits) => {
            !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit())
        }
        None => port.is_empty(),
    };
    name_ok && port_ok
}

/// The head a request is forwarded with, as the request path prepares it:
/// its host (`None`: refused with 400), then the target in origin form,
/// hop-by-hop headers out, `Host` and the forwarded headers set under
/// `policy`, as from `client` over TLS. The fuzz target
/// (`fuzzing::http_request`) checks its invariants on arbitrary heads.
pub(crate) fn forwardable<B>(
    req: &mut Request<B>,
    client: SocketAddr,
    h2: bool,
    policy: Forwarded,
) -> Option<String> {
    let host = host_of(req)?;
    let this_side = ThisSide::new(client, 443);
    let hop = Hop {
        this_side: &this_side,
        host: &host,
        proto: "https",
        h2,
        client_certificate: &[],
    };
    prepare_request(req, &hop, policy);
    Some(host)
}

/// The target of `uri` in origin form (RFC 9112 §3.2.1): its path, `/`
/// when it has none (`https://app.example?q` is `/?q`), and its query.
pub(super) fn origin_form(uri: &Uri) -> String {
    match uri.query() {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    }
}

/// Whether a request's target has a form RFC 9112 §3.2 allows for its
/// method: a path (origin form), an absolute URL, or `*` for `OPTIONS`;
/// `GET x` (a bare name) is none of them. CONNECT is refused on its own.
pub(super) fn target_allowed<B>(req: &Request<B>) -> bool {
    let uri = req.uri();
    if uri.scheme().is_some() {
        return true;
    }
    if uri.authority().is_some() {
        return false;
    }
    uri.path().starts_with('/') || (uri.path() == "*" && req.method() == hyper::Method::OPTIONS)
}

/// Origin-form target, `Host`, forwarded headers, no hop-by-hop headers.
pub(super) fn prepare_request<B>(req: &mut Request<B>, hop: &Hop<'_>, policy: Forwarded) {
    // Servers are spoken to in HTTP/1.1, whatever the client speaks.
    *req.version_mut() = hyper::Version::HTTP_11;
    if req.uri().authority().is_some() {
        let origin = origin_form(req.uri());
        if let Ok(uri) = origin.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    // h2 clients may split `cookie` into one field per pair; an HTTP/1.1
    // server expects one line (RFC 9113 §8.2.3).
    if hop.h2 {
        join_cookies(headers);
    }
    // X-SSL-* describe the client's certificate: only the router says so.
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-ssl"))
        .cloned()
        .collect();
    for name in claimed {
        headers.remove(name);
    }
    for (name, value) in hop.client_certificate {
        headers.insert(name.clone(), value.clone());
    }
    // The server sees the host the request was routed by (RFC 9112
    // §3.2.2: an absolute-form target or h2 :authority wins over Host).
    if let Ok(v) = HeaderValue::from_str(hop.host) {
        headers.insert(header::HOST, v);
    }
    forwarded_headers(headers, hop, policy);
}

/// The parts of the forwarded headers that are the same for every request
/// of a connection.
pub(super) struct ThisSide {
    /// The client's address (`X-Forwarded-For`).
    pub(super) client: HeaderValue,
    /// The client as a `Forwarded` node (IPv6 quoted and bracketed).
    pub(super) node: Box<str>,
    /// The port the client connected to (`X-Forwarded-Port`).
    pub(super) port: HeaderValue,
}

impl ThisSide {
    pub(super) fn new(peer: SocketAddr, local_port: u16) -> Self {
        let ip = peer.ip().to_canonical();
        let client = ip.to_string();
        let node = if ip.is_ipv6() {
            format!("\"[{client}]\"")
        } else {
            client.clone()
        };
        ThisSide {
            client: HeaderValue::from_str(&client).unwrap_or(HeaderValue::from_static("unknown")),
            node: node.into(),
            port: HeaderValue::from(local_port),
        }
    }
}

/// Several `cookie` fields as one, joined by "; ".
pub(super) fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for field in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(field.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// What the forwarded headers say about one hop.
pub(super) struct Hop<'a> {
    pub(super) this_side: &'a ThisSide,
    pub(super) host: &'a str,
    pub(super) proto: &'static str,
    pub(super) h2: bool,
    pub(super) client_certificate: &'a [(HeaderName, HeaderValue)],
}

/// `X-Forwarded-For/-Host/-Port/-Proto/-Proto-Version` and `Forwarded`,
/// under the backend's policy: `append` adds this hop to what the client
/// sent (and sets the others), `replace` sends only this hop, `if-none`
/// sets each header the client did not send, `never` leaves them as sent.
pub(super) fn forwarded_headers(headers: &mut HeaderMap, hop: &Hop<'_>, policy: Forwarded) {
    if policy == Forwarded::Never {
        return;
    }
    let side = hop.this_side;
    // RFC 7239: a host with a port or brackets is a quoted-string.
    let this_hop = format!(
        "for={};host=\"{}\";proto={}",
        side.node, hop.host, hop.proto
    );
    let joined = |headers: &HeaderMap, name: &str, ours: &str| -> Option<String> {
        let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        let mut all = String::from(first);
        for v in values {
            all.push_str(", ");
            all.push_str(v);
        }
        all.push_str(", ");
        all.push_str(ours);
        Some(all)
    };
    let set = |headers: &mut HeaderMap, name: &'static str, value: HeaderValue| {
        if policy != Forwarded::IfNone || !headers.contains_key(name) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    let text = |value: &str| HeaderValue::from_str(value).ok();
    if let Some(host) = text(hop.host) {
        set(headers, "x-forwarded-host", host);
    }
    set(headers, "x-forwarded-port", side.port.clone());
    set(
        headers,
        "x-forwarded-proto",
        HeaderValue::from_static(hop.proto),
    );
    if hop.h2 {
        set(
            headers,
            "x-forwarded-proto-version",
            HeaderValue::from_static("h2"),
        );
    } else if policy != Forwarded::IfNone {
        headers.remove("x-forwarded-proto-version");
    }
    let client = side.client.to_str().unwrap_or("unknown");
    let (xff, fwd) = match policy {
        Forwarded::Append => (
            joined(headers, "x-forwarded-for", client).and_then(|v| text(&v)),
            joined(headers, "forwarded", &this_hop).map_or_else(|| text(&this_hop), |v| text(&v)),
        ),
        _ => (None, text(&this_hop)),
    };
    set(
        headers,
        "x-forwarded-for",
        xff.unwrap_or_else(|| side.client.clone()),
    );
    if let Some(fwd) = fwd {
        set(headers, "forwarded", fwd);
    }
}

/// The `X-SSL-*` headers the reference router sends for a verified client
/// certificate (values quoted as its `%{+Q}` does): verify result, SHA-1,
/// subject and CN, issuer, validity, and the DER in base64.
pub(super) fn client_certificate_headers(leaf: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
    use base64::Engine;
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let sha1: String = sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let der = base64::engine::general_purpose::STANDARD.encode(leaf);
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut headers = vec![
        ("x-ssl", "1".to_string()),
        ("x-ssl-client-verify", "0".to_string()),
        ("x-ssl-client-sha1", quoted(&sha1)),
        ("x-ssl-client-der", quoted(&der)),
    ];
    if let Some(d) = crate::tls::x509::describe(leaf) {
        headers.push(("x-ssl-client-dn", quoted(&d.subject)));
        headers.push((
            "x-ssl-client-cn",
            quoted(d.common_name.as_deref().unwrap_or("")),
        ));
        headers.push(("x-ssl-issuer", quoted(&d.issuer)));
        headers.push(("x-ssl-client-notbefore", quoted(&d.not_before)));
        headers.push(("x-ssl-client-notafter", quoted(&d.not_after)));
    }
    headers
        .into_iter()
        .filter_map(|(name, value)| {
            let value = HeaderValue::from_bytes(value.as_bytes()).ok()?;
            Some((HeaderName::from_static(name), value))
        })
        .collect()
}

/// `host[:port]` without the port (an IPv6 literal keeps its brackets).
pub(super) fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// Removes the headers that describe one hop (RFC 9110 §7.6.1), including
/// those the `Connection` header names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // A length beside Transfer-Encoding is not the body's length: hyper
    // frames what is forwarded itself (RFC 9112 §6.3).
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("http2-settings"),
    ] {
        headers.remove(name);
    }
}
