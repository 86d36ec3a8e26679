//! Server connections kept between requests, one pool per server in its
//! carried state: idle HTTP/1.1 connections (the newest taken first) and one shared
//! h2 connection, each tagged with the TLS identity it was verified under.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;

use super::upload::Upload;
use crate::model::backend::ActiveGuard;
use crate::model::backend::ServerState;

/// Idle server connections older than this are not reused.
pub(super) const POOL_IDLE: Duration = Duration::from_secs(30);

/// A server's response body that gives its connection back to the pool
/// when it has been read through (no task per request for that). A body
/// dropped before its end takes the connection with it: what is left of
/// it on the wire would otherwise be read as the next response.
pub(super) struct Returning {
    body: Incoming,
    back: Option<PoolReturn>,
}

/// A server connection on its way back to the pool, holding its place in
/// the server's active count until then.
pub(super) struct PoolReturn {
    /// An HTTP/1.1 connection to put back; h2 ones stay shared meanwhile.
    pub(super) sender: Option<hyper::client::conn::http1::SendRequest<Upload>>,
    pub(super) state: Arc<crate::model::backend::ServerState>,
    pub(super) tls: u64,
    pub(super) active: ActiveGuard,
}

impl PoolReturn {
    pub(super) fn put(self) {
        let PoolReturn {
            sender,
            state,
            tls,
            active,
        } = self;
        let Some(sender) = sender else {
            return;
        };
        let Some(idle) = idle_of(&state) else {
            return;
        };
        if sender.is_ready() {
            idle.put(tls, sender);
            drop(active);
            return;
        }
        // The connection's own task has not yet seen the end of the
        // exchange: wait for it to become ready (or closed).
        let mut sender = sender;
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                if let Some(idle) = idle_of(&state) {
                    idle.put(tls, sender);
                }
            }
            drop(active);
        });
    }
}

impl Returning {
    pub(super) fn new(body: Incoming, back: Option<PoolReturn>) -> Self {
        Returning { body, back }
    }
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => this.back.take().map_or((), PoolReturn::put),
            std::task::Poll::Ready(Some(Err(_))) => this.back = None,
            std::task::Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => {
                this.back.take().map_or((), PoolReturn::put)
            }
            _ => {}
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

impl Drop for Returning {
    fn drop(&mut self) {
        // A body with nothing in it (204, HEAD, an empty 200) is never
        // polled: it has been read through all the same.
        if hyper::body::Body::is_end_stream(&self.body) {
            if let Some(back) = self.back.take() {
                back.put();
            }
        }
    }
}

/// Most idle HTTP connections kept per server: enough for every request a
/// busy h2 client multiplexes to find a connection again, so that load
/// does not turn into a new server connection per request.
pub(super) const MAX_IDLE: usize = 1024;

/// Idle keep-alive connections to one server, oldest first. Each is tagged
/// with the TLS identity it was opened with (0 for plaintext), so a
/// connection verified for one backend is never used under another
/// identity after a reload changed it.
///
/// A server that chose h2 (re-encrypt, by ALPN) needs one connection for
/// all requests: it is kept beside the idle ones and shared.
#[derive(Debug, Default)]
pub(super) struct IdleHttp {
    slots: std::sync::Mutex<std::collections::VecDeque<IdleSender>>,
    shared: std::sync::Mutex<Option<SharedH2>>,
}

/// An h2 server connection, multiplexed by every request to its server.
pub(super) type H2Sender = hyper::client::conn::http2::SendRequest<Upload>;

#[derive(Debug)]
pub(super) struct SharedH2 {
    pub(super) tls: u64,
    pub(super) sender: H2Sender,
}

#[derive(Debug)]
pub(super) struct IdleSender {
    pub(super) tls: u64,
    pub(super) since: std::time::Instant,
    pub(super) sender: hyper::client::conn::http1::SendRequest<Upload>,
}

impl IdleSender {
    pub(super) fn usable(&self, tls: u64, max_idle: Duration) -> bool {
        self.tls == tls && self.since.elapsed() < max_idle && self.sender.is_ready()
    }
}

impl IdleHttp {
    /// The newest idle connection opened with `tls` and idle for less than
    /// `max_idle` (the warmest one). Connections idle too long are dropped
    /// from the old end first, so they do not linger under newer ones;
    /// unusable ones met on the way are dropped too.
    pub(super) fn take(
        &self,
        tls: u64,
        max_idle: Duration,
    ) -> Option<hyper::client::conn::http1::SendRequest<Upload>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        while slots
            .front()
            .is_some_and(|oldest| oldest.since.elapsed() >= max_idle)
        {
            slots.pop_front();
        }
        while let Some(idle) = slots.pop_back() {
            if idle.usable(tls, max_idle) {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Keeps `sender` for a later request (the oldest goes when full).
    pub(super) fn put(&self, tls: u64, sender: hyper::client::conn::http1::SendRequest<Upload>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= MAX_IDLE {
            slots.pop_front();
        }
        slots.push_back(IdleSender {
            tls,
            since: std::time::Instant::now(),
            sender,
        });
    }

    /// The shared h2 connection opened with `tls`, if it is still open.
    pub(super) fn shared_h2(&self, tls: u64) -> Option<H2Sender> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match &*shared {
            Some(h2) if h2.tls == tls && h2.sender.is_ready() => Some(h2.sender.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

    /// Shares `sender` with the requests that follow.
    pub(super) fn share_h2(&self, tls: u64, sender: H2Sender) {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        *shared = Some(SharedH2 { tls, sender });
    }
}

/// The idle connections kept for `state`'s server.
pub(super) fn idle_of(state: &ServerState) -> Option<&IdleHttp> {
    let idle = state.attached::<IdleHttp>();
    // The pool is the one thing attached to a server: `None` would mean
    // a connection per request, silently.
    debug_assert!(idle.is_some(), "a server's slot holds another type");
    idle
}
