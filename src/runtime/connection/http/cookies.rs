//! The sticky cookie: read from (and taken out of) the request, set on
//! the response when the server it names changes.

use hyper::header::{self, HeaderMap, HeaderValue};

/// Removes the cookie `name` from the request's `Cookie` headers and
/// returns its value.
pub(crate) fn take_cookie(headers: &mut HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    let mut kept = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            kept.push(value.clone());
            continue;
        };
        let mut rest = Vec::new();
        for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((n, v)) if n.trim() == name => found = Some(v.trim().to_string()),
                _ => rest.push(pair),
            }
        }
        if !rest.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&rest.join("; ")) {
                kept.push(v);
            }
        }
    }
    if found.is_some() {
        headers.remove(header::COOKIE);
        for v in kept {
            headers.append(header::COOKIE, v);
        }
    }
    found
}

/// `Set-Cookie` for the server chosen (HttpOnly, plus Secure and
/// SameSite=None on TLS routes); a response that sets it is not cached by
/// shared caches.
pub(super) fn set_cookie(headers: &mut HeaderMap, name: &str, value: &str, tls: bool) {
    let cookie = if tls {
        format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=None")
    } else {
        format!("{name}={value}; Path=/; HttpOnly")
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, v);
    }
    // A shared cache must not keep one client's cookie for others.
    let public = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("public"));
    if public || !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}
