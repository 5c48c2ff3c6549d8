//! A client agent's link to the servers.
//!
//! A client agent runs no Raft. It keeps a copy of the state store, streamed
//! from one server (`Cluster.Subscribe`: the whole state, then every change
//! in log order), and serves DNS, `?stale` reads and blocking queries from
//! that copy without a server round trip. Writes go to the leader
//! (`Cluster.Apply`); a default or `?consistent` read first asks the leader
//! for its read index and waits until the copy has applied it, so a client
//! agent is as fresh as a follower server.
//!
//! If its server goes quiet (no message for a few keepalives) or goes away,
//! the agent subscribes to the next one and starts over from a full copy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Streaming;
use weft_api::catalog::Node;
use weft_api::command::Command;
use weft_api::ids::{Datacenter, NodeName, RaftIndex, ServiceName};
use weft_api::proto::cluster::store_event::Change;
use weft_api::proto::cluster::{
    ApplyRequest, HeartbeatRequest, InfoRequest, ReadIndexRequest, SignLeafRequest, StoreEvent, SubscribeRequest,
};

use crate::ca::{CaError, SignedLeaf};
use crate::raft::{self, ServerNode};
use crate::rpc::{Channels, LastContact, STREAM_KEEPALIVE};
use crate::server::{
    forwarded_write_error, retry_transient, rotate_remotely, sign_remotely, status_to_error, CATCH_UP_PATIENCE,
    HEARTBEAT_PATIENCE, READ_HOLD, WRITE_ATTEMPT, WRITE_PATIENCE,
};
use crate::store::{StateStore, StoreData};
use crate::{Applied, ReadConsistency, ServerError};

/// A stream that has been silent this long is presumed dead.
const STREAM_SILENCE: Duration = Duration::from_secs(4);

/// What a client agent needs to reach the servers.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    pub datacenter: Datacenter,
    /// RPC addresses of servers (`retry_join`).
    pub servers: Vec<String>,
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
}

impl RemoteCluster {
    /// Starts following the servers in the background, until the store is
    /// closed (see [`StateStore::close`]).
    pub fn start(config: RemoteConfig) -> Self {
        let remote = RemoteCluster {
            inner: Arc::new(Inner {
                config,
                store: StateStore::new(),
                channels: Channels::default(),
                leader: Mutex::new(None),
                last_contact: LastContact::default(),
            }),
        };
        tokio::spawn(remote.clone().follow());
        remote
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

    /// Time since the subscribed server last sent anything.
    pub fn last_contact(&self) -> Option<Duration> {
        self.inner.last_contact.elapsed()
    }

    /// Commits `command` through the leader and waits until the local copy
    /// has it, so a read on this agent right after sees it.
    pub async fn write(&self, command: Command) -> Result<Applied, ServerError> {
        let applied = retry_transient(WRITE_PATIENCE, "write", || self.write_once(&command)).await?;
        self.store().wait_applied(applied.index, CATCH_UP_PATIENCE).await;
        Ok(applied)
    }

    async fn write_once(&self, command: &Command) -> Result<Applied, ServerError> {
        let leader = self.find_leader().await?;
        let mut client = self.inner.channels.cluster_client(&leader.rpc_addr)?;
        let mut request = tonic::Request::new(ApplyRequest { command: raft::encode(command) });
        request.set_timeout(WRITE_ATTEMPT + Duration::from_secs(1));
        let reply = client.apply(request).await.map_err(|status| self.forget_leader(forwarded_write_error(status)))?;
        let reply = reply.into_inner();
        let outcome = raft::decode(&reply.outcome).map_err(|e| ServerError::OutcomeUnknown(e.to_string()))?;
        Ok(Applied { outcome, index: RaftIndex(reply.index) })
    }

    /// Makes the local copy fresh enough for `consistency` (see the module docs).
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), ServerError> {
        if consistency == ReadConsistency::Stale {
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
            match self.follow_one(server, &mut synced).await {
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
        let mut stream: Streaming<StoreEvent> = subscribed.map_err(|s| s.message().to_owned())?.into_inner();
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
        }
    }
}
