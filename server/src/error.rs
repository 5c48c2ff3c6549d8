//! The server crate's errors, phrased for the operator who will read them.

use std::path::PathBuf;

use crate::raft::StorageOpenError;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("node-id file {path} is corrupt ({content:?}); delete it only if this server's Raft data goes too")]
    CorruptNodeId { path: PathBuf, content: String },
    #[error(
        "node-id file {path} is missing, but this server's Raft data is in {raft}: restore the file (its ID is \
             the one `weft operator raft list-peers` shows for this server), or remove this server from the peers and \
             move the Raft data aside to join as a new server"
    )]
    MissingNodeId { path: PathBuf, raft: PathBuf },
    #[error(transparent)]
    Storage(#[from] StorageOpenError),
    #[error("invalid Raft settings: {0}")]
    RaftConfig(String),
    #[error("Raft failed to start: {0}")]
    Raft(String),
}

/// Why a request to the cluster failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ServerError {
    /// Consul's wording: clients and tools match on it.
    #[error("No cluster leader")]
    NoLeader,
    #[error("the leader did not answer in time: {0}")]
    LeaderUnreachable(String),
    #[error("timed out waiting for this server to catch up with the leader (index {0})")]
    CatchUpTimeout(u64),
    #[error("no server {0:?} in the Raft configuration (use an ID, a name, or an RPC address from `weft operator raft list-peers`)")]
    PeerNotFound(String),
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("another membership change is still under way: {0}")]
    MembershipChangeInProgress(String),
    /// The write may or may not have been applied; retrying could apply it twice.
    #[error("the leader did not confirm the write, which may or may not have been applied: {0}")]
    OutcomeUnknown(String),
    #[error("Raft is shutting down or failed: {0}")]
    Fatal(String),
    /// The servers asked for a credential this agent does not have (or is wrong).
    #[error("the servers refused this agent: {0}")]
    Unauthenticated(String),
    /// The servers know the caller, and it may not do this.
    #[error("the servers refused: {0}")]
    PermissionDenied(String),
    /// The intentions and config entries changed between the leader's check
    /// of a write and its apply, every time it tried (see
    /// `Command::Checked`): nothing was written, and asking again may succeed.
    #[error("the intentions and config entries kept changing under this write; nothing was written: {0}")]
    Contended(String),
    /// The command breaks a rule it must satisfy on its own (a config
    /// entry's body; see `store::check_proposal`): nothing was proposed, and
    /// asking again will not help.
    #[error("{0}")]
    Invalid(String),
}

impl ServerError {
    /// True for errors that mean "try again shortly" (no leader, leader moving).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ServerError::NoLeader
                | ServerError::LeaderUnreachable(_)
                | ServerError::CatchUpTimeout(_)
                | ServerError::MembershipChangeInProgress(_)
                | ServerError::Contended(_)
        )
    }
}
