//! `/v1/session/*`: sessions in Consul's shapes (`weft_api::session`).
//! Creating, destroying and renewing one are writes through the servers
//! (`authz::write`, `session:write` on its node); reads are blocking
//! queries on the sessions table, keeping the sessions whose node the
//! token may `session:read`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use weft_api::acl::{Access, NamedResource};
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::{CheckId, NodeName};
use weft_api::session::{Behavior, Session, DEFAULT_LOCK_DELAY, DEFAULT_NODE_CHECK};
use weft_server::store::{Table, Tables};

use super::authz::{self, Acl};
use super::body::field;
use super::error::ApiError;
use super::query::{check_datacenter, QueryParams};
use super::read::blocking_json;
use super::AppState;

const SESSION_TABLES: &[Table] = &[Table::Sessions];

/// A number below this in `LockDelay` is seconds, above it nanoseconds
/// (Consul's `lockDelayMinThreshold`).
const LOCK_DELAY_SECONDS_BELOW: u64 = 1000;

pub fn session_json(session: &Session) -> Value {
    let ttl = session.ttl().map(weft_api::duration::format).unwrap_or_default();
    let service_checks: Vec<Value> =
        session.service_checks.iter().map(|id| json!({"ID": id.as_str(), "Namespace": ""})).collect();
    let checks: Vec<&str> = session.checks().map(CheckId::as_str).collect();
    json!({
        "ID": session.id,
        "Name": session.name,
        "Node": session.node.as_str(),
        "Checks": checks,
        "NodeChecks": session.node_checks.iter().map(CheckId::as_str).collect::<Vec<_>>(),
        "ServiceChecks": if service_checks.is_empty() { Value::Null } else { Value::Array(service_checks) },
        "LockDelay": session.lock_delay_ms.saturating_mul(1_000_000),
        "Behavior": session.behavior.as_str(),
        "TTL": ttl,
        "CreateIndex": session.indexes.create.get(),
        "ModifyIndex": session.indexes.modify.get(),
    })
}

fn bad(reason: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Request decode failed: {reason}"))
}

fn text<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match field(body, name) {
        None => Ok(""),
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(bad(format!("{name} must be a string, not {other}"))),
    }
}

fn check_ids(value: Option<&Value>, name: &str) -> Result<Option<Vec<CheckId>>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let Value::Array(items) = value else { return Err(bad(format!("{name} must be a list, not {value}"))) };
    items
        .iter()
        .map(|item| match item {
            Value::String(id) => Ok(CheckId::new(id.as_str())),
            // ServiceChecks: [{"ID": "...", "Namespace": ""}]
            Value::Object(check) => match field(check, "ID") {
                Some(Value::String(id)) => Ok(CheckId::new(id.as_str())),
                _ => Err(bad(format!("each of {name} needs an ID"))),
            },
            other => Err(bad(format!("{name} holds {other}, not a check ID"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `LockDelay`: a duration (`"15s"`), or a number, of seconds below 1000
/// and of nanoseconds above (as Consul reads it).
fn lock_delay(value: Option<&Value>) -> Result<Duration, ApiError> {
    match value {
        None => Ok(DEFAULT_LOCK_DELAY),
        Some(Value::String(text)) => weft_api::duration::parse(text).map_err(|e| bad(format!("LockDelay: {e}"))),
        Some(Value::Number(number)) => match number.as_u64() {
            Some(n) if n < LOCK_DELAY_SECONDS_BELOW => Ok(Duration::from_secs(n)),
            Some(n) => Ok(Duration::from_nanos(n)),
            None => Err(bad(format!("LockDelay must be a duration, not {number}"))),
        },
        Some(other) => Err(bad(format!("LockDelay must be a duration, not {other}"))),
    }
}

/// The session a create request asks for (Consul's defaults: this agent's
/// node, bound to its `serfHealth` check, a 15 s lock delay, `release`).
fn session_from(body: &[u8], node: &NodeName) -> Result<Session, ApiError> {
    let body = match body.iter().all(u8::is_ascii_whitespace) {
        true => Map::new(),
        false => match serde_json::from_slice(body).map_err(bad)? {
            Value::Object(body) => body,
            other => return Err(bad(format!("the body must be a JSON object, not {other}"))),
        },
    };
    let node_checks = check_ids(field(&body, "NodeChecks"), "NodeChecks")?;
    let legacy_checks = check_ids(field(&body, "Checks"), "Checks")?;
    let service_checks = check_ids(field(&body, "ServiceChecks"), "ServiceChecks")?;
    let node_checks = match (node_checks, legacy_checks, &service_checks) {
        (None, None, None) => vec![CheckId::new(DEFAULT_NODE_CHECK)],
        (node_checks, legacy, _) => {
            let mut all = node_checks.unwrap_or_default();
            all.extend(legacy.unwrap_or_default().into_iter().filter(|id| !all.contains(id)).collect::<Vec<_>>());
            all
        }
    };
    let behavior_text = text(&body, "Behavior")?;
    let behavior = Behavior::parse(behavior_text)
        .ok_or_else(|| ApiError::BadRequest(format!("Invalid Behavior setting '{behavior_text}'")))?;
    let ttl = match text(&body, "TTL")? {
        "" => Duration::ZERO,
        ttl => weft_api::duration::parse(ttl)
            .map_err(|e| ApiError::BadRequest(format!("Request decode failed: TTL: {e}")))?,
    };
    let node = match text(&body, "Node")? {
        "" => node.clone(),
        named => NodeName::new(named),
    };
    let session = Session {
        id: weft_api::ids::uuid_v4(rand::random()),
        name: text(&body, "Name")?.to_owned(),
        node,
        node_checks,
        service_checks: service_checks.unwrap_or_default(),
        lock_delay_ms: lock_delay(field(&body, "LockDelay"))?.as_millis().min(u128::from(u64::MAX)) as u64,
        behavior,
        ttl_ms: ttl.as_millis().min(u128::from(u64::MAX)) as u64,
        indexes: Default::default(),
    };
    session.validate().map_err(ApiError::BadRequest)?;
    Ok(session)
}

/// `PUT /v1/session/create`: answers `{"ID": ...}`.
pub async fn create(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let session = session_from(&body, &state.node.name)?;
    let id = session.id.clone();
    match authz::write(&state, &acl, Command::SessionCreate(session)).await?.outcome {
        CommandOutcome::Rejected(reason) => Err(ApiError::BadRequest(reason)),
        _ => Ok(Json(json!({"ID": id})).into_response()),
    }
}

/// `PUT /v1/session/destroy/<id>`: `true`, whether or not it existed.
pub async fn destroy(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    authz::write_bool(&state, &acl, Command::SessionDestroy { id }).await
}

/// `PUT /v1/session/renew/<id>`: the session (in a list), or a 404.
pub async fn renew(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let applied = authz::write(&state, &acl, Command::SessionRenew { id: id.clone() }).await?;
    if applied.outcome != CommandOutcome::Cas(true) {
        return Ok((StatusCode::NOT_FOUND, format!("Session id '{id}' not found")).into_response());
    }
    let session = state.backend.store().read().sessions().get(&id).cloned();
    Ok(Json(Value::Array(session.iter().map(session_json).collect())).into_response())
}

/// The sessions `read` picks, those whose node the token may read.
async fn list_of(
    state: &AppState,
    acl: Acl,
    raw: Option<&str>,
    read: impl Fn(&Tables) -> Vec<Session>,
) -> Result<Response, ApiError> {
    let render = move |mut sessions: Vec<Session>| {
        acl.retain(&mut sessions, |acl, s| acl.allows_named(NamedResource::Session, s.node.as_str(), Access::Read));
        Value::Array(sessions.iter().map(session_json).collect())
    };
    blocking_json(state, raw, SESSION_TABLES, move |tables, _| read(tables), render).await
}

/// `GET /v1/session/info/<id>`: the session in a list (empty if unknown).
pub async fn info(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    list_of(&state, acl, raw.as_deref(), move |tables| tables.sessions().get(&id).cloned().into_iter().collect()).await
}

/// `GET /v1/session/node/<node>`.
pub async fn node(
    State(state): State<AppState>,
    acl: Acl,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let node = NodeName::new(node);
    list_of(&state, acl, raw.as_deref(), move |tables| tables.sessions().of_node(&node).cloned().collect()).await
}

/// `GET /v1/session/list`.
pub async fn list(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    list_of(&state, acl, raw.as_deref(), |tables| tables.sessions().iter().cloned().collect()).await
}
