//! `/v1/operator/join-token`: join tokens for new client agents (Weft's
//! own; Consul's nearest is auto-config's intro token). A token is shown
//! once, when made; the list shows IDs, descriptions, expiry and uses left.
//!
//! Served by servers only: a client agent's API is reachable by whatever
//! runs next to it (an application in the same pod), which must not be able
//! to let new hosts in. Until ACLs, the servers' API is the operators'.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use weft_api::command::{Command, CommandOutcome};
use weft_api::join::JoinTokenRecord;
use weft_server::join::{new_token, TokenRequest};

use weft_acl::Permission;
use weft_api::acl::{Access, GlobalResource};

use super::authz::{self, Acl};
use super::error::ApiError;
use super::AppState;
use crate::decode::decode_body;

/// A token's life when the request names none.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Default, Deserialize)]
#[serde(default)]
struct CreateBody {
    description: String,
    ttl: Option<String>,
    uses: Option<u32>,
}

/// `PUT /v1/operator/join-token` with `{"Description", "TTL", "Uses"}`
/// (all optional: 24h, one use): the token, once.
/// Join tokens let hosts in: management only, as ACL changes are.
fn management(acl: &Acl, access: Access) -> Result<(), ApiError> {
    acl.require(Permission::Global(GlobalResource::Acl, access))
}

pub async fn create(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    management(&acl, Access::Write)?;
    let server = servers_only(&state)?;
    let ca_pem = server.ca_pem().map(str::to_owned).ok_or_else(|| {
        ApiError::BadRequest(
            "join tokens enroll agents for certificates, so the servers need TLS on RPC (tls { defaults { ca_file cert_file key_file } })".into(),
        )
    })?;
    let body: CreateBody = if body.is_empty() { CreateBody::default() } else { decode_body(&body)? };
    let ttl = match &body.ttl {
        None => DEFAULT_TTL,
        Some(text) => weft_api::duration::parse(text).map_err(|e| ApiError::BadRequest(format!("Invalid TTL: {e}")))?,
    };
    if ttl.is_zero() || body.uses == Some(0) {
        return Err(ApiError::BadRequest("a join token needs a TTL above zero and at least one use".into()));
    }
    let servers = server.raft_configuration().servers.into_iter().map(|s| s.rpc_addr).collect();
    let request = TokenRequest { description: body.description, ttl, uses: body.uses.unwrap_or(1) };
    let (record, token) = new_token(servers, &state.config.datacenter, Some(ca_pem), request);
    match authz::write(&state, &acl, Command::JoinTokenCreate(record.clone())).await?.outcome {
        CommandOutcome::Done => {}
        CommandOutcome::Rejected(reason) => return Err(ApiError::BadRequest(reason)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    tracing::info!(id = %record.id, uses = record.uses_left, "join token made");
    let mut answer = token_json(&record);
    answer["Token"] = json!(token.encode());
    Ok(Json(answer).into_response())
}

/// `GET /v1/operator/join-token`: every token not used up or deleted (expired
/// ones too, until deleted), without secrets.
pub async fn list(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    management(&acl, Access::Read)?;
    servers_only(&state)?;
    let tokens: Vec<Value> = state.backend.store().read().join().tokens().map(token_json).collect();
    Ok(Json(tokens).into_response())
}

/// `DELETE /v1/operator/join-token/<id>`: no agent may join with it any more
/// (agents that did keep their credentials).
pub async fn delete(State(state): State<AppState>, acl: Acl, Path(id): Path<String>) -> Result<Response, ApiError> {
    management(&acl, Access::Write)?;
    servers_only(&state)?;
    authz::write(&state, &acl, Command::JoinTokenDelete { id }).await?;
    Ok(Json(true).into_response())
}

/// `GET /v1/operator/enrollment`: the client agents enrolled with a join
/// token, without secrets.
pub async fn enrollments(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    management(&acl, Access::Read)?;
    servers_only(&state)?;
    let enrolled: Vec<Value> = state
        .backend
        .store()
        .read()
        .join()
        .credentials()
        .map(|c| {
            json!({"Node": c.node, "TokenID": c.token_id, "CreateIndex": c.indexes.create, "ModifyIndex": c.indexes.modify})
        })
        .collect();
    Ok(Json(enrolled).into_response())
}

/// `DELETE /v1/operator/enrollment/<node>`: revokes the node's enrollment.
/// Its certificates are refused from the next call on, its state stream
/// ends within a second, and it must join again with a new token.
pub async fn revoke(State(state): State<AppState>, acl: Acl, Path(node): Path<String>) -> Result<Response, ApiError> {
    management(&acl, Access::Write)?;
    servers_only(&state)?;
    let node = weft_api::ids::NodeName::new(node);
    match authz::write(&state, &acl, Command::AgentCredentialDelete { node: node.clone() }).await?.outcome {
        CommandOutcome::Done => {}
        CommandOutcome::Rejected(reason) => return Err(ApiError::NotFound(reason)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    tracing::warn!(%node, "revoked a node's enrollment");
    Ok(Json(true).into_response())
}

fn servers_only(state: &AppState) -> Result<&weft_server::Server, ApiError> {
    state.backend.server().ok_or_else(|| {
        ApiError::Forbidden("join tokens are made and managed on a server: use a server's HTTP API".into())
    })
}

fn token_json(record: &JoinTokenRecord) -> Value {
    let expires = weft_api::timestamp::rfc3339(record.expires_at);
    json!({
        "ID": record.id,
        "Description": record.description,
        "ExpiresAt": expires,
        "UsesLeft": record.uses_left,
        "CreateIndex": record.indexes.create.get(),
        "ModifyIndex": record.indexes.modify.get(),
    })
}
