//! Transparent proxying: the pod's outbound TCP is redirected (by the
//! iptables rules `weft k8s redirect-traffic` installs) to one listener,
//! `127.0.0.1:15001`. Each connection's original destination
//! (`SO_ORIGINAL_DST`) is looked up among the mesh's instance addresses:
//! a mesh service's connection goes through the mesh exactly as through an
//! explicit upstream (its chain, mTLS, intentions, gateways); any other
//! destination is passed through unchanged, as Consul does by default.
//!
//! The proxy's own connections are not redirected (the rules skip its uid),
//! so connecting out here reaches the real destination.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use weft_api::ids::ServiceName;

use crate::accept::{accept_until, ListenerSet};
use crate::access_log::AccessLog;
use crate::metrics::{Direction, Metrics, Outcome};
use crate::outbound::{handle, Upstream};
use crate::runtime::{current, RuntimeWatch, UpstreamKey};

/// How long connecting to a destination outside the mesh may take.
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct Transparent {
    runtime: RuntimeWatch,
    metrics: Metrics,
    access_log: AccessLog,
    /// Each destination service's limits, balancer and connections.
    upstreams: Mutex<HashMap<ServiceName, Arc<Upstream>>>,
}

/// Serves the outbound listener of the current snapshot (if it has one)
/// until `shutdown` resolves.
pub async fn serve(
    mut runtime: RuntimeWatch,
    metrics: Metrics,
    access_log: AccessLog,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let shared = Arc::new(Transparent { runtime: runtime.clone(), metrics, access_log, upstreams: Mutex::default() });
    let mut listeners = ListenerSet::default();
    tokio::pin!(shutdown);
    loop {
        let wanted: Vec<SocketAddr> = current(&runtime)
            .and_then(|now| Some(now.snapshot.transparent.as_ref()?.outbound_listener))
            .into_iter()
            .collect();
        listeners
            .reconcile(
                "transparent-outbound",
                &wanted,
                |_| true,
                |socket, _, stopped| {
                    let shared = shared.clone();
                    async move {
                        accept_until(
                            &socket,
                            "transparent-outbound",
                            async move { drop(stopped.await) },
                            move |stream, peer| redirected(stream, peer, shared.clone()),
                        )
                        .await
                    }
                },
            )
            .await;
        tokio::select! {
            _ = &mut shutdown => break,
            changed = runtime.changed() => if changed.is_err() { break },
        }
    }
}

/// One redirected connection: to its service through the mesh, or passed through.
async fn redirected(stream: TcpStream, application: SocketAddr, shared: Arc<Transparent>) {
    let original = match original_destination(&stream) {
        Ok(original) => original,
        Err(error) => {
            tracing::warn!(%application, %error, "a connection reached the outbound listener without a redirect; closing it");
            return;
        }
    };
    let Some(now) = current(&shared.runtime) else { return };
    let Some(transparent) = &now.snapshot.transparent else { return };
    if original == transparent.outbound_listener {
        tracing::warn!(%application, "a connection was made to the outbound listener itself; closing it");
        return;
    }
    let Some(service) = transparent.destinations.get(&original).cloned() else {
        passthrough(stream, original, &shared.metrics).await;
        return;
    };
    let upstream = {
        let mut upstreams = shared.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        upstreams
            .entry(service.clone())
            .or_insert_with(|| {
                Arc::new(Upstream::keyed(
                    UpstreamKey::Transparent(service.clone()),
                    transparent.outbound_listener,
                    shared.runtime.clone(),
                    shared.metrics.clone(),
                    shared.access_log.clone(),
                ))
            })
            .clone()
    };
    tracing::debug!(%application, %original, %service, "redirected into the mesh");
    handle(stream, application, upstream).await;
}

/// A destination outside the mesh: connected to as asked.
async fn passthrough(mut stream: TcpStream, original: SocketAddr, metrics: &Metrics) {
    let _open = metrics.open(Direction::Outbound);
    let connected = tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, TcpStream::connect(original)).await;
    let Ok(Ok(mut remote)) = connected else {
        tracing::info!(%original, "cannot reach a destination outside the mesh");
        metrics.connection(Direction::Outbound, Outcome::Failed);
        return;
    };
    let _ = remote.set_nodelay(true);
    let (received, sent) = tokio::io::copy_bidirectional(&mut stream, &mut remote).await.unwrap_or_default();
    metrics.bytes(Direction::Outbound, received, sent);
    metrics.connection(Direction::Outbound, Outcome::Served);
}

/// Where the application meant to connect, before the redirect.
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    match stream.local_addr()? {
        SocketAddr::V4(_) => Ok(SocketAddr::V4(rustix::net::sockopt::ip_original_dst(stream)?)),
        SocketAddr::V6(_) => Ok(SocketAddr::V6(rustix::net::sockopt::ipv6_original_dst(stream)?)),
    }
}
