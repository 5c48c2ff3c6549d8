//! A sidecar run from its local agent (`weft connect proxy`).
//!
//! It follows one snapshot from the agent (a blocking query on its content
//! hash, so changes arrive as they happen) and runs on it: the public mTLS
//! listener, one listener per upstream (opened and closed as upstreams come
//! and go), and the admin port. It never talks to a server. If the agent
//! goes away, the sidecar keeps serving on the last snapshot it had; if
//! the agent refuses its token (deleted, expired, or no longer allowed
//! `service:write`), it stops, and every connection through it ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use weft_api::catalog::sidecar_id;
use weft_api::client::{path_segment, HttpClient};
use weft_api::ids::ServiceId;
use weft_api::proxy::ProxySnapshot;

use crate::access_log::AccessLog;
use crate::admin::{self, Admin};
use crate::inbound::{self, Inbound};
use crate::metrics::Metrics;
use crate::outbound::{self, Upstream};
use crate::runtime::{current, Runtime, RuntimeWatch};

/// How long one snapshot query may block at the agent.
const SNAPSHOT_WAIT: &str = "5m";
/// After a failed snapshot query, the next one comes this soon.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which snapshot to follow.
#[derive(Clone, Debug)]
pub enum SnapshotSource {
    /// The sidecar the agent registered for service `parent_id`.
    SidecarFor { parent_id: String },
    /// A stand-alone sidecar for `service` (registered on the agent, with
    /// no sidecar registration), like Consul's built-in proxy.
    Standalone {
        service: String,
        /// Where the application listens.
        service_addr: SocketAddr,
        /// The public mTLS listener.
        listen: SocketAddr,
        /// `NAME:PORT` or `NAME:ADDRESS:PORT`.
        upstreams: Vec<String>,
    },
    /// An ingress gateway registered on the agent as `id` (kind
    /// `ingress-gateway`): listeners on `address` from its entry.
    IngressGateway {
        id: String,
        address: std::net::IpAddr,
        /// The edge certificate for TLS listeners, if given.
        edge_tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    },
    /// A mesh gateway registered on the agent as `id` (kind `mesh-gateway`):
    /// it listens on its registered addresses.
    MeshGateway { id: String, address: std::net::IpAddr },
}

impl SnapshotSource {
    fn path(&self) -> String {
        match self {
            SnapshotSource::SidecarFor { parent_id } => {
                let sidecar = sidecar_id(&ServiceId::new(parent_id.as_str()));
                format!("/v1/agent/connect/proxy/{}", path_segment(sidecar.as_str()))
            }
            SnapshotSource::Standalone { service, service_addr, listen, upstreams } => {
                let mut path = format!(
                    "/v1/agent/connect/proxy?service={}&service-addr={service_addr}&listen={listen}",
                    path_segment(service)
                );
                for upstream in upstreams {
                    path.push_str(&format!("&upstream={}", path_segment(upstream)));
                }
                path
            }
            SnapshotSource::IngressGateway { id, address, .. } | SnapshotSource::MeshGateway { id, address } => {
                format!("/v1/agent/connect/gateway/{}?address={address}", path_segment(id))
            }
        }
    }
}

/// Why a sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    /// Exits with [`weft_api::proxy::EXIT_PUBLIC_PORT_IN_USE`], so that
    /// the agent gives the sidecar another port.
    #[error("cannot listen on {addr}: something else on this host listens there")]
    PublicPortInUse { addr: SocketAddr },
    #[error("the agent refused the sidecar's ACL token: {answer}")]
    TokenRefused { answer: String },
}

/// Runs a sidecar until `shutdown` resolves.
pub async fn run(
    agent: HttpClient,
    source: SnapshotSource,
    admin_bind: Option<SocketAddr>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), SidecarError> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let access_log = AccessLog::default();
    registry.register(
        "weft_proxy_access_log_dropped_lines",
        "Access log lines dropped because the writer fell behind",
        access_log.dropped.clone(),
    );
    let (runtime_tx, mut runtime) = watch::channel::<Option<Arc<Runtime>>>(None);
    let (refused_tx, refused) = watch::channel::<Option<String>>(None);
    let follower = tokio::spawn(follow(agent, source.path(), (runtime_tx, refused_tx), metrics.clone()));
    // Shutting down, or the token refused: either ends the sidecar.
    let shutdown = {
        let mut refused = refused.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = refused.wait_for(Option::is_some) => {}
            }
        }
    };
    let outcome = move || match refused.borrow().clone() {
        Some(answer) => Err(SidecarError::TokenRefused { answer }),
        None => Ok(()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let public_listener = Arc::new(std::sync::OnceLock::new());
    if let Some(addr) = admin_bind {
        let listener = TcpListener::bind(addr).await.map_err(|source| SidecarError::Listen { addr, source })?;
        let admin = Arc::new(Admin { registry, runtime: runtime.clone(), public_listener: public_listener.clone() });
        tokio::spawn(admin::serve(listener, admin, stopped()));
        tracing::info!(%addr, "admin port ready");
    }

    tokio::pin!(shutdown);
    let first = tokio::select! {
        _ = &mut shutdown => return outcome(),
        first = runtime.wait_for(Option::is_some) => first.ok().and_then(|r| r.clone()),
    };
    let Some(first) = first else { return outcome() };
    if let SnapshotSource::IngressGateway { edge_tls, .. } = &source {
        tracing::info!(gateway = %first.snapshot.service, "ingress gateway ready");
        started();
        crate::ingress_gateway::serve(runtime.clone(), metrics.clone(), access_log.clone(), edge_tls.clone(), shutdown)
            .await;
        follower.abort();
        let _ = stop_tx.send(true);
        return outcome();
    }
    if let SnapshotSource::MeshGateway { .. } = &source {
        tracing::info!(gateway = %first.snapshot.service, "mesh gateway ready");
        started();
        crate::mesh_gateway::serve(runtime.clone(), metrics.clone(), shutdown).await;
        follower.abort();
        let _ = stop_tx.send(true);
        return outcome();
    }
    let public = first.snapshot.public_listener;
    let listener = TcpListener::bind(public).await.map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => SidecarError::PublicPortInUse { addr: public },
        _ => SidecarError::Listen { addr: public, source },
    })?;
    let _ = public_listener.set(public);
    let inbound = Arc::new(Inbound::new(runtime.clone(), metrics.clone(), access_log.clone()));
    let serving = tokio::spawn(inbound::serve(listener, inbound, stopped()));
    tokio::spawn(crate::transparent::serve(runtime.clone(), metrics.clone(), access_log.clone(), stopped()));
    tracing::info!(service = %first.snapshot.service, listen = %public, protocol = %first.snapshot.protocol, "sidecar ready");

    let mut upstreams: BTreeMap<SocketAddr, (Arc<Upstream>, oneshot::Sender<()>)> = BTreeMap::new();
    let mut starting = true;
    loop {
        if let Some(now) = current(&runtime) {
            reconcile_upstreams(&now, &mut upstreams, &runtime, (&metrics, &access_log)).await;
        }
        if std::mem::take(&mut starting) {
            started();
        }
        tokio::select! {
            _ = &mut shutdown => break,
            changed = runtime.changed() => if changed.is_err() { break },
        }
    }
    follower.abort();
    let _ = stop_tx.send(true);
    let _ = serving.await;
    outcome()
}

/// Start-up is over (the first snapshot is compiled; a sidecar's
/// listeners are open): gives its pages back, see `crate::resident`.
fn started() {
    let released = crate::resident::release_startup_pages();
    tracing::debug!(released_mib = released >> 20, "dropped the mappings of start-up pages");
}

/// Opens listeners for new upstreams, closes those of removed ones, and
/// lets the others drop state of endpoints that are gone.
async fn reconcile_upstreams(
    now: &Runtime,
    running: &mut BTreeMap<SocketAddr, (Arc<Upstream>, oneshot::Sender<()>)>,
    runtime: &RuntimeWatch,
    (metrics, access_log): (&Metrics, &AccessLog),
) {
    running.retain(|bind, _| {
        let keep = now.upstreams.contains_key(bind);
        if !keep {
            tracing::info!(%bind, "upstream removed; closing its listener");
        }
        keep
    });
    for (bind, target) in &now.upstreams {
        if let Some((upstream, _)) = running.get(bind) {
            let endpoints: Vec<SocketAddr> = target.snapshot.endpoints.iter().map(|e| e.address).collect();
            upstream.retain(&endpoints);
            continue;
        }
        let listener = match TcpListener::bind(bind).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%bind, %error, destination = %target.snapshot.destination, "cannot listen for an upstream");
                continue;
            }
        };
        let upstream = Arc::new(Upstream::new(*bind, runtime.clone(), metrics.clone(), access_log.clone()));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(outbound::serve(listener, upstream.clone(), async move {
            let _ = stop_rx.await;
        }));
        tracing::info!(%bind, destination = %target.snapshot.destination, protocol = %target.snapshot.protocol, "upstream listening");
        running.insert(*bind, (upstream, stop_tx));
    }
}

/// Follows the agent's snapshot into `runtime`. A snapshot that cannot be
/// used, or an agent that cannot be reached, leaves the last good one in
/// place; a 403 (the token refused) is sent to `refused`, and ends it.
async fn follow(
    agent: HttpClient,
    path: String,
    (runtime, refused): (watch::Sender<Option<Arc<Runtime>>>, watch::Sender<Option<String>>),
    metrics: Metrics,
) {
    let mut hash: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let query = match &hash {
            Some(hash) => format!("{path}{separator}wait={SNAPSHOT_WAIT}&hash={hash}"),
            None => format!("{path}{separator}wait={SNAPSHOT_WAIT}"),
        };
        let response = match agent.get(&query).await {
            Ok(response) if response.status == 200 => response,
            Ok(response) if response.status == 403 => {
                let answer = response.text().trim().to_owned();
                tracing::error!(%answer, "the agent refused the sidecar's ACL token; stopping");
                refused.send_replace(Some(answer));
                return;
            }
            Ok(response) => {
                tracing::warn!(status = response.status, answer = %response.text().trim(), "the agent refused the sidecar's configuration");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reach the agent; serving on the last configuration");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        let new_hash = response.header("X-Consul-ContentHash").map(str::to_owned);
        if new_hash.is_some() && new_hash == hash {
            continue;
        }
        hash = new_hash;
        let compiled = serde_json::from_slice::<ProxySnapshot>(&response.body)
            .map_err(|e| format!("the agent's answer is not a snapshot: {e}"))
            .and_then(|snapshot| Runtime::compile(snapshot).map_err(|e| e.to_string()));
        match compiled {
            Ok(compiled) => {
                metrics.leaf_expiry.set(compiled.snapshot.tls.leaf_valid_before);
                tracing::info!(proxy = %compiled.snapshot.proxy_id, leaf = %compiled.snapshot.tls.leaf_serial, upstreams = compiled.upstreams.len(), rules = compiled.snapshot.intentions.rules.len(), "applying a new configuration");
                runtime.send_replace(Some(Arc::new(compiled)));
            }
            Err(error) => tracing::warn!(%error, "keeping the last configuration"),
        }
    }
}
