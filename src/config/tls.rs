//! The TLS part of loading: certificates (default and crt-list), listener
//! termination settings, and re-encrypt upstreams. Every failure names the
//! file and line that caused it: a missing certificate, a key that does not
//! match, an unreadable CA bundle, an expired certificate (a warning).

use std::path::Path;
use std::sync::Arc;

use super::load::{raw, Context};
use super::problem::{Problem, Source};
use crate::model::backend::{Backend, Termination};
use crate::tls::certs::{load_pem_pair, parse_crt_line, roots_from_pem};
use crate::tls::upstream::{Upstream, Verify};
use crate::tls::{CertStore, ClientAuth, ClientPolicy, Served, ServerSide};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;

/// Certificates expiring sooner than this are warned about.
const EXPIRY_WARNING_DAYS: i64 = 14;

impl Context {
    pub(super) fn min_tls13(&mut self, src: &Source<'_>, tls: &raw::RawTls) -> bool {
        match tls.min_version.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "1.2")) => false,
            Some((_, "1.3")) => true,
            Some((v, other)) => {
                let m = format!("min_version `{other}`: expected \"1.2\" or \"1.3\"");
                self.errors.push(src.problem(v.span(), m));
                false
            }
        }
    }

    /// The default certificate and the crt-list, or `None` when neither is
    /// configured.
    pub(super) fn certificates(
        &mut self,
        src: &Source<'_>,
        tls: &raw::RawTls,
        maps: &raw::RawMaps,
    ) -> Option<Arc<CertStore>> {
        let default = tls.default_certificate.as_ref();
        let list = maps.cert_config.as_ref();
        if default.is_none() && list.is_none() {
            return None;
        }
        let mut store = CertStore::default();
        if let Some(p) = default {
            let path = self.base.join(p.get_ref());
            let key = tls
                .default_key
                .as_ref()
                .map(|k| self.base.join(k.get_ref()));
            if let Some(k) = &key {
                self.files.push(k.clone());
            }
            match self.served(&path, key.as_deref(), Vec::new()) {
                Ok(served) => store.default = Some(served),
                Err(m) => self.errors.push(src.problem(p.span(), m)),
            }
        }
        if let Some(p) = list {
            self.crt_list(&self.base.join(p.get_ref()), &mut store);
        }
        Some(Arc::new(store))
    }

    fn crt_list(&mut self, path: &Path, store: &mut CertStore) {
        self.files.push(path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let message = format!("cannot read: {e}");
                self.errors.push(Problem {
                    file: path.to_path_buf(),
                    line: None,
                    message,
                });
                return;
            }
        };
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let problem = |message| Problem {
                file: path.to_path_buf(),
                line: Some(i + 1),
                message,
            };
            let entry = match parse_crt_line(trimmed) {
                Ok(e) => e,
                Err(m) => {
                    self.errors.push(problem(m));
                    continue;
                }
            };
            let alpn = entry.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
            match self.served(&self.base.join(&entry.path), None, alpn) {
                Ok(served) => store.add(served, &entry.filters),
                Err(m) => self.errors.push(problem(m)),
            }
        }
    }

    /// Loads one PEM (chain and key), watching it, warning near expiry.
    fn served(
        &mut self,
        path: &Path,
        key: Option<&Path>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<Served>, String> {
        self.files.push(path.to_path_buf());
        let (key, not_after) = load_pem_pair(path, key)?;
        if let Some(t) = not_after {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let days = (t - now).div_euclid(86_400);
            let message = if t <= now {
                Some(format!("certificate {} has expired", path.display()))
            } else if days < EXPIRY_WARNING_DAYS {
                Some(format!(
                    "certificate {} expires in {days} days",
                    path.display()
                ))
            } else {
                None
            };
            if let Some(message) = message {
                self.warnings.push(Problem {
                    file: path.to_path_buf(),
                    line: None,
                    message,
                });
            }
        }
        Ok(Arc::new(Served {
            key,
            alpn,
            path: path.to_path_buf(),
            not_after,
        }))
    }

    /// Edge and re-encrypt backends need a certificate to present.
    pub(super) fn check_terminated_have_certs(
        &mut self,
        src: &Source<'_>,
        maps: &raw::RawMaps,
        backends: &[Arc<Backend>],
        have_certs: bool,
    ) {
        if have_certs {
            return;
        }
        if let Some(b) = backends
            .iter()
            .find(|b| matches!(b.termination, Termination::Edge | Termination::Reencrypt))
        {
            let span = maps.edge_reencrypt_be.as_ref().map_or(0..0, |p| p.span());
            let m = format!(
                "backend `{}` terminates TLS but no certificate is configured: set [tls] default_certificate or [maps] cert_config",
                b.name
            );
            self.errors.push(src.problem(span, m));
        }
    }

    /// Termination settings of one listener.
    pub(super) fn listener_tls(
        &mut self,
        src: &Source<'_>,
        raw: &raw::RawListener,
        certs: &Arc<CertStore>,
    ) -> Option<Arc<ServerSide>> {
        let policy = self.client_policy(src, raw)?;
        let strict = raw.strict_sni.unwrap_or(false);
        let name = raw.name.get_ref();
        let previous = self.carried.tls.get(name.as_str()).map(Arc::clone);
        let side = ServerSide::new(
            name,
            Arc::clone(certs),
            strict,
            policy,
            self.min_tls13,
            previous.as_deref(),
        );
        match side {
            Ok(side) => Some(Arc::new(side)),
            Err(m) => {
                self.errors.push(src.problem(raw.name.span(), m));
                None
            }
        }
    }

    /// The listener's client-certificate policy (`client_auth`,
    /// `client_ca`, `client_crl`), fingerprinted by the bytes it was read
    /// from (session resumption is scoped by it).
    fn client_policy(&mut self, src: &Source<'_>, raw: &raw::RawListener) -> Option<ClientPolicy> {
        let auth = match raw.client_auth.as_ref().map(|a| (a, a.get_ref().as_str())) {
            None | Some((_, "none")) => ClientAuth::None,
            Some((_, "optional")) => ClientAuth::Optional,
            Some((_, "required")) => ClientAuth::Required,
            Some((a, other)) => {
                let m = format!("client_auth `{other}`: expected none, optional or required");
                self.errors.push(src.problem(a.span(), m));
                return None;
            }
        };
        let mut fingerprint = format!("{auth:?}").into_bytes();
        let roots = match (&raw.client_ca, auth) {
            (Some(ca), _) => Some(self.client_roots(src, ca, &mut fingerprint)?),
            (None, ClientAuth::None) => None,
            (None, _) => {
                let span = raw.client_auth.as_ref().map_or(0..0, |a| a.span());
                self.errors
                    .push(src.problem(span, "client_auth needs client_ca".to_string()));
                return None;
            }
        };
        let mut crls = Vec::new();
        if let Some(crl) = &raw.client_crl {
            if auth == ClientAuth::None {
                let m = "client_crl needs client_auth = optional or required".to_string();
                self.errors.push(src.problem(crl.span(), m));
                return None;
            }
            let path = self.base.join(crl.get_ref());
            match self.crls(&path) {
                Ok((list, bytes)) => {
                    fingerprint.push(0);
                    fingerprint.extend(bytes);
                    crls = list;
                }
                Err(m) => {
                    self.errors.push(src.problem(crl.span(), m));
                    return None;
                }
            }
        }
        Some(ClientPolicy {
            auth,
            roots,
            crls,
            fingerprint,
        })
    }

    /// The CAs of `client_ca`, read once: the roots trusted and the policy
    /// fingerprinted come from the same bytes.
    fn client_roots(
        &mut self,
        src: &Source<'_>,
        ca: &toml::Spanned<String>,
        fingerprint: &mut Vec<u8>,
    ) -> Option<rustls::RootCertStore> {
        let path = self.base.join(ca.get_ref());
        self.files.push(path.clone());
        let roots = std::fs::read(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| {
                let roots = roots_from_pem(&bytes, &path)?;
                fingerprint.push(0);
                fingerprint.extend_from_slice(&bytes);
                Ok(roots)
            });
        match roots {
            Ok(r) => Some(r),
            Err(m) => {
                self.errors.push(src.problem(ca.span(), m));
                None
            }
        }
    }

    /// Reads a PEM file of CRLs (watched like certificates), warning when
    /// one is past its nextUpdate: then every client certificate it
    /// covers is refused until it is replaced.
    fn crls(
        &mut self,
        path: &Path,
    ) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<u8>), String> {
        self.files.push(path.to_path_buf());
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let crls: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: bad PEM CRL: {e}", path.display()))?;
        if crls.is_empty() {
            return Err(format!("{}: no X509 CRL in the file", path.display()));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (i, crl) in crls.iter().enumerate() {
            let next = crate::tls::x509::crl_next_update(crl);
            if next.is_some_and(|t| t <= now) {
                self.warnings.push(Problem {
                    file: path.to_path_buf(),
                    line: None,
                    message: format!(
                        "CRL {} of the file is past its nextUpdate: client certificates of its issuer are refused until it is replaced",
                        i + 1
                    ),
                });
            }
        }
        Ok((crls, bytes))
    }

    /// The upstream TLS of a re-encrypt backend (`None` for the others).
    pub(super) fn upstream(
        &mut self,
        src: &Source<'_>,
        raw: &raw::RawBackend,
        name: &str,
        termination: Termination,
    ) -> Option<Upstream> {
        if termination != Termination::Reencrypt {
            for field in [
                &raw.verify_host,
                &raw.ca_file,
                &raw.verify,
                &raw.client_certificate,
            ]
            .into_iter()
            .flatten()
            {
                let m = format!(
                    "only re-encrypt backends open TLS to servers: `{name}` is {}",
                    termination.as_str()
                );
                self.errors.push(src.problem(field.span(), m));
            }
            return None;
        }
        let Some(host) = &raw.verify_host else {
            let m = format!("re-encrypt backend `{name}` needs verify_host: the name its servers' certificates carry");
            self.errors.push(src.problem(raw.name.span(), m));
            return None;
        };
        let ca_path = raw.ca_file.as_ref().map(|c| self.base.join(c.get_ref()));
        let verify = match (
            raw.verify.as_ref().map(|v| (v, v.get_ref().as_str())),
            &ca_path,
        ) {
            (Some((v, "none")), _) => {
                let m = format!("backend `{name}` does not verify its servers' certificates (verify = \"none\")");
                self.warnings.push(src.problem(v.span(), m));
                Verify::None
            }
            (None | Some((_, "required")), Some(path)) => Verify::CaFile(path),
            (None | Some((_, "required")), None) => {
                let m = format!(
                    "re-encrypt backend `{name}` needs ca_file (or verify = \"none\", explicitly)"
                );
                self.errors.push(src.problem(raw.name.span(), m));
                return None;
            }
            (Some((v, other)), _) => {
                let m = format!("verify `{other}`: expected required or none");
                self.errors.push(src.problem(v.span(), m));
                return None;
            }
        };
        if let Some(path) = &ca_path {
            self.files.push(path.clone());
        }
        let client_cert = raw
            .client_certificate
            .as_ref()
            .map(|c| self.base.join(c.get_ref()));
        if let Some(path) = &client_cert {
            self.files.push(path.clone());
        }
        let versions = crate::tls::versions(self.min_tls13);
        match Upstream::new(host.get_ref(), verify, client_cert.as_deref(), versions) {
            Ok(u) => Some(u),
            Err(m) => {
                self.errors.push(src.problem(host.span(), m));
                None
            }
        }
    }
}
