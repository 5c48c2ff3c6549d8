//! openraft glue: the type configuration, the sled-backed log and snapshot
//! storage (checked whole by [`integrity`]'s checksums and witness), the
//! state machine over [`crate::store::StateStore`], and the network that
//! carries Raft RPCs over gRPC.
//!
//! **Architecture Invariant:** sled appears only in [`storage`]; everything
//! else sees the `LogStore` and `StateMachine` types.

mod codec;
#[cfg(test)]
mod conformance;
mod integrity;
mod network;
mod state_machine;
mod storage;

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use weft_api::command::{Command, CommandOutcome};

pub use codec::{codec_decode_request, decode, encode, CodecError};
pub use network::{Network, PeerAddresses, RAFT_TARGET_HEADER};
pub use state_machine::StateMachine;
pub use storage::{open_storage, LogStore, StorageOpenError};

/// What Raft knows about a server: enough to reach it and to show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerNode {
    pub name: String,
    pub rpc_addr: String,
    pub http_addr: String,
}

openraft::declare_raft_types!(
    /// Weft's Raft types: log entries carry a [`Command`].
    pub TypeConfig:
        D = Command,
        R = CommandOutcome,
        NodeId = u64,
        Node = ServerNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<u64, ServerNode>;
