//! Certificates for the demo, made at start: a private CA and one server
//! certificate for `*.demo.test`, written out so that `curl --cacert` can
//! verify what the demo servers present.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A demo CA and a server certificate it signed.
pub struct DemoCerts {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivatePkcs8KeyDer<'static>,
}

impl DemoCerts {
    pub fn generate(names: &[&str]) -> Result<Self, rcgen::Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard demo CA");
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "demo.test");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok(DemoCerts {
            ca_pem: ca.pem(),
            server_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
            server_chain: vec![cert.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// A rustls server configuration presenting the server certificate.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, rustls::Error> {
        let key = PrivateKeyDer::Pkcs8(self.server_key.clone_key());
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}
