//! Passthrough: connect a server and replay the ClientHello bytes read
//! during the preread (bounded by the server timeout), after asking the
//! server for SSL as a PostgreSQL client asked the router. The relay of the
//! raw bytes both ways that follows is run by `handle`, outside the boxed
//! setup, so a long-lived connection holds only what the relay needs.

use tokio::net::TcpStream;

use super::admit::Places;
use super::connect::connect;
use super::preread::Preread;
use super::{Ctx, Held};
use crate::runtime::access_log::AccessLog;
use crate::runtime::relay::{self, Deadlines};

pub(super) async fn open(
    client: TcpStream,
    hello: Preread,
    ctx: Ctx<'_>,
    places: Places,
    log: &mut AccessLog,
) -> Option<(relay::Relay, Held)> {
    let (mut server, active) = connect(ctx.backend, ctx.peer, &client, log).await?;
    // A server that never reads must not hold the connection forever:
    // the replay gets the same deadline as the server's first answer.
    let limit = ctx.backend.timeouts.server;
    if log.is_postgres() {
        // The server is asked for SSL as its client asked the router.
        // Boxed: rare, and kept out of every connection's future.
        if let Err(why) = Box::pin(super::postgres::ask_server(&mut server, limit)).await {
            tracing::warn!(backend = %ctx.backend.name, client = %ctx.peer, "{why}");
            log.fail("server", &why);
            return None;
        }
    }
    match tokio::time::timeout(limit, relay::write_all(&server, &hello.bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log.end("server", &format!("write failed: {e}"));
            return None;
        }
        Err(_) => {
            let why = format!("server timeout: the ClientHello was not taken within {limit:?}");
            log.fail("switchyard", &why);
            return None;
        }
    }
    log.forwarded(hello.bytes.len() as u64);
    // Handed on: the buffer and its share of the budget go.
    drop(hello);
    let deadlines = Deadlines {
        first_response: ctx.backend.timeouts.server,
        idle: ctx.backend.timeouts.tunnel,
    };
    let relay = relay::relay(client, server, deadlines, ctx.copying, ctx.removed);
    Some((relay, (active, places)))
}
