//! Login and logout (Consul's `ACL.Login` and `ACL.Logout`): a workload's
//! JWT exchanged for a token through an auth method, and that token
//! deleted by its holder.
//!
//! Any server takes a login: it checks the JWT against its copy of the
//! method (keys from [`keys::KeyCache`]), applies the method's binding
//! rules (`weft_acl::login`), and writes the token through the leader like
//! any write. The log refuses the token if the method was deleted in the
//! meantime. Only a login's own token can log out, and only its holder
//! (who presents the secret) can ask.
//!
//! Refusals cross RPC as a status carrying [`REFUSAL`] metadata naming the
//! [`LoginError`] variant, so the agent that asked reads the same typed
//! error back ([`refusal_to_status`], [`status_to_failure`]).

mod keys;

use std::collections::BTreeMap;

use weft_acl::login::{Bindings, Identity, LoginError};
use weft_api::acl::{AclAuthMethod, AclToken, NodeIdentity, ServiceIdentity};
use weft_api::command::{Command, CommandOutcome};

use crate::ca::unix_now;
use crate::join::secret_hash;
use crate::server::{error_to_status, status_to_error, Server};
use crate::ServerError;

pub(crate) use keys::KeyCache;

/// How long a login may wait for its method's keys to be fetched, beyond
/// a write's own time.
pub(crate) const LOGIN_KEY_FETCH: std::time::Duration = keys::FETCH_TIMEOUT;

/// What `POST /v1/acl/login` sends (Consul's `ACLLoginParams`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginParams {
    pub auth_method: String,
    pub bearer_token: String,
    /// Shown in the token's description.
    pub meta: BTreeMap<String, String>,
}

/// The token a login made, with its secret (shown this once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginOutcome {
    pub token: AclToken,
    pub secret_id: String,
}

/// Why a login or logout failed: refused for what was presented, or the
/// cluster could not take the write.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LoginFailure {
    #[error(transparent)]
    Refused(#[from] LoginError),
    #[error(transparent)]
    Cluster(#[from] ServerError),
}

impl crate::server::Transient for LoginFailure {
    fn is_transient(&self) -> bool {
        matches!(self, LoginFailure::Cluster(error) if error.is_transient())
    }
}

/// Checks `bearer` with the auth method `method` on this server's copy of
/// it, at `now`: the method, and what its binding rules give the JWT.
pub(crate) async fn authenticate(
    server: &Server,
    method: &str,
    bearer: &str,
    now: i64,
) -> Result<(AclAuthMethod, Bindings), LoginError> {
    let (method, rules) = {
        let tables = server.store().read();
        let found = tables.acl().auth_method(method).cloned();
        let found = found.ok_or_else(|| LoginError::MethodNotFound(method.to_owned()))?;
        let rules: Vec<_> = tables.acl().binding_rules().filter(|r| r.auth_method == found.name).cloned().collect();
        (found, rules)
    };
    let kid = weft_acl::login::jwt::key_id(bearer);
    let keys = server.inner.login_keys.keys(&method.config.keys, kid.as_deref()).await?;
    let refused = |error: LoginError| {
        tracing::info!(method = %method.name, %error, "login refused");
        error
    };
    let claims = weft_acl::login::verify(&method.config, &keys, bearer, now).map_err(refused)?;
    let identity = Identity::from_claims(&method.config, &claims).map_err(refused)?;
    let bindings = weft_acl::login::bind(&rules, &identity).map_err(refused)?;
    Ok((method, bindings))
}

/// Logs in on this server.
pub async fn login(server: &Server, params: &LoginParams) -> Result<LoginOutcome, LoginFailure> {
    let now = unix_now();
    let (method, bindings) = authenticate(server, &params.auth_method, &params.bearer_token, now).await?;
    let refused = |error: LoginError| {
        tracing::info!(method = %method.name, %error, "login refused");
        error
    };

    let secret_id = weft_api::ids::uuid_v4(rand::random());
    let token = token_for(server, &method.name, method.token_locality_global, bindings, params, now)
        .map(|token| AclToken {
            secret_sha256: secret_hash(&secret_id),
            expiration_time: (method.max_token_ttl_ms > 0)
                .then(|| now + (method.max_token_ttl_ms.div_ceil(1000)) as i64),
            ..token
        })
        .ok_or_else(|| refused(LoginError::NoBinding))?;
    let applied = server.write(Command::AclTokenSet(Box::new(token.clone()))).await?;
    match applied.outcome {
        CommandOutcome::Done => {
            tracing::info!(method = %method.name, accessor = %token.accessor_id, "login made a token");
            Ok(LoginOutcome { token: AclToken { indexes: applied_indexes(applied.index), ..token }, secret_id })
        }
        // The method went while the login was under way.
        _ => Err(LoginError::MethodNotFound(method.name).into()),
    }
}

fn applied_indexes(index: weft_api::ids::RaftIndex) -> weft_api::ids::Indexes {
    weft_api::ids::Indexes { create: index, modify: index }
}

/// The token `bindings` make, without its secret; `None` when they bind
/// nothing that exists (Consul skips roles and policies it cannot find).
fn token_for(
    server: &Server,
    method: &str,
    global: bool,
    bindings: Bindings,
    params: &LoginParams,
    now: i64,
) -> Option<AclToken> {
    let tables = server.store().read();
    let acl = tables.acl();
    let roles: Vec<String> =
        bindings.roles.iter().filter_map(|name| acl.role_by_name(name)).map(|r| r.id.clone()).collect();
    let policies: Vec<String> =
        bindings.policies.iter().filter_map(|name| acl.policy_by_name(name)).map(|p| p.id.clone()).collect();
    if bindings.services.is_empty() && bindings.nodes.is_empty() && roles.is_empty() && policies.is_empty() {
        return None;
    }
    let description = match params.meta.is_empty() {
        true => "token created via login".to_owned(),
        false => format!("token created via login: {}", serde_json::to_string(&params.meta).unwrap_or_default()),
    };
    Some(AclToken {
        accessor_id: weft_api::ids::uuid_v4(rand::random()),
        description,
        policies,
        roles,
        service_identities: bindings
            .services
            .into_iter()
            .map(|service_name| ServiceIdentity { service_name, datacenters: Vec::new() })
            .collect(),
        node_identities: bindings
            .nodes
            .into_iter()
            .map(|node_name| NodeIdentity { node_name, datacenter: server.datacenter().to_string() })
            .collect(),
        local: !global,
        auth_method: method.to_owned(),
        create_time: now,
        ..Default::default()
    })
}

/// Deletes the token whose secret is `secret_id`, if a login made it;
/// the index the deletion was applied at.
pub async fn logout(server: &Server, secret_id: &str) -> Result<weft_api::ids::RaftIndex, LoginFailure> {
    let accessor_id = {
        let tables = server.store().read();
        let token = weft_acl::AclSource::token_by_secret_sha256(tables.acl(), &secret_hash(secret_id))
            .ok_or(LoginError::TokenNotFound)?;
        if token.auth_method.is_empty() {
            return Err(LoginError::NotALoginToken.into());
        }
        token.accessor_id.clone()
    };
    let applied = server.write(Command::AclTokenDelete { accessor_id: accessor_id.clone() }).await?;
    tracing::info!(%accessor_id, "logout deleted a login's token");
    Ok(applied.index)
}

/// The metadata key naming the [`LoginError`] a status carries.
pub(crate) const REFUSAL: &str = "weft-login-refusal";

/// The status a failure crosses RPC as.
pub(crate) fn failure_to_status(failure: LoginFailure) -> tonic::Status {
    let error = match failure {
        LoginFailure::Cluster(error) => return error_to_status(error),
        LoginFailure::Refused(error) => error,
    };
    let (tag, code, detail) = match &error {
        LoginError::MethodNotFound(name) => ("method-not-found", tonic::Code::NotFound, name.clone()),
        LoginError::InvalidToken(reason) => ("invalid-token", tonic::Code::PermissionDenied, reason.clone()),
        LoginError::NoBinding => ("no-binding", tonic::Code::PermissionDenied, String::new()),
        LoginError::InvalidBindName(name) => ("invalid-bind-name", tonic::Code::PermissionDenied, name.clone()),
        LoginError::KeysUnavailable(reason) => ("keys-unavailable", tonic::Code::Unavailable, reason.clone()),
        LoginError::TokenNotFound => ("token-not-found", tonic::Code::NotFound, String::new()),
        LoginError::NotALoginToken => ("not-a-login-token", tonic::Code::PermissionDenied, String::new()),
    };
    let mut status = tonic::Status::new(code, detail);
    status.metadata_mut().insert(REFUSAL, tonic::metadata::MetadataValue::from_static(tag));
    status
}

/// Reads back what [`failure_to_status`] sent.
pub(crate) fn status_to_failure(status: tonic::Status) -> LoginFailure {
    let Some(tag) = status.metadata().get(REFUSAL).and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return LoginFailure::Cluster(status_to_error(status));
    };
    let detail = status.message().to_owned();
    LoginFailure::Refused(match tag.as_str() {
        "method-not-found" => LoginError::MethodNotFound(detail),
        "invalid-token" => LoginError::InvalidToken(detail),
        "no-binding" => LoginError::NoBinding,
        "invalid-bind-name" => LoginError::InvalidBindName(detail),
        "keys-unavailable" => LoginError::KeysUnavailable(detail),
        "token-not-found" => LoginError::TokenNotFound,
        "not-a-login-token" => LoginError::NotALoginToken,
        other => LoginError::InvalidToken(format!("refused ({other}): {detail}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_cross_rpc_as_themselves() {
        let refusals = [
            LoginError::MethodNotFound("k8s".into()),
            LoginError::InvalidToken("error validating claims: validation failed, token is expired (exp)".into()),
            LoginError::NoBinding,
            LoginError::InvalidBindName("a.b".into()),
            LoginError::KeysUnavailable("GET https://x: refused".into()),
            LoginError::TokenNotFound,
            LoginError::NotALoginToken,
        ];
        for refusal in refusals {
            let back = status_to_failure(failure_to_status(LoginFailure::Refused(refusal.clone())));
            assert!(matches!(&back, LoginFailure::Refused(r) if *r == refusal), "{refusal:?} came back as {back:?}");
        }
        let cluster = status_to_failure(failure_to_status(LoginFailure::Cluster(ServerError::NoLeader)));
        assert!(matches!(cluster, LoginFailure::Cluster(ServerError::NoLeader)));
    }
}
