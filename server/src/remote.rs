//! A client agent's link to the servers.
//!
//! A client agent runs no Raft. It keeps a copy of the state store, streamed
//! from one server (`Cluster.Subscribe`: the whole state, then every change
//! in log order), and serves DNS, `?stale` reads and blocking queries from
//! that copy without a server round trip. Writes go to the leader
//! (`Cluster.Apply`) and return once the copy has them, so the agent reads
//! its own writes.
//!
//! Default reads are served from the copy too while it is fresh: every
//! event says how recently its server was in step with the leader, and the
//! copy counts as fresh while that, plus the time since the event, is within
//! [`LOCAL_READ_BOUND`], and it holds every write made through this agent.
//! Otherwise (the stream is quiet or gone, its server lost the leader), a
//! default read asks the leader for its read index and waits until the copy
//! has applied it, as a follower server does. `?consistent` always asks the
//! leader (a quorum-confirmed read index). So a default read on a client
//! agent may miss another agent's write of the last moment, by at most the
//! bound, as Consul's default mode tolerates bounded staleness; it never
//! misses this agent's own.
//!
//! If its server goes quiet (no message for a few keepalives) or goes away,
//! the agent subscribes to the next one and starts over from a full copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Streaming;
use weft_api::catalog::Node;
use weft_api::command::Command;
use weft_api::ids::{Datacenter, NodeName, RaftIndex, ServiceName};
use weft_api::proto::cluster::store_event::Change;
use weft_api::proto::cluster::{
    ApplyRequest, HeartbeatRequest, InfoRequest, LoginRequest, LogoutRequest, ReadIndexRequest, RemovePeerRequest,
    SignLeafRequest, StoreEvent, SubscribeRequest,
};

use weft_tls::RpcConnector;

use weft_api::acl::AclToken;

use crate::ca::{CaError, SignedLeaf};
use crate::login::{self, LoginFailure, LoginOutcome, LoginParams, LOGIN_KEY_FETCH};
use crate::raft::{self, ServerNode};
use crate::rpc::{Channels, LastContact, STREAM_KEEPALIVE};
use crate::server::{
    forwarded_write_error, raft_configuration_remotely, retry_transient, rotate_remotely, sign_remotely,
    status_to_error, CATCH_UP_PATIENCE, HEARTBEAT_PATIENCE, READ_HOLD, WRITE_ATTEMPT, WRITE_PATIENCE,
};
use crate::store::{StateStore, StoreData};
use crate::{Applied, RaftConfiguration, ReadConsistency, ServerError};

/// A stream that has been silent this long is presumed dead.
const STREAM_SILENCE: Duration = Duration::from_secs(4);

/// How far behind the leader a client agent's copy may be for it to serve a
/// default read without asking the leader: two stream keepalives.
pub const LOCAL_READ_BOUND: Duration = Duration::from_secs(2);

/// What a client agent needs to reach the servers.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    pub datacenter: Datacenter,
    /// RPC addresses of servers (`retry_join`).
    pub servers: Vec<String>,
    /// How to dial them: TLS (with this agent's certificate, once it has
    /// one) where configured.
    pub connector: RpcConnector,
}

/// A client agent's handle on the cluster. Cheap to clone.
#[derive(Clone)]
pub struct RemoteCluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: RemoteConfig,
    store: Arc<StateStore>,
    channels: Channels,
    leader: Mutex<Option<ServerNode>>,
    /// When the subscribed server last sent anything.
    last_contact: LastContact,
    /// How far behind the leader the copy may be (see [`Freshness`]).
    freshness: Freshness,
    /// The highest index of a write made through this agent: the copy must
    /// hold it before a read is served from it.
    last_written: AtomicU64,
}

/// When the followed server last sent an event, and how long before it
/// that server was last in step with the leader (`None`: it could not tell).
#[derive(Default)]
struct Freshness(Mutex<Option<(Instant, Option<Duration>)>>);

impl Freshness {
    fn record(&self, leader_contact: Option<Duration>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), leader_contact));
    }

    /// The stream ended: nothing is known until the next one speaks.
    fn forget(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How far behind the leader the copy may be now; `None` if unknown.
    fn staleness(&self) -> Option<Duration> {
        let (at, leader_contact) = (*self.0.lock().unwrap_or_else(|p| p.into_inner()))?;
        Some(leader_contact? + at.elapsed())
    }
}

/// Whether a default read may be served from the copy: it is known to be
/// within [`LOCAL_READ_BOUND`] of the leader and holds this agent's writes.
fn local_read_allowed(staleness: Option<Duration>, applied: RaftIndex, last_written: RaftIndex) -> bool {
    staleness.is_some_and(|s| s <= LOCAL_READ_BOUND) && applied >= last_written
}

impl RemoteCluster {
    /// Starts following the servers in the background, until the store is
    /// closed (see [`StateStore::close`]).
    pub fn start(config: RemoteConfig) -> Self {
        let channels = Channels::new(config.connector.clone());
        let remote = RemoteCluster {
            inner: Arc::new(Inner {
                config,
                store: StateStore::new(),
                channels,
                leader: Mutex::new(None),
                last_contact: LastContact::default(),
                freshness: Freshness::default(),
                last_written: AtomicU64::new(0),
            }),
        };
        tokio::spawn(remote.clone().follow());
        remote
    }

    /// Dials the servers anew from now on: after the agent's certificate
    /// changed, so every call presents the new one.
    pub fn reconnect(&self) {
        self.inner.channels.reconnect();
    }

    /// The local copy of the replicated state.
    pub fn store(&self) -> &Arc<StateStore> {
        &self.inner.store
    }

    pub fn datacenter(&self) -> &Datacenter {
        &self.inner.config.datacenter
    }

    /// The leader as last learned from a server.
    pub fn leader(&self) -> Option<ServerNode> {
        self.inner.leader.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How far behind the leader this agent's copy may be (Consul's
    /// `LastContact`): when its server was last in step with the leader,
    /// plus the time since that server spoke; if the server could not tell,
    /// just the time since it spoke.
    pub fn last_contact(&self) -> Option<Duration> {
        self.inner.freshness.staleness().or_else(|| self.inner.last_contact.elapsed())
    }

    /// Commits `command` through the leader and waits until the local copy
    /// has it, so a read on this agent right after sees it (a read is not
    /// served from a copy that lacks it).
    /// `token`: the ACL token of the HTTP caller the write is made for
    /// (`None`: the agent's own write, of its own node's entries).
    pub async fn write(&self, command: Command, token: Option<String>) -> Result<Applied, ServerError> {
        let applied = retry_transient(WRITE_PATIENCE, "write", || self.write_once(&command, token.as_deref())).await?;
        self.inner.last_written.fetch_max(applied.index.get(), Ordering::AcqRel);
        self.store().wait_applied(applied.index, CATCH_UP_PATIENCE).await;
        Ok(applied)
    }

    async fn write_once(&self, command: &Command, token: Option<&str>) -> Result<Applied, ServerError> {
        let leader = self.find_leader().await?;
        let mut client = self.inner.channels.cluster_client(&leader.rpc_addr)?;
        let acl_token = token.unwrap_or_default().to_owned();
        let mut request = tonic::Request::new(ApplyRequest { command: raft::encode(command), acl_token });
        request.set_timeout(WRITE_ATTEMPT + Duration::from_secs(1));
        let reply = client.apply(request).await.map_err(|status| self.forget_leader(forwarded_write_error(status)))?;
        let reply = reply.into_inner();
        let outcome = raft::decode(&reply.outcome).map_err(|e| ServerError::OutcomeUnknown(e.to_string()))?;
        Ok(Applied { outcome, index: RaftIndex(reply.index) })
    }

    /// Logs in through the leader (see [`crate::login`]); the copy holds
    /// the new token when this returns.
    pub async fn login(&self, params: &LoginParams) -> Result<LoginOutcome, LoginFailure> {
        let outcome = retry_transient(WRITE_PATIENCE, "login", || async {
            let leader = self.find_leader().await?;
            let mut client = self.inner.channels.cluster_client(&leader.rpc_addr)?;
            let mut request = tonic::Request::new(LoginRequest {
                auth_method: params.auth_method.clone(),
                bearer_token: params.bearer_token.clone(),
                meta: params.meta.clone().into_iter().collect(),
            });
            request.set_timeout(WRITE_ATTEMPT + LOGIN_KEY_FETCH);
            let reply = client.login(request).await.map_err(|status| match login::status_to_failure(status) {
                LoginFailure::Cluster(error) => LoginFailure::Cluster(self.forget_leader(error)),
                refused => refused,
            })?;
            let reply = reply.into_inner();
            let token: AclToken = raft::decode(&reply.token).map_err(|e| ServerError::OutcomeUnknown(e.to_string()))?;
            Ok::<_, LoginFailure>(LoginOutcome { token, secret_id: reply.secret_id })
        })
        .await?;
        let index = outcome.token.indexes.modify;
        self.inner.last_written.fetch_max(index.get(), Ordering::AcqRel);
        self.store().wait_applied(index, CATCH_UP_PATIENCE).await;
        Ok(outcome)
    }

    /// Deletes the token a login made, through the leader; the copy no
    /// longer holds it when this returns.
    pub async fn logout(&self, secret_id: &str) -> Result<(), LoginFailure> {
        let index = retry_transient(WRITE_PATIENCE, "logout", || async {
            let leader = self.find_leader().await?;
            let mut client = self.inner.channels.cluster_client(&leader.rpc_addr)?;
            let mut request = tonic::Request::new(LogoutRequest { secret_id: secret_id.to_owned() });
            request.set_timeout(WRITE_ATTEMPT + Duration::from_secs(1));
            let reply = client.logout(request).await.map_err(|status| match login::status_to_failure(status) {
                LoginFailure::Cluster(error) => LoginFailure::Cluster(self.forget_leader(error)),
                refused => refused,
            })?;
            Ok::<_, LoginFailure>(RaftIndex(reply.into_inner().index))
        })
        .await?;
        self.inner.last_written.fetch_max(index.get(), Ordering::AcqRel);
        self.store().wait_applied(index, CATCH_UP_PATIENCE).await;
        Ok(())
    }

    /// Makes the local copy fresh enough for `consistency` (see the module docs).
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), ServerError> {
        if consistency == ReadConsistency::Stale {
            return Ok(());
        }
        if consistency == ReadConsistency::Default && self.copy_is_fresh() {
            return Ok(());
        }
        retry_transient(READ_HOLD, "read barrier", || async {
            let leader = self.find_leader().await?;
            let mut client = self.inner.channels.cluster_client(&leader.rpc_addr)?;
            let linearizable = consistency == ReadConsistency::Consistent;
            let mut request = tonic::Request::new(ReadIndexRequest { linearizable });
            request.set_timeout(CATCH_UP_PATIENCE);
            let index = client
                .read_index(request)
                .await
                .map_err(|status| self.forget_leader(status_to_error(status)))?
                .into_inner()
                .index;
            if self.store().wait_applied(RaftIndex(index), CATCH_UP_PATIENCE).await {
                Ok(())
            } else {
                Err(ServerError::CatchUpTimeout(index))
            }
        })
        .await
    }

    /// Whether a default read may be served from the copy as it is.
    fn copy_is_fresh(&self) -> bool {
        let last_written = RaftIndex(self.inner.last_written.load(Ordering::Acquire));
        local_read_allowed(self.inner.freshness.staleness(), self.store().applied_index(), last_written)
    }

    /// Tells the leader this agent is alive (see [`crate::liveness`]).
    pub async fn heartbeat(&self, node: &Node) -> Result<(), ServerError> {
        retry_transient(HEARTBEAT_PATIENCE, "heartbeat", || async {
            let leader = self.find_leader().await?;
            let mut client = self.inner.channels.cluster_client(&leader.rpc_addr)?;
            let mut request = tonic::Request::new(HeartbeatRequest { node: raft::encode(node) });
            request.set_timeout(HEARTBEAT_PATIENCE);
            client.heartbeat(request).await.map_err(|status| self.forget_leader(status_to_error(status)))?;
            Ok(())
        })
        .await
    }

    /// The Raft configuration as the leader knows it.
    pub async fn leader_raft_configuration(&self) -> Result<RaftConfiguration, ServerError> {
        retry_transient(WRITE_PATIENCE, "Raft configuration", || async {
            let leader = self.find_leader().await?;
            raft_configuration_remotely(&self.inner.channels, &leader.rpc_addr)
                .await
                .map_err(|error| self.forget_leader(error))
        })
        .await
    }

    /// Removes a server from the Raft configuration, through the leader.
    pub async fn remove_peer(&self, peer: &str) -> Result<(), ServerError> {
        retry_transient(WRITE_PATIENCE, "peer removal", || async {
            let leader = self.find_leader().await?;
            let mut client = self.inner.channels.cluster_client(&leader.rpc_addr)?;
            client
                .remove_peer(RemovePeerRequest { peer: peer.to_owned() })
                .await
                .map_err(|status| self.forget_leader(status_to_error(status)))?;
            Ok(())
        })
        .await
    }

    /// Has the leader sign a leaf for `service` on `node` (see [`crate::ca`]).
    /// Rotates the mesh CA's root through the leader; the new root's ID.
    pub async fn rotate_ca(&self) -> Result<String, CaError> {
        retry_transient(WRITE_PATIENCE, "CA rotation", || async {
            let leader = self.find_leader().await?;
            rotate_remotely(&self.inner.channels, &leader.rpc_addr).await.map_err(|error| match error {
                CaError::Cluster(error) => CaError::Cluster(self.forget_leader(error)),
                other => other,
            })
        })
        .await
    }

    pub async fn sign_leaf(
        &self,
        node: &NodeName,
        service: &ServiceName,
        csr_pem: &str,
    ) -> Result<SignedLeaf, CaError> {
        retry_transient(WRITE_PATIENCE, "leaf signing", || async {
            let leader = self.find_leader().await?;
            let request =
                SignLeafRequest { csr_pem: csr_pem.to_owned(), node: node.to_string(), service: service.to_string() };
            sign_remotely(&self.inner.channels, &leader.rpc_addr, request).await.map_err(|error| match error {
                CaError::Cluster(error) => CaError::Cluster(self.forget_leader(error)),
                other => other,
            })
        })
        .await
    }

    /// The known leader, or asks the servers in turn who leads now.
    async fn find_leader(&self) -> Result<ServerNode, ServerError> {
        if let Some(leader) = self.leader() {
            return Ok(leader);
        }
        for server in &self.inner.config.servers {
            let Ok(mut client) = self.inner.channels.cluster_client(server) else { continue };
            let mut request = tonic::Request::new(InfoRequest {});
            request.set_timeout(Duration::from_secs(2));
            let Ok(info) = client.info(request).await.map(|r| r.into_inner()) else { continue };
            if info.datacenter != self.datacenter().as_str() {
                tracing::error!(server, datacenter = %info.datacenter, ours = %self.datacenter(), "server is in another datacenter; ignoring it");
                continue;
            }
            if !info.leader_rpc_addr.is_empty() {
                let leader = ServerNode {
                    name: info.leader_name,
                    rpc_addr: info.leader_rpc_addr,
                    http_addr: info.leader_http_addr,
                };
                *self.inner.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(leader.clone());
                return Ok(leader);
            }
        }
        Err(ServerError::NoLeader)
    }

    /// After a failure that may mean the leader moved: ask again next time.
    fn forget_leader(&self, error: ServerError) -> ServerError {
        if error.is_transient() {
            *self.inner.leader.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        error
    }

    /// Keeps the local copy current: subscribes to each server in turn and
    /// applies what it sends, until the store closes.
    async fn follow(self) {
        let servers = self.inner.config.servers.clone();
        let mut backoff = Duration::from_millis(100);
        for server in servers.iter().cycle() {
            if self.store().is_closed() {
                return;
            }
            let mut synced = false;
            let outcome = self.follow_one(server, &mut synced).await;
            self.inner.freshness.forget();
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    if synced {
                        backoff = Duration::from_millis(100);
                    }
                    tracing::debug!(server, %error, "state stream ended; trying the next server");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.store().closed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Follows one server's stream until it fails. `Ok` when the store closed.
    async fn follow_one(&self, server: &str, synced: &mut bool) -> Result<(), String> {
        let mut client = self.inner.channels.cluster_client(server).map_err(|e| e.to_string())?;
        let subscribed = tokio::time::timeout(STREAM_SILENCE, client.subscribe(SubscribeRequest {}))
            .await
            .map_err(|_| "no answer to subscribe".to_owned())?;
        let mut stream: Streaming<StoreEvent> = match subscribed {
            Ok(stream) => stream.into_inner(),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                tracing::warn!(server, reason = status.message(), "the servers refuse this agent: start it with --join-token (or check its data dir's agent-credential.json)");
                return Err(status.message().to_owned());
            }
            Err(status) => return Err(status.message().to_owned()),
        };
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(STREAM_SILENCE.max(STREAM_KEEPALIVE * 3), stream.message()) => next,
                _ = self.store().closed() => return Ok(()),
            };
            let event = match next {
                Err(_) => return Err(format!("silent for {STREAM_SILENCE:?}")),
                Ok(Err(status)) => return Err(status.message().to_owned()),
                Ok(Ok(None)) => return Err("server closed the stream".to_owned()),
                Ok(Ok(Some(event))) => event,
            };
            self.inner.last_contact.touch();
            let leader_contact = event.leader_contact_ms.map(Duration::from_millis);
            let index = RaftIndex(event.index);
            match event.change {
                Some(Change::Snapshot(bytes)) => {
                    let data = StoreData::decode(&bytes).map_err(|e| e.to_string())?;
                    self.store().restore(data);
                    self.store().mark_applied(index);
                    tracing::info!(server, index = index.get(), "following the servers' state");
                    *synced = true;
                }
                Some(Change::Command(bytes)) => {
                    let command: Command = raft::decode(&bytes).map_err(|e| e.to_string())?;
                    self.store().apply(index, &command);
                }
                None if index > self.store().applied_index() => self.store().mark_applied(index),
                None => {}
            }
            // Only once the event is applied does it vouch for the copy.
            self.inner.freshness.record(leader_contact);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_reads_stay_local_only_while_fresh_and_holding_our_writes() {
        let fresh = Some(Duration::from_millis(300));
        assert!(local_read_allowed(fresh, RaftIndex(10), RaftIndex(10)));
        assert!(!local_read_allowed(fresh, RaftIndex(9), RaftIndex(10)), "our own write is not in the copy yet");
        assert!(!local_read_allowed(Some(LOCAL_READ_BOUND + Duration::from_millis(1)), RaftIndex(10), RaftIndex(0)));
        assert!(
            !local_read_allowed(None, RaftIndex(10), RaftIndex(0)),
            "a server that knows no leader vouches for nothing"
        );
    }

    #[test]
    fn freshness_ages_from_the_last_event_and_is_forgotten_with_the_stream() {
        let freshness = Freshness::default();
        assert_eq!(freshness.staleness(), None);
        freshness.record(Some(Duration::from_millis(200)));
        assert!(freshness.staleness().is_some_and(|s| s >= Duration::from_millis(200)));
        freshness.record(None);
        assert_eq!(freshness.staleness(), None);
        freshness.record(Some(Duration::ZERO));
        freshness.forget();
        assert_eq!(freshness.staleness(), None);
    }
}
