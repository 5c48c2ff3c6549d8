//! The Weft agent: the process that runs on every host and pod (and, with
//! `--server`, carries a replicated server inside it).
//!
//! # Layout
//! - [`backend`]: the embedded server or, for a client agent, the link to the servers.
//! - [`decode`]: Consul's lenient JSON decoding (any case, snake_case aliases).
//! - [`config`]: Consul-shaped HCL/JSON files and flags, validated once.
//! - [`local`]: this agent's own services and checks, their runners, and
//!   anti-entropy to the catalog.
//! - [`join`]: a client agent's enrollment (once, for its join token) and
//!   its certificate, renewed before it expires.
//! - `rpc_tls`: this agent's RPC TLS material, loaded from its configuration.
//! - [`connect`]: leaf certificates for this agent's services (keys made here).
//! - [`acl`]: ACL tokens resolved against the local copy of the ACL tables
//!   (cached), for the HTTP authorization point and DNS.
//! - [`http`]: the Consul-compatible HTTP API, behind one authorization point.
//! - [`dns`]: Consul's DNS names, answered from the local state store.
//! - [`Agent`] (in `agent.rs`): wires a config to listeners and runs until shutdown.
#![forbid(unsafe_code)]

pub mod acl;
mod agent;
pub mod backend;
pub mod config;
pub mod connect;
pub mod decode;
pub mod dns;
pub mod http;
pub mod join;
pub mod local;
mod rpc_tls;

pub use agent::{node_uuid, Agent, AgentError, LeaveError, LeaveHandle, Lifecycle, Listeners, ROLE_META_KEY};
