//! Workload login (Consul's auth methods): a JWT the workload already holds
//! (a Kubernetes service-account token, a CI job's OIDC token) is verified
//! against the keys its auth method names, its claims become an
//! [`Identity`], and the method's binding rules turn that identity into
//! what the new token gets ([`Bindings`]).
//!
//! # Layout
//! - [`config`]: an auth method's `Config` (Consul's JSON) into a typed
//!   [`JwtConfig`](weft_api::acl::JwtConfig), strictly, before the method is
//!   written; and back to Consul's JSON.
//! - [`keys`]: the public keys a JWT may be signed with, from PEM or a JWKS
//!   document (fetching one is the server's business).
//! - [`jwt`]: a JWT checked as Consul checks it: signature, then times with
//!   Consul's leeways, issuer and audiences; its claims out.
//! - [`identity`]: claims through the method's claim mappings.
//! - [`bind`]: binding rules over an identity: selectors, `${value.x}`
//!   bind names, and the check of a rule before it is written.
//!
//! Everything here is a pure function of its inputs (the clock is an
//! argument): the servers call it before proposing the token a login
//! makes, never inside the state machine.

pub mod bind;
pub mod config;
pub mod identity;
pub mod jwt;
pub mod keys;

pub use bind::{bind, check_binding_rule, Bindings};
pub use config::{jwt_config_json, parse_jwt_config};
pub use identity::Identity;
pub use jwt::verify;
pub use keys::VerifyingKeys;

/// Why a login or a logout was refused. Consul's texts, which clients
/// show and sometimes match on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("ACL not found: auth method {0:?} not found")]
    MethodNotFound(String),
    /// The JWT was refused: malformed, badly signed, expired, not yet
    /// valid, or for another issuer or audience; the text says which.
    #[error("{0}")]
    InvalidToken(String),
    /// The JWT proved who its holder is, and no binding rule gives that
    /// identity anything.
    #[error("Permission denied")]
    NoBinding,
    /// A binding rule's name, filled in from the claims, is not a valid
    /// name for what it binds: the login fails rather than bind less.
    #[error("invalid bind name: {0:?}")]
    InvalidBindName(String),
    /// The method's keys could not be fetched (its JWKS or OIDC discovery
    /// URL): worth trying again.
    #[error("error fetching the auth method's keys: {0}")]
    KeysUnavailable(String),
    /// Logout with a token that does not exist.
    #[error("ACL not found")]
    TokenNotFound,
    /// Logout with a token that no login made.
    #[error("Permission denied: token wasn't created via login")]
    NotALoginToken,
}

impl LoginError {
    /// True when trying the same login again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LoginError::KeysUnavailable(_))
    }
}
