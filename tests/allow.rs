//! Per-backend allow lists (`allow`, OpenShift's `ip_whitelist`), through
//! real sockets: a passthrough client outside the list is closed before
//! any server is dialed, an HTTP-mode request gets 403, both are counted;
//! the client a PROXY header names is the one checked.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn denied(router: &switchyard::Router, backend: &str) -> u64 {
    let snapshot = router.snapshot();
    let b = snapshot
        .backends
        .iter()
        .find(|b| b.name == backend)
        .expect("backend");
    b.traffic.denied.load(Ordering::Relaxed)
}

#[tokio::test]
async fn clients_outside_the_allow_list_are_refused_before_dialing() {
    let front = Pki::new();
    let inner = Pki::new();
    let mut server = named_server("pass", inner.server_config(&["pass.allow.test"])).await;
    let web = http_ok_server().await;
    let dir = ConfigDir::new();
    dir.write("certs/default.pem", &front.pem(&["*.allow.test"]));
    dir.write(
        "maps/os_sni_passthrough.map",
        &format!("{} 1\n", route_regex("pass.allow.test")),
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:a:pass\n", route_regex("pass.allow.test")),
    );
    dir.write(
        "maps/os_edge_reencrypt_be.map",
        &format!("{} be_edge_http:a:web\n", route_regex("web.allow.test")),
    );
    let extra = format!(
        "edge_reencrypt_be = \"maps/os_edge_reencrypt_be.map\"\n\n\
         [tls]\ndefault_certificate = \"certs/default.pem\"\n\n\
         [[backend]]\nname = \"be_tcp:a:pass\"\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n\
         servers = [{{ name = \"p\", address = \"{}\" }}]\n\n\
         [[backend]]\nname = \"be_edge_http:a:web\"\ntermination = \"edge\"\nallow = [\"10.0.0.0/8\"]\n\
         servers = [{{ name = \"w\", address = \"{}\" }}]\n",
        server.addr, web
    );
    let config = dir.main(
        "accept_proxy = true\nproxy_from = [\"127.0.0.1\"]\n",
        &extra,
    );
    let (router, addr) = start(&config);
    let trust_any = {
        let mut c = (*front.client_config()).clone();
        c.dangerous().set_certificate_verifier(Arc::new(AcceptAny));
        Arc::new(c)
    };
    let connect = |header: &'static [u8], sni: &'static str, config: Arc<rustls::ClientConfig>| async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(header).await.expect("header");
        let name = ServerName::try_from(sni).expect("name");
        tokio::time::timeout(
            WAIT,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .expect("in time")
    };
    // Passthrough: 203.0.113.7 is refused, the server never sees it.
    let refused = connect(
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1 443\r\n",
        "pass.allow.test",
        Arc::clone(&trust_any),
    )
    .await;
    assert!(refused.is_err(), "no handshake with the server");
    assert!(
        server.wires.try_recv().is_err(),
        "the server was never dialed"
    );
    assert_eq!(denied(&router, "be_tcp:a:pass"), 1);
    // 10.1.2.3 is in the list.
    let mut tls = connect(
        b"PROXY TCP4 10.1.2.3 127.0.0.1 1 443\r\n",
        "pass.allow.test",
        Arc::clone(&trust_any),
    )
    .await
    .expect("allowed");
    let mut greeting = [0u8; 5];
    tls.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"pass\n");

    // HTTP mode: 403 per request, nothing forwarded.
    let mut http = (*front.client_config()).clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http = Arc::new(http);
    for (header, status) in [
        (&b"PROXY TCP4 203.0.113.7 127.0.0.1 1 443\r\n"[..], "403"),
        (&b"PROXY TCP4 10.9.9.9 127.0.0.1 1 443\r\n"[..], "200"),
    ] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(header).await.expect("header");
        let name = ServerName::try_from("web.allow.test").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&http))
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: web.allow.test\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }
    assert_eq!(denied(&router, "be_edge_http:a:web"), 1);
}
