//! `/v1/acl/*` and `/v1/agent/token/<kind>`: Consul's ACL API. Bootstrap,
//! tokens, policies and roles, in Consul's JSON; rules are parsed (and so
//! checked) here, before anything is written. A token's SecretID is stored
//! only as a hash, so it is shown once, when the token is made (bootstrap,
//! create, clone), and as `<hidden>` after, as Consul shows it to readers
//! without `acl:write`; `GET /v1/acl/token/self` shows the caller its own.
//! With ACLs off every route answers 401 `ACL support disabled`.
//!
//! Auth methods, binding rules, login and logout are [`login`]'s; the
//! built-in templated policies are [`templated`]'s.

pub mod login;
pub mod templated;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use weft_acl::Permission;
use weft_api::acl::{
    Access, AclPolicy, AclRole, AclToken, GlobalResource, NodeIdentity, ServiceIdentity, GLOBAL_MANAGEMENT_POLICY_ID,
};
use weft_api::command::{Command, CommandOutcome};
use weft_server::store::{AclTables, Table};

use super::authz::Acl;
use super::error::ApiError;
use super::query::{meta_headers, QueryParams};
use super::AppState;
use crate::acl::TokenKind;
use crate::decode::decode_body;

/// A policy or role that is not there (a token that is not there is Consul's
/// 403 `ACL not found`).
fn not_found() -> ApiError {
    ApiError::NotFound("ACL not found".into())
}

/// A SecretID shown after the token was made.
const HIDDEN: &str = "<hidden>";

pub(super) fn new_id() -> String {
    weft_api::ids::uuid_v4(rand::random())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn rfc3339(unix: i64) -> Value {
    weft_api::timestamp::rfc3339(unix).map_or(Value::Null, Value::String)
}

pub(super) fn enabled(state: &AppState, acl: &Acl) -> Result<(), ApiError> {
    acl.public();
    match state.acl.enabled() {
        true => Ok(()),
        false => Err(ApiError::AclDisabled),
    }
}

pub(super) fn read_acl(acl: &Acl) -> Result<(), ApiError> {
    acl.require(Permission::Global(GlobalResource::Acl, Access::Read))
}

/// A read of the ACL tables (needs `acl:read`): `render` makes the answer
/// from them, sent with the tables' index headers.
pub(super) fn read_tables(
    state: &AppState,
    acl: &Acl,
    render: impl FnOnce(&AclTables) -> Result<Value, ApiError>,
) -> Result<Response, ApiError> {
    enabled(state, acl)?;
    read_acl(acl)?;
    let tables = state.backend.store().read();
    let body = render(tables.acl())?;
    Ok((meta_headers(&state.backend, tables.index(Table::Acl)), Json(body)).into_response())
}

pub(super) fn write_acl(acl: &Acl) -> Result<(), ApiError> {
    acl.require(Permission::Global(GlobalResource::Acl, Access::Write))
}

/// Writes `command` (ACL changes are checked by the servers again, with
/// the caller's token) and turns a refusal into a 400.
pub(super) async fn write(state: &AppState, acl: &Acl, command: Command) -> Result<u64, ApiError> {
    let applied = state.backend.write_as(command, acl.secret()).await?;
    match applied.outcome {
        CommandOutcome::Done => Ok(applied.index.get()),
        CommandOutcome::Rejected(reason) => Err(ApiError::BadRequest(reason)),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

/// A delete (ACL changes need `acl:write`), answered with Consul's `true`.
pub(super) async fn delete(state: &AppState, acl: &Acl, command: Command) -> Result<Response, ApiError> {
    enabled(state, acl)?;
    write_acl(acl)?;
    write(state, acl, command).await?;
    Ok(Json(true).into_response())
}

// ------------------------------------------------------------------ JSON --

fn links(ids: &[String], name: impl Fn(&str) -> Option<String>) -> Value {
    // A link whose target was deleted is dropped, as Consul does.
    Value::Array(ids.iter().filter_map(|id| Some(json!({"ID": id, "Name": name(id)?}))).collect())
}

fn identities_json(services: &[ServiceIdentity], nodes: &[NodeIdentity], out: &mut serde_json::Map<String, Value>) {
    if !services.is_empty() {
        let list: Vec<Value> = services
            .iter()
            .map(|s| {
                let mut v = json!({"ServiceName": s.service_name});
                if !s.datacenters.is_empty() {
                    v["Datacenters"] = json!(s.datacenters);
                }
                v
            })
            .collect();
        out.insert("ServiceIdentities".into(), Value::Array(list));
    }
    if !nodes.is_empty() {
        let list: Vec<Value> =
            nodes.iter().map(|n| json!({"NodeName": n.node_name, "Datacenter": n.datacenter})).collect();
        out.insert("NodeIdentities".into(), Value::Array(list));
    }
}

/// A token in Consul's shape; `secret` is shown only where it is known.
pub(super) fn token_json(token: &AclToken, tables: &AclTables, secret: Option<&str>) -> Value {
    let policy_name = |id: &str| weft_acl::AclSource::policy(tables, id).map(|p| p.name.clone());
    let role_name = |id: &str| weft_acl::AclSource::role(tables, id).map(|r| r.name.clone());
    let mut out = serde_json::Map::new();
    out.insert("AccessorID".into(), json!(token.accessor_id));
    out.insert("SecretID".into(), json!(secret.unwrap_or(HIDDEN)));
    out.insert("Description".into(), json!(token.description));
    out.insert("Policies".into(), links(&token.policies, policy_name));
    out.insert("Roles".into(), links(&token.roles, role_name));
    identities_json(&token.service_identities, &token.node_identities, &mut out);
    out.insert("Local".into(), json!(token.local));
    if !token.auth_method.is_empty() {
        out.insert("AuthMethod".into(), json!(token.auth_method));
    }
    if let Some(expires) = token.expiration_time {
        out.insert("ExpirationTime".into(), rfc3339(expires));
    }
    out.insert("CreateTime".into(), rfc3339(token.create_time));
    out.insert("Hash".into(), json!(hash_of(&(&token.policies, &token.roles, &token.description))));
    out.insert("CreateIndex".into(), json!(token.indexes.create.get()));
    out.insert("ModifyIndex".into(), json!(token.indexes.modify.get()));
    Value::Object(out)
}

pub(super) fn policy_json(policy: &AclPolicy) -> Value {
    json!({
        "ID": policy.id,
        "Name": policy.name,
        "Description": policy.description,
        "Rules": policy.rules_text,
        "Datacenters": policy.datacenters,
        "Hash": hash_of(&(&policy.name, &policy.rules_text, &policy.datacenters)),
        "CreateIndex": policy.indexes.create.get(),
        "ModifyIndex": policy.indexes.modify.get(),
    })
}

fn role_json(role: &AclRole, tables: &AclTables) -> Value {
    let policy_name = |id: &str| weft_acl::AclSource::policy(tables, id).map(|p| p.name.clone());
    let mut out = serde_json::Map::new();
    out.insert("ID".into(), json!(role.id));
    out.insert("Name".into(), json!(role.name));
    out.insert("Description".into(), json!(role.description));
    out.insert("Policies".into(), links(&role.policies, policy_name));
    identities_json(&role.service_identities, &role.node_identities, &mut out);
    out.insert("Hash".into(), json!(hash_of(&(&role.name, &role.policies, &role.description))));
    out.insert("CreateIndex".into(), json!(role.indexes.create.get()));
    out.insert("ModifyIndex".into(), json!(role.indexes.modify.get()));
    Value::Object(out)
}

/// A short content hash, base64 (Consul's `Hash` fields).
fn hash_of(value: &impl serde::Serialize) -> String {
    use base64::Engine;
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let digest = weft_server::join::secret_hash(&String::from_utf8_lossy(&bytes));
    base64::engine::general_purpose::STANDARD.encode(&digest.as_bytes()[..32])
}

// ------------------------------------------------------------ bodies -----

#[derive(Default, Deserialize)]
#[serde(default)]
struct LinkBody {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "name")]
    name: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ServiceIdentityBody {
    #[serde(rename = "servicename")]
    service_name: String,
    #[serde(rename = "datacenters")]
    datacenters: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct NodeIdentityBody {
    #[serde(rename = "nodename")]
    node_name: String,
    #[serde(rename = "datacenter")]
    datacenter: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct TokenBody {
    #[serde(rename = "accessorid")]
    accessor_id: String,
    #[serde(rename = "secretid")]
    secret_id: String,
    #[serde(rename = "description")]
    description: String,
    #[serde(rename = "policies")]
    policies: Vec<LinkBody>,
    #[serde(rename = "roles")]
    roles: Vec<LinkBody>,
    #[serde(rename = "serviceidentities")]
    service_identities: Vec<ServiceIdentityBody>,
    #[serde(rename = "nodeidentities")]
    node_identities: Vec<NodeIdentityBody>,
    #[serde(rename = "templatedpolicies")]
    templated_policies: Option<Vec<Value>>,
    #[serde(rename = "local")]
    local: bool,
    #[serde(rename = "expirationtime")]
    expiration_time: Option<String>,
    #[serde(rename = "expirationttl")]
    expiration_ttl: Option<serde_json::Value>,
    #[serde(rename = "authmethod")]
    auth_method: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PolicyBody {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "name")]
    name: String,
    #[serde(rename = "description")]
    description: String,
    #[serde(rename = "rules")]
    rules: String,
    #[serde(rename = "datacenters")]
    datacenters: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RoleBody {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "name")]
    name: String,
    #[serde(rename = "description")]
    description: String,
    #[serde(rename = "policies")]
    policies: Vec<LinkBody>,
    #[serde(rename = "serviceidentities")]
    service_identities: Vec<ServiceIdentityBody>,
    #[serde(rename = "nodeidentities")]
    node_identities: Vec<NodeIdentityBody>,
    #[serde(rename = "templatedpolicies")]
    templated_policies: Option<Vec<Value>>,
}

/// Links by ID or name, as IDs (`find` looks one up by ID, `named` by
/// name); a missing one is a 400 naming it (`what`: policy, role).
fn link_ids<'t, T: 't>(
    links: &[LinkBody],
    what: &str,
    find: impl Fn(&str) -> Option<&'t T>,
    named: impl Fn(&str) -> Option<&'t T>,
    id_of: impl Fn(&T) -> String,
) -> Result<Vec<String>, ApiError> {
    links
        .iter()
        .map(|link| {
            let found = match link.id.is_empty() {
                false => find(&link.id),
                true => named(&link.name),
            };
            found.map(&id_of).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "cannot find {what} {}",
                    if link.id.is_empty() { &link.name } else { &link.id }
                ))
            })
        })
        .collect()
}

fn policy_ids(tables: &AclTables, links: &[LinkBody]) -> Result<Vec<String>, ApiError> {
    let find = |id: &str| weft_acl::AclSource::policy(tables, id);
    link_ids(links, "policy", find, |name| tables.policy_by_name(name), |p: &AclPolicy| p.id.clone())
}

fn role_ids(tables: &AclTables, links: &[LinkBody]) -> Result<Vec<String>, ApiError> {
    let find = |id: &str| weft_acl::AclSource::role(tables, id);
    link_ids(links, "role", find, |name| tables.role_by_name(name), |r: &AclRole| r.id.clone())
}

/// A body's identities, checked. Templated policies on tokens and roles
/// are refused (their rules are a service's or a node's identity, or
/// `builtin/dns`'s, which a policy holds).
fn identities(
    (services, nodes, templated): (Vec<ServiceIdentityBody>, Vec<NodeIdentityBody>, Option<Vec<Value>>),
    datacenter: &str,
) -> Result<(Vec<ServiceIdentity>, Vec<NodeIdentity>), ApiError> {
    if templated.is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::BadRequest(
            "TemplatedPolicies on tokens and roles are not supported: use ServiceIdentities for builtin/service, \
             NodeIdentities for builtin/node, and a policy with the rules GET /v1/acl/templated-policy/name/<name> \
             shows for the others"
                .into(),
        ));
    }
    let services = services
        .into_iter()
        .map(|s| match weft_api::ids::ServiceName::new(&s.service_name).as_str() {
            "" => Err(ApiError::BadRequest("a service identity needs a ServiceName".into())),
            name if name.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) => {
                Err(ApiError::BadRequest(format!("Service identity {name:?} has an invalid name")))
            }
            _ => Ok(ServiceIdentity { service_name: s.service_name, datacenters: s.datacenters }),
        })
        .collect::<Result<_, _>>()?;
    let nodes = nodes
        .into_iter()
        .map(|n| match n.node_name.is_empty() {
            true => Err(ApiError::BadRequest("a node identity needs a NodeName".into())),
            false => Ok(NodeIdentity {
                node_name: n.node_name,
                datacenter: if n.datacenter.is_empty() { datacenter.to_owned() } else { n.datacenter },
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok((services, nodes))
}

// --------------------------------------------------------- bootstrap -----

/// The file an operator writes the reset index into to bootstrap again
/// (Consul's), in the data directory of the agent asked.
const BOOTSTRAP_RESET_FILE: &str = "acl-bootstrap-reset";

/// `PUT /v1/acl/bootstrap`: the first management token, once; again when
/// the server asked has `<data_dir>/acl-bootstrap-reset` holding the index
/// the last one happened at (the file is removed once used).
pub async fn bootstrap(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    let reset_file = state.config.data_dir.join(BOOTSTRAP_RESET_FILE);
    // Only a server's: root on a client agent's host must not be able to
    // take the cluster's ACLs over.
    let reset_index = match std::fs::read_to_string(&reset_file).ok().filter(|_| state.backend.server().is_some()) {
        Some(text) => Some(text.trim().parse::<u64>().map(weft_api::ids::RaftIndex).map_err(|_| {
            ApiError::BadRequest(format!("{} must hold the reset index, a number: {text:?}", reset_file.display()))
        })?),
        None => None,
    };
    let secret = new_id();
    let token = AclToken {
        accessor_id: new_id(),
        secret_sha256: weft_server::join::secret_hash(&secret),
        description: "Bootstrap Token (Global Management)".into(),
        policies: vec![GLOBAL_MANAGEMENT_POLICY_ID.into()],
        create_time: unix_now(),
        ..Default::default()
    };
    let command = Command::AclBootstrap { token: Box::new(token.clone()), reset_index };
    let applied = state.backend.write_as(command, acl.secret()).await?;
    if let CommandOutcome::Rejected(reason) = applied.outcome {
        return Err(ApiError::Forbidden(reason));
    }
    if reset_index.is_some() {
        if let Err(error) = std::fs::remove_file(&reset_file) {
            tracing::warn!(%error, file = %reset_file.display(), "bootstrapped again, but could not remove the reset file");
        }
        tracing::info!("ACLs bootstrapped again with the reset index");
    }
    let tables = state.backend.store().read();
    let stored = tables.acl().token(&token.accessor_id).cloned().unwrap_or(token);
    Ok(Json(token_json(&stored, tables.acl(), Some(&secret))).into_response())
}

// ------------------------------------------------------------ tokens -----

/// `PUT /v1/acl/token`: a new token; its SecretID is shown this once.
pub async fn create_token(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: TokenBody = if body.is_empty() { TokenBody::default() } else { decode_body(&body)? };
    if !body.auth_method.is_empty() {
        return Err(ApiError::BadRequest("AuthMethod field is disallowed outside of login".into()));
    }
    let secret = if body.secret_id.is_empty() { new_id() } else { body.secret_id.clone() };
    let accessor_id = if body.accessor_id.is_empty() { new_id() } else { body.accessor_id.clone() };
    let now = unix_now();
    let expiration_time = expiration(&body, now)?;
    let token = {
        let tables = state.backend.store().read();
        if tables.acl().token(&accessor_id).is_some() {
            return Err(ApiError::BadRequest(format!("Invalid Token: AccessorID {accessor_id} is already in use")));
        }
        let (service_identities, node_identities) = identities(
            (body.service_identities, body.node_identities, body.templated_policies),
            state.config.datacenter.as_str(),
        )?;
        AclToken {
            accessor_id,
            secret_sha256: weft_server::join::secret_hash(&secret),
            description: body.description,
            policies: policy_ids(tables.acl(), &body.policies)?,
            roles: role_ids(tables.acl(), &body.roles)?,
            service_identities,
            node_identities,
            local: body.local,
            auth_method: String::new(),
            expiration_time,
            create_time: now,
            indexes: Default::default(),
        }
    };
    write(&state, &acl, Command::AclTokenSet(Box::new(token.clone()))).await?;
    let tables = state.backend.store().read();
    let stored = tables.acl().token(&token.accessor_id).cloned().unwrap_or(token);
    Ok(Json(token_json(&stored, tables.acl(), Some(&secret))).into_response())
}

/// `ExpirationTime` (RFC 3339) or `ExpirationTTL` (a duration) as seconds
/// since the Unix epoch.
fn expiration(body: &TokenBody, now: i64) -> Result<Option<i64>, ApiError> {
    if let Some(time) = body.expiration_time.as_deref().filter(|t| !t.is_empty()) {
        let at = OffsetDateTime::parse(time, &Rfc3339)
            .map_err(|e| ApiError::BadRequest(format!("Invalid ExpirationTime {time:?}: {e}")))?;
        return Ok(Some(at.unix_timestamp()));
    }
    let ttl = match &body.expiration_ttl {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) if text.is_empty() => return Ok(None),
        Some(Value::String(text)) => weft_api::duration::parse(text)
            .map_err(|e| ApiError::BadRequest(format!("Invalid ExpirationTTL {text:?}: {e}")))?,
        Some(Value::Number(nanos)) => std::time::Duration::from_nanos(nanos.as_u64().unwrap_or(0)),
        Some(other) => return Err(ApiError::BadRequest(format!("Invalid ExpirationTTL {other}"))),
    };
    if ttl.is_zero() {
        return Ok(None);
    }
    Ok(Some(now.saturating_add(ttl.as_secs().max(1) as i64)))
}

/// `GET /v1/acl/token/<accessor>`.
pub async fn read_token(State(state): State<AppState>, acl: Acl, Path(id): Path<String>) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let token = tables.token(&id).ok_or(ApiError::AclNotFound)?;
        Ok(token_json(token, tables, None))
    })
}

/// `GET /v1/acl/token/self`: the caller's own token.
pub async fn token_self(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    let tables = state.backend.store().read();
    let token = tables.acl().token(acl.accessor_id()).ok_or(ApiError::AclNotFound)?;
    Ok(Json(token_json(token, tables.acl(), Some(acl.secret()))).into_response())
}

/// `PUT /v1/acl/token/<accessor>`: replaces what the body gives (the
/// SecretID never changes).
pub async fn update_token(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: TokenBody = decode_body(&body)?;
    if !body.accessor_id.is_empty() && body.accessor_id != id {
        return Err(ApiError::BadRequest("Token AccessorID in URL and payload do not match".into()));
    }
    let token = {
        let tables = state.backend.store().read();
        let existing = tables.acl().token(&id).ok_or_else(|| ApiError::NotFound(format!("Cannot find token {id}")))?;
        if !body.secret_id.is_empty() && weft_server::join::secret_hash(&body.secret_id) != existing.secret_sha256 {
            return Err(ApiError::BadRequest("Invalid Token: SecretID cannot be changed".into()));
        }
        if !body.auth_method.is_empty() && body.auth_method != existing.auth_method {
            return Err(ApiError::BadRequest(format!("Cannot change AuthMethod of {id}")));
        }
        let (service_identities, node_identities) = identities(
            (body.service_identities, body.node_identities, body.templated_policies),
            state.config.datacenter.as_str(),
        )?;
        AclToken {
            description: body.description,
            policies: policy_ids(tables.acl(), &body.policies)?,
            roles: role_ids(tables.acl(), &body.roles)?,
            service_identities,
            node_identities,
            ..existing.clone()
        }
    };
    write(&state, &acl, Command::AclTokenSet(Box::new(token))).await?;
    let tables = state.backend.store().read();
    let stored = tables.acl().token(&id).ok_or(ApiError::AclNotFound)?;
    Ok(Json(token_json(stored, tables.acl(), None)).into_response())
}

/// `PUT /v1/acl/token/<accessor>/clone`: a new token with the same links.
pub async fn clone_token(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    #[derive(Default, Deserialize)]
    #[serde(default)]
    struct CloneBody {
        #[serde(rename = "description")]
        description: Option<String>,
    }
    let body: CloneBody = if body.is_empty() { CloneBody::default() } else { decode_body(&body)? };
    let secret = new_id();
    let token = {
        let tables = state.backend.store().read();
        let existing = tables.acl().token(&id).ok_or_else(|| ApiError::NotFound(format!("Cannot find token {id}")))?;
        if !existing.auth_method.is_empty() {
            return Err(ApiError::BadRequest("Cannot clone a token created from an auth method".into()));
        }
        AclToken {
            accessor_id: new_id(),
            secret_sha256: weft_server::join::secret_hash(&secret),
            description: body.description.unwrap_or_else(|| existing.description.clone()),
            create_time: unix_now(),
            indexes: Default::default(),
            ..existing.clone()
        }
    };
    write(&state, &acl, Command::AclTokenSet(Box::new(token.clone()))).await?;
    let tables = state.backend.store().read();
    let stored = tables.acl().token(&token.accessor_id).cloned().unwrap_or(token);
    Ok(Json(token_json(&stored, tables.acl(), Some(&secret))).into_response())
}

/// `DELETE /v1/acl/token/<accessor>`.
pub async fn delete_token(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    delete(&state, &acl, Command::AclTokenDelete { accessor_id: id }).await
}

/// `GET /v1/acl/tokens` (`?policy=`, `?role=`, `?servicename=`,
/// `?authmethod=` narrow it).
pub async fn list_tokens(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    read_tables(&state, &acl, |tables| {
        let tokens: Vec<Value> = tables
            .tokens()
            .filter(|t| query.get("policy").is_none_or(|p| t.policies.iter().any(|id| id == p)))
            .filter(|t| query.get("role").is_none_or(|r| t.roles.iter().any(|id| id == r)))
            .filter(|t| {
                query.get("servicename").is_none_or(|s| t.service_identities.iter().any(|i| i.service_name == s))
            })
            .filter(|t| query.get("authmethod").is_none_or(|m| t.auth_method == m))
            .map(|t| token_json(t, tables, None))
            .collect();
        Ok(Value::Array(tokens))
    })
}

// ---------------------------------------------------------- policies -----

fn policy_from(body: PolicyBody, id: String) -> Result<AclPolicy, ApiError> {
    if body.name.is_empty() || !body.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::BadRequest(format!("Invalid Policy: invalid Name {:?}", body.name)));
    }
    let rules = weft_acl::parse_rules(&body.rules).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(AclPolicy {
        id,
        name: body.name,
        description: body.description,
        rules_text: body.rules,
        rules,
        datacenters: body.datacenters,
        indexes: Default::default(),
    })
}

/// `PUT /v1/acl/policy`.
pub async fn create_policy(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: PolicyBody = decode_body(&body)?;
    let id = if body.id.is_empty() { new_id() } else { body.id.clone() };
    let policy = policy_from(body, id.clone())?;
    write(&state, &acl, Command::AclPolicySet(Box::new(policy))).await?;
    let tables = state.backend.store().read();
    let stored = weft_acl::AclSource::policy(tables.acl(), &id).ok_or(ApiError::AclNotFound)?;
    Ok(Json(policy_json(stored)).into_response())
}

/// `GET /v1/acl/policy/<id>`.
pub async fn read_policy(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let policy = weft_acl::AclSource::policy(tables, &id).ok_or_else(not_found)?;
        Ok(policy_json(policy))
    })
}

/// `GET /v1/acl/policy/name/<name>`.
pub async fn read_policy_by_name(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let policy = tables.policy_by_name(&name).ok_or_else(not_found)?;
        Ok(policy_json(policy))
    })
}

/// `PUT /v1/acl/policy/<id>`.
pub async fn update_policy(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: PolicyBody = decode_body(&body)?;
    if !body.id.is_empty() && body.id != id {
        return Err(ApiError::BadRequest("Policy ID in URL and payload do not match".into()));
    }
    if weft_acl::AclSource::policy(state.backend.store().read().acl(), &id).is_none() {
        return Err(ApiError::NotFound(format!("Cannot find policy {id}")));
    }
    let policy = policy_from(body, id.clone())?;
    write(&state, &acl, Command::AclPolicySet(Box::new(policy))).await?;
    let tables = state.backend.store().read();
    let stored = weft_acl::AclSource::policy(tables.acl(), &id).ok_or(ApiError::AclNotFound)?;
    Ok(Json(policy_json(stored)).into_response())
}

/// `DELETE /v1/acl/policy/<id>`.
pub async fn delete_policy(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    delete(&state, &acl, Command::AclPolicyDelete { id }).await
}

/// `GET /v1/acl/policies`.
pub async fn list_policies(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let policies: Vec<Value> = tables
            .policies()
            .map(|p| {
                let mut v = policy_json(p);
                // Consul lists policies without their rules.
                v.as_object_mut().map(|o| o.remove("Rules"));
                v
            })
            .collect();
        Ok(Value::Array(policies))
    })
}

// ------------------------------------------------------------- roles -----

fn role_from(state: &AppState, body: RoleBody, id: String) -> Result<AclRole, ApiError> {
    if body.name.is_empty() || !body.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::BadRequest(format!("Invalid Role: invalid Name {:?}", body.name)));
    }
    let tables = state.backend.store().read();
    let (service_identities, node_identities) = identities(
        (body.service_identities, body.node_identities, body.templated_policies),
        state.config.datacenter.as_str(),
    )?;
    Ok(AclRole {
        id,
        name: body.name,
        description: body.description,
        policies: policy_ids(tables.acl(), &body.policies)?,
        service_identities,
        node_identities,
        indexes: Default::default(),
    })
}

/// `PUT /v1/acl/role`.
pub async fn create_role(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: RoleBody = decode_body(&body)?;
    let id = if body.id.is_empty() { new_id() } else { body.id.clone() };
    let role = role_from(&state, body, id.clone())?;
    write(&state, &acl, Command::AclRoleSet(Box::new(role))).await?;
    let tables = state.backend.store().read();
    let stored = weft_acl::AclSource::role(tables.acl(), &id).ok_or(ApiError::AclNotFound)?;
    Ok(Json(role_json(stored, tables.acl())).into_response())
}

/// `GET /v1/acl/role/<id>`.
pub async fn read_role(State(state): State<AppState>, acl: Acl, Path(id): Path<String>) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let role = weft_acl::AclSource::role(tables, &id).ok_or_else(not_found)?;
        Ok(role_json(role, tables))
    })
}

/// `GET /v1/acl/role/name/<name>`.
pub async fn read_role_by_name(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let role = tables.role_by_name(&name).ok_or_else(not_found)?;
        Ok(role_json(role, tables))
    })
}

/// `PUT /v1/acl/role/<id>`.
pub async fn update_role(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: RoleBody = decode_body(&body)?;
    if !body.id.is_empty() && body.id != id {
        return Err(ApiError::BadRequest("Role ID in URL and payload do not match".into()));
    }
    if weft_acl::AclSource::role(state.backend.store().read().acl(), &id).is_none() {
        return Err(ApiError::NotFound(format!("Cannot find role {id}")));
    }
    let role = role_from(&state, body, id.clone())?;
    write(&state, &acl, Command::AclRoleSet(Box::new(role))).await?;
    let tables = state.backend.store().read();
    let stored = weft_acl::AclSource::role(tables.acl(), &id).ok_or(ApiError::AclNotFound)?;
    Ok(Json(role_json(stored, tables.acl())).into_response())
}

/// `DELETE /v1/acl/role/<id>`.
pub async fn delete_role(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    delete(&state, &acl, Command::AclRoleDelete { id }).await
}

/// `GET /v1/acl/roles`.
pub async fn list_roles(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let roles: Vec<Value> = tables.roles().map(|r| role_json(r, tables)).collect();
        Ok(Value::Array(roles))
    })
}

// -------------------------------------------------------- agent tokens ---

/// `PUT /v1/agent/token/<kind>` with `{"Token": "..."}`.
pub async fn set_agent_token(
    State(state): State<AppState>,
    acl: Acl,
    Path(kind): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let kind = TokenKind::parse(&kind).ok_or_else(|| ApiError::NotFound(format!("Unknown token {kind:?}")))?;
    #[derive(Default, Deserialize)]
    #[serde(default)]
    struct TokenValue {
        #[serde(rename = "token")]
        token: String,
    }
    let body: TokenValue = decode_body(&body)?;
    state.acl.set_token(kind, body.token).map_err(|e| ApiError::Internal(format!("cannot keep the token: {e}")))?;
    tracing::info!(?kind, "agent ACL token updated");
    Ok(().into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiration_is_a_time_or_a_ttl() {
        let body = |time: Option<&str>, ttl: Option<Value>| TokenBody {
            expiration_time: time.map(str::to_owned),
            expiration_ttl: ttl,
            ..Default::default()
        };
        assert_eq!(expiration(&body(None, None), 100).unwrap(), None);
        assert_eq!(expiration(&body(None, Some(json!("1h"))), 100).unwrap(), Some(3700));
        assert_eq!(expiration(&body(None, Some(json!(2_000_000_000u64))), 100).unwrap(), Some(102));
        assert_eq!(expiration(&body(Some("1970-01-01T00:10:00Z"), None), 100).unwrap(), Some(600));
        assert!(expiration(&body(None, Some(json!("soon"))), 100).is_err());
    }
}
