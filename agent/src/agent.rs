//! Starting and stopping an agent: the caller binds the listeners (so tests
//! can use port 0), [`Agent::run`] serves until the shutdown signal or a
//! `leave`.
//!
//! What runs: the embedded server (`--server`) or the link to the servers
//! (client agent); the HTTP API and DNS over this agent's view of the state;
//! the agent's own services and checks with anti-entropy; and a heartbeat
//! that keeps this node alive in the catalog.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use weft_api::catalog::Node;
use weft_api::command::{Command, CommandOutcome};
use weft_server::liveness::HEARTBEAT_INTERVAL;
use weft_server::remote::{RemoteCluster, RemoteConfig};
use weft_server::{Server, ServerConfig, StartError};
use weft_tls::{ListenerLimits, RpcConnector};

use crate::backend::Backend;
use crate::config::{AgentConfig, Definitions};
use crate::connect::LeafCache;
use crate::dns::CatalogDns;
use crate::http::{self, AppState};
use crate::local::{sync, LocalState};

/// The sockets an agent serves on, bound by the caller.
pub struct Listeners {
    /// Server RPC (Raft and cluster gRPC); servers only.
    pub rpc: Option<TcpListener>,
    pub http: TcpListener,
    /// DNS over UDP and TCP, on the same port.
    pub dns_udp: UdpSocket,
    pub dns_tcp: TcpListener,
}

/// Why an agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Server(#[from] StartError),
    #[error("HTTP API failed: {0}")]
    Http(std::io::Error),
    #[error("{0}")]
    Dns(String),
    #[error("a server needs an RPC listener")]
    NoRpcListener,
    #[error(transparent)]
    Credential(#[from] crate::join::CredentialError),
    #[error(transparent)]
    Tls(#[from] crate::rpc_tls::RpcTlsError),
    #[error(transparent)]
    Login(#[from] crate::acl::StartLoginError),
    #[error("Raft stopped: {0}")]
    RaftFailed(String),
}

/// Node meta key telling servers from client agents (`weft members`).
pub const ROLE_META_KEY: &str = "weft-role";

/// How long a leaving agent waits for its node's deregistration to apply.
const LEAVE_PATIENCE: Duration = Duration::from_secs(5);
/// At shutdown, how long the background tasks (anti-entropy, heartbeats,
/// reload, sidecars) may take to stop, and then how long open HTTP requests
/// may take to finish: with these, an agent exits within about 2 s of
/// SIGTERM or `weft leave` whatever its clients hold open (systemd would
/// SIGKILL it after 30 s), plus its graceful leave's round trip.
const TASKS_STOP: Duration = Duration::from_millis(500);
const HTTP_DRAIN: Duration = Duration::from_secs(1);
/// How long a server waits at shutdown for the writes it proposed to be answered.
const WRITES_DRAIN: Duration = Duration::from_secs(1);
/// How long a leaving server waits to be removed from the Raft peers.
const PEER_REMOVAL_PATIENCE: Duration = Duration::from_secs(10);

/// Why a graceful leave did not complete.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LeaveError {
    #[error("could not deregister this node: {0}")]
    Deregister(String),
    #[error("this node was deregistered, but the server could not be removed from the Raft peers: {0}")]
    RemovePeer(String),
    #[error("the agent is already shutting down")]
    ShuttingDown,
}

/// Asks the running agent to leave the cluster (`PUT /v1/agent/leave`).
/// Cheap to clone.
#[derive(Clone)]
pub struct LeaveHandle(mpsc::Sender<oneshot::Sender<Result<(), LeaveError>>>);

impl LeaveHandle {
    /// Asks the agent to leave and waits until it has: its node is
    /// deregistered (and recorded as left), and a server is out of the Raft
    /// peers. The agent then shuts down.
    pub async fn leave(&self) -> Result<(), LeaveError> {
        let (reply, outcome) = oneshot::channel();
        self.0.send(reply).await.map_err(|_| LeaveError::ShuttingDown)?;
        outcome.await.unwrap_or(Err(LeaveError::ShuttingDown))
    }
}

/// Told when the agent starts serving and when it starts to stop (the CLI
/// passes these on to systemd's `Type=notify`).
pub trait Lifecycle: Send + 'static {
    /// The HTTP API, DNS and (for a server) Raft RPC are serving.
    fn serving(&mut self) {}
    /// Shutdown has begun: nothing new will be accepted after the drain.
    fn stopping(&mut self) {}
}

/// The lifecycle of an agent nobody watches.
struct Unobserved;
impl Lifecycle for Unobserved {}

/// A configured agent.
pub struct Agent {
    config: Arc<AgentConfig>,
    reload: Arc<Notify>,
    lifecycle: Box<dyn Lifecycle>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Self {
        Self { config: Arc::new(config), reload: Arc::new(Notify::new()), lifecycle: Box::new(Unobserved) }
    }

    /// Reports the agent's start and stop to `lifecycle`.
    pub fn with_lifecycle(mut self, lifecycle: impl Lifecycle) -> Self {
        self.lifecycle = Box::new(lifecycle);
        self
    }

    /// Notify it to re-read the config files' services and checks (SIGHUP).
    pub fn reload_trigger(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// Runs the agent until `shutdown` resolves or the API asks it to leave,
    /// then drains and returns. A client agent deregisters its node on the
    /// way out (Consul's `leave_on_terminate` for clients).
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let config = self.config;
        let mut lifecycle = self.lifecycle;
        let http_addr = listeners.http.local_addr().map_err(AgentError::Http)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stop_tasks_tx, stop_tasks_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let stop_tasks_rx_for_renewal = stop_tasks_rx.clone();
        let (backend, node_id) = if config.server {
            let rpc = listeners.rpc.ok_or(AgentError::NoRpcListener)?;
            let rpc_addr = rpc.local_addr().map_err(AgentError::Http)?;
            let server = Server::start(
                ServerConfig {
                    node_name: config.node_name.clone(),
                    datacenter: config.datacenter.clone(),
                    data_dir: config.data_dir.clone(),
                    rpc_addr: advertised(rpc_addr, &config).to_string(),
                    http_addr: advertised(http_addr, &config).to_string(),
                    bootstrap_expect: config.bootstrap_expect,
                    retry_join: config.retry_join.clone(),
                    raft: config.raft.clone(),
                    liveness_timeout: config.liveness_timeout,
                    leaf_ttl: config.leaf_cert_ttl,
                    domain: config.domain.clone(),
                    rpc_tls: crate::rpc_tls::for_server(&config)?,
                    listener_limits: ListenerLimits {
                        max_conns_per_client: config.rpc_max_conns_per_client,
                        ..ListenerLimits::default()
                    },
                    acl: weft_server::acl::ServerAcl {
                        enabled: config.acl.enabled,
                        default_policy: config.acl.default_policy,
                        initial_management: config.acl.tokens.initial_management.clone(),
                    },
                },
                rpc,
                stopped(stop_rx.clone()),
            )
            .await?;
            let id = server.id().0;
            (Backend::Server(server), id)
        } else {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
            let id = weft_server::load_or_create_server_id(&config.data_dir)?;
            let tls = crate::rpc_tls::for_client(&config)?;
            let enrollment = match &tls {
                Some(tls) => crate::join::enroll(&config, tls).await?,
                None => None,
            };
            let remote = RemoteCluster::start(RemoteConfig {
                datacenter: config.datacenter.clone(),
                servers: config.retry_join.clone(),
                connector: RpcConnector::new(tls),
            });
            if let Some(enrollment) = enrollment {
                let renewal = tokio::spawn(enrollment.keep_renewed(remote.clone()));
                tokio::spawn(async move {
                    stopped(stop_tasks_rx_for_renewal).await;
                    renewal.abort();
                });
            }
            (Backend::Client(remote), id)
        };
        let node = this_node(&config, node_id);
        tracing::info!(http = %http_addr, node = %config.node_name, server = config.server, "agent ready");
        // A token from the auth method, before the services that use it.
        let login = match config.acl.login.as_ref().filter(|_| config.acl.enabled) {
            Some(login) => Some(crate::acl::login_at_start(&backend, login).await?),
            None => None,
        };
        let mut services = config.services.clone();
        if let Some(login) = &login {
            for service in services.iter_mut().filter(|s| s.token.is_none()) {
                service.token = Some(login.secret_id.clone());
            }
        }

        let local = LocalState::open(
            config.node_name.clone(),
            node.address.clone(),
            &config.data_dir,
            config.enable_script_checks,
            config.sidecar_ports.clone(),
            Definitions { services, checks: config.checks.clone() },
        );
        let (leave_tx, mut leave_rx) = mpsc::channel(4);
        let store = backend.store().clone();
        let acl = Arc::new(crate::acl::AclState::new(&config.acl, config.datacenter.as_str(), &config.data_dir));
        if let Some(login) = &login {
            acl.use_login_token(&login.secret_id);
        }
        // `ns.<domain>` is where this agent answers: the DNS listener's
        // address, or the advertised one when it listens on every interface.
        let dns_ip = listeners.dns_udp.local_addr().map(|a| a.ip()).unwrap_or(config.advertise_ip);
        let ns_address = if dns_ip.is_unspecified() { config.advertise_ip } else { dns_ip };
        let dns = CatalogDns::new(
            store.clone(),
            acl.clone(),
            &config.domain,
            &config.dns,
            config.datacenter.clone(),
            ns_address,
        )
        .map_err(AgentError::Dns)?;
        let dns = tokio::spawn(crate::dns::run(dns, listeners.dns_udp, listeners.dns_tcp, stopped(stop_rx.clone())));
        let state = AppState {
            admin_ports: local.admin_ports().clone(),
            backend: backend.clone(),
            config: config.clone(),
            local: local.clone(),
            node: Arc::new(node.clone()),
            leave: LeaveHandle(leave_tx),
            leaves: Arc::new(LeafCache::new(backend.clone(), node.name.clone())),
            acl,
            writes: config.write_rate.map(|(rate, burst)| Arc::new(weft_server::rate::TokenBucket::new(rate, burst))),
        };
        let http = tokio::spawn(http::run(state, listeners.http, stopped(stop_rx)));
        let intervals = sync::SyncIntervals {
            anti_entropy: config.anti_entropy_interval,
            check_update: config.check_update_interval,
        };
        let sync = tokio::spawn(sync::run(
            local.clone(),
            backend.clone(),
            node.clone(),
            intervals,
            stopped(stop_tasks_rx.clone()),
        ));
        let heartbeat = tokio::spawn(send_heartbeats(backend.clone(), node.clone(), stopped(stop_tasks_rx.clone())));
        if config.dev_mode {
            tokio::spawn(allow_unmatched_traffic(backend.clone()));
        }
        let proxies = config.proxy_program.clone().map(|program| {
            tokio::spawn(crate::connect::supervisor::supervise(
                local.clone(),
                program,
                http_addr,
                stopped(stop_tasks_rx.clone()),
            ))
        });
        let reload =
            tokio::spawn(reload_on_signal(self.reload.clone(), local.clone(), config.clone(), stopped(stop_tasks_rx)));
        lifecycle.serving();

        let mut raft_failure = None;
        let leave_request = tokio::select! {
            _ = shutdown => None,
            Some(reply) = leave_rx.recv() => Some(reply),
            reason = backend.raft_failed() => {
                tracing::error!(%reason, "Raft stopped on a storage failure; this server exits so that a restart can recover it");
                raft_failure = Some(reason);
                None
            }
        };
        tracing::info!("shutting down");
        lifecycle.stopping();
        // Nothing may register this node again once it has left: anti-entropy
        // and heartbeats stop first.
        let _ = stop_tasks_tx.send(true);
        let tasks = async {
            let _ = tokio::join!(sync, heartbeat, reload);
            if let Some(proxies) = proxies {
                let _ = proxies.await;
            }
        };
        if tokio::time::timeout(TASKS_STOP, tasks).await.is_err() {
            tracing::warn!(after = ?TASKS_STOP, "background tasks still busy (a sync or heartbeat waiting on the servers); leaving them");
        }
        if leave_request.is_some() || !config.server {
            let outcome = leave_cluster(&backend, &node).await;
            if let Err(error) = &outcome {
                tracing::warn!(%error, "graceful leave incomplete");
            }
            for reply in leave_request.into_iter().chain(std::iter::from_fn(|| leave_rx.try_recv().ok())) {
                let _ = reply.send(outcome.clone());
            }
        }
        if let Some(login) = &login {
            match backend.logout(&login.secret_id).await {
                Ok(()) => tracing::info!(accessor = %login.token.accessor_id, "logged out"),
                Err(error) => tracing::warn!(%error, "could not log out; the token stays until it expires"),
            }
        }
        // A leader answers the writes it proposed before it goes, so no
        // client agent is left unsure whether its write was applied.
        if let Some(server) = backend.server() {
            server.stop_taking_writes(WRITES_DRAIN).await;
        }
        // Wake blocking queries first, so the HTTP drain does not wait out their `?wait`.
        store.close();
        let _ = stop_tx.send(true);
        let _ = dns.await;
        // Requests still open after the drain (a long-poll on something
        // other than the store, a write waiting for a leader) end with
        // their connections when the process exits.
        let served = match tokio::time::timeout(HTTP_DRAIN, http).await {
            Ok(Ok(result)) => result.map_err(AgentError::Http),
            Ok(Err(join)) => Err(AgentError::Http(std::io::Error::other(join))),
            Err(_) => {
                tracing::info!(after = ?HTTP_DRAIN, "HTTP requests still open at shutdown; closing them");
                Ok(())
            }
        };
        match raft_failure {
            Some(reason) => Err(AgentError::RaftFailed(reason)),
            None => served,
        }
    }
}

/// The address other hosts reach `listening` at: the advertise IP in place
/// of an unspecified one (a server bound to 0.0.0.0 must not tell its
/// peers to dial 0.0.0.0).
fn advertised(listening: std::net::SocketAddr, config: &AgentConfig) -> std::net::SocketAddr {
    match listening.ip().is_unspecified() {
        true => std::net::SocketAddr::new(config.advertise_ip, listening.port()),
        false => listening,
    }
}

/// This node's catalog record.
fn this_node(config: &AgentConfig, node_id: u64) -> Node {
    let address = config.advertise_ip.to_string();
    let mut meta = config.node_meta.clone();
    meta.insert(ROLE_META_KEY.to_owned(), if config.server { "server" } else { "client" }.to_owned());
    Node {
        name: config.node_name.clone(),
        id: node_uuid(node_id),
        address: address.clone(),
        datacenter: config.datacenter.clone(),
        tagged_addresses: BTreeMap::from([("lan".to_owned(), address.clone()), ("wan".to_owned(), address)]),
        meta,
        indexes: Default::default(),
    }
}

/// The agent's numeric ID in the UUID form Consul uses for `NodeID`.
pub fn node_uuid(id: u64) -> String {
    format!("00000000-0000-4000-{:04x}-{:012x}", id >> 48, id & 0xffff_ffff_ffff)
}

/// Tells the leader this node is alive, every [`HEARTBEAT_INTERVAL`].
async fn send_heartbeats(backend: Backend, node: Node, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        match backend.heartbeat(&node).await {
            Ok(()) if failing => {
                tracing::info!("heartbeats reach the leader again");
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                tracing::warn!(%error, "heartbeat did not reach the leader; retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Re-reads the config files' services and checks each time `trigger` fires.
async fn reload_on_signal(
    trigger: Arc<Notify>,
    local: Arc<LocalState>,
    config: Arc<AgentConfig>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = trigger.notified() => {}
        }
        if let Err(error) = local.reload(&config) {
            tracing::error!(%error, "reload failed; keeping the running configuration");
        }
    }
}

/// `weft dev`: traffic no intention matches is allowed (a new cluster
/// denies it), unless a `mesh` config entry already exists: written only if
/// absent (check-and-set at index 0), so it never overwrites the user's.
async fn allow_unmatched_traffic(backend: Backend) {
    use weft_server::store::{DEFAULT_ACTION_FIELD, MESH_CONFIG_KIND, MESH_CONFIG_NAME};
    let body = serde_json::json!({DEFAULT_ACTION_FIELD: "allow"}).to_string();
    let command = Command::ConfigEntryCas {
        kind: MESH_CONFIG_KIND.to_owned(),
        name: MESH_CONFIG_NAME.to_owned(),
        cas: 0,
        body: Some(body),
    };
    for _ in 0..100 {
        match backend.write(command.clone()).await {
            Ok(applied) => {
                if applied.outcome == CommandOutcome::Cas(true) {
                    tracing::info!("dev mode: traffic that no intention matches is allowed");
                }
                return;
            }
            Err(error) => tracing::debug!(%error, "dev mode: default intention not written yet"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A graceful leave: deregisters this node, recorded as left (its services
/// leave DNS and health answers at once rather than after the liveness
/// timeout, and members show it as `left`); a server then leaves the Raft
/// peers, as Consul's servers do, unless it is the only voter.
async fn leave_cluster(backend: &Backend, node: &Node) -> Result<(), LeaveError> {
    let command = Command::NodeLeave(Box::new(node.clone()));
    match tokio::time::timeout(LEAVE_PATIENCE, backend.write(command)).await {
        Ok(Ok(_)) => tracing::info!(node = %node.name, "left the cluster: node deregistered"),
        Ok(Err(error)) => return Err(LeaveError::Deregister(error.to_string())),
        Err(_) => return Err(LeaveError::Deregister(format!("no answer within {LEAVE_PATIENCE:?}"))),
    }
    let Some(server) = backend.server() else { return Ok(()) };
    let voters = server.raft_configuration().servers.iter().filter(|s| s.voter).count();
    if voters < 2 {
        tracing::info!("the only voter stays in the Raft configuration");
        return Ok(());
    }
    let id = server.id().0.to_string();
    match tokio::time::timeout(PEER_REMOVAL_PATIENCE, server.remove_peer(&id)).await {
        Ok(Ok(())) => {
            tracing::info!("left the Raft peers");
            Ok(())
        }
        Ok(Err(error)) => Err(LeaveError::RemovePeer(error.to_string())),
        Err(_) => Err(LeaveError::RemovePeer(format!("no answer within {PEER_REMOVAL_PATIENCE:?}"))),
    }
}
