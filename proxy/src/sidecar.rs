//! A sidecar run from its local agent (`weft connect proxy --sidecar-for`).
//!
//! Everything comes from the agent's HTTP API, never from a server: the
//! sidecar's registration (its port and proxy configuration), its leaf and
//! the roots (refreshed, so a renewed leaf or a new root is used for new
//! handshakes without a restart), each upstream's healthy sidecars (blocking
//! queries, so changes arrive live), and per-connection authorization (the
//! agent decides from its own copy of the intentions). If the agent goes
//! away, the sidecar keeps serving with what it last had.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use weft_api::client::{path_segment, HttpClient};
use weft_api::ids::ServiceName;

use crate::inbound::{self, Authorizer, Inbound};
use crate::outbound::{self, Upstream};
use crate::tls::TlsMaterial;

/// How often the leaf and roots are fetched again (the agent renews the
/// leaf; a root change is seen within this).
const TLS_REFRESH: Duration = Duration::from_secs(5);
/// A blocking query's `wait` for upstream endpoints.
const ENDPOINTS_WAIT: &str = "30s";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("the agent has no sidecar {0:?} (register the service with connect {{ sidecar_service {{}} }})")]
    NotRegistered(String),
    #[error("the agent's answer for {what} is not what a sidecar expects: {detail}")]
    BadConfig { what: String, detail: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// The sidecar's configuration as its agent serves it.
struct SidecarConfig {
    listen: SocketAddr,
    service: ServiceName,
    application: SocketAddr,
    upstreams: Vec<(ServiceName, SocketAddr)>,
}

/// Runs the sidecar of service `parent_id` until `shutdown` resolves.
pub async fn run(
    agent: HttpClient,
    parent_id: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), SidecarError> {
    let sidecar_id = format!("{parent_id}-sidecar-proxy");
    let config = fetch_config(&agent, &sidecar_id).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let (server_tx, server_rx) = watch::channel::<Option<Arc<ServerConfig>>>(None);
    let mut client_txs = Vec::new();
    for (destination, bind) in &config.upstreams {
        let (client_tx, client_rx) = watch::channel::<Option<Arc<ClientConfig>>>(None);
        let (endpoints_tx, endpoints_rx) = watch::channel(Vec::new());
        let listener =
            TcpListener::bind(bind).await.map_err(|source| SidecarError::Listen { addr: bind.to_string(), source })?;
        let upstream = Upstream {
            destination: destination.clone(),
            endpoints: endpoints_rx,
            tls: client_rx,
            connect_timeout: CONNECT_TIMEOUT,
        };
        tokio::spawn(outbound::serve(listener, upstream, stopped()));
        tokio::spawn(follow_endpoints(agent.clone(), destination.clone(), endpoints_tx));
        client_txs.push((destination.clone(), client_tx));
    }
    tokio::spawn(refresh_tls(agent.clone(), config.service.clone(), server_tx, client_txs));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| SidecarError::Listen { addr: config.listen.to_string(), source })?;
    let inbound = Inbound {
        tls: server_rx,
        authorize: authorizer(agent.clone(), config.service.clone()),
        application: config.application,
    };
    tracing::info!(service = %config.service, listen = %config.listen, upstreams = config.upstreams.len(), "sidecar ready");
    let serving = tokio::spawn(inbound::serve(listener, inbound, stopped()));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = serving.await;
    Ok(())
}

async fn get_json(agent: &HttpClient, path: &str) -> Option<(Value, Option<u64>)> {
    let response = agent.get(path).await.ok()?;
    if response.status != 200 {
        return None;
    }
    Some((serde_json::from_slice(&response.body).ok()?, response.consul_index()))
}

/// The sidecar's registration; waits (up to 30 s) for the agent to have it.
async fn fetch_config(agent: &HttpClient, sidecar_id: &str) -> Result<SidecarConfig, SidecarError> {
    let path = format!("/v1/agent/service/{}", path_segment(sidecar_id));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let service = loop {
        if let Some((service, _)) = get_json(agent, &path).await {
            break service;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(SidecarError::NotRegistered(sidecar_id.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let bad = |detail: &str| SidecarError::BadConfig { what: sidecar_id.to_owned(), detail: detail.to_owned() };
    let proxy = &service["Proxy"];
    let address = service["Address"].as_str().filter(|a| !a.is_empty()).unwrap_or("127.0.0.1");
    let port = service["Port"].as_u64().filter(|p| *p > 0).ok_or_else(|| bad("no Port"))?;
    let listen = format!("{address}:{port}").parse().map_err(|_| bad("Address:Port is not a socket address"))?;
    let service_name =
        proxy["DestinationServiceName"].as_str().ok_or_else(|| bad("no Proxy.DestinationServiceName"))?;
    let application = format!(
        "{}:{}",
        proxy["LocalServiceAddress"].as_str().unwrap_or("127.0.0.1"),
        proxy["LocalServicePort"].as_u64().unwrap_or(0)
    )
    .parse()
    .map_err(|_| bad("Proxy.LocalServiceAddress:LocalServicePort is not a socket address"))?;
    let mut upstreams = Vec::new();
    for upstream in proxy["Upstreams"].as_array().into_iter().flatten() {
        let destination =
            upstream["DestinationName"].as_str().ok_or_else(|| bad("an upstream has no DestinationName"))?;
        let bind = format!(
            "{}:{}",
            upstream["LocalBindAddress"].as_str().unwrap_or("127.0.0.1"),
            upstream["LocalBindPort"].as_u64().unwrap_or(0)
        )
        .parse()
        .map_err(|_| bad("an upstream's LocalBindAddress:LocalBindPort is not a socket address"))?;
        upstreams.push((ServiceName::new(destination), bind));
    }
    Ok(SidecarConfig { listen, service: ServiceName::new(service_name), application, upstreams })
}

/// Keeps the TLS configurations current with the agent's leaf and roots.
async fn refresh_tls(
    agent: HttpClient,
    service: ServiceName,
    server: watch::Sender<Option<Arc<ServerConfig>>>,
    clients: Vec<(ServiceName, watch::Sender<Option<Arc<ClientConfig>>>)>,
) {
    let mut current: Option<TlsMaterial> = None;
    loop {
        let leaf = get_json(&agent, &format!("/v1/agent/connect/ca/leaf/{}", path_segment(service.as_str()))).await;
        let roots = get_json(&agent, "/v1/agent/connect/ca/roots").await;
        if let (Some((leaf, _)), Some((roots, _))) = (leaf, roots) {
            let material = TlsMaterial {
                cert_chain_pem: leaf["CertPEM"].as_str().unwrap_or_default().to_owned(),
                private_key_pem: leaf["PrivateKeyPEM"].as_str().unwrap_or_default().to_owned(),
                roots_pem: roots["Roots"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["RootCert"].as_str().map(str::to_owned))
                    .collect(),
            };
            if current.as_ref() != Some(&material) {
                match apply(&material, &server, &clients) {
                    Ok(()) => {
                        tracing::info!(serial = leaf["SerialNumber"].as_str().unwrap_or_default(), "using a new leaf");
                        current = Some(material);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the agent's leaf or roots are unusable; keeping the last ones")
                    }
                }
            }
        }
        tokio::time::sleep(TLS_REFRESH).await;
    }
}

fn apply(
    material: &TlsMaterial,
    server: &watch::Sender<Option<Arc<ServerConfig>>>,
    clients: &[(ServiceName, watch::Sender<Option<Arc<ClientConfig>>>)],
) -> Result<(), crate::TlsError> {
    let server_config = material.server_config()?;
    let client_configs =
        clients.iter().map(|(destination, _)| material.client_config(destination)).collect::<Result<Vec<_>, _>>()?;
    server.send_replace(Some(server_config));
    for ((_, sender), config) in clients.iter().zip(client_configs) {
        sender.send_replace(Some(config));
    }
    Ok(())
}

/// Follows the healthy sidecars of `destination` with blocking queries.
async fn follow_endpoints(agent: HttpClient, destination: ServiceName, endpoints: watch::Sender<Vec<SocketAddr>>) {
    let mut index = 0u64;
    loop {
        let path = format!(
            "/v1/health/connect/{}?passing&stale&index={index}&wait={ENDPOINTS_WAIT}",
            path_segment(destination.as_str())
        );
        let Some((body, new_index)) = get_json(&agent, &path).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let found: Vec<SocketAddr> = body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let address = entry["Service"]["Address"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                    .or_else(|| entry["Node"]["Address"].as_str())?;
                format!("{address}:{}", entry["Service"]["Port"].as_u64()?).parse().ok()
            })
            .collect();
        endpoints.send_if_modified(|current| {
            let changed = *current != found;
            *current = found;
            changed
        });
        index = match new_index {
            // An index that goes backwards (a restore) starts over.
            Some(new) if new >= index => new,
            _ => 0,
        };
    }
}

/// Asks the local agent for each caller (it decides from its own copy of
/// the intentions, with no server round trip). If the agent cannot be
/// reached, the last decision for that caller's service stands, so a sidecar
/// keeps serving through an agent restart; a caller never seen is refused.
fn authorizer(agent: HttpClient, service: ServiceName) -> Authorizer {
    let last: Arc<Mutex<HashMap<ServiceName, Result<(), String>>>> = Arc::default();
    Arc::new(move |caller| {
        let (agent, service, last) = (agent.clone(), service.clone(), last.clone());
        Box::pin(async move {
            let body = json!({"Target": service, "ClientCertURI": caller.to_string()}).to_string();
            let asked = async {
                let response = agent.post("/v1/agent/connect/authorize", body).await.map_err(|e| e.to_string())?;
                serde_json::from_slice::<Value>(&response.body).map_err(|_| response.text())
            };
            let remembered = |last: &Mutex<HashMap<ServiceName, Result<(), String>>>| {
                last.lock().unwrap_or_else(|p| p.into_inner()).get(&caller.service).cloned()
            };
            let decision = match asked.await {
                Ok(answer) => match answer["Authorized"].as_bool() {
                    Some(true) => Ok(()),
                    _ => Err(answer["Reason"].as_str().unwrap_or("not authorized").to_owned()),
                },
                Err(error) => {
                    tracing::warn!(%error, caller = %caller, "cannot ask the agent; using the last decision");
                    return remembered(&last).unwrap_or_else(|| Err(format!("agent unreachable ({error})")));
                }
            };
            last.lock().unwrap_or_else(|p| p.into_inner()).insert(caller.service.clone(), decision.clone());
            decision
        })
    })
}
