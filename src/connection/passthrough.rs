//! Passthrough: connect a server, replay the ClientHello bytes read during
//! the preread (bounded by the server timeout), then relay the raw bytes
//! both ways.

use tokio::net::TcpStream;

use super::{connect, Ctx, Preread};
use crate::access_log::AccessLog;
use crate::relay::{self, Deadlines};

pub(super) async fn run(client: TcpStream, hello: Preread, ctx: Ctx<'_>, log: &mut AccessLog) {
    let Some((server, _active)) = connect(ctx.backend, ctx.peer, &client, log).await else {
        return;
    };
    // A server that never reads must not hold the connection forever:
    // the replay gets the same deadline as the server's first answer.
    let limit = ctx.backend.timeouts.server;
    match tokio::time::timeout(limit, relay::write_all(&server, &hello.bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return log.end("server", &format!("write failed: {e}")),
        Err(_) => {
            let why = format!("server timeout: the ClientHello was not taken within {limit:?}");
            return log.fail("switchyard", &why);
        }
    }
    log.forwarded(hello.bytes.len() as u64);
    // Handed on: the buffer and its share of the budget go.
    drop(hello);
    let deadlines = Deadlines {
        first_response: ctx.backend.timeouts.server,
        idle: ctx.backend.timeouts.tunnel,
    };
    let outcome = relay::relay(&client, &server, deadlines, ctx.removed).await;
    log.relayed(&outcome);
}
