//! HTTP/1.1 upgrades (WebSocket): what a request asks to upgrade to, the
//! tunnel a server's 101 turns the connection into, and the tunnels the
//! connection waits for before it ends.
//!
//! The client's side of a tunnel is handed over by the connection's task
//! ([`super::h1`]) once hyper has written the 101 and let go of the stream,
//! with the bytes hyper had read past the request.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, Version};
use hyper_util::rt::TokioIo;

use super::conn::Conn;
use super::dial::Sender;
use crate::model::backend::{ActiveGuard, Backend, Server};
use crate::runtime::relay::{relay_streams, Deadlines};

impl Conn {
    /// Turns the server's 101 into a tunnel between the two upgraded
    /// streams, under the backend's tunnel timeout. The tunnel keeps the
    /// server's place and connection, and the client connection waits
    /// for it (so it keeps its slot, and drain waits for it too).
    pub(super) fn tunnel(
        &self,
        response: &mut Response<Incoming>,
        (backend, server): (&Backend, &Server),
        held: (Sender, ActiveGuard),
    ) {
        let server_side = hyper::upgrade::on(response);
        let (handover, client_side) = tokio::sync::oneshot::channel();
        if let Ok(mut waiting) = self.upgraded.lock() {
            *waiting = Some(handover);
        }
        // The tunnel's bytes are counted for the backend and server when
        // it ends, as a passthrough connection's are.
        let counted = (Arc::clone(&backend.traffic), Arc::clone(&server.state));
        let deadlines = Deadlines {
            first_response: backend.timeouts.tunnel,
            idle: backend.timeouts.tunnel,
        };
        let tunnel = tokio::spawn(async move {
            let _held = held;
            let (Ok(client), Ok(server)) = tokio::join!(client_side, server_side) else {
                return (0, 0);
            };
            let server = TokioIo::new(server);
            let outcome = relay_streams(client, server, deadlines, None).await;
            let (up, down) = (outcome.client_to_server, outcome.server_to_client);
            counted.0.add_bytes(up, down);
            counted.1.traffic.add_bytes(up, down);
            (up, down)
        });
        if let Ok(mut tunnels) = self.tunnels.lock() {
            tunnels.push(tunnel);
        }
    }

    /// Waits for the tunnels this connection's upgrades became.
    pub(super) async fn join_tunnels(&self) {
        let tunnels: Vec<_> = self
            .tunnels
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for tunnel in tunnels {
            if let Ok((up, down)) = tunnel.await {
                self.moved.add(up, down);
                self.frontend.add_bytes(up, down);
            }
        }
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection:
/// upgrade` and `Upgrade`), unless it is h2c: cleartext h2 would slip past
/// routing and header policy. Only HTTP/1.1 has upgrades (h2 and
/// HTTP/1.0 requests never do).
pub(super) fn upgrade_of<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let headers: &HeaderMap = req.headers();
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    let h2c = protocol
        .to_str()
        .map_or(true, |p| p.to_ascii_lowercase().contains("h2c"));
    (asked && !h2c).then(|| protocol.clone())
}
