//! Certificates served by termination: PEM files holding a chain and its
//! key (PKCS#8, SEC1 or PKCS#1), the crt-list (`cert_config.map`) that says
//! which SNIs each serves, and the lookup from an SNI to its certificate
//! (exact name, then `*.domain` of one label, then the default).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::x509;

/// A certificate with what termination needs to serve it.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) key: Arc<CertifiedKey>,
    /// ALPN protocols to offer with this certificate (crt-list `[alpn …]`).
    pub(crate) alpn: Vec<Vec<u8>>,
    pub(crate) path: PathBuf,
    /// Expiry of the leaf, Unix seconds.
    pub(crate) not_after: Option<i64>,
}

impl Served {
    /// Whether the leaf certificate is valid for `host` (a DNS name), by
    /// its subject alternative names and their wildcards, as a client
    /// verifying it would judge.
    pub(crate) fn covers(&self, host: &str) -> bool {
        let (Ok(der), Ok(name)) = (
            self.key.end_entity_cert(),
            rustls::pki_types::ServerName::try_from(host),
        ) else {
            return false;
        };
        webpki::EndEntityCert::try_from(der)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
    }
}

/// Like `load_pem`, with the key in its own file when `key` is given (as in
/// a Kubernetes TLS Secret: `tls.crt` and `tls.key`).
pub(crate) fn load_pem_pair(
    path: &Path,
    key: Option<&Path>,
) -> Result<(Arc<CertifiedKey>, Option<i64>), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut text = read(path)?;
    if let Some(key) = key {
        text.push(b'\n');
        text.extend_from_slice(&read(key)?);
    }
    load_pem_bytes(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn load_pem_bytes(pem: &[u8]) -> Result<(Arc<CertifiedKey>, Option<i64>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM certificate: {e}"))?;
    let leaf = chain
        .first()
        .ok_or("no certificate (expected a chain, leaf first, and its key)")?;
    let not_after = x509::not_after(leaf);
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("no usable private key (PKCS#8, SEC1 or RSA PEM): {e}"))?;
    let provider = super::provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| "the private key does not match the certificate".to_string())?;
    Ok((Arc::new(certified), not_after))
}

/// CA certificates (a `ca_file` or `client_ca`) from the bytes of a PEM
/// bundle read from `path`. The caller reads the file once, so what is
/// trusted and what is fingerprinted are the same bytes.
pub(crate) fn roots_from_pem(bytes: &[u8], path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bytes) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(roots)
}

/// One crt-list line: `<pem path> [alpn h2,http/1.1] <sni filter>…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrtLine {
    pub(crate) path: String,
    pub(crate) alpn: Vec<String>,
    /// Exact names or `*.domain` wildcards, lowercased.
    pub(crate) filters: Vec<String>,
}

/// Parses one non-comment crt-list line.
pub(crate) fn parse_crt_line(line: &str) -> Result<CrtLine, String> {
    let line = line.trim();
    let (path, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let mut rest = rest.trim();
    let mut alpn = Vec::new();
    if let Some(after) = rest.strip_prefix('[') {
        let (options, tail) = after
            .split_once(']')
            .ok_or("`[` options without a closing `]`")?;
        for option in options.split_whitespace().collect::<Vec<_>>().chunks(2) {
            match option {
                ["alpn", list] => alpn = list.split(',').map(str::to_string).collect(),
                other => {
                    return Err(format!(
                        "unsupported crt-list option `{}`: only `alpn` is",
                        other.join(" ")
                    ))
                }
            }
        }
        rest = tail.trim();
    }
    let filters: Vec<String> = rest
        .split_whitespace()
        .map(|f| f.to_ascii_lowercase())
        .collect();
    if filters.is_empty() {
        return Err(format!(
            "`{path}` has no SNI filter: list the names (or *.domain) it serves"
        ));
    }
    // Chars, not bytes: a filter may start with a multi-byte character.
    let misplaced_star = |f: &str| f.chars().skip(1).any(|c| c == '*');
    if let Some(bad) = filters
        .iter()
        .find(|f| f.starts_with('!') || misplaced_star(f))
    {
        return Err(format!(
            "unsupported SNI filter `{bad}`: use a name or *.domain"
        ));
    }
    Ok(CrtLine {
        path: path.to_string(),
        alpn,
        filters,
    })
}

/// SNI → certificate.
#[derive(Debug, Default)]
pub(crate) struct CertStore {
    exact: HashMap<String, Arc<Served>>,
    /// `*.domain` filters by `domain`.
    wildcard: HashMap<String, Arc<Served>>,
    pub(crate) default: Option<Arc<Served>>,
    /// Every certificate, for expiry reporting.
    pub(crate) all: Vec<Arc<Served>>,
}

impl CertStore {
    /// Adds a certificate for its filters; the first line naming a filter wins.
    pub(crate) fn add(&mut self, served: Arc<Served>, filters: &[String]) {
        for f in filters {
            let (table, key) = match f.strip_prefix("*.") {
                Some(domain) => (&mut self.wildcard, domain),
                None => (&mut self.exact, f.as_str()),
            };
            table
                .entry(key.to_string())
                .or_insert_with(|| Arc::clone(&served));
        }
        self.all.push(served);
    }

    /// The certificate for `sni` (exact, then one-label wildcard), if any.
    pub(crate) fn find(&self, sni: Option<&str>) -> Option<&Arc<Served>> {
        let sni = sni?;
        self.exact.get(sni).or_else(|| {
            let (_, domain) = sni.split_once('.')?;
            self.wildcard.get(domain)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crt_lines() {
        let line =
            parse_crt_line("/certs/a.pem [alpn h2,http/1.1] www.a.test *.apps.a.test").expect("ok");
        assert_eq!(line.path, "/certs/a.pem");
        assert_eq!(line.alpn, ["h2", "http/1.1"]);
        assert_eq!(line.filters, ["www.a.test", "*.apps.a.test"]);
        assert!(parse_crt_line("/certs/a.pem")
            .unwrap_err()
            .contains("no SNI filter"));
        assert!(parse_crt_line("/c.pem [ocsp x] a.test")
            .unwrap_err()
            .contains("unsupported"));
        assert!(parse_crt_line("/c.pem a.*.test").is_err());
        assert!(
            parse_crt_line("/c.pem é*.test").is_err(),
            "non-ASCII filters are refused, not a panic"
        );
    }

    /// (certificate PEM, key PEM) of a self-signed certificate.
    fn pem_pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn pem(names: &[&str], with_key: bool) -> Vec<u8> {
        let (cert, key) = pem_pair(names);
        if with_key {
            format!("{cert}{key}").into_bytes()
        } else {
            cert.into_bytes()
        }
    }

    #[test]
    fn pem_needs_a_matching_key() {
        assert!(load_pem_bytes(&pem(&["a.test"], true)).is_ok());
        let missing = load_pem_bytes(&pem(&["a.test"], false)).unwrap_err();
        assert!(missing.contains("no usable private key"), "{missing}");
        let (cert, _) = pem_pair(&["a.test"]);
        let (_, other_key) = pem_pair(&["b.test"]);
        let mismatch = load_pem_bytes(format!("{cert}{other_key}").as_bytes()).unwrap_err();
        assert!(mismatch.contains("does not match"), "{mismatch}");
        assert!(load_pem_bytes(b"").unwrap_err().contains("no certificate"));
    }

    #[test]
    fn lookup_exact_then_wildcard() {
        let (key, _) = load_pem_bytes(&pem(&["x.test"], true)).expect("pem");
        let served = |p: &str| {
            Arc::new(Served {
                key: Arc::clone(&key),
                alpn: vec![],
                path: p.into(),
                not_after: None,
            })
        };
        let mut store = CertStore::default();
        store.add(served("exact"), &["www.apps.test".into()]);
        store.add(served("wild"), &["*.apps.test".into()]);
        let path = |s: Option<&str>| store.find(s).map(|c| c.path.display().to_string());
        assert_eq!(path(Some("www.apps.test")).as_deref(), Some("exact"));
        assert_eq!(path(Some("api.apps.test")).as_deref(), Some("wild"));
        assert_eq!(path(Some("a.b.apps.test")), None);
        assert_eq!(path(None), None);
    }
}
