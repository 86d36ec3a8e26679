//! Metric labels as the OpenShift router's exporter writes them, so that
//! existing dashboards and alerts select Switchyard's series by route.
//!
//! Backend names `<prefix>:<namespace>:<route>` give `backend` (the kind:
//! `be_tcp` → `tcp`, `be_http` → `http`, `be_edge_http` → `https-edge`,
//! `be_secure` → `https`, any other name `other/<name>`), `namespace` and
//! `route`. Server names `pod:<pod>:<service>:<port name>:<ip>:<port>` and
//! `ept:<service>:<port name>:<ip>:<port>` give `pod`, `service` and
//! `server` (`<ip>:<port>`); any other server name is the `server` label as
//! written. The full names stay in `backend_name` and `server_name`.

/// Labels of a backend's series.
pub(crate) fn backend(name: &str) -> Vec<(&'static str, String)> {
    let (kind, namespace, route) = split_backend(name);
    vec![
        ("backend", kind),
        ("namespace", namespace.to_string()),
        ("route", route.to_string()),
        ("backend_name", name.to_string()),
    ]
}

/// Labels of a server's series in backend `backend_name`.
pub(crate) fn server(backend_name: &str, server_name: &str) -> Vec<(&'static str, String)> {
    let (kind, namespace, route) = split_backend(backend_name);
    let (server, pod, service) = split_server(server_name);
    vec![
        ("server", server),
        ("namespace", namespace.to_string()),
        ("route", route.to_string()),
        ("pod", pod.to_string()),
        ("service", service.to_string()),
        ("backend", kind),
        ("server_name", server_name.to_string()),
    ]
}

/// (kind, namespace, route) of a backend name.
fn split_backend(name: &str) -> (String, &str, &str) {
    let mut parts = name.splitn(3, ':');
    let (prefix, namespace, route) = (parts.next(), parts.next(), parts.next());
    let kind = match prefix {
        Some("be_tcp") => "tcp",
        Some("be_http") => "http",
        Some("be_edge_http") => "https-edge",
        Some("be_secure") => "https",
        _ => return (format!("other/{name}"), "", ""),
    };
    match (namespace, route) {
        (Some(ns), Some(route)) => (kind.to_string(), ns, route),
        _ => (format!("other/{name}"), "", ""),
    }
}

/// (server, pod, service) of a server name.
fn split_server(name: &str) -> (String, &str, &str) {
    let parts: Vec<&str> = name.split(':').collect();
    match parts.as_slice() {
        ["pod", pod, service, _port_name, addr @ ..] if addr.len() >= 2 => {
            (addr.join(":"), pod, service)
        }
        ["ept", service, _port_name, addr @ ..] if addr.len() >= 2 => (addr.join(":"), "", service),
        _ => (name.to_string(), "", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(labels: &'a [(&'static str, String)], key: &str) -> &'a str {
        labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    #[test]
    fn backend_kinds_namespace_and_route() {
        for (name, kind, ns, route) in [
            ("be_tcp:shop:web", "tcp", "shop", "web"),
            ("be_http:shop:web", "http", "shop", "web"),
            ("be_edge_http:shop:web", "https-edge", "shop", "web"),
            ("be_secure:shop:web:x", "https", "shop", "web:x"),
            ("default", "other/default", "", ""),
            ("be_tcp:shop", "other/be_tcp:shop", "", ""),
        ] {
            let l = backend(name);
            assert_eq!(get(&l, "backend"), kind, "{name}");
            assert_eq!(get(&l, "namespace"), ns, "{name}");
            assert_eq!(get(&l, "route"), route, "{name}");
            assert_eq!(get(&l, "backend_name"), name);
        }
    }

    #[test]
    fn server_pod_service_and_address() {
        let l = server("be_tcp:shop:web", "pod:web-5d9f:web:https:10.128.2.7:8443");
        assert_eq!(get(&l, "server"), "10.128.2.7:8443");
        assert_eq!(get(&l, "pod"), "web-5d9f");
        assert_eq!(get(&l, "service"), "web");
        assert_eq!(get(&l, "route"), "web");
        let l = server("be_tcp:shop:web", "pod:web-0:web:https:fd00::7:8443");
        assert_eq!(get(&l, "server"), "fd00::7:8443");
        let l = server("be_secure:a:b", "ept:api:https:10.0.0.9:443");
        assert_eq!(
            (get(&l, "server"), get(&l, "service"), get(&l, "pod")),
            ("10.0.0.9:443", "api", "")
        );
        let l = server("be_tcp:a:b", "web-1");
        assert_eq!((get(&l, "server"), get(&l, "pod")), ("web-1", ""));
    }
}
