//! The Weft agent: the process that runs on every host and pod (and, with
//! `--server`, carries a replicated server inside it).
//!
//! # Layout
//! - [`config`]: Consul-shaped HCL/JSON files and flags, validated once.
//! - [`http`]: the Consul-compatible HTTP API, behind one authorization point.
//! - [`dns`]: Consul's DNS names, answered from the local state store.
//! - [`Agent`] (in `agent.rs`): wires a config to listeners and runs until shutdown.
#![forbid(unsafe_code)]

mod agent;
pub mod config;
pub mod dns;
pub mod http;

pub use agent::{Agent, AgentError, Listeners};
