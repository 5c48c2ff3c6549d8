//! Raft RPCs to other servers over gRPC: each request is encoded with
//! [`super::codec`] and carried in a `RaftPayload`; the reply carries the
//! remote `Result`, so a remote Raft error stays distinct from a network one.

use std::error::Error;
use std::time::Duration;

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

type NodeId = u64;

/// Makes one connection per peer (TLS where configured, presenting this
/// server's certificate); openraft keeps it while it replicates.
#[derive(Clone)]
pub struct Network(pub RpcConnector);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &ServerNode) -> Self::Network {
        let client = channel_to(&node.rpc_addr, &self.0).map(raft_client);
        PeerConnection { target, node: node.clone(), client }
    }
}

fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

/// The link to one peer.
pub struct PeerConnection {
    target: NodeId,
    node: ServerNode,
    client: Result<RaftClient<Channel>, tonic::transport::Error>,
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
        let transport =
            |reason: String| TransportError { name: self.node.name.clone(), addr: self.node.rpc_addr.clone(), reason };
        let client = match &mut self.client {
            Ok(client) => client,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&transport(e.to_string())))),
        };
        let mut request = tonic::Request::new(RaftPayload { data: request });
        request.set_timeout(option.hard_ttl().max(Duration::from_millis(50)));
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
        self.call(Rpc::AppendEntries, codec::encode(&rpc), &option).await
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
