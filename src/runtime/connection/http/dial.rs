//! New connections to servers in HTTP mode: TCP, then TLS verified
//! against `verify_host` for re-encrypt, then the HTTP/1.1 or h2
//! handshake; every way it fails is a typed [`DialError`].

use std::net::SocketAddr;

use hyper::header::{self, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::conn::Conn;
use super::pool::H2Sender;
use super::upload::Upload;
use super::{H2_PING_INTERVAL, H2_PING_TIMEOUT};
use crate::model::backend::Backend;
use crate::runtime::connection::connect::connect_one;
use crate::runtime::descriptors::is_local_failure;

/// Why a new connection to a server could not be had. The request has
/// not reached the server: another may be tried.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    #[error("{0}")]
    Refused(std::io::Error),
    #[error("{0}")]
    TimedOut(std::io::Error),
    /// The router's own shortage (descriptors, memory): not the server's.
    #[error("{0}")]
    Local(std::io::Error),
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("TLS handshake with the server timed out")]
    TlsTimeout,
    /// Verification or the handshake failed: the names the certificate
    /// is valid for and the name expected, when they differ.
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Handshake(hyper::Error),
}

impl DialError {
    fn from_connect(e: std::io::Error) -> Self {
        match e.kind() {
            _ if is_local_failure(&e) => DialError::Local(e),
            std::io::ErrorKind::ConnectionRefused => DialError::Refused(e),
            std::io::ErrorKind::TimedOut => DialError::TimedOut(e),
            _ => DialError::Connect(e),
        }
    }
}

impl Conn {
    /// A new HTTP/1.1 connection to a server: plaintext for edge, TLS
    /// verified against `verify_host` for re-encrypt.
    pub(super) async fn open(
        &self,
        backend: &Backend,
        addr: SocketAddr,
        may_h2: bool,
    ) -> Result<Sender, DialError> {
        let tcp = connect_one(addr, backend.timeouts.connect)
            .await
            .map_err(DialError::from_connect)?;
        let Some(upstream) = backend.upstream() else {
            return handshake(tcp, false).await;
        };
        let offer = if may_h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let config = upstream.config(&offer);
        let connecting = TlsConnector::from(config).connect(upstream.verify_host.clone(), tcp);
        let tls = tokio::time::timeout(backend.timeouts.connect, connecting)
            .await
            .map_err(|_| DialError::TlsTimeout)?
            .map_err(|e| DialError::Tls(crate::tls::upstream::describe_failure(addr, &e)))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        handshake(tls, h2).await
    }
}

/// A connection to a server: HTTP/1.1 (one request at a time, pooled when
/// idle), or h2 when a re-encrypt server chose it (shared by all).
pub(super) enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Upload>),
    H2(H2Sender),
}

impl Sender {
    /// Puts `req` in the form this connection speaks: HTTP/1.1 with an
    /// origin-form target, or h2 with `:scheme` and `:authority` (the host
    /// the request was routed by).
    pub(super) fn fit(&self, req: &mut Request<Upload>, host: &str, trailers: bool) {
        match self {
            Sender::H2(_) if trailers => {
                req.headers_mut()
                    .insert(header::TE, HeaderValue::from_static("trailers"));
            }
            _ => {
                req.headers_mut().remove(header::TE);
            }
        }
        let path = super::headers::origin_form(req.uri());
        let target = match self {
            Sender::H1(_) if req.uri().authority().is_none() => None,
            Sender::H1(_) => Some(path),
            Sender::H2(_) => Some(format!("https://{host}{path}")),
        };
        *req.version_mut() = match self {
            Sender::H1(_) => hyper::Version::HTTP_11,
            Sender::H2(_) => hyper::Version::HTTP_2,
        };
        if let Some(uri) = target.and_then(|t| t.parse::<Uri>().ok()) {
            *req.uri_mut() = uri;
        }
    }
}

/// The HTTP handshake on a connected (and, for re-encrypt, verified)
/// stream; the connection's own task is spawned to drive it.
pub(super) async fn handshake<S>(stream: S, h2: bool) -> Result<Sender, DialError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            // A shared connection is found dead while idle too, not by the
            // requests that would wait on it.
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(DialError::Handshake)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        return Ok(Sender::H2(sender));
    }
    // The read buffer bounds what one read from the server takes (each
    // read is a response chunk on its way to the client): hyper's default
    // grows to about 400 KiB, which a client that stops reading would
    // hold for as long as it stalls.
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(super::MAX_BUF)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(DialError::Handshake)?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(Sender::H1(sender))
}
