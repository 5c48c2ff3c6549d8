//! `ingress-gateway` entries: which mesh services a gateway exposes on the
//! edge, on which ports, for which `Host` names, with or without TLS.
//!
//! The gateway reads its listeners from here (through its agent's
//! snapshot); DNS answers `<service>.ingress.<domain>` with the gateways
//! that expose the service. Writes are checked by the same reader, so a
//! listener the gateway could not serve is refused with its path.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use weft_api::ids::ServiceName;
use weft_api::mesh::{ConfigEntry, Protocol};

use super::config_entries::{
    as_object, effective_protocol, field, list_field, object_field, stored_body, str_field, INGRESS_GATEWAY,
};
use super::mesh::MeshTables;

/// One listener of a gateway, as its entry sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressListenerConfig {
    pub port: u16,
    pub protocol: Protocol,
    pub tls: bool,
    pub services: Vec<ExposedService>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExposedService {
    pub name: ServiceName,
    /// Empty: Consul's default, `<service>.ingress.*`.
    pub hosts: Vec<String>,
}

/// `gateway`'s listeners; none if it has no (valid) entry.
pub fn ingress_listeners(mesh: &MeshTables, gateway: &ServiceName) -> Vec<IngressListenerConfig> {
    mesh.config_entry(INGRESS_GATEWAY, gateway.as_str())
        .and_then(stored_body)
        .and_then(|body| listeners(&body).ok())
        .unwrap_or_default()
}

/// The ingress gateways whose listeners expose `service` (any case), with
/// the port of each such listener (for `<service>.ingress` SRV records).
pub fn gateways_exposing(mesh: &MeshTables, service: &str) -> Vec<(ServiceName, u16)> {
    mesh.config_entries_of(INGRESS_GATEWAY)
        .flat_map(|entry: &ConfigEntry| {
            let listeners = stored_body(entry).and_then(|body| listeners(&body).ok()).unwrap_or_default();
            listeners
                .into_iter()
                .filter(|l| l.services.iter().any(|s| s.name.as_str().eq_ignore_ascii_case(service)))
                .map(|l| (ServiceName::new(entry.name.as_str()), l.port))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// An ingress gateway's listeners, on their own: ports, protocols, hosts, TLS.
pub fn check_listeners(body: &Map<String, Value>) -> Result<(), String> {
    listeners(body).map(drop)
}

/// Checks an ingress-gateway body against the tables: listeners the gateway
/// can serve, each exposing HTTP services (by their effective protocol)
/// under unique hosts.
pub fn validate_ingress_gateway(mesh: &MeshTables, body: &Map<String, Value>) -> Result<(), String> {
    for (i, listener) in listeners(body)?.iter().enumerate() {
        for (j, service) in listener.services.iter().enumerate() {
            let protocol = effective_protocol(mesh, service.name.as_str()).protocol;
            if !protocol.is_http_like() {
                return Err(format!(
                    "Listeners[{i}].Services[{j}]: {} has protocol {protocol}, but listener {} is {}; \
                     set Protocol = \"http\" (or http2, grpc) in its service-defaults",
                    service.name, listener.port, listener.protocol
                ));
            }
        }
    }
    Ok(())
}

fn listeners(body: &Map<String, Value>) -> Result<Vec<IngressListenerConfig>, String> {
    let gateway_tls = tls_enabled(body, "TLS")?.unwrap_or(false);
    let mut ports = BTreeSet::new();
    let mut listeners = Vec::new();
    for (i, listener) in list_field(body, "Listeners", "Listeners")?.iter().enumerate() {
        let at = format!("Listeners[{i}]");
        let listener = as_object(listener, &at)?;
        let port = field(listener, "Port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{at}.Port must be a port number (1-65535)"))?;
        if !ports.insert(port) {
            return Err(format!("{at}.Port {port} is used by another listener"));
        }
        let protocol = match str_field(listener, "Protocol", &format!("{at}.Protocol"))? {
            None | Some("tcp") => {
                return Err(format!(
                    "{at}.Protocol: Weft's ingress gateway serves HTTP listeners (\"http\", \"http2\", \"grpc\"); \
                     tcp listeners are not supported yet"
                ))
            }
            Some(text) => Protocol::parse(text).ok_or_else(|| format!("{at}.Protocol {text:?} is not a protocol"))?,
        };
        let tls = tls_enabled(listener, &format!("{at}.TLS"))?.unwrap_or(gateway_tls);
        let mut hosts_seen = BTreeSet::new();
        let mut services = Vec::new();
        for (j, service) in list_field(listener, "Services", &format!("{at}.Services"))?.iter().enumerate() {
            let path = format!("{at}.Services[{j}]");
            let service = as_object(service, &path)?;
            let name = str_field(service, "Name", &format!("{path}.Name"))?
                .ok_or_else(|| format!("{path}.Name must name a service"))?;
            if name == "*" {
                return Err(format!("{path}.Name \"*\": name each service the gateway exposes"));
            }
            let mut hosts = Vec::new();
            for (k, host) in list_field(service, "Hosts", &format!("{path}.Hosts"))?.iter().enumerate() {
                let host = host.as_str().ok_or_else(|| format!("{path}.Hosts[{k}] must be a string"))?;
                check_host(host).map_err(|problem| format!("{path}.Hosts[{k}] {host:?}: {problem}"))?;
                if !hosts_seen.insert(host.to_ascii_lowercase()) {
                    return Err(format!("{path}.Hosts[{k}] {host:?} is used by another service on port {port}"));
                }
                hosts.push(host.to_owned());
            }
            if hosts.is_empty() && !hosts_seen.insert(format!("{name}.ingress.*").to_ascii_lowercase()) {
                return Err(format!("{path}: {name} is exposed twice on port {port}"));
            }
            services.push(ExposedService { name: ServiceName::new(name), hosts });
        }
        if services.is_empty() {
            return Err(format!("{at}.Services must list at least one service"));
        }
        listeners.push(IngressListenerConfig { port, protocol, tls, services });
    }
    Ok(listeners)
}

fn tls_enabled(object: &Map<String, Value>, path: &str) -> Result<Option<bool>, String> {
    let Some(tls) = object_field(object, "TLS", path)? else { return Ok(None) };
    match field(tls, "Enabled") {
        None => Ok(None),
        Some(Value::Bool(enabled)) => Ok(Some(*enabled)),
        Some(other) => Err(format!("{path}.Enabled must be true or false, not {other}")),
    }
}

/// A host name, `*` or `*.<name>`.
fn check_host(host: &str) -> Result<(), &'static str> {
    let name = match host {
        "*" => return Ok(()),
        _ => host.strip_prefix("*.").unwrap_or(host),
    };
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    match !name.is_empty() && name.split('.').all(label_ok) {
        true => Ok(()),
        false => Err("not a host name (letters, digits and '-', dot-separated; '*.' may lead)"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn listeners_are_read_with_the_gateway_tls_default_and_mistakes_named() {
        let body = json!({"TLS": {"Enabled": true}, "Listeners": [
            {"Port": 8080, "Protocol": "http", "TLS": {"Enabled": false},
             "Services": [{"Name": "api", "Hosts": ["api.example.com"]}, {"Name": "web"}]},
            {"Port": 8443, "Protocol": "http", "Services": [{"Name": "api"}]}]});
        let read = listeners(body.as_object().unwrap()).unwrap();
        assert_eq!((read[0].tls, read[1].tls), (false, true));
        assert_eq!(read[0].services[0].hosts, ["api.example.com"]);
        for (bad, message) in [
            (json!({"Listeners": [{"Port": 8080, "Services": [{"Name": "db"}]}]}), "tcp listeners"),
            (json!({"Listeners": [{"Port": 0, "Protocol": "http", "Services": [{"Name": "a"}]}]}), "Port"),
            (json!({"Listeners": [{"Port": 1, "Protocol": "http", "Services": []}]}), "at least one"),
            (
                json!({"Listeners": [{"Port": 1, "Protocol": "http", "Services": [
                    {"Name": "a", "Hosts": ["x.com"]}, {"Name": "b", "Hosts": ["X.com"]}]}]}),
                "used by another service",
            ),
            (
                json!({"Listeners": [{"Port": 1, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["a b"]}]}]}),
                "host name",
            ),
            (
                json!({"Listeners": [{"Port": 1, "Protocol": "http", "Services": [{"Name": "a"}]},
                                     {"Port": 1, "Protocol": "http", "Services": [{"Name": "b"}]}]}),
                "another listener",
            ),
        ] {
            let error = listeners(bad.as_object().unwrap()).unwrap_err();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }
}
