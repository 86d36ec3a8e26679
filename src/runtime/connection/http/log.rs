//! The access log of HTTP mode: one line per request, written when its
//! response has been sent (or dropped), and one for a request hyper
//! refused before it reached the router.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::time::Instant;

use super::conn::{Busy, Conn};
use super::upload::Uploaded;
use super::Body;
use crate::model::backend::Backend;

/// A response on its way to the client, keeping its request counted; its
/// access-log line is written when it has been sent (or dropped).
pub(super) struct Answer {
    pub(super) body: Body,
    pub(super) record: Record,
    pub(super) busy: Busy,
}

/// What the access log says of one request.
pub(super) struct Record {
    pub(super) method: hyper::Method,
    pub(super) host: Option<String>,
    pub(super) path: String,
    pub(super) status: StatusCode,
    pub(super) served: Option<(Arc<Backend>, Option<usize>)>,
    pub(super) started: Instant,
    /// Until the response head was ready.
    pub(super) head: Duration,
    /// Response body bytes sent.
    pub(super) bytes: u64,
    /// The request head's size (as HTTP/1.1 carries it).
    pub(super) head_in: u64,
    /// The request body's bytes, when it has one.
    pub(super) uploaded: Option<Uploaded>,
    /// The response head's size (as HTTP/1.1 carries it).
    pub(super) head_out: u64,
    /// The router answered itself (a page: 503, 502, 504, 421, …).
    pub(super) own: bool,
}

impl Record {
    /// Bytes from the client and to it: heads and bodies.
    fn bytes(&self) -> (u64, u64) {
        let body_in = self.uploaded.as_ref().map_or(0, Uploaded::bytes);
        (self.head_in + body_in, self.head_out + self.bytes)
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let conn = &self.busy.0;
        let r = &self.record;
        let backend = r.served.as_ref();
        let server = backend.and_then(|(b, i)| i.and_then(|i| b.servers.get(i)));
        // Each request is a session of its backend and server, as HAProxy
        // counts them in HTTP mode; a 5xx of the router's own (no server,
        // or none that answered) is an error.
        let (bytes_in, bytes_out) = r.bytes();
        let failed = r.own && r.status.is_server_error();
        if let Some((b, _)) = backend {
            b.traffic.record(bytes_in, bytes_out, failed);
        }
        if let Some(s) = server {
            s.state.traffic.record(bytes_in, bytes_out, failed);
        }
        conn.moved.add(bytes_in, bytes_out);
        conn.frontend.add_bytes(bytes_in, bytes_out);
        conn.log(r, backend.map(|(b, _)| b.name.as_str()), server);
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.record.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Conn {
    /// The access-log line of a request hyper refused before it reached
    /// the router (it answered 400 or 431 itself and closed).
    pub(super) fn refused(&self, e: &hyper::Error) {
        let status = if e.is_parse_too_large() {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        } else if e.is_parse() {
            StatusCode::BAD_REQUEST
        } else {
            return;
        };
        tracing::info!(
            target: "access",
            client = %self.peer,
            sni = self.sni.as_deref().unwrap_or("-"),
            proto = if self.h2 { "h2" } else { "http/1.1" },
            status = status.as_u16(),
            reason = %e,
            "request refused"
        );
    }

    pub(super) fn log(
        &self,
        r: &Record,
        backend: Option<&str>,
        server: Option<&crate::model::backend::Server>,
    ) {
        // Formatted only when the access log is on.
        struct Named<'a>(Option<&'a crate::model::backend::Server>);
        impl std::fmt::Display for Named<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.0 {
                    Some(s) => write!(f, "{} {}", s.name, s.addr),
                    None => f.write_str("-"),
                }
            }
        }
        tracing::info!(
            target: "access",
            client = %self.peer,
            sni = self.sni.as_deref().unwrap_or("-"),
            proto = if self.h2 { "h2" } else { "http/1.1" },
            method = %r.method,
            host = r.host.as_deref().unwrap_or("-"),
            path = r.path,
            status = r.status.as_u16(),
            bytes = r.bytes,
            backend = backend.unwrap_or("-"),
            server = %Named(server),
            head_ms = r.head.as_millis() as u64,
            duration_ms = r.started.elapsed().as_millis() as u64,
            "request"
        );
    }
}
