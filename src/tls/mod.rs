//! TLS termination (edge and re-encrypt): the certificates served by SNI,
//! the per-listener server settings (versions, client certificates and
//! their revocation, session resumption), and the client side towards
//! re-encrypt servers. Built by `config` into the snapshot; used by
//! `connection::terminate`.
//!
//! Resumption never skips client authentication: rustls resumes a session
//! after checking only its suite, EMS and SNI, so session tickets and the
//! session cache are scoped to one listener and one client-auth policy
//! (mode, CA bundle and CRLs, byte for byte). They are carried from the
//! listener's previous snapshot: a reload that keeps the policy keeps them
//! (clients resume across reloads); one that changes it rotates them, so
//! no session made under the old policy resumes. A load that is refused
//! changes nothing.

pub(crate) mod certs;
pub(crate) mod upstream;
pub(crate) mod x509;

use std::sync::{Arc, OnceLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig};

pub(crate) use certs::{CertStore, Served};

/// The crypto provider for every TLS session Switchyard makes: aws-lc-rs
/// (the fastest that builds here: ECDSA signing for handshakes, AES-GCM).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// Client certificates asked of clients on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    None,
    Optional,
    Required,
}

/// TLS versions from a minimum.
pub(crate) fn versions(min_tls13: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    if min_tls13 {
        &TLS13_ONLY
    } else {
        rustls::DEFAULT_VERSIONS
    }
}

/// Who may connect to a listener: its client-certificate settings.
pub(crate) struct ClientPolicy {
    pub(crate) auth: ClientAuth,
    /// Trusted issuers of client certificates (required unless `None`).
    pub(crate) roots: Option<rustls::RootCertStore>,
    /// Revocation lists; a client certificate must be covered by one.
    pub(crate) crls: Vec<CertificateRevocationListDer<'static>>,
    /// The policy as bytes (mode, CA and CRL files): sessions made under
    /// one policy never resume under another.
    pub(crate) fingerprint: Vec<u8>,
}

impl ClientPolicy {}

/// How one listener terminates TLS.
#[derive(Debug)]
pub(crate) struct ServerSide {
    /// Versions, client verifier, tickets and session cache; the certificate
    /// and ALPN are set per connection.
    base: Arc<ServerConfig>,
    pub(crate) certs: Arc<CertStore>,
    /// Refuse the handshake when no certificate matches the SNI.
    pub(crate) strict_sni: bool,
    /// Ticket keys and session cache, scoped to this listener and policy.
    resumption: Resumption,
}

impl ServerSide {
    /// The settings of listener `listener`; `previous` is the same
    /// listener's in the snapshot being replaced, whose resumption state is
    /// kept if the client-auth policy did not change.
    pub(crate) fn new(
        listener: &str,
        certs: Arc<CertStore>,
        strict_sni: bool,
        policy: ClientPolicy,
        min_tls13: bool,
        previous: Option<&ServerSide>,
    ) -> Result<Self, String> {
        let resumption = Resumption::for_policy(
            listener,
            &policy.fingerprint,
            previous.map(|p| &p.resumption),
        );
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions(min_tls13))
            .map_err(|e| e.to_string())?;
        let builder = match (policy.auth, policy.roots) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => return Err("client_auth needs client_ca".into()),
            (auth, Some(roots)) => {
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if !policy.crls.is_empty() {
                    // Every certificate of the client's chain must be
                    // covered by an unexpired CRL of its issuer, as HAProxy's
                    // crl-file does (OpenSSL CRL_CHECK | CRL_CHECK_ALL).
                    verifier = verifier
                        .with_crls(policy.crls)
                        .enforce_revocation_expiration();
                }
                if auth == ClientAuth::Optional {
                    verifier = verifier.allow_unauthenticated();
                }
                let inner = verifier.build().map_err(|e| e.to_string())?;
                builder.with_client_cert_verifier(Arc::new(Logged {
                    inner,
                    listener: listener.to_string(),
                }))
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(Fixed(None)));
        config.session_storage = Arc::clone(&resumption.cache);
        if let Some(ticketer) = &resumption.ticketer {
            config.ticketer = Arc::clone(ticketer);
        }
        Ok(ServerSide {
            base: Arc::new(config),
            certs,
            strict_sni,
            resumption,
        })
    }

    /// The certificate for `sni`: its own, else the default unless strict.
    pub(crate) fn certificate(&self, sni: Option<&str>) -> Option<&Arc<Served>> {
        match self.certs.find(sni) {
            Some(c) => Some(c),
            None if self.strict_sni && sni.is_some() => None,
            None => self.certs.default.as_ref(),
        }
    }

    /// A configuration presenting `cert` and offering `alpn`.
    pub(crate) fn config(&self, cert: &Served, alpn: Vec<Vec<u8>>) -> Arc<ServerConfig> {
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

/// Resumption state of one listener under one client-auth policy: carried
/// from the listener's previous snapshot while the policy is the same.
#[derive(Debug, Clone)]
struct Resumption {
    policy: Vec<u8>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
    cache: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    /// The previous listener's state if its policy is `policy`, else new
    /// ticket keys and an empty cache.
    fn for_policy(listener: &str, policy: &[u8], previous: Option<&Resumption>) -> Self {
        if let Some(p) = previous.filter(|p| p.policy == policy) {
            return p.clone();
        }
        if previous.is_some() {
            tracing::info!(
                listener,
                "client-auth policy changed: session tickets and cache rotated"
            );
        }
        Resumption {
            policy: policy.to_vec(),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new().ok(),
            cache: ServerSessionMemoryCache::new(20_000),
        }
    }
}

/// The web PKI client verifier, logging revoked certificates with their
/// serial number (rustls reports only "revoked").
#[derive(Debug)]
struct Logged {
    inner: Arc<dyn ClientCertVerifier>,
    listener: String,
}

impl ClientCertVerifier for Logged {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(rustls::Error::InvalidCertificate(why)) = &verified {
            let serial = x509::serial(end_entity).map_or("?".into(), x509::hex);
            match why {
                CertificateError::Revoked => tracing::warn!(
                    listener = %self.listener,
                    serial = %serial,
                    "client certificate revoked"
                ),
                other => tracing::info!(
                    listener = %self.listener,
                    serial = %serial,
                    "client certificate refused: {other:?}"
                ),
            }
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
