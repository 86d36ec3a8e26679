//! What the objects ask for, as claims: one host (and path) served one
//! way by one backend. Routes, Ingresses and Gateway API routes all become
//! claims; admission then keeps the oldest claim of each host and path,
//! as the reference does.

use std::collections::{BTreeMap, HashMap};

use super::objects::{Bad, Field, Object, PortRef};
use super::settings::{Settings, Termination};
use super::Report;

/// What port 80 does for a TLS route (`insecureEdgeTerminationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insecure {
    None,
    Allow,
    Redirect,
}

/// A service a claim sends traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) namespace: String,
    pub(crate) service: String,
    /// 0..=256 before scaling.
    pub(crate) weight: u32,
    /// Route: the endpoints' port (name or number); Ingress and Gateway:
    /// the service's port, translated through the Service.
    pub(crate) port: Option<PortRef>,
    pub(crate) port_is_service_port: bool,
}

/// A certificate chain and its key, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pem {
    /// File name in the output directory.
    pub(crate) file: String,
    pub(crate) chain: String,
    pub(crate) key: String,
}

impl Pem {
    /// Whether the router can serve it: a chain, leaf first, and the key
    /// that matches the leaf (the reference's extended validation).
    pub(crate) fn usable(&self) -> Result<(), String> {
        let both = format!("{}{}", self.chain, self.key);
        crate::tls::certs::load_pem_bytes(both.as_bytes()).map(|_| ())
    }
}

/// One host (and path) served by one backend.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    /// `Kind namespace/name` of the object it comes from.
    pub(crate) owner: String,
    pub(crate) created: String,
    /// The backend's name: `<prefix>:<namespace>:<name>`.
    pub(crate) backend: String,
    /// Lowercase; for a wildcard, the domain under the `*.`.
    pub(crate) host: String,
    pub(crate) wildcard: bool,
    /// A Gateway API wildcard: `*.domain` matches one label or more, and
    /// a wildcard with an empty host matches every name (a route and a
    /// listener that name no hostname).
    pub(crate) deep: bool,
    /// Empty, or starting with `/`.
    pub(crate) path: String,
    /// The path matches itself only (Ingress and Gateway `Exact`).
    pub(crate) exact: bool,
    pub(crate) termination: Termination,
    pub(crate) insecure: Insecure,
    pub(crate) targets: Vec<Target>,
    pub(crate) certificate: Option<Pem>,
    /// Re-encrypt: the CA the servers' certificates chain to (PEM), and
    /// the name verified.
    pub(crate) destination_ca: Option<Pem>,
    pub(crate) verify_host: Option<String>,
    pub(crate) settings: Settings,
    /// From a Gateway's HTTP listener: port 80 only, so it does not
    /// compete with the same route's claim on the HTTPS listener.
    pub(crate) gateway_http: bool,
}

impl Claim {
    /// A plain-HTTP claim of Route `namespace/name` for the exact `host`,
    /// for tests to adjust.
    #[cfg(test)]
    pub(crate) fn plain(namespace: &str, name: &str, host: &str) -> Claim {
        Claim {
            owner: format!("Route {namespace}/{name}"),
            created: String::new(),
            backend: format!("be_http:{namespace}:{name}"),
            host: host.into(),
            wildcard: false,
            deep: false,
            path: String::new(),
            exact: false,
            termination: Termination::Plain,
            insecure: Insecure::None,
            targets: Vec::new(),
            certificate: None,
            destination_ca: None,
            verify_host: None,
            settings: Settings::default(),
            gateway_http: false,
        }
    }

    /// The host as a crt-list filter: `*.domain` for a wildcard (one
    /// label, as the crt-list matches), `*` for every name.
    pub(crate) fn sni_filter(&self) -> String {
        if self.wildcard && self.host.is_empty() {
            "*".to_string()
        } else if self.wildcard {
            format!("*.{}", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// The objects, indexed for lookups by kind and `namespace/name`.
pub(crate) struct Index<'a> {
    by_kind: HashMap<&'a str, BTreeMap<(&'a str, &'a str), &'a Object>>,
}

impl<'a> Index<'a> {
    /// Indexes `objects`; a second object of the same kind and name is
    /// reported and left out (the first read is kept).
    pub(crate) fn new(objects: &'a [Object], report: &mut Report) -> Self {
        let mut by_kind: HashMap<&str, BTreeMap<(&str, &str), &Object>> = HashMap::new();
        for o in objects {
            if !readable(o) {
                let wanted = wanted_group(&o.kind).unwrap_or_default();
                report.warn(
                    o,
                    Bad::new(
                        "apiVersion",
                        format!("`{}` is not {wanted}: not read", o.api_version),
                    ),
                );
                continue;
            }
            let kind = by_kind.entry(o.kind.as_str()).or_default();
            match kind.entry((o.namespace.as_str(), o.name.as_str())) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(o);
                }
                std::collections::btree_map::Entry::Occupied(_) => report.skipped(
                    o,
                    Bad::new("metadata.name", "read twice; the first one read is used"),
                ),
            }
        }
        Index { by_kind }
    }

    pub(crate) fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<&'a Object> {
        self.by_kind.get(kind)?.get(&(namespace, name)).copied()
    }

    /// Every object of a kind, in namespace/name order.
    pub(crate) fn all(&self, kind: &str) -> impl Iterator<Item = &'a Object> + '_ {
        self.by_kind
            .get(kind)
            .into_iter()
            .flat_map(|m| m.values().copied())
    }

    /// A `kubernetes.io/tls` Secret's chain and key.
    pub(crate) fn tls_secret(&self, namespace: &str, name: &str) -> Result<Pem, String> {
        let secret = self
            .get("Secret", namespace, name)
            .ok_or_else(|| format!("Secret {namespace}/{name} not found"))?;
        let data = |key: &'static str| -> Result<String, String> {
            let text =
                secret.at("data").get(key).required().map_err(|b| {
                    format!("Secret {namespace}/{name}: {}: {}", b.field, b.message)
                })?;
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("Secret {namespace}/{name}: data.{key}: not base64: {e}"))?;
            String::from_utf8(bytes)
                .map_err(|_| format!("Secret {namespace}/{name}: data.{key}: not PEM text"))
        };
        // Joined with newlines, as the reference joins them: a `tls.crt`
        // without its final newline would otherwise run into the key.
        let line_ended = |mut pem: String| {
            if !pem.ends_with('\n') {
                pem.push('\n');
            }
            pem
        };
        let pem = Pem {
            file: format!("secret_{namespace}_{name}.pem"),
            chain: line_ended(data("tls.crt")?),
            key: line_ended(data("tls.key")?),
        };
        pem.usable()
            .map_err(|e| format!("Secret {namespace}/{name}: {e}"))?;
        Ok(pem)
    }
}

/// The API group a kind is read from, for the kinds `generate` reads.
fn wanted_group(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Route" => "route.openshift.io",
        "Ingress" => "networking.k8s.io",
        "EndpointSlice" => "discovery.k8s.io",
        "Gateway" | "HTTPRoute" | "TLSRoute" | "BackendTLSPolicy" | "ReferenceGrant" => {
            "gateway.networking.k8s.io"
        }
        _ => return None,
    })
}

/// Whether an object is of the API `generate` reads its kind from (not
/// another API's kind of the same name, such as Knative's Route).
pub(crate) fn readable(object: &Object) -> bool {
    let group = object.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    wanted_group(&object.kind).is_none_or(|wanted| wanted == group)
}

/// A host as written in an object: a lowercase DNS name, or `*.` and one
/// (`wildcard_ok`). Returns the name and whether it is a wildcard. An
/// upper-case letter is refused, as the reference's host validation
/// refuses it (`InvalidHost`) rather than serve a name other than the one
/// written.
pub(crate) fn host(field: &Field<'_>, wildcard_ok: bool) -> Result<(String, bool), Bad> {
    let text = field.required()?;
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        let m = format!("InvalidHost: `{text}`: a host name must be lowercase");
        return Err(field.bad(m));
    }
    let text = text.to_string();
    let text = text.strip_suffix('.').unwrap_or(&text).to_string();
    let (name, wildcard) = match text.strip_prefix("*.") {
        Some(rest) if wildcard_ok => (rest.to_string(), true),
        Some(_) => return Err(field.bad("a wildcard host is not allowed here")),
        None => (text, false),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(field.bad(format!("`{name}` is not a DNS name")));
    }
    Ok((name, wildcard))
}

/// A path: empty, or starting with `/` and free of control characters.
pub(super) fn path(field: &Field<'_>) -> Result<String, Bad> {
    let text = field.text()?.unwrap_or("");
    if !text.is_empty() && !text.starts_with('/') {
        return Err(field.bad(format!("`{text}` does not start with /")));
    }
    if text.chars().any(|c| c.is_control()) {
        return Err(field.bad("control characters in a path"));
    }
    Ok(text.to_string())
}

/// Reads every Route (route.openshift.io/v1) into claims.
pub(crate) fn routes(index: &Index<'_>, report: &mut Report) -> Vec<Claim> {
    let mut claims = Vec::new();
    for route in index.all("Route") {
        match route_claim(route, report) {
            Ok(claim) => claims.push(claim),
            Err(bad) => report.skipped(route, bad),
        }
    }
    claims
}

fn route_claim(route: &Object, report: &mut Report) -> Result<Claim, Bad> {
    let spec = route.at("spec");
    let (host, wildcard) = route_host(route)?;
    if wildcard && !host.contains('.') {
        let m = format!(
            "claims every name under the top-level domain `{host}` (as the reference admits it)"
        );
        report.warn(route, Bad::new("spec.wildcardPolicy", m));
    }
    let path = path(&spec.get("path"))?;
    let tls = spec.get("tls");
    let (termination, insecure) = route_termination(&tls)?;
    if termination == Termination::Passthrough && !path.is_empty() {
        return Err(spec
            .get("path")
            .bad("a passthrough route cannot have a path: the router never sees it"));
    }
    let (certificate, destination_ca) = route_pems(route, &tls, termination, report)?;
    let targets = route_targets(route)?;
    let (namespace, name) = (route.namespace.as_str(), route.name.as_str());
    let verify_host = (termination == Termination::Reencrypt)
        .then(|| format!("{}.{namespace}.svc", targets[0].service));
    let settings = Settings::from_annotations(route, termination, report);
    Ok(Claim {
        owner: route.id(),
        created: route.created().to_string(),
        backend: format!("{}:{namespace}:{name}", termination.prefix()),
        host,
        wildcard,
        deep: false,
        path,
        exact: false,
        termination,
        insecure,
        targets,
        certificate,
        destination_ca,
        verify_host,
        settings,
        gateway_http: false,
    })
}

/// The host a Route claims (`spec.host`, else the one the router admitted
/// in its status) and whether it claims the whole domain under it
/// (`wildcardPolicy: Subdomain`).
fn route_host(route: &Object) -> Result<(String, bool), Bad> {
    let spec = route.at("spec");
    let wildcard_policy = spec.get("wildcardPolicy").text()?.unwrap_or("None");
    let subdomain = match wildcard_policy {
        "" | "None" => false,
        "Subdomain" => true,
        other => {
            return Err(spec
                .get("wildcardPolicy")
                .bad(format!("`{other}`: expected None or Subdomain")))
        }
    };
    let mut host_field = spec.get("host");
    if !host_field.is_present() {
        if let Some(first) = route.at("status.ingress").items()?.into_iter().next() {
            host_field = first.get("host");
        }
    }
    let (mut host, written_wildcard) = host(&host_field, subdomain)?;
    if subdomain && !written_wildcard {
        // `www.example.com` with Subdomain serves `*.example.com`.
        host = match host.split_once('.') {
            Some((_, domain)) if !domain.is_empty() => domain.to_string(),
            _ => return Err(host_field.bad("a Subdomain route needs a host with a domain")),
        };
    }
    Ok((host, subdomain))
}

/// `spec.tls.termination` and what port 80 does
/// (`insecureEdgeTerminationPolicy`).
fn route_termination(tls: &Field<'_>) -> Result<(Termination, Insecure), Bad> {
    let termination = match tls.get("termination").text()?.map(str::to_ascii_lowercase) {
        None if !tls.is_present() => Termination::Plain,
        None => return Err(tls.get("termination").bad("missing")),
        Some(t) => match t.as_str() {
            "edge" => Termination::Edge,
            "passthrough" => Termination::Passthrough,
            "reencrypt" => Termination::Reencrypt,
            other => {
                return Err(tls.get("termination").bad(format!(
                    "`{other}`: expected edge, passthrough or reencrypt"
                )))
            }
        },
    };
    let policy = tls.get("insecureEdgeTerminationPolicy");
    let insecure = match policy.text()?.unwrap_or("") {
        "" | "None" => Insecure::None,
        "Allow" if termination != Termination::Passthrough => Insecure::Allow,
        "Redirect" => Insecure::Redirect,
        other => {
            return Err(policy.bad(format!(
                "`{other}`: expected None, Redirect{}",
                if termination == Termination::Passthrough {
                    " (passthrough)"
                } else {
                    " or Allow"
                }
            )))
        }
    };
    Ok((termination, insecure))
}

/// The route's own certificate (with its CA) and the CA that verifies its
/// servers (re-encrypt), as files to write.
fn route_pems(
    route: &Object,
    tls: &Field<'_>,
    termination: Termination,
    report: &mut Report,
) -> Result<(Option<Pem>, Option<Pem>), Bad> {
    let (namespace, name) = (route.namespace.as_str(), route.name.as_str());
    let text = |key: &'static str| {
        tls.get(key)
            .text()
            .map(|t| t.map(str::trim).filter(|t| !t.is_empty()))
    };
    let certificate = match (text("certificate")?, text("key")?) {
        (None, None) => None,
        (Some(_), None) => return Err(tls.get("key").bad("a certificate without its key")),
        (None, Some(_)) => return Err(tls.get("certificate").bad("a key without its certificate")),
        (Some(_), Some(_)) if termination == Termination::Passthrough => {
            return Err(tls.get("certificate").bad(
                "a passthrough route cannot have a certificate: the router never terminates it",
            ))
        }
        (Some(cert), Some(key)) => {
            let mut chain = format!("{cert}\n");
            if let Some(ca) = text("caCertificate")? {
                chain.push_str(ca);
                chain.push('\n');
            }
            let pem = Pem {
                file: format!("route_{namespace}_{name}.pem"),
                chain,
                key: format!("{key}\n"),
            };
            pem.usable()
                .map_err(|e| tls.get("certificate").bad(format!("{e}; not admitted")))?;
            Some(pem)
        }
    };
    let destination_ca = match text("destinationCACertificate")? {
        Some(_) if termination != Termination::Reencrypt => {
            report.warn(
                route,
                tls.get("destinationCACertificate")
                    .bad("used by reencrypt routes only; ignored"),
            );
            None
        }
        Some(ca) => {
            let path = std::path::Path::new("destinationCACertificate");
            crate::tls::certs::roots_from_pem(ca.as_bytes(), path).map_err(|e| {
                tls.get("destinationCACertificate")
                    .bad(format!("{e}; not admitted"))
            })?;
            Some(Pem {
                file: format!("route_{namespace}_{name}_destination-ca.pem"),
                chain: format!("{ca}\n"),
                key: String::new(),
            })
        }
        None => None,
    };
    Ok((certificate, destination_ca))
}

/// The services a Route sends traffic to (`to`, then `alternateBackends`)
/// with their weights, on the route's target port.
fn route_targets(route: &Object) -> Result<Vec<Target>, Bad> {
    let spec = route.at("spec");
    let port = spec.get("port").get("targetPort").port()?;
    let mut services = vec![spec.get("to")];
    services.extend(spec.get("alternateBackends").items()?);
    let mut targets = Vec::new();
    for service in services {
        let weight = service_weight(&service, 100, 256)?;
        targets.push(Target {
            namespace: route.namespace.clone(),
            service: service.get("name").required()?.to_string(),
            weight,
            port: port.clone(),
            port_is_service_port: false,
        });
    }
    Ok(targets)
}

/// A reference to a backend service (a Route's `to`, a Gateway
/// `backendRef`): its `kind` must be Service (or absent), and its weight,
/// `default` when absent, at most `max`.
pub(super) fn service_weight(reference: &Field<'_>, default: i64, max: i64) -> Result<u32, Bad> {
    if let Some(kind) = reference.get("kind").text()? {
        if kind != "Service" {
            return Err(reference
                .get("kind")
                .bad(format!("`{kind}`: only Service is supported")));
        }
    }
    let weight = reference.get("weight").number()?.unwrap_or(default);
    match u32::try_from(weight) {
        Ok(w) if i64::from(w) <= max => Ok(w),
        _ => Err(reference
            .get("weight")
            .bad(format!("{weight}: expected 0..={max}"))),
    }
}

/// Reads every Ingress (networking.k8s.io/v1) of the class asked for
/// (all when none is) into claims: a host listed under `tls` is served by
/// edge termination with its Secret's certificate and redirects port 80,
/// as the reference's Ingress controller does; others are plain HTTP.
pub(crate) fn ingresses(index: &Index<'_>, class: Option<&str>, report: &mut Report) -> Vec<Claim> {
    let mut claims = Vec::new();
    for ingress in index.all("Ingress") {
        if !of_class(ingress, class) {
            continue;
        }
        match ingress_claims(ingress, index, report) {
            Ok(mut c) => claims.append(&mut c),
            Err(bad) => report.skipped(ingress, bad),
        }
    }
    claims
}

/// Whether an Ingress is of `class` (`spec.ingressClassName`, else the
/// `kubernetes.io/ingress.class` annotation); every Ingress is when no
/// class is asked for.
pub(crate) fn of_class(ingress: &Object, class: Option<&str>) -> bool {
    let annotations = ingress.annotations();
    let own = ingress
        .at("spec.ingressClassName")
        .text()
        .ok()
        .flatten()
        .or_else(|| annotations.get("kubernetes.io/ingress.class").copied());
    class.is_none_or(|wanted| own == Some(wanted))
}

fn ingress_claims(
    ingress: &Object,
    index: &Index<'_>,
    report: &mut Report,
) -> Result<Vec<Claim>, Bad> {
    let spec = ingress.at("spec");
    if spec.get("defaultBackend").is_present() {
        report.warn(
            ingress,
            spec.get("defaultBackend")
                .bad("not supported (use a listener's default_backend); ignored"),
        );
    }
    let tls_hosts = ingress_tls(ingress, index, report)?;
    let mut claims = Vec::new();
    for (r, rule) in spec.get("rules").items()?.into_iter().enumerate() {
        let (host, wildcard) = host(&rule.get("host"), true)?;
        let key = if wildcard {
            format!("*.{host}")
        } else {
            host.clone()
        };
        let tls = tls_hosts.get(&key);
        let paths = rule.get("http").get("paths").items()?;
        for (p, entry) in paths.into_iter().enumerate() {
            let rule = IngressRule {
                host: &host,
                wildcard,
                tls,
                backend: format!("{}-{r}-{p}", ingress.name),
            };
            claims.push(ingress_path(ingress, &rule, &entry, report)?);
        }
    }
    Ok(claims)
}

/// One host of an Ingress rule, as its paths claim it.
struct IngressRule<'a> {
    host: &'a str,
    wildcard: bool,
    /// The certificate of the `tls` entry that lists the host (`None`
    /// inside: the default certificate serves); `None`: plain HTTP.
    tls: Option<&'a Option<Pem>>,
    /// The backend's name within the namespace.
    backend: String,
}

/// Host → the certificate of the Ingress's `tls` entry that lists it.
fn ingress_tls(
    ingress: &Object,
    index: &Index<'_>,
    report: &mut Report,
) -> Result<HashMap<String, Option<Pem>>, Bad> {
    let mut tls_hosts: HashMap<String, Option<Pem>> = HashMap::new();
    for entry in ingress.at("spec").get("tls").items()? {
        let secret = entry.get("secretName").text()?;
        let pem = match secret {
            Some(secret) => match index.tls_secret(&ingress.namespace, secret) {
                Ok(pem) => Some(pem),
                Err(message) => {
                    report.warn(
                        ingress,
                        entry
                            .get("secretName")
                            .bad(format!("{message}; the default certificate serves")),
                    );
                    None
                }
            },
            None => None,
        };
        for h in entry.get("hosts").items()? {
            let (host, wildcard) = host(&h, true)?;
            let key = if wildcard { format!("*.{host}") } else { host };
            tls_hosts.insert(key, pem.clone());
        }
    }
    Ok(tls_hosts)
}

/// The claim of one path of an Ingress rule.
fn ingress_path(
    ingress: &Object,
    rule: &IngressRule<'_>,
    entry: &Field<'_>,
    report: &mut Report,
) -> Result<Claim, Bad> {
    let namespace = ingress.namespace.as_str();
    let termination = if rule.tls.is_some() {
        Termination::Edge
    } else {
        Termination::Plain
    };
    let path_type = entry.get("pathType").text()?.unwrap_or("Prefix");
    let exact = match path_type {
        "Exact" => true,
        "Prefix" | "ImplementationSpecific" => false,
        other => {
            return Err(entry.get("pathType").bad(format!(
                "`{other}`: expected Exact, Prefix or ImplementationSpecific"
            )))
        }
    };
    let path = path(&entry.get("path"))?;
    let service = entry.get("backend").get("service");
    if !service.is_present() {
        return Err(entry
            .get("backend")
            .bad("only service backends are supported"));
    }
    let port_field = service.get("port");
    let port = match (
        port_field.get("number").port()?,
        port_field.get("name").port()?,
    ) {
        (Some(n), _) => Some(n),
        (None, Some(PortRef::Name(n))) => Some(PortRef::Name(n)),
        (None, Some(n)) => Some(n),
        (None, None) => return Err(port_field.bad("a service port (number or name) is needed")),
    };
    Ok(Claim {
        owner: ingress.id(),
        created: ingress.created().to_string(),
        backend: format!("{}:{namespace}:{}", termination.prefix(), rule.backend),
        host: rule.host.to_string(),
        wildcard: rule.wildcard,
        deep: false,
        path,
        exact,
        termination,
        insecure: if rule.tls.is_some() {
            Insecure::Redirect
        } else {
            Insecure::None
        },
        targets: vec![Target {
            namespace: namespace.to_string(),
            service: service.get("name").required()?.to_string(),
            weight: 100,
            port,
            port_is_service_port: true,
        }],
        certificate: rule.tls.cloned().flatten(),
        destination_ca: None,
        verify_host: None,
        settings: Settings::from_annotations(ingress, termination, report),
        gateway_http: false,
    })
}
