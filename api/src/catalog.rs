//! Nodes, services and health checks as the state store keeps them.
//!
//! These are Weft's records, not Consul's JSON: the agent's HTTP layer maps
//! them to and from Consul's shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{CheckId, Datacenter, Indexes, NodeName, ServiceId, ServiceName};

/// Free-form string metadata (`NodeMeta`, `ServiceMeta`).
pub type Meta = BTreeMap<String, String>;

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
