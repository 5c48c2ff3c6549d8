//! What a sidecar runs on: one snapshot of everything it needs, streamed
//! by its local agent (`GET /v1/agent/connect/proxy/<sidecar-id>`, a
//! blocking query on `?hash=`), so a sidecar never asks a server anything
//! and never waits on the network to route or authorize.
//!
//! This is Weft's own shape (JSON on the wire), between an agent and the
//! sidecars it runs; no Consul client reads it. A new snapshot replaces the
//! whole previous one, and the sidecar applies what changed without
//! dropping connections that are still allowed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::access_log::AccessLogs;
use crate::chain::DiscoveryChain;
use crate::ids::{NodeName, ServiceName};
use crate::intentions::{IntentionError, IntentionRule, IntentionSet, PathMatch};
use crate::mesh::{IntentionAction, Protocol};

/// What a proxy's admin port answers on `/ready` once it serves: which
/// proxy it is and where its public listener is bound. The agent's
/// "Connect Sidecar Listening" check compares both with the sidecar's
/// registration, so a listener that belongs to something else (another
/// agent's sidecar on the same host) never passes for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyReady {
    /// The proxy's service ID ([`ProxySnapshot::proxy_id`]).
    pub proxy_id: String,
    /// Where its mutual-TLS listener is bound; `None` for a gateway.
    pub public_listener: Option<SocketAddr>,
}

/// The exit code of `weft connect proxy` when its public listener's port is
/// taken. The agent that runs the sidecar then gives it another port (unless
/// the port was asked for) before starting it again.
pub const EXIT_PUBLIC_PORT_IN_USE: u8 = 98;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxySnapshot {
    /// The sidecar's service ID (`web-sidecar-proxy`).
    pub proxy_id: String,
    /// The service it fronts: its identity in the mesh.
    pub service: ServiceName,
    /// Where other sidecars reach it (mutual TLS).
    pub public_listener: SocketAddr,
    /// The application it forwards allowed traffic to.
    pub local_app: SocketAddr,
    /// What the application speaks: HTTP-like protocols are parsed, so L7
    /// intentions apply per request.
    pub protocol: Protocol,
    pub tls: TlsSnapshot,
    pub intentions: IntentionSnapshot,
    pub upstreams: Vec<UpstreamSnapshot>,
    /// Where the sidecar serves /metrics and /config, if its agent knows
    /// (`weft proxy config-dump` looks here).
    pub admin: Option<SocketAddr>,
    /// How traffic to the service is let in: mTLS mode and rate limits.
    #[serde(default)]
    pub inbound: InboundPolicy,
    /// proxy-defaults' `AccessLogs`, if enabled.
    #[serde(default)]
    pub access_logs: Option<AccessLogs>,
    /// For an ingress gateway: its listeners (from its `ingress-gateway`
    /// entry). A gateway has no application and no public mTLS listener.
    #[serde(default)]
    pub ingress: Option<IngressSnapshot>,
    /// For a mesh gateway: where it listens and the sidecars it may relay to.
    #[serde(default)]
    pub mesh_gateway: Option<MeshGatewaySnapshot>,
    /// Transparent proxying (`Proxy.Mode = "transparent"`): the outbound
    /// listener the pod's redirected connections arrive at, and where they
    /// may go.
    #[serde(default)]
    pub transparent: Option<TransparentSnapshot>,
}

/// What a transparent sidecar does with a redirected connection: its
/// original destination names a service instance, and the connection goes
/// to that service through the mesh, as if it were an upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransparentSnapshot {
    /// Where redirected outbound connections arrive (`127.0.0.1:15001`).
    pub outbound_listener: SocketAddr,
    /// Every mesh service the sidecar may reach this way, as an upstream
    /// (its `local_bind` is unused: nothing listens for it).
    pub upstreams: Vec<UpstreamSnapshot>,
    /// Instance addresses (as the catalog and DNS give them) to services.
    pub destinations: BTreeMap<SocketAddr, ServiceName>,
}

/// A mesh gateway relays mutual TLS connections from other networks to the
/// sidecars of its own, by the instance each names in its SNI, without
/// terminating them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshGatewaySnapshot {
    /// Its registered addresses (LAN and WAN), each a listener.
    pub listeners: Vec<SocketAddr>,
    /// The healthy sidecars in the gateway's network, by service: the only
    /// places it relays to.
    pub sidecars: BTreeMap<ServiceName, Vec<SocketAddr>>,
}

/// An ingress gateway's listeners on the edge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngressSnapshot {
    pub listeners: Vec<IngressListener>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngressListener {
    pub bind: SocketAddr,
    pub protocol: Protocol,
    /// Terminate TLS with the gateway's own certificate (given to it on
    /// its host, never replicated).
    pub tls: bool,
    pub services: Vec<IngressService>,
}

/// A mesh service a listener exposes, and the requests that go to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngressService {
    /// `Host` values (a leading `*.` matches any one label); empty means
    /// Consul's default, `<service>.ingress.*`.
    pub hosts: Vec<String>,
    /// The service as an upstream of the gateway: its chain and endpoints.
    pub upstream: UpstreamSnapshot,
}

impl IngressService {
    /// Whether a request for `host` (its port stripped) goes to this service.
    pub fn serves_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        if self.hosts.is_empty() {
            let prefix = format!("{}.ingress.", self.upstream.destination);
            return host.len() > prefix.len() && host[..prefix.len()].eq_ignore_ascii_case(&prefix);
        }
        self.hosts.iter().any(|pattern| match pattern.strip_prefix("*.") {
            _ if pattern == "*" => true,
            Some(suffix) => {
                host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix))
            }
            None => host.eq_ignore_ascii_case(pattern),
        })
    }
}

/// The service's own settings for traffic to it (its service-defaults,
/// else proxy-defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundPolicy {
    pub mutual_tls_mode: MutualTlsMode,
    /// service-defaults' `RateLimits.InstanceLevel`.
    pub rate_limit: Option<RateLimit>,
}

/// Consul's `MutualTLSMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MutualTlsMode {
    /// Only mutual TLS from mesh sidecars.
    #[default]
    Strict,
    /// Plaintext too, passed to the application unjudged: for moving a
    /// service into the mesh while some callers are still outside it.
    Permissive,
}

/// A local request rate limit: a token bucket per sidecar instance, and
/// one per route that has its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests per second for requests no route below matches; 0 is unlimited.
    pub requests_per_second: u32,
    /// The bucket's size: how many requests may come at once after a quiet spell.
    pub max_burst: u32,
    pub routes: Vec<RouteRateLimit>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRateLimit {
    pub path: PathMatch,
    pub requests_per_second: u32,
    pub max_burst: u32,
}

/// The sidecar's leaf and the roots it trusts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSnapshot {
    /// PEM: the leaf first, then any intermediates (a cross-signed root
    /// during a rotation).
    pub cert_chain_pem: String,
    /// PEM, made on this host; it never leaves it.
    pub private_key_pem: String,
    /// PEM of every trusted root (old and new during a rotation).
    pub roots_pem: Vec<String>,
    pub leaf_serial: String,
    /// Seconds since the Unix epoch.
    pub leaf_valid_before: i64,
    pub trust_domain: String,
}

/// The rules for traffic to this sidecar's service, and the mesh default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentionSnapshot {
    pub rules: Vec<IntentionRule>,
    pub default_action: IntentionAction,
}

impl IntentionSnapshot {
    pub fn compile(&self) -> Result<IntentionSet, IntentionError> {
        IntentionSet::new(self.rules.clone(), self.default_action)
    }
}

/// One upstream: a local listener for the application, and where to send
/// its traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamSnapshot {
    pub destination: ServiceName,
    pub local_bind: SocketAddr,
    pub protocol: Protocol,
    /// The default route's endpoints (its target, else its failovers):
    /// where a `tcp` upstream's connections go.
    pub endpoints: Vec<Endpoint>,
    pub connect_timeout_ms: u64,
    pub load_balancer: LoadBalancer,
    /// How an HTTP upstream's requests are routed, split and resolved.
    #[serde(default)]
    pub chain: Option<DiscoveryChain>,
    /// The healthy sidecars of each of the chain's targets, by target ID.
    #[serde(default)]
    pub target_endpoints: BTreeMap<String, Vec<Endpoint>>,
    /// The caller's limits on this upstream (its service-defaults'
    /// `UpstreamConfig`).
    #[serde(default)]
    pub limits: Limits,
    /// Endpoints that keep failing are ejected for a while.
    #[serde(default)]
    pub outlier: Option<OutlierDetection>,
}

/// Consul's `Limits`: beyond them a request gets a 503 at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Connections the application may hold open to this upstream.
    pub max_connections: Option<u32>,
    /// Requests waiting for a free slot under `max_concurrent_requests`.
    pub max_pending_requests: Option<u32>,
    pub max_concurrent_requests: Option<u32>,
}

/// Consul's `PassiveHealthCheck`: an endpoint that fails this often in a
/// row is ejected for a while.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx (or connect failures) that eject an endpoint.
    pub max_failures: u32,
    /// How often ejections are reviewed (Consul's `Interval`).
    pub interval_ms: u64,
    /// The first ejection's length; each further ejection is longer.
    pub base_ejection_time_ms: u64,
    /// At most this share of endpoints ejected at once.
    pub max_ejection_percent: u32,
}

/// How a sidecar spreads an upstream's traffic over its endpoints (the
/// destination's `service-resolver` `LoadBalancer`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancer {
    #[default]
    RoundRobin,
    /// The less busy of two endpoints picked at random (power of two choices).
    LeastRequest,
    /// Consul's `ring_hash` and `maglev`: requests with the same hash key
    /// (from `HashPolicies`) go to the same endpoint, and when endpoints
    /// come or go only the keys of those endpoints move. Requests with no
    /// key are spread round robin.
    ConsistentHash(Vec<HashPolicy>),
}

/// One of a resolver's `HashPolicies`: where part of a request's hash key
/// comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashPolicy {
    pub source: HashSource,
    /// Stop at this policy if it gave a value.
    pub terminal: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashSource {
    /// A request header, by name (any case).
    Header(String),
    Cookie(String),
    QueryParameter(String),
    /// The address the request or connection came from.
    SourceIp,
}

/// A healthy sidecar of an upstream's destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub node: NodeName,
    /// For a sidecar in another network: the mesh gateway of that network
    /// that relays to it (connect there, and name `address` in the SNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposed(service: &str, hosts: &[&str]) -> IngressService {
        IngressService {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            upstream: UpstreamSnapshot {
                destination: service.into(),
                local_bind: "127.0.0.1:0".parse().unwrap(),
                protocol: Protocol::Http,
                endpoints: Vec::new(),
                connect_timeout_ms: 5000,
                load_balancer: LoadBalancer::RoundRobin,
                chain: None,
                target_endpoints: BTreeMap::new(),
                limits: Limits::default(),
                outlier: None,
            },
        }
    }

    #[test]
    fn ingress_hosts_match_exactly_by_wildcard_or_by_consuls_default() {
        let default = exposed("api", &[]);
        assert!(default.serves_host("api.ingress.weft") && default.serves_host("API.ingress.dc1.weft."));
        assert!(!default.serves_host("api.ingress.") && !default.serves_host("web.ingress.weft"));
        let named = exposed("api", &["api.example.com", "*.api.example.org"]);
        assert!(named.serves_host("API.example.com") && named.serves_host("v1.api.example.org"));
        assert!(!named.serves_host("api.example.org") && !named.serves_host("a.b.api.example.org"));
        assert!(exposed("api", &["*"]).serves_host("anything"));
    }
}
