//! Each request's decision: refusals the router answers itself (head too
//! large, CONNECT, no host, 421 for a host another certificate serves),
//! then the route by Host and path against the current snapshot, the
//! redirect of a plain-HTTP route, the allow list and the request rate.

use std::sync::Arc;

use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;

use super::conn::Conn;
use super::headers::{
    head_size, host_name, host_of, origin_form, response_head_size, target_allowed,
};
use super::log::Record;
use super::pages::{keep_open, page, unavailable};
use super::upload::Uploaded;
use super::{Body, MAX_HEAD};
use crate::model::backend::Backend;
use crate::model::decide::PlainDecision;

impl Conn {
    /// Routes, forwards and logs one request (one access-log line).
    pub(super) async fn route(&self, mut req: Request<Incoming>) -> (Response<Body>, Record) {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let host = host_of(&req);
        let head_in = head_size(&req) as u64;
        // A body's bytes are counted as they go to the server.
        let uploaded = (!hyper::body::Body::is_end_stream(req.body())).then(|| {
            let uploaded = Uploaded::default();
            req.extensions_mut().insert(uploaded.clone());
            uploaded
        });
        let (response, served) = self.answer(req, host.as_deref(), &path, head_in).await;
        let status = response.status();
        if let Some((backend, server)) = &served {
            backend.traffic.response(status.as_u16());
            let server = server.and_then(|i| backend.servers.get(i));
            if let Some(s) = server {
                s.state.traffic.response(status.as_u16());
            }
        }
        let record = Record {
            method,
            host,
            path,
            status,
            served,
            started,
            head: started.elapsed(),
            bytes: 0,
            head_in,
            uploaded,
            head_out: response_head_size(&response) as u64,
            own: matches!(response.body(), Either::Right(_)),
        };
        (response, record)
    }

    /// The response to one request, and the backend (and server) that
    /// gave it, if one did.
    pub(super) async fn answer(
        &self,
        req: Request<Incoming>,
        host: Option<&str>,
        path: &str,
        head_in: u64,
    ) -> (Response<Body>, Option<(Arc<Backend>, Option<usize>)>) {
        // A refusal keeps the connection only when nothing of the request
        // is left unread (a body the router does not read closes it).
        let whole = hyper::body::Body::is_end_stream(req.body());
        // hyper bounds its read buffer, but a head that arrives whole in
        // one read is not measured: the bound is checked here too.
        if head_in > u64::from(MAX_HEAD) {
            let text = "The request head is larger than this router accepts.";
            return (
                page(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "Request Header Fields Too Large",
                    text,
                ),
                None,
            );
        }
        if req.method() == hyper::Method::CONNECT {
            let text = "CONNECT is not proxied.";
            return (
                page(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", text),
                None,
            );
        }
        let fragment = self
            .activity
            .fragment
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if fragment || !target_allowed(&req) {
            let text = if fragment {
                "the request target has a #fragment, which a request never carries (RFC 9112 §3.2)"
            } else {
                "the request target is neither a path nor an absolute URL"
            };
            return (page(StatusCode::BAD_REQUEST, "Bad Request", text), None);
        }
        let Some(host) = host else {
            let text = "the request names no valid host, or more than one";
            return (page(StatusCode::BAD_REQUEST, "Bad Request", text), None);
        };
        if self.misdirected(host) {
            let text = "This connection was made for another name; retry on a new connection.";
            let response = page(StatusCode::MISDIRECTED_REQUEST, "Misdirected Request", text);
            return (keep_open(whole, response), None);
        }
        let snapshot = self.shared.snapshot();
        let decision = if self.tls.is_some() {
            snapshot.decide_request(host, path)
        } else {
            match snapshot.decide_plain_request(host, path) {
                Some(PlainDecision::Redirect) => return (self.redirect(host, &req), None),
                Some(PlainDecision::Route(decision)) => Some(decision),
                None => None,
            }
        };
        drop(snapshot);
        let backend = match (decision, &self.fallback) {
            (Some(decision), _) => decision.backend,
            (None, Some(fallback)) => Arc::clone(fallback),
            (None, None) => return (self.unavailable(whole), None),
        };
        if let Some(ja4) = self.ja4.filter(|ja4| backend.denies(ja4)) {
            super::super::admit::note_fingerprint(ja4, "backend", &backend.name);
            let text = "This client may not use this application.";
            let response = keep_open(whole, page(StatusCode::FORBIDDEN, "Forbidden", text));
            return (response, Some((backend, None)));
        }
        if !backend.admits(self.peer.ip()) {
            let text = "This address may not use this application.";
            let response = keep_open(whole, page(StatusCode::FORBIDDEN, "Forbidden", text));
            return (response, Some((backend, None)));
        }
        if let Err(refusal) = backend.admit_request(self.peer.ip()) {
            let text = "Too many requests from this address; retry later.";
            let mut response = keep_open(
                whole,
                page(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", text),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(refusal.retry_after()),
            );
            return (response, Some((backend, None)));
        }
        let (response, server) = self.forward(&backend, host, req).await;
        (response, Some((backend, server)))
    }

    /// Whether the request belongs on a connection made for its own name
    /// (RFC 9110 §15.5.20): the certificate this connection presented
    /// does not cover `host`, and another certificate serves it. A client
    /// that sent no usable SNI (none, or an address, as monitors and
    /// load generators connecting by address do) chose no name: its
    /// requests are routed by Host. So are hosts the presented certificate
    /// covers (a browser coalesces only onto those), and hosts that would
    /// get this same certificate anyway.
    pub(super) fn misdirected(&self, host: &str) -> bool {
        let Some((certs, served)) = &self.tls else {
            return false;
        };
        let Some(sni) = self.sni.as_deref() else {
            return false;
        };
        let name = host_name(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        // The common case first: the request is for the name connected to.
        if name.eq_ignore_ascii_case(sni) || sni.parse::<std::net::IpAddr>().is_ok() {
            return false;
        }
        let other = certs
            .find(Some(name))
            .is_some_and(|wanted| !Arc::ptr_eq(wanted, served));
        other && !served.covers(name)
    }

    /// `503`, with the configured page if there is one. The connection
    /// stays open: a client probing names pays no handshake for each.
    pub(super) fn unavailable(&self, whole: bool) -> Response<Body> {
        let mut response = keep_open(whole, unavailable());
        if let Some(page) = &self.shared.snapshot().http.error_page_503 {
            *response.body_mut() = Either::Right(Full::new(page.clone()));
        }
        response
    }

    /// `302` to the same host (without its port) and target over https.
    pub(super) fn redirect(&self, host: &str, req: &Request<Incoming>) -> Response<Body> {
        let target = origin_form(req.uri());
        let port = match self.https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let location = format!("https://{}{port}{target}", host_name(host));
        let mut response = page(
            StatusCode::FOUND,
            "Found",
            "This site is served over https.",
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        response.headers_mut().remove(header::CONNECTION);
        response
    }
}
