//! `/v1/agent/*`: this agent's own services and checks (registered here,
//! synced to the catalog by anti-entropy), TTL check updates, local health,
//! members, reload and leave.
//!
//! Reads here come from the agent's local state, never from a server; they
//! block on `?hash=` (Consul's content hash) instead of a Raft index.

use std::hash::{Hash, Hasher};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use weft_api::catalog::{Check, HealthStatus, Node, Service};
use weft_api::ids::{CheckId, ServiceId};
use weft_server::liveness::LIVENESS_CHECK_ID;

use weft_acl::Permission;
use weft_api::acl::{Access, NamedResource};

use super::authz::Acl;
use super::catalog::service_json;
use super::error::ApiError;
use super::health::check_json;
use super::query::{filter_items, QueryParams};
use super::AppState;
use crate::decode::{decode_body, decode_value};
use crate::local::definition::{CheckDefinition, DefinitionError, ProxyDefinition, ServiceDefinition, Upstream};
use crate::local::{Reregistration, Source};
use crate::ROLE_META_KEY;

/// Longest `?wait` on a `?hash` blocking query (Consul's).
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

impl From<DefinitionError> for ApiError {
    fn from(error: DefinitionError) -> Self {
        ApiError::BadRequest(error.0)
    }
}

/// A service as the agent API shows it: the catalog's shape, with this
/// agent's datacenter, without Raft indexes (local state has none), and with
/// its `Proxy` block if it is a `connect-proxy`.
fn agent_service_json(state: &AppState, service: &Service) -> Value {
    let mut value = without_indexes(service_json(service));
    value["Datacenter"] = json!(state.config.datacenter);
    if let Some(proxy) = state.local.proxy_definition(&service.id) {
        value["Proxy"] = proxy_json(&proxy);
    }
    value
}

/// Consul's `Proxy` shape; fields not set are left out, as Consul does.
fn proxy_json(proxy: &ProxyDefinition) -> Value {
    let mut value = json!({
        "DestinationServiceName": proxy.destination_service_name,
        "Upstreams": proxy.upstreams.iter().map(upstream_json).collect::<Vec<_>>(),
        "MeshGateway": {},
        "Expose": {},
    });
    let optional = [
        ("DestinationServiceID", proxy.destination_service_id.as_ref().map(|v| json!(v))),
        ("LocalServiceAddress", proxy.local_service_address.as_ref().map(|v| json!(v))),
        ("LocalServicePort", proxy.local_service_port.map(|v| json!(v))),
        ("Mode", proxy.mode.as_ref().map(|v| json!(v))),
        ("Config", proxy.config.clone()),
    ];
    for (field, set) in optional {
        if let Some(set) = set {
            value[field] = set;
        }
    }
    value
}

fn upstream_json(upstream: &Upstream) -> Value {
    let mut value = json!({
        "DestinationType": upstream.destination_type.as_deref().unwrap_or("service"),
        "DestinationName": upstream.destination_name,
        "LocalBindAddress": upstream.local_bind_address.as_deref().unwrap_or("127.0.0.1"),
        "LocalBindPort": upstream.local_bind_port,
    });
    if let Some(datacenter) = &upstream.datacenter {
        value["Datacenter"] = json!(datacenter);
    }
    if let Some(config) = &upstream.config {
        value["Config"] = config.clone();
    }
    value
}

fn agent_check_json(check: &Check) -> Value {
    without_indexes(check_json(check))
}

fn without_indexes(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.remove("CreateIndex");
        map.remove("ModifyIndex");
    }
    value
}

/// Where an answer carries its content hash.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HashIn {
    /// `X-Consul-ContentHash` only.
    Header,
    /// The header and the body's `ContentHash` field (`/v1/agent/service/<id>`),
    /// one value: the hash of the body without that field.
    HeaderAndBody,
}

/// Answers `render()` with its content hash; with `?hash=<same>` it first
/// waits (up to `?wait`) for the local state to change.
async fn hash_blocking(
    state: &AppState,
    raw: Option<&str>,
    hash_in: HashIn,
    render: impl Fn() -> Result<(StatusCode, Value), ApiError>,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw);
    let mut changes = state.local.watch();
    changes.borrow_and_update();
    let (mut status, mut body) = render()?;
    if let Some(wanted) = query.get("hash").filter(|h| !h.is_empty()) {
        let wait = query
            .get("wait")
            .map(weft_api::duration::parse)
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("Invalid wait: {e}")))?
            .unwrap_or(std::time::Duration::from_secs(300))
            .min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        while content_hash(&body) == wanted {
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                break;
            }
            (status, body) = render()?;
        }
    }
    let hash = content_hash(&body);
    if hash_in == HashIn::HeaderAndBody {
        body["ContentHash"] = json!(hash);
    }
    let mut headers = HeaderMap::new();
    if let Ok(hash) = HeaderValue::from_str(&hash) {
        headers.insert("X-Consul-ContentHash", hash);
    }
    let body = match query.get("format") {
        Some("text") => {
            return Ok((status, headers, body["AggregatedStatus"].as_str().unwrap_or("").to_owned()).into_response())
        }
        _ => body,
    };
    Ok((status, headers, Json(body)).into_response())
}

pub(super) fn content_hash(value: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// `GET /v1/agent/services`: this agent's services by ID.
/// `service:write` on `name`.
fn service_write(name: &str) -> Permission {
    Permission::Named(NamedResource::Service, name.to_owned(), Access::Write)
}

/// What changing the local check `id` needs: `service:write` on its
/// service, or `node:write` on this node for a node-level check.
fn check_write(state: &AppState, service_id: Option<&ServiceId>) -> Permission {
    match service_id.and_then(|id| state.local.service(id)) {
        Some(service) => service_write(service.name.as_str()),
        None => Permission::Named(NamedResource::Node, state.node.name.to_string(), Access::Write),
    }
}

pub async fn services(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    hash_blocking(&state, raw.as_deref(), HashIn::Header, || {
        let mut services = state.local.services();
        acl.retain(&mut services, |acl, s| acl.allows_named(NamedResource::Service, s.name.as_str(), Access::Read));
        let items: Vec<Value> = services.iter().map(|s| agent_service_json(&state, s)).collect();
        let items = filter_items(&query, items)?;
        let map: serde_json::Map<String, Value> =
            items.into_iter().map(|s| (s["ID"].as_str().unwrap_or_default().to_owned(), s)).collect();
        Ok((StatusCode::OK, Value::Object(map)))
    })
    .await
}

/// `GET /v1/agent/service/<id>`.
pub async fn service(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = ServiceId::new(id);
    hash_blocking(&state, raw.as_deref(), HashIn::HeaderAndBody, || {
        let service = state.local.service(&id).ok_or_else(|| unknown_service(&id))?;
        acl.require(Permission::Named(NamedResource::Service, service.name.to_string(), Access::Read))?;
        Ok((StatusCode::OK, agent_service_json(&state, &service)))
    })
    .await
}

/// `GET /v1/agent/checks`: this agent's checks by ID.
pub async fn checks(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    hash_blocking(&state, raw.as_deref(), HashIn::Header, || {
        let mut checks = state.local.checks();
        acl.retain(&mut checks, |acl, c| match c.service_name.is_empty() {
            true => acl.allows_named(NamedResource::Node, c.node.as_str(), Access::Read),
            false => acl.allows_named(NamedResource::Service, c.service_name.as_str(), Access::Read),
        });
        let items: Vec<Value> = checks.iter().map(agent_check_json).collect();
        let items = filter_items(&query, items)?;
        let map: serde_json::Map<String, Value> =
            items.into_iter().map(|c| (c["CheckID"].as_str().unwrap_or_default().to_owned(), c)).collect();
        Ok((StatusCode::OK, Value::Object(map)))
    })
    .await
}

/// `PUT /v1/agent/service/register`.
/// `?replace-existing-checks` removes the service's checks the new
/// definition does not have; without it they stay, as in Consul.
pub async fn register_service(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut definition: ServiceDefinition = decode_body(&body)?;
    if acl.enabled() && definition.token.is_none() {
        // Its sidecar asks the agent with the token it was registered with.
        definition.token = Some(acl.secret().to_owned());
    }
    // The service, and its sidecar if it asks for one (Consul's rule).
    let name = definition.name.clone().unwrap_or_default();
    acl.require(service_write(&name))?;
    if definition.connect.as_ref().is_some_and(|c| crate::decode::has_key(c, "sidecarservice")) {
        acl.require(service_write(&format!("{name}{}", weft_api::catalog::SIDECAR_SUFFIX)))?;
    }
    let replace_existing_checks = QueryParams::parse(raw.as_deref()).flag("replace-existing-checks");
    let how = Reregistration::Api { replace_existing_checks };
    let id = state.local.add_service(definition, Source::Api, how)?;
    tracing::info!(service = %id, "service registered");
    Ok(().into_response())
}

/// `PUT /v1/agent/service/deregister/<id>`.
pub async fn deregister_service(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = ServiceId::new(id);
    acl.require(check_write(&state, Some(&id)))?;
    if !state.local.remove_service(&id) {
        return Err(unknown_service(&id));
    }
    tracing::info!(service = %id, "service deregistered");
    Ok(().into_response())
}

/// `PUT /v1/agent/check/register`.
pub async fn register_check(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("Request decode failed: malformed JSON: {e}")))?;
    let definition: CheckDefinition =
        decode_value(value).map_err(|e| ApiError::BadRequest(format!("Request decode failed: {e}")))?;
    acl.require(check_write(&state, definition.service_id.clone().map(ServiceId::new).as_ref()))?;
    state.local.add_check(definition, Source::Api)?;
    Ok(().into_response())
}

/// `PUT /v1/agent/check/deregister/<id>`.
pub async fn deregister_check(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = CheckId::new(id);
    let service = state.local.check(&id).map(|c| c.check.service_id).filter(|s| !s.is_empty());
    acl.require(check_write(&state, service.as_ref()))?;
    if !state.local.remove_check(&id) {
        return Err(ApiError::NotFound(format!("Unknown check ID {:?}", id.as_str())));
    }
    Ok(().into_response())
}

/// `PUT /v1/agent/check/pass|warn|fail/<id>?note=`.
pub async fn ttl_update(
    State(state): State<AppState>,
    acl: Acl,
    Path((verb, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let status = match verb.as_str() {
        "pass" => HealthStatus::Passing,
        "warn" => HealthStatus::Warning,
        "fail" => HealthStatus::Critical,
        other => return Err(ApiError::NotFound(format!("unknown check update {other:?}: use pass, warn or fail"))),
    };
    let note = QueryParams::parse(raw.as_deref()).get("note").unwrap_or_default().to_owned();
    refresh(&state, &acl, &id, status, note)
}

#[derive(Deserialize)]
struct CheckUpdateBody {
    #[serde(rename = "status")]
    status: Option<String>,
    #[serde(rename = "output", default)]
    output: String,
}

/// `PUT /v1/agent/check/update/<id>` with `{"Status": ..., "Output": ...}`.
pub async fn check_update(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: CheckUpdateBody = decode_body(&body)?;
    let text = body.status.unwrap_or_default();
    let status = match HealthStatus::parse(&text) {
        Some(status @ (HealthStatus::Passing | HealthStatus::Warning | HealthStatus::Critical)) => status,
        _ => return Err(ApiError::BadRequest(format!("Invalid Status {text:?}: use passing, warning or critical"))),
    };
    refresh(&state, &acl, &id, status, body.output)
}

fn refresh(state: &AppState, acl: &Acl, id: &str, status: HealthStatus, output: String) -> Result<Response, ApiError> {
    let id = CheckId::new(id);
    let Some(check) = state.local.check(&id) else {
        return Err(ApiError::NotFound(format!("Unknown check ID {:?}", id.as_str())));
    };
    let service = Some(check.check.service_id).filter(|s| !s.is_empty());
    acl.require(check_write(state, service.as_ref()))?;
    state.local.refresh_ttl(&id, status, output)?;
    Ok(().into_response())
}

/// One local service with its checks and their worst status.
fn service_health(state: &AppState, service: &Service) -> (HealthStatus, Value) {
    let checks: Vec<Check> =
        state.local.checks().into_iter().filter(|c| c.service_id == service.id || c.service_id.is_empty()).collect();
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(HealthStatus::Passing);
    let body = json!({
        "AggregatedStatus": worst.as_str(),
        "Service": agent_service_json(state, service),
        "Checks": checks.iter().map(agent_check_json).collect::<Vec<_>>(),
    });
    (worst, body)
}

/// Consul's codes: 200 passing, 429 warning, 503 critical or maintenance.
fn health_code(status: HealthStatus) -> StatusCode {
    match status {
        HealthStatus::Passing => StatusCode::OK,
        HealthStatus::Warning => StatusCode::TOO_MANY_REQUESTS,
        HealthStatus::Critical | HealthStatus::Maintenance => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `GET /v1/agent/health/service/id/<id>`.
pub async fn health_by_id(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = ServiceId::new(id);
    hash_blocking(&state, raw.as_deref(), HashIn::Header, || {
        let service = state.local.service(&id).ok_or_else(|| unknown_service(&id))?;
        acl.require(Permission::Named(NamedResource::Service, service.name.to_string(), Access::Read))?;
        let (worst, body) = service_health(&state, &service);
        Ok((health_code(worst), body))
    })
    .await
}

/// `GET /v1/agent/health/service/name/<name>`: every local instance.
pub async fn health_by_name(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Named(NamedResource::Service, name.clone(), Access::Read))?;
    hash_blocking(&state, raw.as_deref(), HashIn::Header, || {
        let instances: Vec<(HealthStatus, Value)> = state
            .local
            .services()
            .iter()
            .filter(|s| s.name.as_str() == name)
            .map(|s| service_health(&state, s))
            .collect();
        if instances.is_empty() {
            return Err(ApiError::NotFound(format!("ServiceName {name:?} not found on this agent")));
        }
        let worst = instances.iter().map(|(s, _)| *s).max().unwrap_or(HealthStatus::Passing);
        let mut body = Value::Array(instances.into_iter().map(|(_, b)| b).collect());
        if QueryParams::parse(raw.as_deref()).get("format") == Some("text") {
            body = json!({"AggregatedStatus": worst.as_str()});
        }
        Ok((health_code(worst), body))
    })
    .await
}

/// `GET /v1/agent/members`: every node with an agent (one that has a
/// liveness check), and every node that left gracefully, with Consul's
/// member status codes (1 alive, 3 left, 4 failed).
pub async fn members(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    let tables = state.backend.store().read();
    let catalog = tables.catalog();
    let mut members: Vec<(&Node, MemberStatus)> = catalog
        .checks()
        .filter(|c| c.id.as_str() == LIVENESS_CHECK_ID)
        .filter_map(|check| Some((catalog.node(&check.node)?, MemberStatus::of(check))))
        .chain(catalog.left_nodes().map(|node| (node, MemberStatus::Left)))
        .collect();
    members.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    acl.retain(&mut members, |acl, (node, _)| acl.allows_named(NamedResource::Node, node.name.as_str(), Access::Read));
    let members: Vec<Value> = members.into_iter().map(|(node, status)| member_json(node, status)).collect();
    drop(tables);
    Ok(Json(filter_items(&query, members)?).into_response())
}

/// A member's state, with Consul's (Serf's) codes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MemberStatus {
    Alive = 1,
    Left = 3,
    Failed = 4,
}

impl MemberStatus {
    /// An agent's state by its liveness check (`liveness`): alive while it passes.
    pub(super) fn of(liveness: &Check) -> Self {
        match liveness.status {
            HealthStatus::Passing => MemberStatus::Alive,
            _ => MemberStatus::Failed,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

fn member_json(node: &Node, status: MemberStatus) -> Value {
    let role = node.meta.get(ROLE_META_KEY).map(String::as_str).unwrap_or("client");
    json!({
        "Name": node.name,
        "Addr": node.address,
        "Port": 0,
        "Tags": {"role": if role == "server" { "consul" } else { "node" }, "dc": node.datacenter, "id": node.id},
        "Status": status as u8,
        "StatusText": status.as_str(),
    })
}

/// `PUT /v1/agent/reload`: re-reads the config files' services and checks.
/// `agent:write` on this node.
fn agent_write(state: &AppState) -> Permission {
    Permission::Named(NamedResource::Agent, state.node.name.to_string(), Access::Write)
}

pub async fn reload(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    acl.require(agent_write(&state))?;
    state.local.reload(&state.config).map_err(|errors| ApiError::BadRequest(errors.to_string()))?;
    Ok(().into_response())
}

/// `PUT /v1/agent/leave`: deregisters this node (recorded as left; a server
/// also leaves the Raft peers) and shuts the agent down. Answers once the
/// leave has been applied.
pub async fn leave(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    acl.require(agent_write(&state))?;
    tracing::info!("leave requested through the API");
    state.leave.leave().await.map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok(().into_response())
}

fn unknown_service(id: &ServiceId) -> ApiError {
    ApiError::NotFound(format!("unknown service ID: {}", id.as_str()))
}

/// `PUT /v1/agent/maintenance?enable=true|false&reason=`: this node's
/// maintenance mode (a `_node_maintenance` check). `node:write` on this node.
pub async fn node_maintenance(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Named(NamedResource::Node, state.node.name.to_string(), Access::Write))?;
    let (enable, reason) = maintenance_query(raw.as_deref())?;
    match enable {
        true => state.local.enable_maintenance(None, &reason)?,
        false => state.local.disable_maintenance(None)?,
    }
    tracing::info!(enable, "node maintenance mode set through the API");
    Ok(().into_response())
}

/// `PUT /v1/agent/service/maintenance/<id>?enable=true|false&reason=`: a
/// service's maintenance mode (`_service_maintenance:<id>`). `service:write`.
pub async fn service_maintenance(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = ServiceId::new(id);
    let service = state.local.service(&id).ok_or_else(|| unknown_service(&id))?;
    acl.require(service_write(service.name.as_str()))?;
    let (enable, reason) = maintenance_query(raw.as_deref())?;
    match enable {
        true => state.local.enable_maintenance(Some(&id), &reason)?,
        false => state.local.disable_maintenance(Some(&id))?,
    }
    tracing::info!(service = %id, enable, "service maintenance mode set through the API");
    Ok(().into_response())
}

/// `?enable=` (required; Go's boolean spellings, as Consul parses it) and
/// `?reason=`.
fn maintenance_query(raw: Option<&str>) -> Result<(bool, String), ApiError> {
    let query = QueryParams::parse(raw);
    let enable = match query.get("enable").filter(|text| !text.is_empty()) {
        None => return Err(ApiError::BadRequest("Missing value for enable".into())),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => true,
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => false,
        Some(other) => return Err(ApiError::BadRequest(format!("Invalid value for enable: {other:?}"))),
    };
    Ok((enable, query.get("reason").unwrap_or_default().to_owned()))
}
