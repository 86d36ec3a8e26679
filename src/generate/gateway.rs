//! Gateway API objects as claims: an `HTTPRoute` attached (by
//! `parentRefs`) to a `Gateway` listener of protocol HTTPS is served with
//! edge termination and the listener's certificate, to an HTTP listener as
//! plain HTTP; a `TLSRoute` attached to a TLS listener in `Passthrough`
//! mode is relayed untouched. A `BackendTLSPolicy` on a service turns the
//! HTTPRoute rules that reach it into re-encrypt, verifying
//! `validation.hostname` against the CA of `caCertificateRefs`.
//!
//! A listener takes routes from its own namespace unless its
//! `allowedRoutes` says `All`; a reference into another namespace (a
//! route's backend, a listener's certificate) needs a `ReferenceGrant`
//! there. Matches on headers, query parameters or methods, and filters,
//! are not served: such a rule is reported and left out rather than
//! served more widely than it says.

use super::objects::{Bad, Field, Object};
use super::routes::{host, Claim, Index, Insecure, Pem, Target};
use super::settings::{Settings, Termination};
use super::Report;

/// A Gateway listener a route may attach to.
struct Listener {
    name: String,
    gateway: String,
    /// `allowedRoutes.namespaces.from: All`; else only the Gateway's own.
    all_namespaces: bool,
    hostname: Option<(String, bool)>,
    protocol: String,
    passthrough: bool,
    certificate: Option<Pem>,
}

fn listeners(
    gateway: &Object,
    index: &Index<'_>,
    report: &mut Report,
) -> Result<Vec<Listener>, Bad> {
    let mut out = Vec::new();
    for l in gateway.at("spec.listeners").items()? {
        let hostname = if l.get("hostname").is_present() {
            Some(host(&l.get("hostname"), true)?)
        } else {
            None
        };
        let protocol = l.get("protocol").required()?.to_string();
        let tls = l.get("tls");
        let passthrough = tls.get("mode").text()? == Some("Passthrough");
        let mut certificate = None;
        if protocol == "HTTPS" && !passthrough {
            if let Some(reference) = tls.get("certificateRefs").items()?.into_iter().next() {
                let namespace = reference
                    .get("namespace")
                    .text()?
                    .unwrap_or(&gateway.namespace);
                let name = reference.get("name").required()?;
                if namespace != gateway.namespace
                    && !granted(index, gateway, "Secret", namespace, name)
                {
                    report.warn(
                        gateway,
                        reference.bad(format!(
                            "Secret {namespace}/{name} is in another namespace and no ReferenceGrant there allows it; the default certificate serves"
                        )),
                    );
                    continue;
                }
                match index.tls_secret(namespace, name) {
                    Ok(pem) => certificate = Some(pem),
                    Err(m) => report.warn(
                        gateway,
                        reference.bad(format!("{m}; the default certificate serves")),
                    ),
                }
            }
        }
        let from = l.get("allowedRoutes").get("namespaces").get("from");
        let all_namespaces = match from.text()?.unwrap_or("Same") {
            "Same" => false,
            "All" => true,
            other => {
                report.warn(
                    gateway,
                    from.bad(format!(
                        "`{other}` is not supported; routes of the Gateway's own namespace only"
                    )),
                );
                false
            }
        };
        out.push(Listener {
            name: l.get("name").required()?.to_string(),
            gateway: gateway.namespace.clone(),
            all_namespaces,
            hostname,
            protocol,
            passthrough,
            certificate,
        });
    }
    Ok(out)
}

/// The name a route's host is served as on a listener (Gateway API
/// hostname intersection): the narrower of the two when one falls under
/// the other, `None` when they do not meet. A wildcard `*.d` covers
/// every name ending in `.d`, whatever the number of labels before it.
fn intersect(host: &(String, bool), listener: &Option<(String, bool)>) -> Option<(String, bool)> {
    let Some(listener) = listener else {
        return Some(host.clone());
    };
    let below = |name: &str, domain: &str| {
        name.strip_suffix(domain)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
    };
    let (route_name, listener_name) = (host.0.as_str(), listener.0.as_str());
    match (host.1, listener.1) {
        (false, false) => (route_name == listener_name).then(|| host.clone()),
        (false, true) => below(route_name, listener_name).then(|| host.clone()),
        (true, false) => below(listener_name, route_name).then(|| listener.clone()),
        (true, true) if route_name == listener_name || below(route_name, listener_name) => {
            Some(host.clone())
        }
        (true, true) => below(listener_name, route_name).then(|| listener.clone()),
    }
}

/// The listeners of the Gateways a route's `parentRefs` name.
fn attached<'l>(
    route: &Object,
    gateways: &'l [(String, String, Vec<Listener>)],
    report: &mut Report,
) -> Result<Vec<&'l Listener>, Bad> {
    let mut out = Vec::new();
    for parent in route.at("spec.parentRefs").items()? {
        let namespace = parent.get("namespace").text()?.unwrap_or(&route.namespace);
        let name = parent.get("name").required()?;
        let section = parent.get("sectionName").text()?;
        let Some((_, _, ls)) = gateways
            .iter()
            .find(|(ns, n, _)| ns == namespace && n == name)
        else {
            report.warn(
                route,
                parent.bad(format!("Gateway {namespace}/{name} not found")),
            );
            continue;
        };
        for listener in ls.iter().filter(|l| section.is_none_or(|s| s == l.name)) {
            if !listener.all_namespaces && listener.gateway != route.namespace {
                report.warn(
                    route,
                    parent.bad(format!(
                        "listener `{}` of Gateway {namespace}/{name} takes routes of its own namespace only",
                        listener.name
                    )),
                );
                continue;
            }
            out.push(listener);
        }
    }
    Ok(out)
}

/// Whether a `ReferenceGrant` in `namespace` lets `from` (its kind, its
/// namespace) refer to the `kind` named `name` there. The groups count:
/// `from` must name the Gateway API's group and `to` the core group (a
/// Service or a Secret), or the grant opens nothing.
fn granted(index: &Index<'_>, from: &Object, kind: &str, namespace: &str, name: &str) -> bool {
    const GATEWAY: &str = "gateway.networking.k8s.io";
    index.all("ReferenceGrant").any(|grant| {
        let text = |f: &Field<'_>, key: &str| f.get(key).text().ok().flatten().map(str::to_string);
        grant.namespace == namespace
            && grant.at("spec.from").items().is_ok_and(|items| {
                items.iter().any(|f| {
                    text(f, "group").as_deref() == Some(GATEWAY)
                        && text(f, "kind").as_deref() == Some(from.kind.as_str())
                        && text(f, "namespace").as_deref() == Some(from.namespace.as_str())
                })
            })
            && grant.at("spec.to").items().is_ok_and(|items| {
                items.iter().any(|t| {
                    text(t, "group").unwrap_or_default().is_empty()
                        && text(t, "kind").as_deref() == Some(kind)
                        && text(t, "name").is_none_or(|n| n == name)
                })
            })
    })
}

/// The hosts a route serves on a listener: its hostnames as they meet
/// the listener's, or the listener's own when it names none; every name
/// (an empty wildcard) when neither names one.
fn hosts(
    route: &Object,
    listener: &Listener,
    report: &mut Report,
) -> Result<Vec<(String, bool)>, Bad> {
    let mut out = Vec::new();
    let names = route.at("spec.hostnames").items()?;
    for field in &names {
        let h = host(field, true)?;
        match intersect(&h, &listener.hostname) {
            Some(served) => out.push(served),
            None => report.warn(
                route,
                field.bad(format!(
                    "does not meet listener `{}`'s hostname; not served there",
                    listener.name
                )),
            ),
        }
    }
    if names.is_empty() {
        out.push(
            listener
                .hostname
                .clone()
                .unwrap_or_else(|| (String::new(), true)),
        );
    }
    Ok(out)
}

fn targets(rule: &Field<'_>, route: &Object, index: &Index<'_>) -> Result<Vec<Target>, Bad> {
    let mut out = Vec::new();
    for b in rule.get("backendRefs").items()? {
        let namespace = b.get("namespace").text()?.unwrap_or(&route.namespace);
        let name = b.get("name").required()?;
        if namespace != route.namespace && !granted(index, route, "Service", namespace, name) {
            return Err(b.bad(format!(
                "Service {namespace}/{name} is in another namespace and no ReferenceGrant there allows it"
            )));
        }
        let weight = super::routes::service_weight(&b, 1, 1_000_000)?;
        out.push(Target {
            namespace: namespace.to_string(),
            service: name.to_string(),
            weight,
            port: b.get("port").port()?,
            port_is_service_port: true,
        });
    }
    if out.is_empty() {
        return Err(rule.get("backendRefs").bad("no backend"));
    }
    Ok(out)
}

/// The re-encrypt settings a BackendTLSPolicy gives a service. A policy
/// that aims at the service but cannot be used is an error for the rule:
/// its server expects TLS, so it is never sent plain text instead.
fn backend_tls(
    index: &Index<'_>,
    target: &Target,
    report: &mut Report,
) -> Result<Option<(String, Pem)>, Bad> {
    for policy in index.all("BackendTLSPolicy") {
        if policy.namespace != target.namespace {
            continue;
        }
        let Ok(refs) = policy.at("spec.targetRefs").items() else {
            continue;
        };
        let aims = refs.iter().any(|r| {
            r.get("kind").text().ok().flatten().unwrap_or("Service") == "Service"
                && r.get("name").text().ok().flatten() == Some(target.service.as_str())
        });
        if !aims {
            continue;
        }
        let read = || -> Result<(String, Pem), Bad> {
            let validation = policy.at("spec.validation");
            let hostname = validation.get("hostname").required()?.to_string();
            let Some(reference) = validation
                .get("caCertificateRefs")
                .items()?
                .into_iter()
                .next()
            else {
                return Err(validation
                    .get("caCertificateRefs")
                    .bad("needed: wellKnownCACertificates is not supported (name the CA)"));
            };
            let name = reference.get("name").required()?;
            let config_map = index
                .get("ConfigMap", &policy.namespace, name)
                .ok_or_else(|| {
                    reference.bad(format!("ConfigMap {}/{name} not found", policy.namespace))
                })?;
            let ca_field = config_map.at("data").get("ca.crt");
            let ca = ca_field.required()?;
            let path = std::path::Path::new("ca.crt");
            crate::tls::certs::roots_from_pem(ca.as_bytes(), path).map_err(|e| {
                reference.bad(format!("ConfigMap {}/{name}: {e}", policy.namespace))
            })?;
            Ok((
                hostname,
                Pem {
                    file: format!("configmap_{}_{name}_ca.pem", policy.namespace),
                    chain: format!("{}\n", ca.trim()),
                    key: String::new(),
                },
            ))
        };
        match read() {
            Ok(found) => return Ok(Some(found)),
            Err(bad) => {
                let m = format!(
                    "BackendTLSPolicy {}/{} for Service {}/{} cannot be used ({}: {}): not served rather than sent in plain text",
                    policy.namespace, policy.name, target.namespace, target.service, bad.field, bad.message
                );
                report.skipped(policy, bad);
                return Err(Bad::new("spec.rules.backendRefs", m));
            }
        }
    }
    Ok(None)
}

/// Claims of every HTTPRoute and TLSRoute attached to a Gateway.
pub(crate) fn claims(index: &Index<'_>, report: &mut Report) -> Vec<Claim> {
    let mut gateways = Vec::new();
    for gateway in index.all("Gateway") {
        match listeners(gateway, index, report) {
            Ok(ls) => gateways.push((gateway.namespace.clone(), gateway.name.clone(), ls)),
            Err(bad) => report.skipped(gateway, bad),
        }
    }
    let mut out = Vec::new();
    for route in index.all("HTTPRoute") {
        match http_route(route, index, &gateways, report) {
            Ok(mut c) => out.append(&mut c),
            Err(bad) => report.skipped(route, bad),
        }
    }
    for route in index.all("TLSRoute") {
        match tls_route(route, index, &gateways, report) {
            Ok(mut c) => out.append(&mut c),
            Err(bad) => report.skipped(route, bad),
        }
    }
    out
}

fn http_route(
    route: &Object,
    index: &Index<'_>,
    gateways: &[(String, String, Vec<Listener>)],
    report: &mut Report,
) -> Result<Vec<Claim>, Bad> {
    let mut out = Vec::new();
    let (namespace, name) = (route.namespace.as_str(), route.name.as_str());
    for listener in attached(route, gateways, report)? {
        let Some(on_listener) = http_listener(route, listener, report) else {
            continue;
        };
        let hosts = hosts(route, listener, report)?;
        if on_listener == Termination::Edge && listener.certificate.is_some() {
            certificate_notes(route, listener, &hosts, report);
        }
        for (r, rule) in route.at("spec.rules").items()?.into_iter().enumerate() {
            if !served(route, &rule, report)? {
                continue;
            }
            let targets = targets(&rule, route, index)?;
            let mut termination = on_listener;
            let (mut destination_ca, mut verify_host) = (None, None);
            // The policy applies on either listener: port 80 requests are
            // then re-encrypted too.
            if let Some((hostname, ca)) = backend_tls(index, &targets[0], report)? {
                termination = Termination::Reencrypt;
                verify_host = Some(hostname);
                destination_ca = Some(ca);
            }
            let paths = rule_paths(&rule)?;
            let backend = format!(
                "{}:{namespace}:{name}-{}-{r}",
                termination.prefix(),
                listener.name
            );
            for (host_name, wildcard) in &hosts {
                for (path, exact) in &paths {
                    out.push(Claim {
                        owner: route.id(),
                        created: route.created().to_string(),
                        backend: backend.clone(),
                        host: host_name.clone(),
                        wildcard: *wildcard,
                        deep: *wildcard,
                        path: if path == "/" && !exact {
                            String::new()
                        } else {
                            path.clone()
                        },
                        exact: *exact,
                        termination,
                        insecure: Insecure::None,
                        targets: targets.clone(),
                        certificate: listener.certificate.clone(),
                        destination_ca: destination_ca.clone(),
                        verify_host: verify_host.clone(),
                        settings: Settings::default(),
                        gateway_http: on_listener == Termination::Plain,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// What an HTTPS listener's certificate cannot do for a route's hosts:
/// a route for every name has no SNI to choose it by (the default
/// certificate serves), and a certificate's `*.` covers one label.
fn certificate_notes(
    route: &Object,
    listener: &Listener,
    hosts: &[(String, bool)],
    report: &mut Report,
) {
    for (name, wildcard) in hosts {
        let m = if name.is_empty() {
            format!("every name is served with the default certificate: listener `{}`'s has no hostname to be chosen by", listener.name)
        } else if *wildcard {
            format!("names more than one label under `*.{name}` get the certificate an SNI lookup finds, else the default: a certificate's `*.` covers one label")
        } else {
            continue;
        };
        report.warn(route, Bad::new("spec.hostnames", m));
    }
}

/// How a listener an HTTPRoute attaches to serves it: edge on HTTPS
/// (terminated), plain on HTTP; `None` (warned) for the others.
fn http_listener(route: &Object, listener: &Listener, report: &mut Report) -> Option<Termination> {
    match listener.protocol.as_str() {
        "HTTPS" if !listener.passthrough => Some(Termination::Edge),
        "HTTP" => Some(Termination::Plain),
        other => {
            let m = format!(
                "listener `{}` ({other}) does not take HTTPRoutes",
                listener.name
            );
            report.warn(route, Bad::new("spec.parentRefs", m));
            None
        }
    }
}

/// Whether a rule is one the router serves: no filters, and path matches
/// only (the others are warned and left out).
fn served(route: &Object, rule: &Field<'_>, report: &mut Report) -> Result<bool, Bad> {
    if !rule.get("filters").items()?.is_empty() {
        let bad = rule
            .get("filters")
            .bad("filters are not supported: this rule is not served");
        report.warn(route, bad);
        return Ok(false);
    }
    for m in rule.get("matches").items()? {
        for key in ["headers", "queryParams", "method"] {
            if m.get(key).is_present() {
                let bad = m
                    .get(key)
                    .bad("only path matches are supported: this rule is not served");
                report.warn(route, bad);
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A rule's paths, each with whether it is exact; `/` (a prefix) when it
/// has no match.
fn rule_paths(rule: &Field<'_>) -> Result<Vec<(String, bool)>, Bad> {
    let mut paths = Vec::new();
    for m in rule.get("matches").items()? {
        let path = m.get("path");
        let kind = path.get("type").text()?.unwrap_or("PathPrefix");
        let value = match super::routes::path(&path.get("value"))? {
            v if v.is_empty() => "/".to_string(),
            v => v,
        };
        match kind {
            "PathPrefix" => paths.push((value, false)),
            "Exact" => paths.push((value, true)),
            other => {
                return Err(path
                    .get("type")
                    .bad(format!("`{other}`: expected PathPrefix or Exact")))
            }
        }
    }
    if paths.is_empty() {
        paths.push(("/".to_string(), false));
    }
    Ok(paths)
}

fn tls_route(
    route: &Object,
    index: &Index<'_>,
    gateways: &[(String, String, Vec<Listener>)],
    report: &mut Report,
) -> Result<Vec<Claim>, Bad> {
    let mut out = Vec::new();
    let (namespace, name) = (route.namespace.as_str(), route.name.as_str());
    for listener in attached(route, gateways, report)? {
        if listener.protocol != "TLS" || !listener.passthrough {
            report.warn(
                route,
                Bad::new(
                    "spec.parentRefs",
                    format!(
                        "listener `{}` is not TLS in Passthrough mode",
                        listener.name
                    ),
                ),
            );
            continue;
        }
        let rules = route.at("spec.rules").items()?;
        let Some(rule) = rules.first() else {
            return Err(route.at("spec.rules").bad("no rule"));
        };
        if rules.len() > 1 {
            report.warn(
                route,
                Bad::new(
                    "spec.rules",
                    "a TLSRoute is served by its first rule; the others are ignored",
                ),
            );
        }
        let targets = targets(rule, route, index)?;
        for (host_name, wildcard) in hosts(route, listener, report)? {
            if host_name.is_empty() {
                // Passthrough is decided before termination: a route for
                // every name would take every TLS connection of the router.
                let m = format!(
                    "no hostname here or on listener `{}`: a passthrough route for every name is not served",
                    listener.name
                );
                report.warn(route, Bad::new("spec.hostnames", m));
                continue;
            }
            out.push(Claim {
                owner: route.id(),
                created: route.created().to_string(),
                backend: format!("be_tcp:{namespace}:{name}-{}", listener.name),
                host: host_name,
                wildcard,
                deep: wildcard,
                path: String::new(),
                exact: false,
                termination: Termination::Passthrough,
                insecure: Insecure::None,
                targets: targets.clone(),
                certificate: None,
                destination_ca: None,
                verify_host: None,
                settings: Settings::default(),
                gateway_http: false,
            });
        }
    }
    Ok(out)
}
