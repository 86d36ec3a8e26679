//! A routed request on its way to a server and the response on its way
//! back: a server taken from the backend (the sticky cookie's first), a
//! pooled or new connection, the request sent under the server timeout,
//! and the response passed on, or the status the router answers with when
//! that fails ([`Failure`], mapped to a page and a log line in one place).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;

use super::conn::Conn;
use super::cookies::{set_cookie, take_cookie};
use super::dial::{DialError, Sender};
use super::headers::{prepare_request, strip_hop_by_hop, Hop};
use super::pages::page;
use super::pool::{idle_of, PoolReturn, Returning, POOL_IDLE};
use super::upgrade::upgrade_of;
use super::upload::{Upload, UploadEnd, Uploaded};
use super::Body;
use crate::model::backend::{ActiveGuard, Backend, Server, Unavailable};

/// Pooled connections one request may find closed under it before it gets
/// 503 (a close racing the request; connections whose server already
/// closed them are skipped by the pool itself).
pub(super) const MAX_STALE: usize = 64;

/// What every attempt at a request needs besides the request.
struct Outgoing<'a> {
    /// Progress and end of the request body, when it has one.
    upload: Option<Arc<UploadEnd>>,
    /// The client sent `te: trailers` (passed on to h2 servers).
    trailers: bool,
    /// The request asks for an upgrade: it gets a connection of its own.
    upgrade: bool,
    /// The sticky cookie's name and the value the client sent.
    sticky: Option<(&'a str, Option<String>)>,
    /// The TLS identity server connections are verified under (0: none).
    tls: u64,
}

/// The servers a request has tried, and the one to try next.
#[derive(Default)]
struct Attempts {
    /// Servers not to be taken again.
    tried: Vec<usize>,
    /// Connects and fresh connections that failed (up to the retries).
    failed: u32,
    /// Pooled connections found closed (bounded, as the pool is).
    stale: usize,
    /// The sticky cookie's server, or the one whose pooled connection was
    /// stale.
    preferred: Option<usize>,
}

impl Attempts {
    fn left(&self, retries: u32) -> bool {
        self.failed <= retries && self.stale <= MAX_STALE
    }

    /// A connect, or a request on a new connection, failed on server `i`
    /// before the request was written: another server next.
    fn failed(&mut self, i: usize) {
        self.tried.push(i);
        self.failed += 1;
    }

    /// A pooled connection to `i` was found closed: the same server again,
    /// at no cost of an attempt.
    fn stale(&mut self, i: usize) {
        self.stale += 1;
        self.preferred = Some(i);
    }
}

/// The server a request reached, and what its response gives back.
struct Reached<'a> {
    backend: &'a Backend,
    index: usize,
    sender: Sender,
    active: ActiveGuard,
}

/// How a forwarded request ended without a server response to pass on.
pub(super) enum Failure {
    /// The server answered 101 to a request that asked for no upgrade.
    UnaskedSwitch,
    /// The client's request body stopped arriving.
    Stalled(hyper::Error),
    /// The client's request body broke off.
    ClientBrokeOff(hyper::Error),
    /// The server failed the request after it may have read it.
    Server(hyper::Error),
    /// No answer within the backend's server timeout.
    TimedOut,
}

impl Failure {
    /// The failure of a request that was written (at least in part).
    fn of_sent(error: hyper::Error, upload: Option<&UploadEnd>) -> Self {
        match upload {
            Some(u) if u.stalled() => Failure::Stalled(error),
            Some(u) if u.client_failed() => Failure::ClientBrokeOff(error),
            _ => Failure::Server(error),
        }
    }

    /// The page the client gets, after the log line says why.
    fn answer(&self, conn: &Conn, backend: &Backend, server: &Server) -> Response<Body> {
        let (b, s, client) = (&backend.name, &server.name, &conn.peer);
        match self {
            Failure::UnaskedSwitch => {
                tracing::warn!(backend = %b, server = %s, "101 to a request that asked for no upgrade");
                let text = "the server switched protocols unasked";
                page(StatusCode::BAD_GATEWAY, "Bad Gateway", text)
            }
            Failure::Stalled(e) => {
                tracing::info!(backend = %b, client = %client, "request body stalled: {e}");
                let text = "the request body stopped arriving";
                page(StatusCode::REQUEST_TIMEOUT, "Request Timeout", text)
            }
            Failure::ClientBrokeOff(e) => {
                tracing::info!(backend = %b, client = %client, "request body broke off: {e}");
                page(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    "the request body broke off",
                )
            }
            Failure::Server(e) => {
                tracing::warn!(backend = %b, server = %s, "request failed: {e}");
                page(
                    StatusCode::BAD_GATEWAY,
                    "Bad Gateway",
                    "the server did not answer",
                )
            }
            Failure::TimedOut => {
                let text = "the server did not answer in time";
                page(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout", text)
            }
        }
    }
}

impl Conn {
    /// Sends `req` to a server of `backend`, trying another after a failed
    /// connect (never after the request may have reached one).
    pub(super) async fn forward(
        &self,
        backend: &Backend,
        host: &str,
        req: Request<Incoming>,
    ) -> (Response<Body>, Option<usize>) {
        // An HTTP/1.1 upgrade (WebSocket): passed on, and the connection
        // becomes a tunnel after the server's 101. Never h2c.
        let upgrade = upgrade_of(&req);
        let (mut req, out) = self.outgoing(req, backend, host, upgrade);
        // Sticky cookie: the server it names while that one is up.
        let mut attempts = Attempts {
            preferred: (out.sticky.as_ref())
                .and_then(|(_, v)| v.as_deref())
                .and_then(|v| backend.server_for_cookie(v)),
            ..Attempts::default()
        };
        while attempts.left(backend.retries) {
            let Some((i, active)) = self.take(backend, &mut attempts).await else {
                break;
            };
            let server = &backend.servers[i];
            let (mut sender, fresh) = match self.sender(backend, server, &out).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(backend = %backend.name, server = %server.name, addr = %server.addr, client = %self.peer, "connect failed: {e}");
                    attempts.failed(i);
                    continue;
                }
            };
            if backend.upstream().is_some() {
                sender.fit(&mut req, host, out.trailers);
            }
            let sent_at = Instant::now();
            let upload = out.upload.as_deref();
            let sent = send(&mut sender, req, upload, backend.timeouts.server).await;
            let failure = match sent {
                Some(Ok(response)) => {
                    backend.traffic.response_time(sent_at.elapsed());
                    server.state.traffic.response_time(sent_at.elapsed());
                    let reached = Reached {
                        backend,
                        index: i,
                        sender,
                        active,
                    };
                    let response = self.pass_on(response, reached, &out);
                    return (response, Some(i));
                }
                Some(Err(mut e)) => match e.take_message() {
                    Some(unsent) => {
                        // Not written: safe to send again. A stale pooled
                        // connection costs no attempt; a fresh one does.
                        req = unsent;
                        if fresh {
                            attempts.failed(i);
                        } else {
                            attempts.stale(i);
                        }
                        continue;
                    }
                    None => Failure::of_sent(e.into_error(), upload),
                },
                None => Failure::TimedOut,
            };
            return (failure.answer(self, backend, server), Some(i));
        }
        // A body may be left unread: the connection closes after it.
        (self.unavailable(out.upload.is_none()), None)
    }

    /// A server of `backend` for the next attempt, with its place held.
    async fn take(
        &self,
        backend: &Backend,
        attempts: &mut Attempts,
    ) -> Option<(usize, ActiveGuard)> {
        let preferred = attempts.preferred.take();
        match backend
            .take(self.peer.ip(), &attempts.tried, preferred)
            .await
        {
            Ok(taken) => Some(taken),
            Err(Unavailable::NoServer) => None,
            Err(full) => {
                tracing::info!(backend = %backend.name, client = %self.peer, "{full}");
                None
            }
        }
    }

    /// `req` as servers get it (origin form, forwarded headers, the body
    /// watched, the upgrade asked again, the router's cookie taken out),
    /// and what every attempt at it needs.
    fn outgoing<'a>(
        &self,
        mut req: Request<Incoming>,
        backend: &'a Backend,
        host: &'a str,
        upgrade: Option<HeaderValue>,
    ) -> (Request<Upload>, Outgoing<'a>) {
        let hop = Hop {
            this_side: &self.this_side,
            host,
            proto: if self.tls.is_some() { "https" } else { "http" },
            h2: self.h2,
            client_certificate: &self.client_certificate,
        };
        // `te: trailers` is hop-by-hop, but h2 servers (gRPC) expect it
        // when the client sent it: it goes on again for those.
        let trailers = req
            .headers()
            .get(header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        prepare_request(&mut req, &hop, backend.forwarded);
        let (mut parts, body) = req.into_parts();
        let counted = parts.extensions.remove::<Uploaded>();
        let (body, upload) = Upload::new(body, self.timeouts.http_request, counted);
        let mut req = Request::from_parts(parts, body);
        if let Some(protocol) = &upgrade {
            let headers = req.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        // The cookie itself is the router's and not passed on.
        let sticky = backend.cookie.as_deref().map(|name| {
            let value = take_cookie(req.headers_mut(), name);
            (name, value)
        });
        let out = Outgoing {
            upload,
            trailers,
            upgrade: upgrade.is_some(),
            sticky,
            tls: backend.upstream().map_or(0, |u| u.fingerprint),
        };
        (req, out)
    }

    /// A pooled connection to `server` first (`false`); else a new one
    /// (`true`). If a pooled one turns out closed before the request was
    /// written, the request comes back and goes on a new connection.
    async fn sender(
        &self,
        backend: &Backend,
        server: &Server,
        out: &Outgoing<'_>,
    ) -> Result<(Sender, bool), DialError> {
        let (pool, tls) = (idle_of(&server.state), out.tls);
        let pooled = match pool {
            // A tunnel-to-be gets a connection of its own.
            _ if out.upgrade => None,
            Some(idle) if backend.upstream().is_some() => idle
                .shared_h2(tls)
                .map(Sender::H2)
                .or_else(|| idle.take(tls, POOL_IDLE).map(Sender::H1)),
            Some(idle) => idle.take(tls, POOL_IDLE).map(Sender::H1),
            None => None,
        };
        if let Some(sender) = pooled {
            return Ok((sender, false));
        }
        // Boxed: connecting (TLS included) is the rare path, and would
        // otherwise more than double every request's future.
        match Box::pin(self.open(backend, server.addr, !out.upgrade)).await? {
            Sender::H2(h2) => {
                if let Some(idle) = pool {
                    idle.share_h2(tls, h2.clone());
                }
                Ok((Sender::H2(h2), true))
            }
            sender => Ok((sender, true)),
        }
    }

    /// The server's response as the client gets it: a 101 becomes a
    /// tunnel; any other response loses its hop-by-hop headers, gains HSTS
    /// and the sticky cookie, and gives its connection back to the pool
    /// once read through.
    fn pass_on(
        &self,
        mut response: Response<Incoming>,
        reached: Reached<'_>,
        out: &Outgoing<'_>,
    ) -> Response<Body> {
        let Reached {
            backend,
            index,
            sender,
            active,
        } = reached;
        let server = &backend.servers[index];
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if !out.upgrade {
                return Failure::UnaskedSwitch.answer(self, backend, server);
            }
            self.tunnel(&mut response, (backend, server), (sender, active));
            return response.map(|body| http_body_util::Either::Left(Returning::new(body, None)));
        }
        strip_hop_by_hop(response.headers_mut());
        if let (Some(hsts), Some(_)) = (backend.hsts(), &self.tls) {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        if let Some((name, given)) = &out.sticky {
            if let Some(value) = backend.cookie_value(index) {
                if given.as_deref() != Some(value) {
                    set_cookie(response.headers_mut(), name, value, self.tls.is_some());
                }
            }
        }
        // Back to the pool once this response is read through.
        let back = PoolReturn {
            sender: match sender {
                Sender::H1(h1) => Some(h1),
                Sender::H2(_) => None,
            },
            state: Arc::clone(&server.state),
            tls: out.tls,
            active,
        };
        response.map(|body| http_body_util::Either::Left(Returning::new(body, Some(back))))
    }
}

/// Sends a request; the server timeout runs from the end of its body (a
/// slow upload is bounded by its own pauses, not by the server's answer).
/// While the body is on its way, a server that stops reading it for the
/// server timeout is given up on too. `None`: timed out.
///
/// A request without a body, the common case, waits on the server alone;
/// the watch over a body is boxed, so that every request's future (moved
/// and copied as it is polled) is sized for the common case.
pub(super) async fn send(
    sender: &mut Sender,
    req: Request<Upload>,
    upload: Option<&UploadEnd>,
    server_timeout: Duration,
) -> Option<Sent> {
    use tokio::time::timeout;
    match (sender, upload) {
        (Sender::H1(s), None) => timeout(server_timeout, s.try_send_request(req)).await.ok(),
        (Sender::H2(s), None) => timeout(server_timeout, s.try_send_request(req)).await.ok(),
        (Sender::H1(s), Some(upload)) => {
            Box::pin(uploading(s.try_send_request(req), upload, server_timeout)).await
        }
        (Sender::H2(s), Some(upload)) => {
            Box::pin(uploading(s.try_send_request(req), upload, server_timeout)).await
        }
    }
}

/// What sending a request gives: the server's response, or the request
/// back if it was not written.
type Sent = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Upload>>>;

/// `sending` while the request body goes to the server (see [`send`]).
async fn uploading(
    sending: impl std::future::Future<Output = Sent>,
    upload: &UploadEnd,
    server_timeout: Duration,
) -> Option<Sent> {
    tokio::pin!(sending);
    let finished = upload.finished();
    tokio::pin!(finished);
    let mut seen = upload.progress();
    loop {
        tokio::select! {
            sent = &mut sending => return Some(sent),
            () = &mut finished => break,
            () = tokio::time::sleep(server_timeout) => {
                let now = upload.progress();
                if now == seen {
                    return None;
                }
                seen = now;
            }
        }
    }
    tokio::time::timeout(server_timeout, sending).await.ok()
}
