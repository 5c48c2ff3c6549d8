//! Weft's ACLs, as Consul's: who may do what, decided locally from the
//! replicated ACL tables.
//!
//! # Layout
//! - [`parse`]: Consul's rule language (HCL or JSON) into typed rules,
//!   strictly: done before a policy is written, never in the state machine.
//! - [`authorizer`]: a token's rules merged into an [`Authorizer`] (exact
//!   over prefix, longest prefix, deny wins) and the [`Permission`]s
//!   requests need; the rules service and node identities stand for.
//! - [`resolve`]: from a secret's hash to an authorizer through the token's
//!   policies, roles and identities, cached per version of the tables.
//! - [`commands`]: what each write (a Raft `Command`) needs, for the HTTP
//!   handlers and the servers' RPC alike.
//! - [`templates`]: Consul's built-in templated policies, rendered with a
//!   checked name.
//! - [`login`]: auth methods: a workload's JWT verified, its claims mapped,
//!   and binding rules applied to them, for the token a login makes.
//!
//! **Architecture Invariant:** this crate knows nothing of HTTP, Raft or
//! the store; the store implements [`resolve::AclSource`], the HTTP layer
//! and the RPC layer ask [`Authorizer::allows`].
#![forbid(unsafe_code)]

pub mod authorizer;
pub mod commands;
pub mod login;
pub mod parse;
pub mod resolve;
pub mod templates;

pub use authorizer::{Authorizer, Permission};
pub use commands::{command_permissions, Owners};
pub use parse::{parse_rules, RulesError};
pub use resolve::{resolve, AclSource, ResolveError, Resolved, TokenCache};
