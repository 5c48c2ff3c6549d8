//! Serves cluster management RPCs: discovery (`Info`), `Join`, forwarded
//! writes (`Apply`), read barriers (`ReadIndex`), `RemovePeer`, the state
//! stream for client agents (`Subscribe`) and agent heartbeats.
//!
//! A server that is not the leader answers `Apply`, `ReadIndex`, `RemovePeer`
//! and `Heartbeat` with `FailedPrecondition` rather than forwarding again: the
//! caller re-resolves the leader and retries, so a request never loops
//! between servers.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};
use weft_api::catalog::Node;
use weft_api::command::Command;
use weft_api::ids::{NodeName, ServiceName};
use weft_api::proto::cluster::cluster_server::Cluster;
use weft_api::proto::cluster::store_event::Change;
use weft_api::proto::cluster::{
    ApplyRequest, ApplyResponse, EnrollRequest, EnrollResponse, HeartbeatRequest, HeartbeatResponse, InfoRequest,
    JoinRequest, JoinResponse, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, RaftConfigurationRequest,
    RaftConfigurationResponse, ReadIndexRequest, ReadIndexResponse, RedeemJoinTokenRequest, RedeemJoinTokenResponse,
    RedeemLoginRequest, RedeemLoginResponse, RemovePeerRequest, RemovePeerResponse, RotateCaRequest, RotateCaResponse,
    ServerInfo, SignLeafRequest, SignLeafResponse, StoreEvent, SubscribeRequest,
};

use super::authz;
use crate::raft::{codec_decode_request, encode, ServerNode};
use crate::server::{ca_error_to_status, client_write_error, error_to_status, Server};
use crate::store::{StateStore, StoreData, StoreEvent as Event, Subscription};

/// With no change to send, a subscriber still hears from its server this often.
pub const STREAM_KEEPALIVE: Duration = Duration::from_secs(1);

pub struct ClusterService {
    server: Server,
    /// Tokens client agents forward, resolved.
    tokens: weft_acl::TokenCache,
}

impl ClusterService {
    pub fn new(server: Server) -> Self {
        Self { server, tokens: Default::default() }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<ServerInfo>, Status> {
        let server = &self.server;
        let initialized = server.inner.raft.is_initialized().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let metrics = server.metrics();
        let leader = server.leader();
        Ok(Response::new(ServerInfo {
            id: server.inner.id,
            name: server.inner.node.name.clone(),
            rpc_addr: server.inner.node.rpc_addr.clone(),
            http_addr: server.inner.node.http_addr.clone(),
            initialized,
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_rpc_addr: leader.as_ref().map(|l| l.rpc_addr.clone()).unwrap_or_default(),
            datacenter: server.inner.datacenter.to_string(),
            voter_ids: metrics.membership_config.membership().voter_ids().collect(),
            leader_http_addr: leader.as_ref().map(|l| l.http_addr.clone()).unwrap_or_default(),
            leader_name: leader.as_ref().map(|l| l.name.clone()).unwrap_or_default(),
        }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        if !self.server.is_leader() {
            let leader = self.server.leader().ok_or_else(|| Status::unavailable("no leader yet; retry"))?;
            let mut client = self.server.cluster_client(&leader.rpc_addr).map_err(error_to_status)?;
            return client.join(request).await;
        }
        let node = ServerNode { name: request.name.clone(), rpc_addr: request.rpc_addr, http_addr: request.http_addr };
        // The joining server says where it is now (only servers may call
        // Join): replication follows it there before the membership does.
        self.server.inner.peer_addresses.learn(request.id, &node.rpc_addr);
        let configuration = self.server.raft_configuration();
        if let Some(same_name) = configuration.servers.iter().find(|s| s.name == node.name && s.id.0 != request.id) {
            return Err(Status::already_exists(format!(
                "a server named {:?} is already in the cluster with ID {}; if it was rebuilt, remove the old one first: weft operator raft remove-peer --id {}",
                node.name, same_name.id, same_name.id
            )));
        }
        let raft = &self.server.inner.raft;
        let existing = configuration.servers.iter().find(|s| s.id.0 == request.id);
        let is_voter = existing.is_some_and(|s| s.voter);
        if let Some(known) = existing.filter(|s| s.rpc_addr != node.rpc_addr || s.http_addr != node.http_addr) {
            // The same server (same ID, same data) at a new address: replace
            // the address in place. SetNodes is safe here because the ID
            // still names the one process that holds its log.
            tracing::info!(name = %node.name, id = request.id, was = %known.rpc_addr, now = %node.rpc_addr, "server moved; updating its address");
            raft.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(request.id, node.clone())])), false)
                .await
                .map_err(|e| error_to_status(client_write_error(e)))?;
        }
        if !is_voter {
            tracing::info!(name = %node.name, id = request.id, rpc = %node.rpc_addr, "adding server to the cluster");
            raft.add_learner(request.id, node, true).await.map_err(|e| error_to_status(client_write_error(e)))?;
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([request.id])), false)
                .await
                .map_err(|e| error_to_status(client_write_error(e)))?;
        }
        Ok(Response::new(JoinResponse {}))
    }

    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let caller = authz::caller(&request)?;
        let ApplyRequest { command, acl_token } = request.into_inner();
        let command: Command = codec_decode_request(&command)?;
        let acl_enabled = self.server.inner.acl.enabled;
        match caller.authorize_write(&command, acl_enabled) {
            Ok(()) => {}
            // A client agent writing for an HTTP caller: the caller's token decides.
            Err(_) if acl_enabled && matches!(caller, authz::Caller::Agent(_)) && !acl_token.is_empty() => {
                crate::acl::authorize_forwarded(&self.server, &self.tokens, &command, &acl_token)?
            }
            Err(refusal) => return Err(refusal),
        }
        // What a command must satisfy on its own is checked before it is
        // proposed, here for every write forwarded to the leader.
        crate::store::check_proposal(&command).map_err(Status::invalid_argument)?;
        if !self.server.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        let applied = self.server.write_local(&command).await.map_err(error_to_status)?;
        Ok(Response::new(ApplyResponse { outcome: encode(&applied.outcome), index: applied.index.get() }))
    }

    async fn read_index(&self, request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        let index = self.server.local_read_index(request.into_inner().linearizable).await.map_err(error_to_status)?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn remove_peer(&self, request: Request<RemovePeerRequest>) -> Result<Response<RemovePeerResponse>, Status> {
        if !self.server.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        self.server.remove_peer_locally(&request.into_inner().peer).await.map_err(error_to_status)?;
        Ok(Response::new(RemovePeerResponse {}))
    }

    type SubscribeStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<StoreEvent, Status>> + Send>>;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = authz::caller(&request)?;
        let (sender, receiver) = mpsc::channel(256);
        tokio::spawn(stream_store(self.server.clone(), caller, sender));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = authz::caller(&request)?;
        let mut node: Node = codec_decode_request(&request.into_inner().node)?;
        if node.name.is_empty() {
            return Err(Status::invalid_argument("a heartbeat needs the node's name"));
        }
        node.name = caller.node_for(node.name, "a heartbeat")?;
        if !self.server.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        crate::liveness::heartbeat(&self.server, node).await.map_err(error_to_status)?;
        Ok(Response::new(HeartbeatResponse {}))
    }

    async fn sign_leaf(&self, request: Request<SignLeafRequest>) -> Result<Response<SignLeafResponse>, Status> {
        let caller = authz::caller(&request)?;
        let request = request.into_inner();
        let node = caller.node_for(NodeName::new(request.node), "a leaf certificate")?;
        if !self.server.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        let service = ServiceName::new(request.service);
        let leaf = crate::ca::sign_for(&self.server, &node, &service, &request.csr_pem).map_err(ca_error_to_status)?;
        Ok(Response::new(SignLeafResponse {
            cert_pem: leaf.cert_pem,
            serial_number: leaf.serial_number,
            valid_after: leaf.valid_after,
            valid_before: leaf.valid_before,
            spiffe_id: leaf.spiffe_id,
            root_id: leaf.root_id,
        }))
    }

    async fn rotate_ca(&self, _request: Request<RotateCaRequest>) -> Result<Response<RotateCaResponse>, Status> {
        if !self.server.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        let root_id = crate::ca::rotate(&self.server).await.map_err(ca_error_to_status)?;
        Ok(Response::new(RotateCaResponse { root_id }))
    }

    async fn raft_configuration(
        &self,
        _request: Request<RaftConfigurationRequest>,
    ) -> Result<Response<RaftConfigurationResponse>, Status> {
        if !self.server.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        Ok(Response::new(RaftConfigurationResponse { configuration: encode(&self.server.raft_configuration()) }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let request = request.into_inner();
        let params = crate::login::LoginParams {
            auth_method: request.auth_method,
            bearer_token: request.bearer_token,
            meta: request.meta.into_iter().collect(),
        };
        let outcome = crate::login::login(&self.server, &params).await.map_err(crate::login::failure_to_status)?;
        Ok(Response::new(LoginResponse { token: encode(&outcome.token), secret_id: outcome.secret_id }))
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        let secret_id = request.into_inner().secret_id;
        let index = crate::login::logout(&self.server, &secret_id).await.map_err(crate::login::failure_to_status)?;
        Ok(Response::new(LogoutResponse { index: index.get() }))
    }

    async fn redeem_login(
        &self,
        request: Request<RedeemLoginRequest>,
    ) -> Result<Response<RedeemLoginResponse>, Status> {
        crate::join::redeem_login(&self.server, request.into_inner()).await?;
        Ok(Response::new(RedeemLoginResponse {}))
    }

    async fn redeem_join_token(
        &self,
        request: Request<RedeemJoinTokenRequest>,
    ) -> Result<Response<RedeemJoinTokenResponse>, Status> {
        crate::join::redeem(&self.server, request.into_inner()).await?;
        Ok(Response::new(RedeemJoinTokenResponse {}))
    }

    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        crate::join::enroll(&self.server, request.into_inner()).map(Response::new)
    }
}

/// `command` as a client agent may see it, if at all: the CA roots'
/// private keys are for servers only (whichever leads signs), and so are
/// the join tables (token and enrollment hashes, the agent CA's key).
fn for_client_agents(command: &Command) -> Option<Command> {
    match command {
        Command::CaSetState(state) => Some(Command::CaSetState(state.without_private_keys())),
        Command::Batch(commands) => Some(Command::Batch(commands.iter().filter_map(for_client_agents).collect())),
        Command::Restore { snapshot } => Some(Command::Restore {
            // A snapshot that does not decode was refused by the servers too.
            snapshot: StoreData::decode(snapshot).map(|data| data.without_secrets().encode()).unwrap_or_default(),
        }),
        // The parts carry the servers' secrets; once applied, client agents
        // start over from a copy without them (the store's `Reset`).
        Command::RestoreBegin { .. } | Command::RestoreChunk { .. } | Command::RestoreFinish { .. } => None,
        Command::JoinTokenCreate(_)
        | Command::JoinTokenDelete { .. }
        | Command::JoinTokenRedeem { .. }
        | Command::AgentCaSet(_)
        | Command::AgentCredentialDelete { .. }
        | Command::AgentCredentialSet(_) => None,
        other => Some(other.clone()),
    }
}

/// Feeds one subscriber: the whole state, then each change, until the
/// subscriber goes away, falls too far behind (it then starts over), or the
/// server shuts down. Every event says how recently this server was in step
/// with the leader, so the subscriber knows how fresh its copy is. What it
/// sends holds no CA private key (see [`for_client_agents`]). A client
/// agent's stream ends within a keepalive of its enrollment's revocation.
async fn stream_store(server: Server, caller: authz::Caller, sender: mpsc::Sender<Result<StoreEvent, Status>>) {
    let store: &Arc<StateStore> = server.store();
    let leader_contact_ms = || server.leader_contact().map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64);
    let Subscription { data, applied, mut events } = store.subscribe();
    let first = StoreEvent {
        index: applied.get(),
        change: Some(Change::Snapshot(data.without_secrets().encode())),
        leader_contact_ms: leader_contact_ms(),
    };
    if sender.send(Ok(first)).await.is_err() {
        return;
    }
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(STREAM_KEEPALIVE, events.recv()) => next,
            _ = store.closed() => return,
        };
        let (index, change) = match next {
            Err(_elapsed) => (store.applied_index().get(), None),
            Ok(Ok(Event::Command { index, command })) => {
                (index.get(), for_client_agents(&command).map(|command| Change::Command(encode(&command))))
            }
            Ok(Ok(Event::Applied(index))) => (index.get(), None),
            Ok(Ok(Event::Reset)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                let _ = sender
                    .send(Err(Status::aborted("the state was replaced or the stream fell behind; subscribe again")))
                    .await;
                return;
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => return,
        };
        if let authz::Caller::Agent(node) = &caller {
            if store.read().join().credential(node).is_none() {
                let revoked = format!("node {:?}'s enrollment was revoked", node.as_str());
                let _ = sender.send(Err(Status::unauthenticated(revoked))).await;
                return;
            }
        }
        let event = StoreEvent { index, change, leader_contact_ms: leader_contact_ms() };
        if sender.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_agents_never_receive_a_root_key() {
        let ca = crate::ca::new_ca_state().unwrap();
        assert!(!ca.roots[0].private_key_pem.is_empty());
        let keyless = |command: &Command| match command {
            Command::CaSetState(state) => state.roots.iter().all(|r| r.private_key_pem.is_empty()),
            _ => false,
        };
        let set = Command::CaSetState(ca.clone());
        assert!(keyless(&for_client_agents(&set).unwrap()));
        let agent_ca = Command::AgentCaSet(weft_api::join::AgentCaRecord { cert_pem: "c".into(), key_pem: "k".into() });
        assert_eq!(for_client_agents(&agent_ca), None);
        let Some(Command::Batch(batch)) = for_client_agents(&Command::Batch(vec![set, agent_ca])) else {
            panic!("a batch")
        };
        assert!(batch.len() == 1 && keyless(&batch[0]));
        let data = StoreData {
            ca: Some(ca),
            agent_ca: Some(weft_api::join::AgentCaRecord { cert_pem: "c".into(), key_pem: "k".into() }),
            ..Default::default()
        };
        let Some(Command::Restore { snapshot }) = for_client_agents(&Command::Restore { snapshot: data.encode() })
        else {
            panic!("a restore")
        };
        let restored = StoreData::decode(&snapshot).unwrap();
        assert!(restored.ca.unwrap().roots.iter().all(|r| r.private_key_pem.is_empty()));
        assert_eq!(restored.agent_ca, None);
    }
}
