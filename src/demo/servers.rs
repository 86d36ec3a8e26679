//! The demo's own TLS servers, on loopback ports the system picks: an echo
//! server and small web servers that say which of them answered. They stand
//! in for the pods an ingress routes to.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest request head the web server reads.
const MAX_HEAD: usize = 16 * 1024;

/// Starts a TLS echo server; returns its address.
pub async fn echo(config: Arc<rustls::ServerConfig>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Starts a TLS web server named `name`; returns its address.
pub async fn web(
    config: Arc<rustls::ServerConfig>,
    name: &'static str,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = serve_http(tls, name, "TLS", peer).await;
                }
            });
        }
    });
    Ok(addr)
}

/// Starts a plaintext web server named `name` (behind an edge route).
pub async fn web_plain(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            tokio::spawn(serve_http(tcp, name, "plaintext", peer));
        }
    });
    Ok(addr)
}

/// Answers HTTP/1.1 requests on one connection until the client closes.
async fn serve_http<S>(
    mut stream: S,
    name: &'static str,
    carried: &'static str,
    peer: SocketAddr,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let received = String::from_utf8_lossy(&buf[..end]).into_owned();
        let close = received
            .to_ascii_lowercase()
            .contains("\r\nconnection: close");
        buf.drain(..end);
        // The request as it arrived, so the forwarded headers and the
        // sticky cookie the router added can be seen.
        let body = format!(
            "Hello from {name}: this request reached me over {carried}, from {peer}.\n\
             It arrived as:\n\n{}",
            received.replace("\r\n", "\n")
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-served-by: {name}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        stream.write_all(response.as_bytes()).await?;
        if close {
            return stream.shutdown().await;
        }
    }
}

/// Reads until a blank line ends a request head; returns its length, or
/// `None` when the client closed.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(pos + 4));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
