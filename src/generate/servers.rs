//! The servers of a claim's backend: the ready endpoints of its services'
//! EndpointSlices on the port the claim names, weighted as the reference
//! weights them (a service's weight shared among its endpoints, then all
//! scaled so that the largest is 256; 0 stays 0, for sticky sessions).

use std::net::IpAddr;

use serde_json::Value;

use super::objects::{Object, PortRef};
use super::routes::{Index, Target};

/// One server line of `backends.toml`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Server {
    /// `pod:<pod>:<service>:<port name>:<ip>:<port>`.
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) weight: u32,
}

/// The servers of `targets`, and what is wrong with the lookup (a service
/// with no ready endpoint on that port, say) for the report.
pub(crate) fn servers(index: &Index<'_>, targets: &[Target]) -> (Vec<Server>, Vec<String>) {
    let mut notes = Vec::new();
    let mut found: Vec<(u32, Vec<(String, String)>)> = Vec::new();
    for target in targets {
        let endpoints = endpoints(index, target, &mut notes);
        if endpoints.is_empty() {
            notes.push(format!(
                "service {}/{} has no ready endpoint on port {}",
                target.namespace,
                target.service,
                target
                    .port
                    .as_ref()
                    .map_or("(first)".to_string(), ToString::to_string)
            ));
        }
        found.push((target.weight, endpoints));
    }
    // Per endpoint: the service's weight shared among its endpoints.
    let share = |weight: u32, n: usize| f64::from(weight) / n.max(1) as f64;
    let largest = found
        .iter()
        .filter(|(_, e)| !e.is_empty())
        .map(|(w, e)| share(*w, e.len()))
        .fold(0.0_f64, f64::max);
    let mut out = Vec::new();
    for (weight, endpoints) in &found {
        // Truncated as the reference does, but never to 0.
        let scaled = if *weight == 0 || largest == 0.0 {
            0
        } else {
            ((share(*weight, endpoints.len()) * 256.0 / largest) as u32).clamp(1, 256)
        };
        for (name, address) in endpoints {
            out.push(Server {
                name: name.clone(),
                address: address.clone(),
                weight: scaled,
            });
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.name == b.name);
    (out, notes)
}

/// The port names and numbers of an EndpointSlice the target uses: the
/// one it names, or every one when it names none (as the reference).
fn slice_ports(slice: &Object, wanted: &Option<PortRef>) -> Vec<(String, u16)> {
    let ports = slice.body.get("ports").and_then(Value::as_array);
    ports
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let number = u16::try_from(p.get("port")?.as_u64()?).ok()?;
            let matches = match wanted {
                None => true,
                Some(PortRef::Name(n)) => *n == name,
                Some(PortRef::Number(n)) => *n == number,
            };
            matches.then_some((name, number))
        })
        .collect()
}

/// A service port (Ingress, Gateway) as the endpoints name it: the name
/// of the Service's port of that number or name (empty for its one
/// unnamed port).
fn endpoint_port(
    index: &Index<'_>,
    target: &Target,
    notes: &mut Vec<String>,
) -> Option<Option<PortRef>> {
    let Some(wanted) = &target.port else {
        return Some(None);
    };
    if !target.port_is_service_port {
        return Some(Some(wanted.clone()));
    }
    let Some(service) = index.get("Service", &target.namespace, &target.service) else {
        notes.push(format!(
            "Service {}/{} not found",
            target.namespace, target.service
        ));
        return None;
    };
    let ports = service.at("spec.ports").items().ok()?;
    let port = ports.iter().find(|p| match wanted {
        PortRef::Number(n) => p.get("port").number().ok().flatten() == Some(i64::from(*n)),
        PortRef::Name(n) => p.get("name").text().ok().flatten() == Some(n.as_str()),
    });
    let Some(port) = port else {
        notes.push(format!(
            "Service {}/{} has no port {wanted}",
            target.namespace, target.service
        ));
        return None;
    };
    // Slices name their ports after the Service's; an unnamed port (the
    // only one its Service has) is the slice's unnamed one.
    let name = port.get("name").text().ok().flatten().unwrap_or("");
    Some(Some(PortRef::Name(name.to_string())))
}

/// `(server name, address)` of every ready endpoint of the target.
fn endpoints(index: &Index<'_>, target: &Target, notes: &mut Vec<String>) -> Vec<(String, String)> {
    let Some(port) = endpoint_port(index, target, notes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for slice in index.all("EndpointSlice") {
        if slice.namespace != target.namespace
            || slice.label("kubernetes.io/service-name") != Some(target.service.as_str())
        {
            continue;
        }
        let ports = slice_ports(slice, &port);
        let Some(list) = slice.body.get("endpoints").and_then(Value::as_array) else {
            continue;
        };
        for ((port_name, port_number), endpoint) in
            ports.iter().flat_map(|p| list.iter().map(move |e| (p, e)))
        {
            let port_number = *port_number;
            // Ready unless said otherwise (an unknown state counts as ready).
            let ready = endpoint
                .pointer("/conditions/ready")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            let pod = endpoint
                .pointer("/targetRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let addresses = endpoint.get("addresses").and_then(Value::as_array);
            for address in addresses.into_iter().flatten().filter_map(Value::as_str) {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue; // FQDN endpoints are not dialed.
                };
                let socket = std::net::SocketAddr::new(ip, port_number).to_string();
                out.push((
                    format!(
                        "pod:{pod}:{}:{port_name}:{ip}:{port_number}",
                        target.service
                    ),
                    socket,
                ));
            }
        }
    }
    out
}
