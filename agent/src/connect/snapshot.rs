//! The snapshot a sidecar runs on ([`ProxySnapshot`]), made from this
//! agent's own view: the sidecar's registration, the leaf (signed for the
//! service it fronts), the roots, the intentions for that service and the
//! healthy sidecars of each upstream.
//!
//! Everything but the leaf is read from the local copy of the state, so
//! making a snapshot never waits on a server unless the leaf is due.

use std::net::SocketAddr;

use weft_api::catalog::sidecar_name;
use weft_api::ids::{ServiceId, ServiceName};
use weft_api::proxy::{Endpoint, IntentionSnapshot, ProxySnapshot, TlsSnapshot, UpstreamSnapshot};
use weft_server::ca::CaError;
use weft_server::store::{effective_protocol, resolver_load_balancer, StateStore, Table, Tables};

use super::supervisor::AdminPorts;
use super::LeafCache;
use crate::local::definition::ProxyConfig;
use crate::local::LocalState;

/// The tables a snapshot reads: a change in any may change it.
pub const SNAPSHOT_TABLES: &[Table] =
    &[Table::Nodes, Table::Services, Table::Checks, Table::Intentions, Table::ConfigEntries, Table::Ca];

/// How long a sidecar may take to connect to an upstream's sidecar.
const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("this agent has no sidecar {0:?} (register the service with connect {{ sidecar_service {{}} }})")]
    NotASidecar(ServiceId),
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
        Ok(SidecarSpec { proxy_id: proxy_id.clone(), public_listener, proxy })
    }
}

/// The snapshot for `spec`.
pub async fn build(
    store: &StateStore,
    leaves: &LeafCache,
    admin_ports: &AdminPorts,
    spec: &SidecarSpec,
) -> Result<Built, SnapshotError> {
    let partial = from_tables(&store.read(), spec)?;
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
}

fn from_tables(tables: &Tables, spec: &SidecarSpec) -> Result<FromTables, SnapshotError> {
    let bad = |detail: String| SnapshotError::BadRegistration { id: spec.proxy_id.clone(), detail };
    let proxy = &spec.proxy;
    let ca = tables.mesh().ca().ok_or(CaError::NotInitialized)?;
    let active_root = ca.active_root().ok_or(CaError::NotInitialized)?.id.clone();
    let local_app = socket_addr(&proxy.local_service_address, proxy.local_service_port).map_err(&bad)?;
    let mesh = tables.mesh();
    let service = &proxy.destination_service_name;
    let intentions =
        IntentionSnapshot { rules: mesh.intention_rules(service), default_action: mesh.default_intention_action() };
    let upstreams = proxy
        .upstreams
        .iter()
        .map(|upstream| {
            let destination = ServiceName::new(upstream.destination_name.as_str());
            let bind_address = upstream.local_bind_address.as_deref().unwrap_or("127.0.0.1");
            Ok(UpstreamSnapshot {
                local_bind: socket_addr(bind_address, upstream.local_bind_port).map_err(&bad)?,
                protocol: effective_protocol(mesh, destination.as_str()).protocol,
                endpoints: healthy_sidecars(tables, &destination),
                connect_timeout_ms: UPSTREAM_CONNECT_TIMEOUT_MS,
                load_balancer: resolver_load_balancer(mesh, destination.as_str()),
                destination,
            })
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
    })
}

/// The passing sidecars (`connect-proxy` services) of `destination`, in a
/// stable order so that an unchanged set makes an unchanged snapshot.
fn healthy_sidecars(tables: &Tables, destination: &ServiceName) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = tables
        .catalog()
        .service_health(&sidecar_name(destination))
        .into_iter()
        .filter(|h| h.service.kind == "connect-proxy" && h.is_passing())
        .filter_map(|h| {
            let address = if h.service.address.is_empty() { &h.node.address } else { &h.service.address };
            Some(Endpoint { address: socket_addr(address, h.service.port).ok()?, node: h.node.name.clone() })
        })
        .collect();
    endpoints.sort_by(|a, b| (&a.node, a.address).cmp(&(&b.node, b.address)));
    endpoints
}

fn socket_addr(address: &str, port: u16) -> Result<SocketAddr, String> {
    let ip: std::net::IpAddr =
        address.parse().map_err(|_| format!("{address:?} is not an IP address a sidecar can listen on or reach"))?;
    Ok(SocketAddr::new(ip, port))
}
