//! The snapshot a sidecar runs on ([`ProxySnapshot`]), made from this
//! agent's own view: the sidecar's registration, the leaf (signed for the
//! service it fronts), the roots, the intentions for that service and the
//! healthy sidecars of each upstream.
//!
//! Everything but the leaf is read from the local copy of the state, so
//! making a snapshot never waits on a server unless the leaf is due (and
//! then, first, on the service's registration reaching that copy).

use std::net::{IpAddr, SocketAddr};

use std::collections::{BTreeMap, BTreeSet};

use weft_api::access_log::AccessLogs;
use weft_api::catalog::{
    sidecar_id, sidecar_name, HealthStatus, Node, CONNECT_PROXY_KIND, INGRESS_GATEWAY_KIND, MESH_GATEWAY_KIND,
    SIDECAR_SUFFIX,
};
use weft_api::chain::Target;
use weft_api::ids::{Datacenter, NetworkName, NodeName, ServiceId, ServiceName, NETWORK_META_KEY};
use weft_api::proxy::{
    Endpoint, InboundPolicy, IngressListener, IngressService, IngressSnapshot, IntentionSnapshot, MeshGatewaySnapshot,
    ProxySnapshot, TlsSnapshot, TransparentSnapshot, UpstreamSnapshot,
};
use weft_server::ca::CaError;
use weft_server::store::{
    access_logs, compile_discovery_chain, effective_protocol, inbound_policy, ingress_listeners,
    resolver_load_balancer, upstream_config, ServiceHealth, StateStore, Table, Tables, DEFAULT_CONNECT_TIMEOUT_MS,
};

use super::LeafCache;
use crate::config::AgentConfig;
use crate::local::definition::ProxyConfig;
use crate::local::AdminPorts;
use crate::local::LocalState;

/// The tables a snapshot reads: a change in any may change it.
pub const SNAPSHOT_TABLES: &[Table] =
    &[Table::Nodes, Table::Services, Table::Checks, Table::Intentions, Table::ConfigEntries, Table::Ca];

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("this agent has no sidecar {0:?} (register the service with connect {{ sidecar_service {{}} }})")]
    NotASidecar(ServiceId),
    #[error("this agent has no gateway {0:?} (register it: weft connect gateway --kind ingress|mesh --register)")]
    NotAGateway(ServiceId),
    #[error("sidecar {id:?}: {detail}")]
    BadRegistration { id: ServiceId, detail: String },
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// A snapshot, and when (seconds since the Unix epoch) its leaf is due for
/// renewal: the snapshot changes then even if nothing else does.
pub struct Built {
    pub snapshot: ProxySnapshot,
    pub renew_at: i64,
}

/// What a sidecar is: its ID, where it listens, and its proxy configuration.
#[derive(Clone, Debug)]
pub struct SidecarSpec {
    pub proxy_id: ServiceId,
    pub public_listener: SocketAddr,
    pub proxy: ProxyConfig,
    /// For a gateway: which, and where it listens.
    pub gateway: Option<GatewayRole>,
}

#[derive(Clone, Debug)]
pub enum GatewayRole {
    /// Its listeners bind this IP, on the ports of its ingress-gateway entry.
    Ingress { address: IpAddr },
    /// It listens on its registered addresses (its own, and every tagged one:
    /// `lan`, `wan`), those that are this host's.
    Mesh { listeners: Vec<SocketAddr> },
}

/// Where this agent is: its datacenter, and the network its sidecars reach
/// directly.
#[derive(Clone, Debug)]
pub struct Locality {
    pub datacenter: Datacenter,
    pub network: NetworkName,
}

impl Locality {
    pub fn of(config: &AgentConfig) -> Locality {
        Locality { datacenter: config.datacenter.clone(), network: config.network.clone() }
    }
}

impl SidecarSpec {
    /// Sidecar `proxy_id` as registered on this agent.
    pub fn registered(local: &LocalState, proxy_id: &ServiceId) -> Result<SidecarSpec, SnapshotError> {
        let (sidecar, proxy) = match (local.service(proxy_id), local.proxy(proxy_id)) {
            (Some(sidecar), Some(proxy)) => (sidecar, proxy),
            _ => return Err(SnapshotError::NotASidecar(proxy_id.clone())),
        };
        let address = if sidecar.address.is_empty() { "127.0.0.1" } else { sidecar.address.as_str() };
        let public_listener = socket_addr(address, sidecar.port)
            .map_err(|detail| SnapshotError::BadRegistration { id: proxy_id.clone(), detail })?;
        Ok(SidecarSpec { proxy_id: proxy_id.clone(), public_listener, proxy, gateway: None })
    }

    /// Gateway `gateway`, registered on this agent: an ingress gateway (kind
    /// `ingress-gateway`) with its listeners on `address`, or a mesh gateway
    /// (kind `mesh-gateway`) on its registered addresses.
    pub fn gateway(local: &LocalState, gateway: &ServiceId, address: IpAddr) -> Result<SidecarSpec, SnapshotError> {
        let Some(service) = local.service(gateway) else { return Err(SnapshotError::NotAGateway(gateway.clone())) };
        let role = match service.kind.as_str() {
            INGRESS_GATEWAY_KIND => GatewayRole::Ingress { address },
            MESH_GATEWAY_KIND => {
                let bad = |detail| SnapshotError::BadRegistration { id: gateway.clone(), detail };
                let lan = SocketAddr::new(service.address.parse().unwrap_or(address), service.port);
                let mut listeners = vec![lan];
                for tagged in service.tagged_addresses.values() {
                    let tagged: SocketAddr = tagged.parse().map_err(|_| bad(format!("tagged address {tagged:?}")))?;
                    if !listeners.contains(&tagged) {
                        listeners.push(tagged);
                    }
                }
                GatewayRole::Mesh { listeners }
            }
            _ => return Err(SnapshotError::NotAGateway(gateway.clone())),
        };
        Ok(SidecarSpec {
            proxy_id: gateway.clone(),
            public_listener: SocketAddr::new(address, 0),
            proxy: ProxyConfig {
                destination_service_id: gateway.clone(),
                destination_service_name: service.name.clone(),
                local_service_address: "127.0.0.1".into(),
                local_service_port: 0,
                upstreams: Vec::new(),
                transparent: false,
            },
            gateway: Some(role),
        })
    }
}

/// The snapshot for `spec`.
pub async fn build(
    store: &StateStore,
    leaves: &LeafCache,
    admin_ports: &AdminPorts,
    locality: &Locality,
    spec: &SidecarSpec,
) -> Result<Built, SnapshotError> {
    let partial = from_tables(&store.read(), spec, locality)?;
    let proxy = &spec.proxy;
    let leaf = leaves.leaf(&proxy.destination_service_name, &partial.active_root).await?;
    let snapshot = ProxySnapshot {
        proxy_id: spec.proxy_id.to_string(),
        service: proxy.destination_service_name.clone(),
        public_listener: spec.public_listener,
        local_app: partial.local_app,
        protocol: partial.protocol,
        tls: TlsSnapshot {
            cert_chain_pem: leaf.signed.cert_pem.clone(),
            private_key_pem: leaf.private_key_pem.clone(),
            roots_pem: partial.roots_pem,
            leaf_serial: leaf.signed.serial_number.clone(),
            leaf_valid_before: leaf.signed.valid_before,
            trust_domain: partial.trust_domain,
        },
        intentions: partial.intentions,
        upstreams: partial.upstreams,
        admin: admin_ports.get(&spec.proxy_id),
        inbound: partial.inbound,
        access_logs: partial.access_logs,
        ingress: partial.ingress,
        mesh_gateway: partial.mesh_gateway,
        transparent: partial.transparent,
    };
    Ok(Built { snapshot, renew_at: leaf.renew_at })
}

/// What the tables say, before the leaf.
struct FromTables {
    local_app: SocketAddr,
    protocol: weft_api::mesh::Protocol,
    active_root: String,
    roots_pem: Vec<String>,
    trust_domain: String,
    intentions: IntentionSnapshot,
    upstreams: Vec<UpstreamSnapshot>,
    inbound: InboundPolicy,
    access_logs: Option<AccessLogs>,
    ingress: Option<IngressSnapshot>,
    mesh_gateway: Option<MeshGatewaySnapshot>,
    transparent: Option<TransparentSnapshot>,
}

fn from_tables(tables: &Tables, spec: &SidecarSpec, locality: &Locality) -> Result<FromTables, SnapshotError> {
    let bad = |detail: String| SnapshotError::BadRegistration { id: spec.proxy_id.clone(), detail };
    let proxy = &spec.proxy;
    let ca = tables.mesh().ca().ok_or(CaError::NotInitialized)?;
    let active_root = ca.active_root().ok_or(CaError::NotInitialized)?.id.clone();
    let local_app = socket_addr(&proxy.local_service_address, proxy.local_service_port).map_err(&bad)?;
    let mesh = tables.mesh();
    let service = &proxy.destination_service_name;
    let reach = Reach::new(tables, &locality.network);
    let datacenter = &locality.datacenter;
    let intentions =
        IntentionSnapshot { rules: mesh.intention_rules(service), default_action: mesh.default_intention_action() };
    let upstreams = proxy
        .upstreams
        .iter()
        .map(|upstream| {
            let destination = ServiceName::new(upstream.destination_name.as_str());
            let bind_address = upstream.local_bind_address.as_deref().unwrap_or("127.0.0.1");
            let local_bind = socket_addr(bind_address, upstream.local_bind_port).map_err(&bad)?;
            Ok(upstream_snapshot(tables, &reach, datacenter, service, destination, local_bind))
        })
        .collect::<Result<_, SnapshotError>>()?;
    Ok(FromTables {
        local_app,
        protocol: effective_protocol(mesh, service.as_str()).protocol,
        active_root,
        roots_pem: ca.roots.iter().map(|r| r.certificate_pem().to_owned()).collect(),
        trust_domain: ca.trust_domain.clone(),
        intentions,
        upstreams,
        inbound: inbound_policy(mesh, service),
        access_logs: access_logs(mesh),
        ingress: match &spec.gateway {
            Some(GatewayRole::Ingress { address }) => {
                Some(ingress_snapshot(tables, &reach, datacenter, service, *address))
            }
            _ => None,
        },
        mesh_gateway: match &spec.gateway {
            Some(GatewayRole::Mesh { listeners }) => Some(mesh_gateway_snapshot(tables, &reach, listeners)),
            _ => None,
        },
        transparent: proxy.transparent.then(|| transparent_snapshot(tables, &reach, datacenter, service)),
    })
}

/// A gateway's listeners, each exposed service as one of its upstreams.
fn ingress_snapshot(
    tables: &Tables,
    reach: &Reach,
    datacenter: &Datacenter,
    gateway: &ServiceName,
    address: IpAddr,
) -> IngressSnapshot {
    let listeners = ingress_listeners(tables.mesh(), gateway)
        .into_iter()
        .map(|listener| {
            let bind = SocketAddr::new(address, listener.port);
            let services = listener
                .services
                .into_iter()
                .map(|exposed| IngressService {
                    hosts: exposed.hosts,
                    upstream: upstream_snapshot(tables, reach, datacenter, gateway, exposed.name, bind),
                })
                .collect();
            IngressListener { bind, protocol: listener.protocol, tls: listener.tls, services }
        })
        .collect();
    IngressSnapshot { listeners }
}

/// One upstream: its discovery chain and the endpoints of each target.
/// A chain that cannot be compiled (which validated writes prevent) leaves
/// the destination's own instances as the only target.
fn upstream_snapshot(
    tables: &Tables,
    reach: &Reach,
    datacenter: &Datacenter,
    caller: &ServiceName,
    destination: ServiceName,
    local_bind: SocketAddr,
) -> UpstreamSnapshot {
    let mesh = tables.mesh();
    let settings = upstream_config(mesh, caller, &destination);
    let mut chain = compile_discovery_chain(mesh, &destination, datacenter)
        .map_err(|error| tracing::warn!(%destination, %error, "cannot compile the discovery chain"))
        .ok();
    if let (Some(chain), Some(ms)) = (chain.as_mut(), settings.connect_timeout_ms) {
        for target in chain.targets.values_mut() {
            target.connect_timeout_ms = ms;
        }
    }
    let target_endpoints: BTreeMap<String, Vec<Endpoint>> = chain
        .iter()
        .flat_map(|chain| chain.targets.iter())
        .map(|(id, target)| (id.clone(), target_endpoints(tables, reach, target)))
        .collect();
    // A tcp upstream takes the default route's target, else its failovers.
    let default_target = chain.as_ref().and_then(|c| c.routes.last()?.splits.first()).map(|s| s.target.clone());
    let endpoints = match (&chain, default_target) {
        (Some(chain), Some(id)) => std::iter::once(&id)
            .chain(chain.targets.get(&id).map(|t| t.failover.iter()).into_iter().flatten())
            .map(|id| target_endpoints.get(id).cloned().unwrap_or_default())
            .find(|endpoints| !endpoints.is_empty())
            .unwrap_or_default(),
        _ => healthy_sidecars_of(tables, reach, &destination, |_| true, false),
    };
    let default = chain.as_ref().and_then(|c| c.targets.values().next());
    UpstreamSnapshot {
        local_bind,
        protocol: effective_protocol(mesh, destination.as_str()).protocol,
        endpoints,
        connect_timeout_ms: settings
            .connect_timeout_ms
            .unwrap_or_else(|| default.map_or(DEFAULT_CONNECT_TIMEOUT_MS, |t| t.connect_timeout_ms)),
        load_balancer: resolver_load_balancer(mesh, destination.as_str()),
        chain,
        target_endpoints,
        limits: settings.limits,
        outlier: settings.outlier,
        destination,
    }
}

/// The sidecars of the instances `target` selects.
pub(crate) fn target_endpoints(tables: &Tables, reach: &Reach, target: &Target) -> Vec<Endpoint> {
    let filter = target.filter.as_deref().and_then(|f| weft_filter::Filter::parse(f).ok());
    healthy_sidecars_of(
        tables,
        reach,
        &target.service,
        |instance| filter.as_ref().is_none_or(|f| f.matches(&crate::http::health_entry_json(instance))),
        target.only_passing,
    )
}

/// The passing sidecars (`<service>-sidecar-proxy`, kind `connect-proxy`) of
/// the healthy instances of `service` that `selects` takes (healthy: no
/// critical check; with `only_passing`, no warning either), in a stable
/// order so that an unchanged set makes an unchanged snapshot.
fn healthy_sidecars_of(
    tables: &Tables,
    reach: &Reach,
    service: &ServiceName,
    selects: impl Fn(&ServiceHealth) -> bool,
    only_passing: bool,
) -> Vec<Endpoint> {
    let catalog = tables.catalog();
    let healthy = |entry: &ServiceHealth| is_healthy(entry, only_passing);
    let selected: BTreeSet<(NodeName, ServiceId)> = catalog
        .service_health(service)
        .into_iter()
        .filter(|entry| entry.service.kind.is_empty() && healthy(entry) && selects(entry))
        .map(|entry| (entry.node.name.clone(), sidecar_id(&entry.service.id)))
        .collect();
    let mut endpoints: Vec<Endpoint> = catalog
        .service_health(&sidecar_name(service))
        .into_iter()
        .filter(|h| h.service.kind == CONNECT_PROXY_KIND && h.is_passing())
        .filter(|h| selected.contains(&(h.node.name.clone(), h.service.id.clone())))
        .filter_map(|h| reach.endpoint(&h, service_address(&h).ok()?))
        .collect();
    endpoints.sort_by(|a, b| (&a.node, a.address).cmp(&(&b.node, b.address)));
    endpoints
}

/// Healthy: no critical check; with `only_passing`, no warning either.
fn is_healthy(entry: &ServiceHealth, only_passing: bool) -> bool {
    entry.checks.iter().all(|c| match c.status {
        HealthStatus::Passing => true,
        HealthStatus::Warning => !only_passing,
        HealthStatus::Critical | HealthStatus::Maintenance => false,
    })
}

/// Where an instance listens: its own address, else its node's.
fn service_address(entry: &ServiceHealth) -> Result<SocketAddr, String> {
    let address = if entry.service.address.is_empty() { &entry.node.address } else { &entry.service.address };
    socket_addr(address, entry.service.port)
}

/// Where a transparent sidecar takes redirected connections (Consul's
/// default outbound listener port).
pub const TRANSPARENT_OUTBOUND_LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15001);

/// A transparent sidecar's implicit upstreams: every other service in the
/// mesh (one with a sidecar), and the addresses its instances are known by
/// (their own, and a `virtual` tagged address such as a Kubernetes
/// ClusterIP). The destination's sidecar still judges every connection.
fn transparent_snapshot(
    tables: &Tables,
    reach: &Reach,
    datacenter: &Datacenter,
    caller: &ServiceName,
) -> TransparentSnapshot {
    let catalog = tables.catalog();
    let services: BTreeSet<ServiceName> = catalog
        .services()
        .filter(|s| s.kind == CONNECT_PROXY_KIND)
        .filter_map(|s| s.name.as_str().strip_suffix(SIDECAR_SUFFIX).map(ServiceName::new))
        .filter(|service| service != caller)
        .collect();
    let mut destinations = BTreeMap::new();
    for service in &services {
        for instance in catalog.service_health(service).into_iter().filter(|h| h.service.kind.is_empty()) {
            let virtual_address = instance.service.tagged_addresses.get("virtual").and_then(|a| a.parse().ok());
            for address in service_address(&instance).ok().into_iter().chain(virtual_address) {
                destinations.insert(address, service.clone());
            }
        }
    }
    let upstreams = services
        .into_iter()
        .map(|service| upstream_snapshot(tables, reach, datacenter, caller, service, TRANSPARENT_OUTBOUND_LISTENER))
        .collect();
    TransparentSnapshot { outbound_listener: TRANSPARENT_OUTBOUND_LISTENER, upstreams, destinations }
}

/// A mesh gateway's listeners and the sidecars of its network it relays to.
fn mesh_gateway_snapshot(tables: &Tables, reach: &Reach, listeners: &[SocketAddr]) -> MeshGatewaySnapshot {
    let catalog = tables.catalog();
    let names: BTreeSet<&ServiceName> =
        catalog.services().filter(|s| s.kind == CONNECT_PROXY_KIND).map(|s| &s.name).collect();
    let mut sidecars: BTreeMap<ServiceName, Vec<SocketAddr>> = BTreeMap::new();
    for name in names {
        let service = ServiceName::new(name.as_str().strip_suffix(SIDECAR_SUFFIX).unwrap_or(name.as_str()));
        let reachable = catalog
            .service_health(name)
            .into_iter()
            .filter(|h| h.service.kind == CONNECT_PROXY_KIND && h.is_passing() && reach.in_own_network(&h.node))
            .filter_map(|h| service_address(&h).ok());
        sidecars.entry(service).or_default().extend(reachable);
    }
    sidecars.retain(|_, addresses| !addresses.is_empty());
    for addresses in sidecars.values_mut() {
        addresses.sort();
        addresses.dedup();
    }
    MeshGatewaySnapshot { listeners: listeners.to_vec(), sidecars }
}

/// How this agent's sidecars reach another sidecar: directly when it is in
/// their network, else through a mesh gateway of its network (the first
/// healthy one, by node and ID, at its `wan` address if it has one).
pub(crate) struct Reach<'a> {
    network: &'a NetworkName,
    gateways: BTreeMap<NetworkName, SocketAddr>,
}

impl<'a> Reach<'a> {
    pub(crate) fn new(tables: &Tables, network: &'a NetworkName) -> Reach<'a> {
        let catalog = tables.catalog();
        let names: BTreeSet<&ServiceName> =
            catalog.services().filter(|s| s.kind == MESH_GATEWAY_KIND).map(|s| &s.name).collect();
        let mut gateways = BTreeMap::new();
        for name in names {
            let mut healthy: Vec<ServiceHealth> =
                catalog.service_health(name).into_iter().filter(|h| is_healthy(h, false)).collect();
            healthy.sort_by(|a, b| (&a.node.name, &a.service.id).cmp(&(&b.node.name, &b.service.id)));
            for gateway in healthy {
                let wan = gateway.service.tagged_addresses.get("wan").and_then(|a| a.parse().ok());
                if let Some(address) = wan.or_else(|| service_address(&gateway).ok()) {
                    gateways.entry(network_of(&gateway.node)).or_insert(address);
                }
            }
        }
        Reach { network, gateways }
    }

    fn in_own_network(&self, node: &Node) -> bool {
        network_of(node) == *self.network
    }

    /// The endpoint for a sidecar at `address` on `entry`'s node, if it can
    /// be reached from here.
    fn endpoint(&self, entry: &ServiceHealth, address: SocketAddr) -> Option<Endpoint> {
        let node = entry.node.name.clone();
        if self.in_own_network(&entry.node) {
            return Some(Endpoint { address, node, gateway: None });
        }
        let gateway = self.gateways.get(&network_of(&entry.node)).copied();
        if gateway.is_none() {
            tracing::debug!(%node, %address, "a sidecar in another network with no healthy mesh gateway is left out");
        }
        Some(Endpoint { address, node, gateway: Some(gateway?) })
    }
}

/// The network a node is in (its `weft-network` meta; empty: the default).
fn network_of(node: &Node) -> NetworkName {
    node.meta.get(NETWORK_META_KEY).map(NetworkName::new).unwrap_or_default()
}

fn socket_addr(address: &str, port: u16) -> Result<SocketAddr, String> {
    let ip: std::net::IpAddr =
        address.parse().map_err(|_| format!("{address:?} is not an IP address a sidecar can listen on or reach"))?;
    Ok(SocketAddr::new(ip, port))
}
