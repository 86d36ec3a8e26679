//! TLS termination (edge and re-encrypt): the certificates served by SNI,
//! the per-listener server settings (versions, client certificates,
//! session resumption), and the client side towards re-encrypt servers.
//! Built by `config` into the snapshot; used by `connection::terminate`.

pub mod certs;
pub mod upstream;
pub mod x509;

use std::sync::{Arc, OnceLock};

use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

pub use certs::{CertStore, Served};

/// The crypto provider for every TLS session Switchyard makes: aws-lc-rs
/// (the fastest that builds here: ECDSA signing for handshakes, AES-GCM).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// Client certificates asked of clients on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

/// TLS versions from a minimum.
pub fn versions(min_tls13: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    if min_tls13 {
        &TLS13_ONLY
    } else {
        rustls::DEFAULT_VERSIONS
    }
}

/// How one listener terminates TLS.
#[derive(Debug)]
pub struct ServerSide {
    /// Versions, client verifier, tickets and session cache; the certificate
    /// and ALPN are set per connection.
    base: Arc<ServerConfig>,
    pub certs: Arc<CertStore>,
    /// Refuse the handshake when no certificate matches the SNI.
    pub strict_sni: bool,
}

impl ServerSide {
    pub fn new(
        certs: Arc<CertStore>,
        strict_sni: bool,
        client_auth: ClientAuth,
        client_ca: Option<rustls::RootCertStore>,
        min_tls13: bool,
    ) -> Result<Self, String> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions(min_tls13))
            .map_err(|e| e.to_string())?;
        let builder = match (client_auth, client_ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => return Err("client_auth needs client_ca".into()),
            (auth, Some(roots)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(Fixed(None)));
        config.session_storage = Arc::clone(session_cache());
        if let Some(ticketer) = ticketer() {
            config.ticketer = ticketer;
        }
        Ok(ServerSide {
            base: Arc::new(config),
            certs,
            strict_sni,
        })
    }

    /// The certificate for `sni`: its own, else the default unless strict.
    pub fn certificate(&self, sni: Option<&str>) -> Option<&Arc<Served>> {
        match self.certs.find(sni) {
            Some(c) => Some(c),
            None if self.strict_sni && sni.is_some() => None,
            None => self.certs.default.as_ref(),
        }
    }

    /// A configuration presenting `cert` and offering `alpn`.
    pub fn config(&self, cert: &Served, alpn: Vec<Vec<u8>>) -> Arc<ServerConfig> {
        let mut config = (*self.base).clone();
        config.cert_resolver = Arc::new(Fixed(Some(Arc::clone(&cert.key))));
        config.alpn_protocols = alpn;
        Arc::new(config)
    }
}

/// Presents one certificate (chosen before the handshake proceeds).
#[derive(Debug)]
struct Fixed(Option<Arc<CertifiedKey>>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }
}

/// Session tickets: one key schedule for the whole process, so returning
/// clients resume across reloads.
fn ticketer() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static TICKETER: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    TICKETER
        .get_or_init(|| rustls::crypto::aws_lc_rs::Ticketer::new().ok())
        .clone()
}

/// Stateful resumption for clients that do not use tickets.
fn session_cache() -> &'static Arc<dyn rustls::server::StoresServerSessions> {
    static CACHE: OnceLock<Arc<dyn rustls::server::StoresServerSessions>> = OnceLock::new();
    CACHE.get_or_init(|| ServerSessionMemoryCache::new(20_000))
}
