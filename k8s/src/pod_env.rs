//! The injected agent's side of the contract: `weft agent --k8s` reads
//! who it is from the environment the webhook set (the Downward API and
//! the pod's validated annotations), so a pod's agent needs no config file.

use weft_api::ids::ServiceName;

use crate::annotations::{parse_bool, parse_port, parse_service_name, parse_upstreams, Upstreams};

/// Everything `weft agent --k8s` learns from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEnv {
    pub pod_name: String,
    pub namespace: String,
    pub pod_ip: std::net::IpAddr,
    pub node_name: String,
    pub service: ServiceName,
    /// `None`: the pod serves nothing (upstreams only).
    pub service_port: Option<u16>,
    pub upstreams: Upstreams,
    pub transparent_proxy: bool,
    /// The CA the servers' RPC certificates chain to (PEM), if given.
    pub server_ca_pem: Option<String>,
    /// With ACLs on: the auth method to log in with, and the file holding
    /// the JWT to present.
    pub acl_login: Option<(String, std::path::PathBuf)>,
}

/// The variables, named as the webhook sets them.
pub const POD_NAME: &str = "WEFT_POD_NAME";
pub const POD_NAMESPACE: &str = "WEFT_POD_NAMESPACE";
pub const POD_IP: &str = "WEFT_POD_IP";
pub const NODE_NAME: &str = "WEFT_NODE_NAME";
pub const SERVICE_NAME: &str = "WEFT_SERVICE_NAME";
pub const SERVICE_PORT: &str = "WEFT_SERVICE_PORT";
pub const SERVICE_UPSTREAMS: &str = "WEFT_SERVICE_UPSTREAMS";
pub const TRANSPARENT_PROXY: &str = "WEFT_TRANSPARENT_PROXY";
pub const SERVER_CA_PEM: &str = "WEFT_SERVER_CA_PEM";
pub const ACL_AUTH_METHOD: &str = "WEFT_ACL_AUTH_METHOD";
pub const ACL_BEARER_TOKEN_FILE: &str = "WEFT_ACL_BEARER_TOKEN_FILE";

impl PodEnv {
    /// Reads the environment through `var`; every problem is listed.
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Result<PodEnv, Vec<String>> {
        let mut problems = Vec::new();
        let mut required = |name: &str| match var(name).filter(|v| !v.is_empty()) {
            Some(value) => value,
            None => {
                problems.push(format!("{name} is not set (the sidecar injector sets it from the Downward API)"));
                String::new()
            }
        };
        let (pod_name, namespace, pod_ip, node_name, service) = (
            required(POD_NAME),
            required(POD_NAMESPACE),
            required(POD_IP),
            required(NODE_NAME),
            required(SERVICE_NAME),
        );
        let pod_ip = match pod_ip.parse() {
            Ok(ip) => Some(ip),
            Err(_) if pod_ip.is_empty() => None,
            Err(_) => {
                problems.push(format!("{POD_IP}={pod_ip:?} is not an IP address"));
                None
            }
        };
        let service = match parse_service_name(&service) {
            Ok(service) => Some(service),
            Err(_) if service.is_empty() => None,
            Err(rule) => {
                problems.push(format!("{SERVICE_NAME}={service:?} is not a service name: {rule}"));
                None
            }
        };
        let service_port = var(SERVICE_PORT).filter(|v| !v.is_empty()).and_then(|text| {
            let port = parse_port(&text);
            if port.is_none() {
                problems.push(format!("{SERVICE_PORT}={text:?} is not a port number (1-65535)"));
            }
            port
        });
        let upstreams = match parse_upstreams(&var(SERVICE_UPSTREAMS).unwrap_or_default()) {
            Ok(upstreams) => upstreams,
            Err(errors) => {
                problems.extend(errors.into_iter().map(|problem| format!("{SERVICE_UPSTREAMS}: {problem}")));
                Upstreams::default()
            }
        };
        let transparent_proxy = match var(TRANSPARENT_PROXY).filter(|v| !v.is_empty()) {
            None => false,
            Some(text) => parse_bool(&text).unwrap_or_else(|problem| {
                problems.push(format!("{TRANSPARENT_PROXY}: {problem}"));
                false
            }),
        };
        let acl_login = match (var(ACL_AUTH_METHOD).filter(|v| !v.is_empty()), var(ACL_BEARER_TOKEN_FILE)) {
            (None, _) => None,
            (Some(method), Some(file)) if !file.is_empty() => Some((method, file.into())),
            (Some(_), _) => {
                problems.push(format!("{ACL_AUTH_METHOD} is set without {ACL_BEARER_TOKEN_FILE}"));
                None
            }
        };
        match (pod_ip, service) {
            (Some(pod_ip), Some(service)) if problems.is_empty() => Ok(PodEnv {
                pod_name,
                namespace,
                pod_ip,
                node_name,
                service,
                service_port,
                upstreams,
                transparent_proxy,
                server_ca_pem: var(SERVER_CA_PEM).filter(|v| !v.is_empty()),
                acl_login,
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn reads_the_pod_and_its_service() {
        let read = PodEnv::read(env(&[
            (POD_NAME, "web-7d9f"),
            (POD_NAMESPACE, "shop"),
            (POD_IP, "198.18.2.10"),
            (NODE_NAME, "node-1"),
            (SERVICE_NAME, "web"),
            (SERVICE_PORT, "8080"),
            (SERVICE_UPSTREAMS, "api:9191,db:5432"),
        ]))
        .unwrap();
        assert_eq!((read.service.as_str(), read.service_port, read.transparent_proxy), ("web", Some(8080), false));
        assert_eq!(read.upstreams.to_string(), "api:9191,db:5432");
    }

    #[test]
    fn lists_every_problem() {
        let problems =
            PodEnv::read(env(&[(POD_IP, "nope"), (SERVICE_NAME, "Web_1"), (SERVICE_PORT, "0")])).unwrap_err();
        let text = problems.join("\n");
        for expected in [POD_NAME, POD_NAMESPACE, NODE_NAME, "not an IP address", "not a service name", SERVICE_PORT] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
