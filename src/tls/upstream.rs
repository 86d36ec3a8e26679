//! TLS towards servers of re-encrypt backends. The name sent as SNI and
//! verified is the backend's `verify_host`, never the address dialed: pods
//! are IP addresses and their certificates carry DNS names only. A failed
//! verification is described with the names the certificate holds.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

/// How a re-encrypt backend opens TLS to its servers.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// The name sent as SNI and checked against the server's certificate.
    pub(crate) verify_host: ServerName<'static>,
    /// Base configuration; ALPN is set per connection from the client's offer.
    config: Arc<ClientConfig>,
    /// Hash of what the configuration was built from (name, verification,
    /// CA and client certificate files): equal means the same TLS.
    pub(crate) fingerprint: u64,
}

/// Certificate checking of a re-encrypt backend.
pub(crate) enum Verify<'a> {
    /// Against the CA bundle at this path.
    CaFile(&'a Path),
    /// Not at all (`verify = "none"`, written explicitly).
    None,
}

impl Upstream {
    pub(crate) fn new(
        verify_host: &str,
        verify: Verify<'_>,
        client_certificate: Option<&Path>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Self, String> {
        let name = ServerName::try_from(verify_host.to_string())
            .map_err(|_| format!("verify_host `{verify_host}` is not a valid server name"))?;
        let provider = super::provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?;
        // Each file is read once: what is used and what is fingerprinted
        // are the same bytes.
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let mut h = std::hash::DefaultHasher::new();
        verify_host.hash(&mut h);
        // TLS 1.3 only or not: a pooled connection must not outlive that.
        versions.len().hash(&mut h);
        let builder = match verify {
            Verify::CaFile(path) => {
                let bytes = read(path)?;
                bytes.hash(&mut h);
                builder.with_root_certificates(super::certs::roots_from_pem(&bytes, path)?)
            }
            Verify::None => {
                "none".hash(&mut h);
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            }
        };
        let config = match client_certificate {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let bytes = read(path)?;
                bytes.hash(&mut h);
                let (key, _) = super::certs::load_pem_bytes(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let private = rustls::pki_types::PrivateKeyDer::from_pem_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                builder
                    .with_client_auth_cert(key.cert.clone(), private)
                    .map_err(|e| format!("client certificate {}: {e}", path.display()))?
            }
        };
        Ok(Upstream {
            verify_host: name,
            config: Arc::new(config),
            fingerprint: h.finish(),
        })
    }

    /// The configuration for one connection, offering `alpn` upstream.
    pub(crate) fn config(&self, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        if alpn.is_empty() {
            return Arc::clone(&self.config);
        }
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn.to_vec();
        Arc::new(config)
    }
}

/// A log line for a failed upstream handshake: for a name mismatch, the
/// names the certificate is valid for and the name expected.
pub(crate) fn describe_failure(server: SocketAddr, error: &std::io::Error) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            presented,
        })) => {
            let names: Vec<&str> = presented.iter().map(|p| bare_name(p)).collect();
            format!(
                "certificate for {server} is valid for {}; expected {}",
                names.join(", "),
                expected.to_str()
            )
        }
        Some(e) => format!("TLS to {server} failed: {e}"),
        None => format!("TLS to {server} failed: {error}"),
    }
}

/// A client that completes a handshake with any certificate: for health
/// checks of backends that do not verify (passthrough servers).
pub(crate) fn unverified() -> Arc<ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let provider = super::provider();
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            })
            .map(|b| b.with_no_client_auth());
        Arc::new(config.unwrap_or_else(|_| {
            ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }))
    }))
}

/// `goldmane` out of rustls' `DnsName("goldmane")` (IP names likewise).
fn bare_name(presented: &str) -> &str {
    match presented.split_once('(') {
        Some((_, inner)) => inner.trim_end_matches(')').trim_matches('"'),
        None => presented,
    }
}

/// Whether a failed handshake was a certificate verification failure.
pub(crate) fn is_verify_failure(error: &std::io::Error) -> bool {
    matches!(
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

/// `verify = "none"`: accepts any certificate, still checks handshake
/// signatures so the session is bound to the presented key.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
