//! The Weft server: the replicated state every agent reads and writes.
//!
//! # Layout
//! - [`store`]: the state store. Tables (catalog, KV, intentions, config
//!   entries, CA) with a pure, deterministic `apply`, per-table indexes, and
//!   blocking reads. Start reading here.
//! - [`raft`]: openraft glue. The sled log and snapshot storage, the state
//!   machine over the store, and the gRPC network between servers.
//! - `rpc`: the gRPC services servers offer each other (Raft transport and
//!   cluster management: discovery, join, forwarded writes, read index).
//! - `cluster`: discovery, bootstrap (exactly once) and join.
//! - `batch`: concurrent writes share one log entry on their way to the leader.
//! - [`ca`]: the mesh CA: the root the first leader makes, and leaf signing
//!   for registered services.
//! - [`join`]: who may call the RPC (the RPC key, agent credentials) and
//!   join tokens: made, redeemed, checked on every call.
//! - [`liveness`]: agents' heartbeats and the `serfHealth` check the leader
//!   keeps from them.
//! - [`remote`]: a client agent's link to the servers: a streamed copy of
//!   the state, and writes, read barriers and heartbeats sent to them.
//! - [`telemetry`]: how long each stage of a write takes, for
//!   `/v1/agent/metrics`.
//! - [`Server`]: the handle the agent uses to write, read and manage peers.
//!
//! **Architecture Invariant:** `Tables::apply` reads no clock, draws no random
//! number and does no I/O. Time-based decisions are made by the leader and
//! written as commands.
#![forbid(unsafe_code)]

pub mod acl;
mod batch;
pub mod ca;
mod cluster;
mod error;
pub mod join;
pub mod liveness;
pub mod login;
pub mod rate;
// openraft's storage traits fix `StorageError` (large) as the error type; boxing it
// in our helpers would only add conversions at every trait boundary.
#[allow(clippy::result_large_err)]
pub mod raft;
pub mod remote;
mod rpc;
mod server;
mod sessions;
pub mod store;
pub mod telemetry;

pub use error::{ServerError, StartError};
pub use server::{
    load_or_create_server_id, Applied, PeerStatus, RaftConfiguration, RaftStats, RaftTuning, ReadConsistency, Server,
    ServerConfig, ServerRpcTls,
};
