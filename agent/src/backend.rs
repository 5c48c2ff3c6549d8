//! How this agent reaches the replicated state: through the server it
//! carries (`--server`), or, as a client agent, through its link to the
//! servers. Everything above this module (HTTP, DNS, anti-entropy,
//! liveness) works the same in both modes.

use std::sync::Arc;
use std::time::Duration;

use weft_api::catalog::Node;
use weft_api::command::Command;
use weft_api::ids::{Datacenter, NodeName, ServiceName};
use weft_server::ca::{CaError, SignedLeaf};
use weft_server::login::{LoginFailure, LoginOutcome, LoginParams};
use weft_server::raft::ServerNode;
use weft_server::remote::RemoteCluster;
use weft_server::store::StateStore;
use weft_server::{Applied, RaftConfiguration, ReadConsistency, Server, ServerError};

/// The cluster as this agent sees it. Cheap to clone.
#[derive(Clone)]
pub enum Backend {
    Server(Server),
    Client(RemoteCluster),
}

impl Backend {
    /// Resolves, with the reason, when this agent's Raft has failed for
    /// good (a server's storage); never for a client agent.
    pub async fn raft_failed(&self) -> String {
        match self {
            Backend::Server(server) => server.raft_failed().await,
            Backend::Client(_) => std::future::pending().await,
        }
    }

    /// This agent's view of the state: applied by its Raft, or streamed.
    pub fn store(&self) -> &Arc<StateStore> {
        match self {
            Backend::Server(server) => server.store(),
            Backend::Client(remote) => remote.store(),
        }
    }

    pub fn datacenter(&self) -> &Datacenter {
        match self {
            Backend::Server(server) => server.datacenter(),
            Backend::Client(remote) => remote.datacenter(),
        }
    }

    /// The embedded server, for what only a server can answer (Raft state).
    pub fn server(&self) -> Option<&Server> {
        match self {
            Backend::Server(server) => Some(server),
            Backend::Client(_) => None,
        }
    }

    pub fn leader(&self) -> Option<ServerNode> {
        match self {
            Backend::Server(server) => server.leader(),
            Backend::Client(remote) => remote.leader(),
        }
    }

    /// True on the agent that carries the current leader.
    pub fn is_leader(&self) -> bool {
        self.server().is_some_and(Server::is_leader)
    }

    /// Time since this agent last heard from the leader (or, as a client,
    /// from its server).
    pub fn last_contact(&self) -> Option<Duration> {
        match self {
            Backend::Server(server) => server.last_contact(),
            Backend::Client(remote) => remote.last_contact(),
        }
    }

    /// Writes for this agent itself: its own node's entries (a client
    /// agent's certificate is what the servers check).
    pub async fn write(&self, command: Command) -> Result<Applied, ServerError> {
        match self {
            Backend::Server(server) => server.write(command).await,
            Backend::Client(remote) => remote.write(command, None).await,
        }
    }

    /// Writes for an HTTP caller whose ACL token is `token`: a client agent
    /// forwards it, and the servers check the write against it again (a
    /// server took the request itself, and its HTTP handler checked it).
    pub async fn write_as(&self, command: Command, token: &str) -> Result<Applied, ServerError> {
        match self {
            Backend::Server(server) => server.write(command).await,
            Backend::Client(remote) => remote.write(command, Some(token.to_owned())).await,
        }
    }

    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), ServerError> {
        match self {
            Backend::Server(server) => server.read_barrier(consistency).await,
            Backend::Client(remote) => remote.read_barrier(consistency).await,
        }
    }

    /// Has the leader sign a leaf certificate for `service` on `node`.
    pub async fn sign_leaf(
        &self,
        node: &NodeName,
        service: &ServiceName,
        csr_pem: &str,
    ) -> Result<SignedLeaf, CaError> {
        match self {
            Backend::Server(server) => server.sign_leaf(node, service, csr_pem).await,
            Backend::Client(remote) => remote.sign_leaf(node, service, csr_pem).await,
        }
    }

    /// Exchanges a workload's JWT for a token (`POST /v1/acl/login`); this
    /// agent's copy holds the token when it returns.
    pub async fn login(&self, params: &LoginParams) -> Result<LoginOutcome, LoginFailure> {
        match self {
            Backend::Server(server) => weft_server::login::login(server, params).await,
            Backend::Client(remote) => remote.login(params).await,
        }
    }

    /// Deletes the token a login made, for the holder of `secret_id`.
    pub async fn logout(&self, secret_id: &str) -> Result<(), LoginFailure> {
        match self {
            Backend::Server(server) => weft_server::login::logout(server, secret_id).await.map(|_| ()),
            Backend::Client(remote) => remote.logout(secret_id).await,
        }
    }

    /// Rotates the mesh CA's root through the leader; the new root's ID.
    pub async fn rotate_ca(&self) -> Result<String, CaError> {
        match self {
            Backend::Server(server) => server.rotate_ca().await,
            Backend::Client(remote) => remote.rotate_ca().await,
        }
    }

    pub async fn heartbeat(&self, node: &Node) -> Result<(), ServerError> {
        match self {
            Backend::Server(server) => server.heartbeat(node).await,
            Backend::Client(remote) => remote.heartbeat(node).await,
        }
    }

    /// The Raft configuration as the leader knows it (over RPC from a
    /// follower or a client agent).
    pub async fn leader_raft_configuration(&self) -> Result<RaftConfiguration, ServerError> {
        match self {
            Backend::Server(server) => server.leader_raft_configuration().await,
            Backend::Client(remote) => remote.leader_raft_configuration().await,
        }
    }

    /// Removes a server from the Raft configuration, through the leader.
    pub async fn remove_peer(&self, peer: &str) -> Result<(), ServerError> {
        match self {
            Backend::Server(server) => server.remove_peer(peer).await,
            Backend::Client(remote) => remote.remove_peer(peer).await,
        }
    }
}
