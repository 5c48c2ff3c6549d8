//! Raft RPCs to other servers over gRPC: each request is encoded with
//! [`super::codec`] and carried in a `RaftPayload`; the reply carries the
//! remote `Result`, so a remote Raft error stays distinct from a network one.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use weft_api::proto::raft::raft_client::RaftClient;
use weft_api::proto::raft::RaftPayload;

use super::{codec, ServerNode, TypeConfig};
use weft_tls::RpcConnector;

use crate::rpc::{channel_to, MAX_MESSAGE};
use crate::telemetry::{Stage, Timers};

type NodeId = u64;

/// The gRPC metadata naming the server a Raft RPC is meant for: a server
/// refuses one meant for another (a peer's old address may now be someone
/// else's).
pub const RAFT_TARGET_HEADER: &str = "x-weft-raft-target";

/// How long an address learned from a peer is preferred to the one in the
/// membership: long enough to elect a leader and have the membership
/// updated (each moved server tells the new leader), after which the
/// membership is the truth again.
const LEARNED_ADDRESS_TTL: Duration = Duration::from_secs(60);

/// Peers' RPC addresses as they announce them (their answer to `Info` at a
/// retry-join address), by Raft ID. Servers are identified by ID, not by
/// address: when every server comes back at a new address (pods
/// rescheduled), no membership entry reaches anyone, so votes and
/// replication go where the peers say they are now.
#[derive(Clone, Default)]
pub struct PeerAddresses(Arc<Mutex<HashMap<NodeId, (String, Instant)>>>);

impl PeerAddresses {
    /// Notes that server `id` now answers at `rpc_addr`.
    pub fn learn(&self, id: NodeId, rpc_addr: &str) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.get(&id).is_none_or(|(addr, _)| addr != rpc_addr) {
            tracing::info!(server_id = id, rpc_addr, "learned a server's address");
        }
        known.insert(id, (rpc_addr.to_owned(), Instant::now()));
    }

    /// Where to reach server `id`: the address it announced lately, if any.
    pub fn current(&self, id: NodeId) -> Option<String> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&id).filter(|(_, at)| at.elapsed() < LEARNED_ADDRESS_TTL).map(|(addr, _)| addr.clone())
    }
}

/// Makes one connection per peer (TLS where configured, presenting this
/// server's certificate); openraft keeps it while it replicates, and it
/// follows the peer to a newly announced address.
#[derive(Clone)]
pub struct Network {
    pub connector: RpcConnector,
    pub addresses: PeerAddresses,
    pub timers: Timers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &ServerNode) -> Self::Network {
        let mut connection = PeerConnection {
            target,
            node: node.clone(),
            network: self.clone(),
            dialed: String::new(),
            client: Err("not connected".into()),
        };
        connection.follow();
        connection
    }
}

fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

/// The link to one peer.
pub struct PeerConnection {
    target: NodeId,
    /// The peer as the membership knows it.
    node: ServerNode,
    network: Network,
    /// The address `client` dials.
    dialed: String,
    client: Result<RaftClient<Channel>, String>,
}

/// A transport failure, described for logs.
#[derive(Debug, thiserror::Error)]
#[error("RPC to server {name} at {addr}: {reason}")]
struct TransportError {
    name: String,
    addr: String,
    reason: String,
}

enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerConnection {
    /// Dials the peer where it says it is now (else where the membership
    /// says), reconnecting when that changed.
    fn follow(&mut self) {
        let addr = self.network.addresses.current(self.target).unwrap_or_else(|| self.node.rpc_addr.clone());
        if addr != self.dialed {
            self.client = channel_to(&addr, &self.network.connector).map(raft_client).map_err(|e| e.to_string());
            self.dialed = addr;
        }
    }

    async fn call<Resp, E>(
        &mut self,
        rpc: Rpc,
        request: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, ServerNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        self.follow();
        let transport =
            |reason: String| TransportError { name: self.node.name.clone(), addr: self.dialed.clone(), reason };
        let client = match &mut self.client {
            Ok(client) => client,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&transport(e.clone())))),
        };
        let mut request = tonic::Request::new(RaftPayload { data: request });
        request.set_timeout(option.hard_ttl().max(Duration::from_millis(50)));
        request.metadata_mut().insert(RAFT_TARGET_HEADER, self.target.into());
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let payload = match reply {
            Ok(reply) => reply.into_inner().data,
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&transport(status.message().to_owned()))))
            }
            Err(status) => return Err(RPCError::Network(NetworkError::new(&transport(status.to_string())))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId>>> {
        // Heartbeats (no entries) are not a write's round trip.
        let carries_entries = !rpc.entries.is_empty();
        let started = Instant::now();
        let answer = self.call(Rpc::AppendEntries, codec::encode(&rpc), &option).await;
        if carries_entries {
            self.network.timers.since(Stage::AppendEntriesRpc, started);
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::InstallSnapshot, codec::encode(&rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, codec::encode(&rpc), &option).await
    }
}
