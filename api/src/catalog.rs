//! Nodes, services and health checks as the state store keeps them.
//!
//! These are Weft's records, not Consul's JSON: the agent's HTTP layer maps
//! them to and from Consul's shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{CheckId, Datacenter, Indexes, NodeName, ServiceId, ServiceName};

/// Free-form string metadata (`NodeMeta`, `ServiceMeta`).
pub type Meta = BTreeMap<String, String>;

/// Consul's limits on metadata: pairs, and bytes of a key and of a value.
pub const MAX_META_PAIRS: usize = 64;
pub const MAX_META_KEY_BYTES: usize = 128;
pub const MAX_META_VALUE_BYTES: usize = 512;
/// The longest node or service name Weft takes (a DNS name is at most 253
/// bytes; this leaves room for names that never become one).
pub const MAX_NAME_BYTES: usize = 256;

/// Checks `meta` against Consul's limits (`ValidateMetadata`): at most 64
/// pairs, keys of letters, digits, `_` and `-` up to 128 bytes, values up
/// to 512 bytes. `what` names it in the error (`NodeMeta`, `Meta`).
pub fn validate_meta(what: &str, meta: &Meta) -> Result<(), String> {
    if meta.len() > MAX_META_PAIRS {
        return Err(format!("{what} exceeds maximum element count {MAX_META_PAIRS}"));
    }
    for (key, value) in meta {
        if key.is_empty() {
            return Err(format!("{what}: keys must not be empty"));
        }
        if key.len() > MAX_META_KEY_BYTES {
            return Err(format!("{what} key {:?}... exceeds maximum length {MAX_META_KEY_BYTES}", prefix(key)));
        }
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("{what} key {key:?} is invalid: use letters, digits, '_' and '-'"));
        }
        if value.len() > MAX_META_VALUE_BYTES {
            return Err(format!("{what} value for key {key:?} exceeds maximum length {MAX_META_VALUE_BYTES}"));
        }
    }
    Ok(())
}

/// Checks a node or service name (and an intention's or config entry's):
/// set, at most [`MAX_NAME_BYTES`], no whitespace or control characters
/// (they cannot be looked up, and a right-to-left override makes a name
/// read as another).
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must be set"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("{what} {:?}... exceeds maximum length {MAX_NAME_BYTES}", prefix(name)));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control() || is_bidi_control(*c)) {
        return Err(format!("{what} {name:?} contains {c:?}: no spaces or control characters"));
    }
    Ok(())
}

/// Unicode's bidirectional formatting characters (U+202A-U+202E,
/// U+2066-U+2069, U+200E, U+200F): they reorder how a name is shown.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The first 32 characters of `text`, for an error about a long one.
fn prefix(text: &str) -> String {
    text.chars().take(32).collect()
}

/// A machine or pod that runs an agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: NodeName,
    /// The node's UUID as its agent reports it; may be empty.
    pub id: String,
    pub address: String,
    pub datacenter: Datacenter,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: Meta,
    pub indexes: Indexes,
}

/// One instance of a service, on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub node: NodeName,
    pub id: ServiceId,
    pub name: ServiceName,
    /// `""` for a typical service; `connect-proxy`, `mesh-gateway`, ... otherwise.
    pub kind: String,
    pub tags: Vec<String>,
    /// Empty means "use the node's address".
    pub address: String,
    pub port: u16,
    pub meta: Meta,
    pub tagged_addresses: BTreeMap<String, String>,
    pub enable_tag_override: bool,
    pub weights: Weights,
    pub indexes: Indexes,
}

/// DNS SRV weights by health state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self { passing: 1, warning: 1 }
    }
}

/// The state of a health check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    Passing,
    Warning,
    #[default]
    Critical,
    Maintenance,
}

impl HealthStatus {
    /// Consul's lower-case spelling (`passing`, `warning`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
            HealthStatus::Maintenance => "maintenance",
        }
    }

    /// Parses Consul's spelling; `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "passing" => Some(HealthStatus::Passing),
            "warning" => Some(HealthStatus::Warning),
            "critical" => Some(HealthStatus::Critical),
            "maintenance" => Some(HealthStatus::Maintenance),
            _ => None,
        }
    }
}

/// A health check on a node, optionally bound to one of its services.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub node: NodeName,
    pub id: CheckId,
    pub name: String,
    pub status: HealthStatus,
    pub notes: String,
    pub output: String,
    /// Empty for a node-level check.
    pub service_id: ServiceId,
    pub service_name: ServiceName,
    pub service_tags: Vec<String>,
    /// `http`, `tcp`, `ttl`, ... as the agent ran it; informational here.
    pub check_type: String,
    pub indexes: Indexes,
}

/// A catalog registration: a node, and optionally a service and checks on it.
/// Mirrors Consul's `/v1/catalog/register` semantics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub node: Node,
    /// Leave the node record as it is (only register the service and checks).
    pub skip_node_update: bool,
    pub service: Option<Service>,
    pub checks: Vec<Check>,
}

/// A catalog deregistration: a whole node, or one service or check on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregistration {
    pub node: NodeName,
    pub service_id: Option<ServiceId>,
    pub check_id: Option<CheckId>,
}

/// The ID and name of the service every server is registered as, by the
/// leader (Consul's `consul` service, which clients and DNS look up to find
/// the servers: `consul.service.consul`). Agents leave it alone.
pub const SERVER_SERVICE: &str = "consul";

/// The kind of a sidecar proxy's service (`Kind` in Consul's JSON).
pub const CONNECT_PROXY_KIND: &str = "connect-proxy";
/// The kind of an ingress gateway's service.
pub const INGRESS_GATEWAY_KIND: &str = "ingress-gateway";
/// The kind of a mesh gateway's service.
pub const MESH_GATEWAY_KIND: &str = "mesh-gateway";

/// What Consul appends to a service's name and ID to name its sidecar.
pub const SIDECAR_SUFFIX: &str = "-sidecar-proxy";

/// The name of `service`'s sidecar (`web-sidecar-proxy`).
pub fn sidecar_name(service: &ServiceName) -> ServiceName {
    ServiceName::new(format!("{service}{SIDECAR_SUFFIX}"))
}

/// The ID of the sidecar of the service with ID `service`.
pub fn sidecar_id(service: &ServiceId) -> ServiceId {
    ServiceId::new(format!("{service}{SIDECAR_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_meta_keep_to_consul_s_limits() {
        assert!(validate_name("Node", "vm-1.example").is_ok());
        for bad in ["", " ", "a b", "web\u{202e}gnp", "tab\there", &"x".repeat(MAX_NAME_BYTES + 1)] {
            assert!(validate_name("Node", bad).is_err(), "{bad:?}");
        }
        let meta = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(validate_meta("NodeMeta", &meta(&[("weft-role", "server"), ("rack_id", "r1")])).is_ok());
        assert!(validate_meta("NodeMeta", &meta(&[("a b", "x")])).is_err());
        assert!(validate_meta("NodeMeta", &meta(&[(&"k".repeat(129), "x")])).is_err());
        assert!(validate_meta("NodeMeta", &meta(&[("k", &"v".repeat(513))])).is_err());
        let many: Meta = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_meta("NodeMeta", &many).unwrap_err().contains("maximum element count 64"));
    }
}
