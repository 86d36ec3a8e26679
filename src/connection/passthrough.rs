//! Passthrough: connect a server, replay the ClientHello bytes read during
//! the preread, then relay the raw bytes both ways.

use tokio::net::TcpStream;

use super::{connect, Ctx};
use crate::access_log::AccessLog;
use crate::relay::{self, Deadlines};

pub(super) async fn run(client: TcpStream, hello: Vec<u8>, ctx: Ctx<'_>, log: &mut AccessLog) {
    let Some((server, _active)) = connect(ctx.backend, ctx.peer, log).await else {
        return;
    };
    if let Err(e) = relay::write_all(&server, &hello).await {
        log.end("server", &format!("write failed: {e}"));
        return;
    }
    log.forwarded(hello.len() as u64);
    drop(hello);
    let deadlines = Deadlines {
        first_response: ctx.backend.timeouts.server,
        idle: ctx.backend.timeouts.tunnel,
    };
    let outcome = relay::relay(&client, &server, deadlines, ctx.removed).await;
    log.relayed(&outcome);
}
