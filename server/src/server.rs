//! The [`Server`] handle: starts Raft and the gRPC services, and is what the
//! agent calls to write (forwarded to the leader), to read at a chosen
//! consistency, and to inspect or change the Raft membership.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use weft_api::catalog::Node;
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::{Datacenter, NodeName, RaftIndex, ServerId, ServiceName};
use weft_api::proto::cluster::cluster_client::ClusterClient;
use weft_api::proto::cluster::cluster_server::ClusterServer;
use weft_api::proto::cluster::{
    ApplyRequest, HeartbeatRequest, RaftConfigurationRequest, ReadIndexRequest, RemovePeerRequest, RotateCaRequest,
    RotateCaResponse, SignLeafRequest, SignLeafResponse,
};
use weft_api::proto::raft::raft_server::RaftServer;
use weft_tls::{AgentRoots, ClientTls, ListenerLimits, RpcConnector, ServerTls};

use crate::batch::WriteBatcher;
use crate::ca::{self, CaError, SignedLeaf};
use crate::error::{ServerError, StartError};
use crate::liveness::{self, Liveness};
use crate::raft::{self, LogStore, Network, Raft, RaftMetrics, ServerNode, StateMachine};
use crate::rate::TokenBucket;
use crate::rpc::{Channels, ClusterService, LastContact, RaftService, RpcAuthLayer, RpcPolicy, MAX_MESSAGE};
use crate::store::StateStore;
use crate::telemetry::{Stage, Timers};

/// See [`RaftTuning::with_multiplier`].
const DEFAULT_RAFT_MULTIPLIER: u32 = 1;

/// Raft timing and compaction settings.
#[derive(Clone, Debug)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Take a snapshot (and compact the log) after this many new entries
    /// (Consul's `raft_snapshot_threshold`).
    pub snapshot_threshold: u64,
    /// Entries kept behind a snapshot so slightly lagging followers catch up
    /// from the log (Consul's `raft_trailing_logs`).
    pub trailing_logs: u64,
}

impl RaftTuning {
    /// The Raft multiplier servers run with when none is configured.
    pub const DEFAULT_MULTIPLIER: u32 = DEFAULT_RAFT_MULTIPLIER;

    /// Timings scaled by `multiplier` (Consul's `performance {
    /// raft_multiplier }`, 1 to 10): at 1, a heartbeat every 50 ms and an
    /// election timeout of 150 to 200 ms. openraft 0.9 gives a whole
    /// AppendEntries RPC (transfer and the follower's fsync) one heartbeat
    /// interval and looks at the election timer every 1.5 heartbeats; a
    /// voter refuses votes for the maximum timeout after it last heard from
    /// its leader (its lease), and a follower stands once the lease and its
    /// own timeout (drawn once per process) have passed: 300 to 400 ms after
    /// the last heartbeat. When the follower with the shorter log stands
    /// first it loses, and the other wins one timeout later. With 200 to
    /// 300 ms, bench/raft-kv.sh's kill -9 of the leader stalled writes a
    /// median 676 ms and at most 1,380 (2 of 8 rounds over 1 s); with 150 to
    /// 200, a median 476 ms and at most 794 (12 rounds), with no election
    /// during its 1, 64 and 256-client runs either way.
    pub fn with_multiplier(multiplier: u32) -> Self {
        let scaled = |millis: u64| Duration::from_millis(millis * u64::from(multiplier.clamp(1, 10)));
        Self {
            heartbeat: scaled(50),
            election_timeout_min: scaled(150),
            election_timeout_max: scaled(200),
            snapshot_threshold: 8192,
            trailing_logs: 10240,
        }
    }
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self::with_multiplier(DEFAULT_RAFT_MULTIPLIER)
    }
}

/// Everything a server needs to start. Built and validated by the agent.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node_name: NodeName,
    pub datacenter: Datacenter,
    pub data_dir: PathBuf,
    /// Where other servers reach this one (advertised RPC address).
    pub rpc_addr: String,
    /// This server's HTTP API address, shown to operators.
    pub http_addr: String,
    /// Bootstrap a new cluster once this many servers know each other.
    pub bootstrap_expect: Option<usize>,
    /// RPC addresses of other servers to discover and join.
    pub retry_join: Vec<String>,
    pub raft: RaftTuning,
    /// How long an agent may go without a heartbeat before its node's
    /// `serfHealth` check turns critical (acted on by the leader).
    pub liveness_timeout: Duration,
    /// How long the leaves this server signs (as leader) are valid.
    pub leaf_ttl: Duration,
    /// The DNS domain (`weft`): servers' certificates name
    /// `server.<datacenter>.<domain>`, agents' name it too.
    pub domain: String,
    /// TLS on RPC; `None` serves and dials plaintext (loopback only: the
    /// agent's configuration refuses it on other addresses).
    pub rpc_tls: Option<ServerRpcTls>,
    /// Bounds on what connecting peers may hold.
    pub listener_limits: ListenerLimits,
    /// ACLs, as the servers enforce them.
    pub acl: crate::acl::ServerAcl,
}

/// A server's RPC TLS (see `weft_tls`): serving, and dialing other servers.
#[derive(Clone)]
pub struct ServerRpcTls {
    pub serve: Arc<ServerTls>,
    /// Dialing other servers (`verify_outgoing`); `None` dials plaintext.
    pub dial: Option<Arc<ClientTls>>,
    /// The agent CA this server trusts for callers, which it keeps equal to
    /// the replicated one.
    pub agent_roots: AgentRoots,
    /// The CA the servers' certificates chain to (PEM): join tokens carry it.
    pub ca_pem: String,
}

impl std::fmt::Debug for ServerRpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerRpcTls")
            .field("verify_incoming", &self.serve.verify_incoming())
            .field("verify_outgoing", &self.dial.is_some())
            .finish_non_exhaustive()
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Served by (or caught up with) the leader, without a quorum check.
    #[default]
    Default,
    /// Whatever this server has (`?stale`).
    Stale,
    /// Linearizable: the leader confirms it still leads first (`?consistent`).
    Consistent,
}

/// A write that the cluster committed and applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: CommandOutcome,
    pub index: RaftIndex,
}

/// One server in the Raft configuration, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    pub id: ServerId,
    pub name: String,
    pub rpc_addr: String,
    pub http_addr: String,
    pub voter: bool,
    pub leader: bool,
    /// The last log index known to be on that server (known on the leader).
    pub last_index: Option<u64>,
}

/// Raft figures for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStats {
    /// `Leader`, `Follower`, `Candidate` or `Learner`.
    pub state: String,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Index the latest snapshot covers (0: none yet).
    pub last_snapshot_index: u64,
    /// Log entries up to here were compacted away (0: none).
    pub purged_index: u64,
    /// Bytes of the Raft data directory as sled reports it.
    pub size_on_disk: u64,
}

/// The Raft configuration and the log index it was committed at.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RaftConfiguration {
    pub servers: Vec<PeerStatus>,
    pub index: RaftIndex,
}

/// How long a write keeps trying to reach a leader before giving up.
pub(crate) const WRITE_PATIENCE: Duration = Duration::from_secs(10);
/// How long one proposal may wait for a quorum before its outcome is unknown.
pub(crate) const WRITE_ATTEMPT: Duration = Duration::from_secs(8);
/// How long a read waits for a leader during an election.
pub(crate) const READ_HOLD: Duration = Duration::from_secs(7);
/// How many times a leader checks a write against the intentions and
/// config entries when they change before it is applied (each time,
/// another write that changed them was applied).
const MESH_CHECK_ATTEMPTS: u32 = 8;
/// Leaf signatures per second the leader grants, and the burst it allows.
const SIGN_RATE: f64 = 50.0;
const SIGN_BURST: f64 = 200.0;
/// How long a heartbeat keeps trying to reach the leader.
pub(crate) const HEARTBEAT_PATIENCE: Duration = Duration::from_secs(2);
/// How long a read waits for this server to catch up with the leader.
pub(crate) const CATCH_UP_PATIENCE: Duration = Duration::from_secs(5);

/// A running server. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) node: ServerNode,
    pub(crate) datacenter: Datacenter,
    pub(crate) raft: Raft,
    pub(crate) store: Arc<StateStore>,
    pub(crate) last_contact: LastContact,
    /// Peers' RPC addresses as they announce them (see `PeerAddresses`).
    pub(crate) peer_addresses: crate::raft::PeerAddresses,
    log_store: LogStore,
    channels: Channels,
    /// The term in which this server, as leader, last caught up with its
    /// whole log (see `wait_leader_caught_up`); 0 if never.
    caught_up_term: AtomicU64,
    batcher: WriteBatcher,
    /// Writes proposed here and not yet answered, and whether this server
    /// has stopped taking new ones (it is shutting down; see
    /// [`Server::stop_taking_writes`]).
    writes: WritesInFlight,
    /// How recently a quorum must have acknowledged the leader for it to
    /// serve default reads without asking again (the election timeout).
    lease: Duration,
    pub(crate) liveness: Liveness,
    pub(crate) sign_limiter: TokenBucket,
    pub(crate) leaf_ttl: Duration,
    pub(crate) domain: String,
    /// The CA the servers' certificates chain to, when they serve TLS.
    ca_pem: Option<String>,
    pub(crate) acl: crate::acl::ServerAcl,
    /// Auth methods' signing keys, parsed or fetched (see `crate::login`).
    pub(crate) login_keys: crate::login::KeyCache,
    /// Held by whatever changes the CA's state (set-up, rotation, pruning),
    /// so two changes never race to overwrite each other.
    pub(crate) ca_changes: tokio::sync::Mutex<()>,
    /// How long each stage of a write takes here (`/v1/agent/metrics`).
    pub(crate) timers: Timers,
}

impl Server {
    /// Opens the data dir, starts Raft and serves the gRPC services on
    /// `rpc_listener` until `shutdown` resolves. Discovery and bootstrap run
    /// in the background (see [`crate::cluster`]).
    pub async fn start(
        config: ServerConfig,
        rpc_listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Server, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let id = load_or_create_server_id(&config.data_dir)?;
        let timers = Timers::default();
        let (log_store, snapshot_store) = raft::open_storage(&config.data_dir.join("raft"), timers.clone())?;
        let store = StateStore::new();
        let state_machine = StateMachine::open(store.clone(), snapshot_store, timers.clone())
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let raft_config = openraft::Config {
            cluster_name: "weft".into(),
            heartbeat_interval: config.raft.heartbeat.as_millis() as u64,
            election_timeout_min: config.raft.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.raft.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_threshold),
            max_in_snapshot_log_to_keep: config.raft.trailing_logs,
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::RaftConfig(e.to_string()))?;
        let node = ServerNode {
            name: config.node_name.to_string(),
            rpc_addr: config.rpc_addr.clone(),
            http_addr: config.http_addr.clone(),
        };
        let connector = RpcConnector::new(config.rpc_tls.as_ref().and_then(|tls| tls.dial.clone()));
        let peer_addresses = crate::raft::PeerAddresses::default();
        let network =
            Network { connector: connector.clone(), addresses: peer_addresses.clone(), timers: timers.clone() };
        let raft = Raft::new(id, Arc::new(raft_config), network, log_store.clone(), state_machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let server = Server {
            inner: Arc::new_cyclic(|inner| Inner {
                id,
                node,
                datacenter: config.datacenter.clone(),
                raft: raft.clone(),
                store,
                last_contact: LastContact::default(),
                peer_addresses,
                log_store,
                channels: Channels::new(connector),
                caught_up_term: AtomicU64::new(0),
                batcher: WriteBatcher::start(inner.clone()),
                writes: WritesInFlight::default(),
                lease: config.raft.election_timeout_min,
                liveness: Liveness::new(config.liveness_timeout),
                sign_limiter: TokenBucket::new(SIGN_RATE, SIGN_BURST),
                leaf_ttl: config.leaf_ttl,
                domain: config.domain.clone(),
                ca_pem: config.rpc_tls.as_ref().map(|tls| tls.ca_pem.clone()),
                acl: config.acl.clone(),
                login_keys: crate::login::KeyCache::default(),
                ca_changes: tokio::sync::Mutex::new(()),
                timers: timers.clone(),
            }),
        };

        let serve_tls = config.rpc_tls.as_ref().map(|tls| tls.serve.clone());
        let require_certificates = serve_tls.as_ref().is_some_and(|tls| tls.verify_incoming());
        let policy = Arc::new(RpcPolicy::new(require_certificates, server.store().clone()));
        let grpc = tonic::transport::Server::builder()
            // A peer may keep a stream open only while it answers pings, and
            // may not send headers larger than any call of ours needs.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .http2_max_header_list_size(Some(16 * 1024))
            .max_concurrent_streams(Some(1024))
            .layer(RpcAuthLayer(policy))
            .add_service(
                RaftServer::new(RaftService::new(id, raft.clone(), server.inner.last_contact.clone(), timers))
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                ClusterServer::new(ClusterService::new(server.clone()))
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            );
        let incoming = weft_tls::incoming(rpc_listener, serve_tls, config.listener_limits);
        let raft_for_shutdown = raft.clone();
        tokio::spawn(async move {
            let served = grpc
                .serve_with_incoming_shutdown(incoming, async move {
                    shutdown.await;
                    let _ = raft_for_shutdown.shutdown().await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "server RPC listener stopped");
            }
        });
        if let Some(tls) = &config.rpc_tls {
            tokio::spawn(crate::join::follow_agent_ca(server.clone(), tls.agent_roots.clone()));
        }
        tokio::spawn(crate::liveness::watch_heartbeats(server.clone()));
        tokio::spawn(crate::sessions::expire_when_leading(server.clone()));
        tokio::spawn(crate::ca::maintain_when_leading(server.clone()));
        tokio::spawn(crate::cluster::join_or_bootstrap(server.clone(), config.bootstrap_expect, config.retry_join));
        tracing::info!(server_id = id, name = %server.inner.node.name, rpc = %server.inner.node.rpc_addr, "server started");
        Ok(server)
    }

    /// Resolves, with the reason, when Raft has stopped on a fatal error:
    /// storage that cannot be written or read (a full or failing disk, a
    /// damaged record). The server cannot serve again without a restart,
    /// so its process should exit (systemd or Kubernetes restarts it, and
    /// the start-up checks decide whether its storage may be used).
    pub async fn raft_failed(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            match &metrics.borrow_and_update().running_state {
                Err(openraft::error::Fatal::Stopped) | Ok(()) => {}
                Err(fatal) => return fatal.to_string(),
            }
            if metrics.changed().await.is_err() {
                // Shut down on purpose: nothing failed.
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn id(&self) -> ServerId {
        ServerId(self.inner.id)
    }

    pub fn node(&self) -> &ServerNode {
        &self.inner.node
    }

    pub fn datacenter(&self) -> &Datacenter {
        &self.inner.datacenter
    }

    /// The replicated state, as applied on this server.
    pub fn store(&self) -> &Arc<StateStore> {
        &self.inner.store
    }

    pub(crate) fn metrics(&self) -> RaftMetrics {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The server named `name` in the Raft configuration, and whether it
    /// votes. Reads the membership in place (no copy of the metrics), as the
    /// leader does on every agent's heartbeat.
    pub(crate) fn member_named(&self, name: &str) -> Option<(ServerNode, bool)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let (id, node) = membership.nodes().find(|(_, node)| node.name == name)?;
        Some((node.clone(), membership.voter_ids().any(|voter| voter == *id)))
    }

    /// The current leader, if this server knows one. A leader that no
    /// quorum has acknowledged for its lease (an election timeout: cut off,
    /// or paused) does not count itself: it may already have been replaced,
    /// so it says it knows no leader (`/v1/status/leader`,
    /// `X-Consul-KnownLeader`) and takes no write, rather than claim a
    /// leadership it cannot prove.
    pub fn leader(&self) -> Option<ServerNode> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let membership = metrics.membership_config.membership();
        if leader == self.inner.id && metrics.state == ServerState::Leader && membership.voter_ids().count() > 1 {
            let acked = metrics.millis_since_quorum_ack.map(Duration::from_millis);
            if acked.is_none_or(|ago| ago >= self.inner.lease) {
                return None;
            }
        }
        let mut node = membership.get_node(&leader).cloned()?;
        if leader == self.inner.id {
            node.rpc_addr.clone_from(&self.inner.node.rpc_addr);
            node.http_addr.clone_from(&self.inner.node.http_addr);
        } else if let Some(addr) = self.inner.peer_addresses.current(leader) {
            node.rpc_addr = addr;
        }
        Some(node)
    }

    /// The term this server leads in, if it leads.
    pub(crate) fn leading_term(&self) -> Option<u64> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.state == ServerState::Leader).then_some(metrics.current_term)
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Time since this server last heard from the leader (zero on the leader).
    pub fn last_contact(&self) -> Option<Duration> {
        if self.is_leader() {
            return Some(Duration::ZERO);
        }
        self.inner.last_contact.elapsed()
    }

    /// How long since this server last knew itself in step with the leader:
    /// on the leader, since a quorum last acknowledged it (its lease); on a
    /// follower, since it last heard from the leader. `None` when it cannot
    /// tell (no leader known, never heard from it).
    pub fn leader_contact(&self) -> Option<Duration> {
        let (leading, quorum_ack, leader_known) = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state == ServerState::Leader, metrics.millis_since_quorum_ack, metrics.current_leader.is_some())
        };
        match (leading, leader_known) {
            (true, _) => quorum_ack.map(Duration::from_millis),
            (false, true) => self.inner.last_contact.elapsed(),
            (false, false) => None,
        }
    }

    /// How long each stage of a write has taken here (`/v1/agent/metrics`).
    pub fn timers(&self) -> &Timers {
        &self.inner.timers
    }

    /// Raft figures for operators (`/v1/agent/self` `Stats.raft`).
    pub fn raft_stats(&self) -> RaftStats {
        let metrics = self.metrics();
        RaftStats {
            state: format!("{:?}", metrics.state),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: self.store().applied_index().get(),
            last_snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or(0),
            size_on_disk: self.inner.log_store.size_on_disk(),
        }
    }

    /// The CA the servers' certificates chain to (PEM), when they serve TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.inner.ca_pem.as_deref()
    }

    pub(crate) fn cluster_client(&self, rpc_addr: &str) -> Result<ClusterClient<Channel>, ServerError> {
        self.inner.channels.cluster_client(rpc_addr)
    }

    /// Commits `command` through the leader and waits until it is applied
    /// here too, so a read on this server right after sees it. Retries while
    /// there is no leader or it moves, for up to 10 s.
    pub async fn write(&self, command: Command) -> Result<Applied, ServerError> {
        crate::store::check_proposal(&command).map_err(ServerError::Invalid)?;
        let started = Instant::now();
        let applied = retry_transient(WRITE_PATIENCE, "write", || async {
            match command {
                // A restore is large and rare: it travels on its own.
                Command::Restore { .. }
                | Command::RestoreBegin { .. }
                | Command::RestoreChunk { .. }
                | Command::RestoreFinish { .. } => self.write_once(&command).await,
                // Checked alone by the leader (see `write_local`).
                _ if crate::store::is_mesh_checked(&command) || crate::sessions::acquires(&command) => {
                    self.write_once(&command).await
                }
                _ => self.inner.batcher.submit(command.clone()).await,
            }
        })
        .await?;
        self.store().wait_applied(applied.index, CATCH_UP_PATIENCE).await;
        self.inner.timers.since(Stage::Write, started);
        Ok(applied)
    }

    /// One attempt: local if this server leads, else forwarded to the leader.
    pub(crate) async fn write_once(&self, command: &Command) -> Result<Applied, ServerError> {
        match self.leader() {
            Some(leader) if leader.rpc_addr != self.inner.node.rpc_addr => self.forward_write(&leader, command).await,
            Some(_) => self.write_local(command).await,
            None => Err(ServerError::NoLeader),
        }
    }

    /// Proposes `command` on this server, which must be the leader; never
    /// forwards. `NoLeader` means nothing was proposed (safe to retry);
    /// `OutcomeUnknown` means it was proposed but not confirmed in time.
    ///
    /// A write the rules tie to the intentions and config entries
    /// ([`crate::store::is_mesh_checked`]) is checked here, against this
    /// leader's tables once it has applied every write acknowledged before,
    /// and proposed as a [`Command::Checked`] at the index they were at; if
    /// they changed before it was applied, it is checked again. An acquire
    /// of a key in its lock delay is answered without proposing it
    /// (`crate::sessions`).
    pub(crate) async fn write_local(&self, command: &Command) -> Result<Applied, ServerError> {
        if let Some(outcome) = crate::sessions::refuse_in_lock_delay(self, command) {
            return Ok(Applied { outcome, index: self.store().applied_index() });
        }
        if !crate::store::is_mesh_checked(command) {
            return self.propose(command).await;
        }
        for _ in 0..MESH_CHECK_ATTEMPTS {
            self.wait_leader_caught_up().await?;
            let (mesh_index, checked) = {
                let tables = self.store().read();
                (tables.mesh_index(), tables.check_mesh_rules(command))
            };
            if let Err(reason) = checked {
                let index = self.store().applied_index();
                return Ok(Applied { outcome: CommandOutcome::Rejected(reason), index });
            }
            let applied = self.propose(&Command::Checked { mesh_index, command: Box::new(command.clone()) }).await?;
            if applied.outcome != CommandOutcome::Outdated {
                return Ok(applied);
            }
        }
        Err(ServerError::Contended(format!("checked {MESH_CHECK_ATTEMPTS} times")))
    }

    async fn propose(&self, command: &Command) -> Result<Applied, ServerError> {
        // A server shutting down proposes nothing more: its callers retry
        // with the next leader instead of losing track of their write.
        let Some(_in_flight) = self.inner.writes.enter() else { return Err(ServerError::NoLeader) };
        let started = Instant::now();
        let proposed = tokio::time::timeout(WRITE_ATTEMPT, self.inner.raft.client_write(command.clone())).await;
        self.inner.timers.since(Stage::Commit, started);
        match proposed {
            Err(_) => Err(ServerError::OutcomeUnknown(format!("no quorum confirmed it within {WRITE_ATTEMPT:?}"))),
            Ok(Ok(response)) => Ok(Applied { outcome: response.data, index: RaftIndex(response.log_id.index) }),
            // openraft answers ForwardToLeader only for entries it did not keep.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(ServerError::NoLeader),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(ServerError::Membership(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(ServerError::OutcomeUnknown(fatal.to_string())),
        }
    }

    /// For a graceful stop: proposes no more writes (they are answered as
    /// if there were no leader, so callers retry with the next one) and
    /// waits up to `patience` for those already proposed here to be
    /// answered. A leader stopped this way leaves no caller unsure whether
    /// its write was applied, unless the quorum is gone.
    pub async fn stop_taking_writes(&self, patience: Duration) {
        self.inner.writes.close();
        let deadline = tokio::time::Instant::now() + patience;
        while self.inner.writes.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn forward_write(&self, leader: &ServerNode, command: &Command) -> Result<Applied, ServerError> {
        let mut client = self.cluster_client(&leader.rpc_addr)?;
        let mut request =
            tonic::Request::new(ApplyRequest { command: raft::encode(command), acl_token: String::new() });
        request.set_timeout(WRITE_ATTEMPT + Duration::from_secs(1));
        let started = Instant::now();
        let reply = client.apply(request).await.map_err(forwarded_write_error)?.into_inner();
        self.inner.timers.since(Stage::Forward, started);
        let outcome = raft::decode(&reply.outcome).map_err(|e| ServerError::OutcomeUnknown(e.to_string()))?;
        Ok(Applied { outcome, index: RaftIndex(reply.index) })
    }

    /// Makes this server's state fresh enough for `consistency`, waiting for
    /// it to catch up with the leader when needed. Like Consul's RPC hold
    /// timeout, it waits through a leader election (up to 7 s) rather than
    /// failing at once; a read is always safe to retry.
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), ServerError> {
        retry_transient(READ_HOLD, "read barrier", || self.read_barrier_once(consistency)).await
    }

    async fn read_barrier_once(&self, consistency: ReadConsistency) -> Result<(), ServerError> {
        let index = match consistency {
            ReadConsistency::Stale => return Ok(()),
            ReadConsistency::Default if self.is_leader() => {
                // Like Consul's leader lease: a leader that has not heard from
                // a quorum lately may have been deposed; confirm before serving.
                let acked = self.metrics().millis_since_quorum_ack.map(Duration::from_millis);
                if acked.is_some_and(|ago| ago < self.inner.lease) {
                    return self.wait_leader_caught_up().await;
                }
                return self.local_read_index(true).await.map(|_| ());
            }
            ReadConsistency::Consistent if self.is_leader() => {
                return self.local_read_index(true).await.map(|_| ());
            }
            _ => {
                let leader = self.leader().ok_or(ServerError::NoLeader)?;
                let mut client = self.cluster_client(&leader.rpc_addr)?;
                let linearizable = consistency == ReadConsistency::Consistent;
                let mut request = tonic::Request::new(ReadIndexRequest { linearizable });
                request.set_timeout(CATCH_UP_PATIENCE);
                client.read_index(request).await.map_err(status_to_error)?.into_inner().index
            }
        };
        if self.store().wait_applied(RaftIndex(index), CATCH_UP_PATIENCE).await {
            Ok(())
        } else {
            Err(ServerError::CatchUpTimeout(index))
        }
    }

    /// On the leader: the index a read must see. With `linearizable`, first
    /// confirms leadership with a quorum (read-index).
    pub(crate) async fn local_read_index(&self, linearizable: bool) -> Result<u64, ServerError> {
        if !self.is_leader() {
            return Err(ServerError::NoLeader);
        }
        // openraft's read index is max(committed, this term's first entry).
        // A leader that resumed its term after a restart proposed no entry in
        // it, and its committed index was loaded from disk, possibly stale:
        // the read index alone could then miss acknowledged writes. Catching
        // up with the whole log first closes that gap in every case.
        self.wait_leader_caught_up().await?;
        let mut index = self.store().applied_index().get();
        if linearizable {
            let read_log_id = self.inner.raft.ensure_linearizable().await.map_err(|e| match e {
                RaftError::APIError(_) => ServerError::NoLeader,
                RaftError::Fatal(fatal) => ServerError::Fatal(fatal.to_string()),
            })?;
            index = index.max(read_log_id.map(|l| l.index).unwrap_or(0));
        }
        Ok(index)
    }

    /// A leader may not yet have applied everything committed before it took
    /// over (or, after a restart, before it resumed leading): its log is
    /// complete, but its commit index is only learned anew. So before its
    /// first read in a term, it waits until it has applied every entry its log
    /// held at that moment; from then on it stays caught up for the term.
    async fn wait_leader_caught_up(&self) -> Result<(), ServerError> {
        let metrics = self.metrics();
        if metrics.state != ServerState::Leader {
            return Err(ServerError::NoLeader);
        }
        let term = metrics.current_term;
        if self.inner.caught_up_term.load(Ordering::Acquire) == term {
            return Ok(());
        }
        let target = metrics.last_log_index.unwrap_or(0);
        let caught_up = |m: &RaftMetrics| {
            m.state != ServerState::Leader
                || m.current_term != term
                || m.last_applied.is_some_and(|l| l.index >= target)
        };
        let metrics = self
            .inner
            .raft
            .wait(Some(CATCH_UP_PATIENCE))
            .metrics(caught_up, "leader applied its whole log")
            .await
            .map_err(|_| ServerError::CatchUpTimeout(target))?;
        if metrics.state != ServerState::Leader || metrics.current_term != term {
            return Err(ServerError::NoLeader);
        }
        self.inner.caught_up_term.store(term, Ordering::Release);
        Ok(())
    }

    /// The Raft configuration as this server knows it.
    pub fn raft_configuration(&self) -> RaftConfiguration {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched: BTreeMap<u64, u64> = metrics
            .replication
            .as_ref()
            .map(|r| r.iter().filter_map(|(id, log)| Some((*id, log.as_ref()?.index))).collect())
            .unwrap_or_default();
        let servers = membership
            .nodes()
            .map(|(id, node)| PeerStatus {
                id: ServerId(*id),
                name: node.name.clone(),
                rpc_addr: node.rpc_addr.clone(),
                http_addr: node.http_addr.clone(),
                voter: voters.contains(id),
                leader: metrics.current_leader == Some(*id),
                last_index: if *id == self.inner.id { metrics.last_log_index } else { matched.get(id).copied() },
            })
            .collect();
        let index = metrics.membership_config.log_id().map(|l| l.index).unwrap_or(0);
        RaftConfiguration { servers, index: RaftIndex(index) }
    }

    /// Removes a server (by ID, name or RPC address) from the Raft
    /// configuration, through the leader.
    /// Waits (up to 10 s) for a leader, and for a membership change already
    /// under way (such as a server joining) to finish.
    /// The Raft configuration as the leader knows it (with every server's
    /// last index), asked of the leader if this server is not it.
    pub async fn leader_raft_configuration(&self) -> Result<RaftConfiguration, ServerError> {
        retry_transient(WRITE_PATIENCE, "Raft configuration", || async {
            if self.is_leader() {
                return Ok(self.raft_configuration());
            }
            let leader = self.leader().ok_or(ServerError::NoLeader)?;
            raft_configuration_remotely(&self.inner.channels, &leader.rpc_addr).await
        })
        .await
    }

    pub async fn remove_peer(&self, peer: &str) -> Result<(), ServerError> {
        retry_transient(WRITE_PATIENCE, "peer removal", || self.remove_peer_once(peer)).await
    }

    async fn remove_peer_once(&self, peer: &str) -> Result<(), ServerError> {
        if self.is_leader() {
            return self.remove_peer_locally(peer).await;
        }
        let leader = self.leader().ok_or(ServerError::NoLeader)?;
        let mut client = self.cluster_client(&leader.rpc_addr)?;
        client.remove_peer(RemovePeerRequest { peer: peer.to_owned() }).await.map_err(status_to_error)?;
        Ok(())
    }

    /// Reports that `node`'s agent is alive (see [`crate::liveness`]), to the
    /// leader wherever it is.
    pub async fn heartbeat(&self, node: &Node) -> Result<(), ServerError> {
        retry_transient(HEARTBEAT_PATIENCE, "heartbeat", || async {
            if self.is_leader() {
                return liveness::heartbeat(self, node.clone()).await;
            }
            let leader = self.leader().ok_or(ServerError::NoLeader)?;
            let mut client = self.cluster_client(&leader.rpc_addr)?;
            let mut request = tonic::Request::new(HeartbeatRequest { node: raft::encode(node) });
            request.set_timeout(HEARTBEAT_PATIENCE);
            client.heartbeat(request).await.map_err(status_to_error)?;
            Ok(())
        })
        .await
    }

    /// Has the leader sign a leaf for `service` on `node` from `csr_pem`.
    pub async fn sign_leaf(
        &self,
        node: &NodeName,
        service: &ServiceName,
        csr_pem: &str,
    ) -> Result<SignedLeaf, CaError> {
        retry_transient(WRITE_PATIENCE, "leaf signing", || async {
            if self.is_leader() {
                return ca::sign_for(self, node, service, csr_pem);
            }
            let leader = self.leader().ok_or(CaError::Cluster(ServerError::NoLeader))?;
            let request =
                SignLeafRequest { csr_pem: csr_pem.to_owned(), node: node.to_string(), service: service.to_string() };
            sign_remotely(&self.inner.channels, &leader.rpc_addr, request).await
        })
        .await
    }

    /// Rotates the mesh CA's root, through the leader; the new root's ID.
    pub async fn rotate_ca(&self) -> Result<String, CaError> {
        retry_transient(WRITE_PATIENCE, "CA rotation", || async {
            if self.is_leader() {
                return ca::rotate(self).await;
            }
            let leader = self.leader().ok_or(CaError::Cluster(ServerError::NoLeader))?;
            rotate_remotely(&self.inner.channels, &leader.rpc_addr).await
        })
        .await
    }

    pub(crate) async fn remove_peer_locally(&self, peer: &str) -> Result<(), ServerError> {
        let configuration = self.raft_configuration();
        let target = configuration
            .servers
            .iter()
            .find(|s| s.id.0.to_string() == peer || s.name == peer || s.rpc_addr == peer)
            .ok_or_else(|| ServerError::PeerNotFound(peer.to_owned()))?;
        let ids = BTreeSet::from([target.id.0]);
        let change = if target.voter { ChangeMembers::RemoveVoters(ids) } else { ChangeMembers::RemoveNodes(ids) };
        self.inner.raft.change_membership(change, false).await.map_err(client_write_error)?;
        tracing::info!(peer, id = target.id.0, "removed server from the Raft configuration");
        Ok(())
    }
}

/// The longest pause between two attempts of [`retry_transient`].
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Runs `attempt` until it succeeds, fails for good, or `patience` runs out.
/// Only transient errors ([`ServerError::is_transient`]: nothing was done,
/// try again shortly) are retried, with backoff from 20 ms to 100 ms.
pub(crate) async fn retry_transient<T, E, F, Fut>(patience: Duration, what: &str, mut attempt: F) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Duration::from_millis(20);
    loop {
        match attempt().await {
            Err(error) if error.is_transient() && tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!(%error, what, "will retry");
                tokio::time::sleep(backoff).await;
                // Short: a new leader is usually there within an election
                // timeout, and a write should not sleep long past it.
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            result => return result,
        }
    }
}

/// An error that may mean "nothing was done, try again shortly".
pub(crate) trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for ServerError {
    fn is_transient(&self) -> bool {
        ServerError::is_transient(self)
    }
}

impl Transient for CaError {
    fn is_transient(&self) -> bool {
        matches!(self, CaError::Cluster(error) if error.is_transient())
    }
}

/// Maps a membership-change failure to a [`ServerError`].
/// Writes proposed on this server and not yet answered, and whether it
/// still takes new ones.
#[derive(Default)]
struct WritesInFlight {
    count: AtomicUsize,
    closed: AtomicBool,
}

/// One write in flight; counted until dropped.
struct InFlight<'a>(&'a WritesInFlight);

impl WritesInFlight {
    /// Counts a new write, unless no more are taken.
    fn enter(&self) -> Option<InFlight<'_>> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(InFlight(self))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) fn client_write_error(error: RaftError<u64, ClientWriteError<u64, ServerNode>>) -> ServerError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ServerError::NoLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(e))) => {
            ServerError::MembershipChangeInProgress(e.to_string())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ServerError::Membership(e.to_string()),
        RaftError::Fatal(fatal) => ServerError::Fatal(fatal.to_string()),
    }
}

/// Interprets a failed forwarded write. Only failures that prove the leader
/// never proposed it may be retried: the leader said it is not the leader,
/// or the connection was never made. Anything else (a reset mid-request, a
/// time-out, a leader that failed after proposing) leaves the outcome
/// unknown, and retrying could apply the write twice.
pub(crate) fn forwarded_write_error(status: tonic::Status) -> ServerError {
    match status.code() {
        tonic::Code::FailedPrecondition => ServerError::NoLeader,
        // Refused before anything was proposed.
        tonic::Code::Unauthenticated => ServerError::Unauthenticated(status.message().to_owned()),
        tonic::Code::PermissionDenied => ServerError::PermissionDenied(status.message().to_owned()),
        tonic::Code::InvalidArgument => ServerError::Invalid(status.message().to_owned()),
        // A write that lost to concurrent changes of the tables it was
        // checked against (gRPC's code for a failed sequencer check); the
        // membership errors also sent as `Aborted` never travel by `Apply`.
        tonic::Code::Aborted => ServerError::Contended(status.message().to_owned()),
        tonic::Code::Unavailable if weft_tls::ConnectError::caused(&status) => {
            ServerError::LeaderUnreachable(status.message().to_owned())
        }
        _ => ServerError::OutcomeUnknown(status.message().to_owned()),
    }
}

/// Interprets a gRPC error from another server.
pub(crate) fn status_to_error(status: tonic::Status) -> ServerError {
    match status.code() {
        // The other side is not (or no longer) the leader: nothing was applied.
        tonic::Code::FailedPrecondition => ServerError::NoLeader,
        tonic::Code::NotFound => ServerError::PeerNotFound(status.message().to_owned()),
        tonic::Code::Aborted => ServerError::Membership(status.message().to_owned()),
        tonic::Code::ResourceExhausted => ServerError::MembershipChangeInProgress(status.message().to_owned()),
        tonic::Code::Unauthenticated => ServerError::Unauthenticated(status.message().to_owned()),
        tonic::Code::PermissionDenied => ServerError::PermissionDenied(status.message().to_owned()),
        tonic::Code::InvalidArgument => ServerError::Invalid(status.message().to_owned()),
        _ => ServerError::LeaderUnreachable(status.message().to_owned()),
    }
}

/// Maps a [`ServerError`] to the gRPC status another server will interpret
/// with [`status_to_error`].
pub(crate) fn error_to_status(error: ServerError) -> tonic::Status {
    match error {
        ServerError::NoLeader => tonic::Status::failed_precondition(error.to_string()),
        ServerError::PeerNotFound(peer) => tonic::Status::not_found(peer),
        ServerError::Membership(reason) => tonic::Status::aborted(reason),
        ServerError::MembershipChangeInProgress(reason) => tonic::Status::resource_exhausted(reason),
        ServerError::OutcomeUnknown(reason) => tonic::Status::unknown(reason),
        ServerError::Unauthenticated(reason) => tonic::Status::unauthenticated(reason),
        ServerError::PermissionDenied(reason) => tonic::Status::permission_denied(reason),
        ServerError::Invalid(reason) => tonic::Status::invalid_argument(reason),
        ServerError::Contended(reason) => tonic::Status::aborted(reason),
        other => tonic::Status::unavailable(other.to_string()),
    }
}

/// Sends a `SignLeaf` to the leader at `rpc_addr`.
pub(crate) async fn sign_remotely(
    channels: &Channels,
    rpc_addr: &str,
    request: SignLeafRequest,
) -> Result<SignedLeaf, CaError> {
    let mut client = channels.cluster_client(rpc_addr)?;
    let mut request = tonic::Request::new(request);
    request.set_timeout(WRITE_ATTEMPT);
    let reply: SignLeafResponse = client.sign_leaf(request).await.map_err(status_to_ca_error)?.into_inner();
    Ok(SignedLeaf {
        cert_pem: reply.cert_pem,
        serial_number: reply.serial_number,
        valid_after: reply.valid_after,
        valid_before: reply.valid_before,
        spiffe_id: reply.spiffe_id,
        root_id: reply.root_id,
    })
}

/// Asks the leader at `rpc_addr` to rotate the CA root.
pub(crate) async fn rotate_remotely(channels: &Channels, rpc_addr: &str) -> Result<String, CaError> {
    let mut client = channels.cluster_client(rpc_addr)?;
    let mut request = tonic::Request::new(RotateCaRequest {});
    request.set_timeout(WRITE_ATTEMPT);
    let reply: RotateCaResponse = client.rotate_ca(request).await.map_err(status_to_ca_error)?.into_inner();
    Ok(reply.root_id)
}

/// The gRPC status for a signing failure, read back by [`status_to_ca_error`].
pub(crate) fn ca_error_to_status(error: CaError) -> tonic::Status {
    match error {
        CaError::NotRegistered(reason) => tonic::Status::permission_denied(reason),
        CaError::RateLimited => tonic::Status::resource_exhausted(error.to_string()),
        CaError::BadCsr(_) => tonic::Status::invalid_argument(error.to_string()),
        CaError::NotInitialized => tonic::Status::not_found(error.to_string()),
        CaError::Signing(reason) => tonic::Status::internal(reason),
        CaError::Cluster(error) => error_to_status(error),
    }
}

fn status_to_ca_error(status: tonic::Status) -> CaError {
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::PermissionDenied => CaError::NotRegistered(message),
        tonic::Code::ResourceExhausted => CaError::RateLimited,
        tonic::Code::InvalidArgument => CaError::BadCsr(message),
        tonic::Code::NotFound => CaError::NotInitialized,
        tonic::Code::Internal => CaError::Signing(message),
        _ => CaError::Cluster(status_to_error(status)),
    }
}

/// This agent's ID (a server's Raft ID): random, made on first start, kept
/// in `data_dir/node-id`. A missing file beside Raft data is an error: a
/// new ID would make a stranger of the server its data belongs to.
pub fn load_or_create_server_id(data_dir: &Path) -> Result<u64, StartError> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(content) => content.trim().parse().map_err(|_| StartError::CorruptNodeId { path: path.clone(), content }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && data_dir.join("raft").exists() => {
            Err(StartError::MissingNodeId { path, raft: data_dir.join("raft") })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = rand::random::<u64>() >> 1 | 1;
            let temp = data_dir.join("node-id.tmp");
            std::fs::write(&temp, id.to_string())
                .and_then(|_| std::fs::rename(&temp, &path))
                .map_err(|source| StartError::DataDir { path: path.clone(), source })?;
            Ok(id)
        }
        Err(source) => Err(StartError::DataDir { path, source }),
    }
}

/// Asks the leader at `rpc_addr` for its Raft configuration.
pub(crate) async fn raft_configuration_remotely(
    channels: &Channels,
    rpc_addr: &str,
) -> Result<RaftConfiguration, ServerError> {
    let mut client = channels.cluster_client(rpc_addr)?;
    let reply = client.raft_configuration(RaftConfigurationRequest {}).await.map_err(status_to_error)?.into_inner();
    raft::decode(&reply.configuration).map_err(|e| ServerError::LeaderUnreachable(e.to_string()))
}
