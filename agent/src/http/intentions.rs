//! `/v1/connect/intentions/*` and `/v1/agent/connect/authorize`: Consul's
//! intentions API (service-to-service authorization rules) over the
//! replicated intentions table, in Consul's JSON shapes.
//!
//! Intentions are addressed by their (source, destination) pair (`/exact`,
//! Consul 1.9+) or by the ID Weft gives each one (the legacy endpoints). The
//! state store keeps a pair to one intention and refuses a second; these
//! handlers keep an existing pair's ID on upsert and turn a lost race into a
//! retry (upsert) or a 409 (create). Every decision (`check`, `authorize`)
//! is `MeshTables::authorize`: the highest-precedence intention that
//! applies, else the mesh-wide default.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::{RaftIndex, ServiceName};
use weft_api::intentions::{evaluation_order, HeaderTest, IntentionRule, PathMatch, Permission, RuleOrigin, Verdict};
use weft_api::mesh::{Intention, IntentionAction};
use weft_server::store::{is_wildcard, precedence, rule_of, validate_intention, validate_name, Table, Tables};
use weft_server::ReadConsistency;

use weft_acl::Permission as AclPermission;
use weft_api::acl::{Access, NamedResource};

use super::authz::{self, Acl};
use super::error::ApiError;
use super::query::{check_datacenter, meta_headers, QueryParams, ReadOptions};
use super::read::blocking_json;
use super::AppState;
use crate::decode::decode_body;

/// Which side of intentions a match query looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MatchBy {
    Source,
    Destination,
}

/// The only namespace (and partition) Weft has.
const DEFAULT_NAMESPACE: &str = "default";

// ---- request bodies (field names normalized: see `decode`) ----

/// `PUT /v1/connect/intentions/exact`: the pair comes from the query.
#[derive(Deserialize)]
struct ExactBody {
    #[serde(rename = "action")]
    action: Option<String>,
    #[serde(rename = "description")]
    description: Option<String>,
    #[serde(rename = "meta")]
    meta: Option<BTreeMap<String, String>>,
}

/// The legacy endpoints' body: a whole intention.
#[derive(Deserialize)]
struct LegacyBody {
    #[serde(rename = "id")]
    id: Option<String>,
    #[serde(rename = "sourcename")]
    source: Option<String>,
    #[serde(rename = "destinationname")]
    destination: Option<String>,
    #[serde(rename = "sourcens")]
    source_ns: Option<String>,
    #[serde(rename = "destinationns")]
    destination_ns: Option<String>,
    #[serde(rename = "sourcetype")]
    source_type: Option<String>,
    #[serde(rename = "action")]
    action: Option<String>,
    #[serde(rename = "description")]
    description: Option<String>,
    #[serde(rename = "meta")]
    meta: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct AuthorizeBody {
    #[serde(rename = "target")]
    target: Option<String>,
    #[serde(rename = "clientcerturi")]
    client_cert_uri: Option<String>,
}

// ---- Consul's shapes ----

fn action_str(action: IntentionAction) -> &'static str {
    match action {
        IntentionAction::Allow => "allow",
        IntentionAction::Deny => "deny",
    }
}

/// An intention as Consul answers it (without `CreatedAt`/`UpdatedAt`/`Hash`:
/// the store keeps no clock).
pub fn intention_json(intention: &Intention) -> Value {
    json!({
        "ID": intention.id,
        "Description": intention.description,
        "SourceNS": DEFAULT_NAMESPACE,
        "SourceName": intention.source,
        "DestinationNS": DEFAULT_NAMESPACE,
        "DestinationName": intention.destination,
        "SourceType": "consul",
        "Action": action_str(intention.action),
        "Meta": intention.meta,
        "Precedence": precedence(intention),
        "CreateIndex": intention.indexes.create.get(),
        "ModifyIndex": intention.indexes.modify.get(),
    })
}

/// `DENY web => api (ID: ..., Precedence: 9)`, Consul's way, for an L4 rule.
fn describe(rule: &IntentionRule) -> String {
    let action = match &rule.verdict {
        Verdict::Action(action) => action_str(*action).to_uppercase(),
        Verdict::Permissions(_) => "L7".to_owned(),
    };
    let origin = match &rule.origin {
        RuleOrigin::Intention { id } => format!("ID: {id}"),
        RuleOrigin::ConfigEntry => format!("service-intentions {}", rule.destination),
    };
    format!("{action} {} => {} ({origin}, Precedence: {})", rule.source, rule.destination, rule.precedence())
}

// ---- input ----

fn parse_action(action: Option<&str>) -> Result<IntentionAction, ApiError> {
    match action.map(str::trim) {
        Some(text) if text.eq_ignore_ascii_case("allow") => Ok(IntentionAction::Allow),
        Some(text) if text.eq_ignore_ascii_case("deny") => Ok(IntentionAction::Deny),
        Some(text) if !text.is_empty() => {
            Err(ApiError::BadRequest(format!("Action must be set to 'allow' or 'deny', not {text:?}")))
        }
        _ => Err(ApiError::BadRequest("Action must be set to 'allow' or 'deny'".into())),
    }
}

/// A required query parameter naming a service (or `*`).
fn name_param(query: &QueryParams, param: &str) -> Result<ServiceName, ApiError> {
    let value = query.get(param).filter(|v| !v.is_empty());
    let name = ServiceName::new(
        value.ok_or_else(|| ApiError::BadRequest(format!("required query parameter '{param}' not set")))?,
    );
    validate_name(&format!("?{param}"), &name).map_err(ApiError::BadRequest)?;
    Ok(name)
}

/// `?source=` and `?destination=`.
fn pair_params(query: &QueryParams) -> Result<(ServiceName, ServiceName), ApiError> {
    Ok((name_param(query, "source")?, name_param(query, "destination")?))
}

/// Only the default namespace exists: an empty or `default` one is fine.
fn check_namespace(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        None | Some("") | Some(DEFAULT_NAMESPACE) => Ok(()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{field} {other:?}: Weft has no namespaces or partitions but {DEFAULT_NAMESPACE:?}"
        ))),
    }
}

/// A legacy body as an intention (the ID is the caller's to set).
fn legacy_intention(body: LegacyBody) -> Result<Intention, ApiError> {
    check_namespace("SourceNS", body.source_ns.as_deref())?;
    check_namespace("DestinationNS", body.destination_ns.as_deref())?;
    match body.source_type.as_deref() {
        None | Some("") | Some("consul") => {}
        Some(other) => return Err(ApiError::BadRequest(format!("SourceType must be set to 'consul', not {other:?}"))),
    }
    let intention = Intention {
        id: String::new(),
        source: ServiceName::new(body.source.unwrap_or_default()),
        destination: ServiceName::new(body.destination.unwrap_or_default()),
        action: parse_action(body.action.as_deref())?,
        description: body.description.unwrap_or_default(),
        meta: body.meta.unwrap_or_default(),
        indexes: Default::default(),
    };
    validate_intention(&intention).map_err(ApiError::BadRequest)?;
    Ok(intention)
}

/// A random UUID (version 4) in its usual text form: Consul's intention IDs.
fn new_intention_id() -> String {
    weft_api::ids::uuid_v4(rand::random())
}

// ---- writes ----

/// The ID this agent's state has for a pair.
fn id_for_pair(state: &AppState, source: &ServiceName, destination: &ServiceName) -> Option<String> {
    state.backend.store().read().mesh().intention_exact(source, destination).map(|i| i.id.clone())
}

/// Makes this agent's state current with the leader's before a write
/// decides from it (is there an intention for this pair, under which ID).
async fn catch_up(state: &AppState) -> Result<(), ApiError> {
    Ok(state.backend.read_barrier(ReadConsistency::Default).await?)
}

/// What a refused intention write means: another ID holds the pair (the
/// state says so after the write), or the request itself is wrong.
enum Refused {
    PairTaken(String),
    Invalid(String),
}

async fn write_intention(
    state: &AppState,
    acl: &Acl,
    intention: &Intention,
) -> Result<Result<RaftIndex, Refused>, ApiError> {
    let applied = authz::write(state, acl, Command::IntentionUpsert(intention.clone())).await?;
    match applied.outcome {
        CommandOutcome::Rejected(reason) => {
            // The write waited for this agent to apply it: the state here is current.
            Ok(Err(match id_for_pair(state, &intention.source, &intention.destination) {
                Some(other) if other != intention.id => Refused::PairTaken(other),
                _ => Refused::Invalid(reason),
            }))
        }
        _ => Ok(Ok(applied.index)),
    }
}

fn taken(intention: &Intention, other: &str) -> ApiError {
    ApiError::Conflict(format!(
        "An intention from {} to {} already exists (ID {other}): replace it with \
         PUT /v1/connect/intentions/exact, or delete it first",
        intention.source, intention.destination
    ))
}

/// Writes `intention` for its pair under the pair's existing ID, or a new
/// one. A concurrent create of the same pair makes the first try lose; the
/// second takes the winner's ID.
async fn upsert_by_pair(state: &AppState, acl: &Acl, mut intention: Intention) -> Result<RaftIndex, ApiError> {
    catch_up(state).await?;
    intention.id = id_for_pair(state, &intention.source, &intention.destination).unwrap_or_else(new_intention_id);
    for _ in 0..2 {
        match write_intention(state, acl, &intention).await? {
            Ok(index) => return Ok(index),
            Err(Refused::PairTaken(winner)) => intention.id = winner,
            Err(Refused::Invalid(reason)) => return Err(ApiError::BadRequest(reason)),
        }
    }
    Err(taken(&intention, &intention.id))
}

/// Deletes by ID; the answer is `true`.
async fn delete_id(state: &AppState, acl: &Acl, id: String) -> Result<Response, ApiError> {
    let applied = authz::write(state, acl, Command::IntentionDelete { id }).await?;
    match applied.outcome {
        CommandOutcome::Rejected(reason) => Err(ApiError::BadRequest(reason)),
        _ => Ok((meta_headers(&state.backend, applied.index), Json(true)).into_response()),
    }
}

/// `PUT /v1/connect/intentions/exact?source=&destination=`: create or
/// replace the pair's intention (keeping its ID). Answers `true`.
pub async fn put_exact(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    check_datacenter(&query, &state.backend)?;
    let (source, destination) = pair_params(&query)?;
    let body: ExactBody = decode_body(&body)?;
    let intention = Intention {
        id: String::new(),
        source,
        destination,
        action: parse_action(body.action.as_deref())?,
        description: body.description.unwrap_or_default(),
        meta: body.meta.unwrap_or_default(),
        indexes: Default::default(),
    };
    validate_intention(&intention).map_err(ApiError::BadRequest)?;
    let index = upsert_by_pair(&state, &acl, intention).await?;
    Ok((meta_headers(&state.backend, index), Json(true)).into_response())
}

/// `DELETE /v1/connect/intentions/exact?source=&destination=`: `true`,
/// whether or not the pair had an intention (Consul's by-name deletes are
/// idempotent).
pub async fn delete_exact(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    check_datacenter(&query, &state.backend)?;
    let (source, destination) = pair_params(&query)?;
    acl.require(AclPermission::Intentions(destination.to_string(), Access::Write))?;
    catch_up(&state).await?;
    match id_for_pair(&state, &source, &destination) {
        Some(id) => delete_id(&state, &acl, id).await,
        None => {
            let index = state.backend.store().read().index(Table::Intentions);
            Ok((meta_headers(&state.backend, index), Json(true)).into_response())
        }
    }
}

/// `POST /v1/connect/intentions` (legacy create): `{"ID": ...}`, or 409 if
/// the pair already has an intention.
pub async fn create(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let body: LegacyBody = decode_body(&body)?;
    if body.id.as_deref().is_some_and(|id| !id.is_empty()) {
        return Err(ApiError::BadRequest("ID must be empty when creating a new intention".into()));
    }
    let mut intention = legacy_intention(body)?;
    catch_up(&state).await?;
    if let Some(other) = id_for_pair(&state, &intention.source, &intention.destination) {
        return Err(taken(&intention, &other));
    }
    intention.id = new_intention_id();
    match write_intention(&state, &acl, &intention).await? {
        Ok(index) => Ok((meta_headers(&state.backend, index), Json(json!({"ID": intention.id}))).into_response()),
        Err(Refused::PairTaken(other)) => Err(taken(&intention, &other)),
        Err(Refused::Invalid(reason)) => Err(ApiError::BadRequest(reason)),
    }
}

/// `PUT /v1/connect/intentions/<id>` (legacy update): the whole intention,
/// possibly for another pair. `{"ID": ...}`; 404 if there is no such ID.
pub async fn update_by_id(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let body: LegacyBody = decode_body(&body)?;
    if body.id.as_deref().is_some_and(|body_id| !body_id.is_empty() && body_id != id) {
        return Err(ApiError::BadRequest(format!("The body's ID does not match the path's ({id})")));
    }
    let mut intention = legacy_intention(body)?;
    catch_up(&state).await?;
    if state.backend.store().read().mesh().intention(&id).is_none() {
        return Err(ApiError::NotFound(format!("Cannot modify non-existent intention: '{id}'")));
    }
    intention.id = id;
    match write_intention(&state, &acl, &intention).await? {
        Ok(index) => Ok((meta_headers(&state.backend, index), Json(json!({"ID": intention.id}))).into_response()),
        Err(Refused::PairTaken(other)) => Err(taken(&intention, &other)),
        Err(Refused::Invalid(reason)) => Err(ApiError::BadRequest(reason)),
    }
}

/// `DELETE /v1/connect/intentions/<id>` (legacy): `true`; 404 if there is
/// no such ID.
pub async fn delete_by_id(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    catch_up(&state).await?;
    if state.backend.store().read().mesh().intention(&id).is_none() {
        return Err(ApiError::NotFound(format!("Cannot delete non-existent intention: '{id}'")));
    }
    delete_id(&state, &acl, id).await
}

// ---- reads ----

/// One intention, read as `?stale`/`?consistent` ask; 404 if none.
async fn read_one(
    state: &AppState,
    acl: &Acl,
    raw: Option<&str>,
    pick: impl FnOnce(&Tables) -> Option<Intention>,
    missing: impl FnOnce() -> ApiError,
) -> Result<Response, ApiError> {
    let options = ReadOptions::from_query(&QueryParams::parse(raw), &state.backend)?;
    options.barrier(&state.backend).await?;
    let (found, index) = {
        let tables = state.backend.store().read();
        (pick(&tables), tables.index(Table::Intentions))
    };
    match found {
        Some(intention) => {
            acl.require(AclPermission::Intentions(intention.destination.to_string(), Access::Read))?;
            Ok((meta_headers(&state.backend, index), Json(intention_json(&intention))).into_response())
        }
        None => {
            acl.public();
            Err(missing())
        }
    }
}

/// `GET /v1/connect/intentions/exact?source=&destination=`.
pub async fn get_exact(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let (source, destination) = pair_params(&QueryParams::parse(raw.as_deref()))?;
    let missing = || ApiError::NotFound(format!("Intention not found: no intention from {source} to {destination}"));
    read_one(&state, &acl, raw.as_deref(), |t| t.mesh().intention_exact(&source, &destination).cloned(), missing).await
}

/// `GET /v1/connect/intentions/<id>` (legacy).
pub async fn get_by_id(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let missing = || ApiError::NotFound(format!("Intention not found: no intention has ID {id:?}"));
    read_one(&state, &acl, raw.as_deref(), |t| t.mesh().intention(&id).cloned(), missing).await
}

/// An intention as listed: a record of the intentions table, or a source
/// of a `service-intentions` config entry.
#[derive(Clone, PartialEq)]
enum Listed {
    Table(Intention),
    Entry(IntentionRule),
}

impl Listed {
    fn rule(&self) -> IntentionRule {
        match self {
            Listed::Table(intention) => rule_of(intention),
            Listed::Entry(rule) => rule.clone(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Listed::Table(intention) => intention_json(intention),
            Listed::Entry(rule) => {
                let mut listed = json!({
                    "ID": "",
                    "Description": "",
                    "SourceNS": DEFAULT_NAMESPACE,
                    "SourceName": rule.source,
                    "DestinationNS": DEFAULT_NAMESPACE,
                    "DestinationName": rule.destination,
                    "SourceType": "consul",
                    "Precedence": rule.precedence(),
                });
                match &rule.verdict {
                    Verdict::Action(action) => listed["Action"] = json!(action_str(*action)),
                    Verdict::Permissions(permissions) => listed["Permissions"] = permissions_json(permissions),
                }
                listed
            }
        }
    }
}

/// Every intention (table and config entries) in evaluation order.
fn all_listed(tables: &Tables) -> Vec<Listed> {
    let mesh = tables.mesh();
    let mut found: Vec<Listed> = mesh.intentions().cloned().map(Listed::Table).collect();
    found.extend(mesh.config_entry_rules().into_iter().map(Listed::Entry));
    found.sort_by(|a, b| evaluation_order(&a.rule(), &b.rule()));
    found
}

/// L7 permissions in Consul's shape.
fn permissions_json(permissions: &[Permission]) -> Value {
    let permission_json = |permission: &Permission| {
        let mut http = Map::new();
        match &permission.http.path {
            Some(PathMatch::Exact(path)) => http.insert("PathExact".into(), json!(path)),
            Some(PathMatch::Prefix(prefix)) => http.insert("PathPrefix".into(), json!(prefix)),
            Some(PathMatch::Regex(regex)) => http.insert("PathRegex".into(), json!(regex)),
            None => None,
        };
        if !permission.http.methods.is_empty() {
            http.insert("Methods".into(), json!(permission.http.methods));
        }
        if !permission.http.headers.is_empty() {
            let headers: Vec<Value> = permission
                .http
                .headers
                .iter()
                .map(|header| {
                    let mut entry = json!({"Name": header.name});
                    match &header.test {
                        HeaderTest::Present => entry["Present"] = json!(true),
                        HeaderTest::Exact(v) => entry["Exact"] = json!(v),
                        HeaderTest::Prefix(v) => entry["Prefix"] = json!(v),
                        HeaderTest::Suffix(v) => entry["Suffix"] = json!(v),
                        HeaderTest::Regex(v) => entry["Regex"] = json!(v),
                    }
                    if header.invert {
                        entry["Invert"] = json!(true);
                    }
                    entry
                })
                .collect();
            http.insert("Header".into(), Value::Array(headers));
        }
        json!({"Action": action_str(permission.action), "HTTP": http})
    };
    Value::Array(permissions.iter().map(permission_json).collect())
}

/// The tables intentions are read from.
const INTENTION_TABLES: &[Table] = &[Table::Intentions, Table::ConfigEntries];

/// `GET /v1/connect/intentions`: every intention in evaluation order, those
/// of `service-intentions` config entries included; blocking, `?filter=`.
/// Whether `acl` may read `listed` (by its destination).
fn may_read(acl: &Acl, listed: &Listed) -> bool {
    acl.allows(&AclPermission::Intentions(listed.rule().destination.to_string(), Access::Read))
}

pub async fn list(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let read = |tables: &Tables, _: &QueryParams| all_listed(tables);
    let render = |mut found: Vec<Listed>| {
        acl.retain(&mut found, may_read);
        Value::Array(found.iter().map(Listed::to_json).collect())
    };
    blocking_json(&state, raw.as_deref(), INTENTION_TABLES, read, render).await
}

/// `GET /v1/connect/intentions/match?by=source|destination&name=X[&name=Y]`:
/// `{"X": [intentions that apply to X, in evaluation order], ...}`; blocking.
pub async fn matches(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    let by = match query.get("by") {
        None | Some("") => return Err(ApiError::BadRequest("required query parameter 'by' not set".into())),
        Some("source") => MatchBy::Source,
        Some("destination") => MatchBy::Destination,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "'by' parameter must be one of 'source' or 'destination', not {other:?}"
            )))
        }
    };
    let names: Vec<ServiceName> = query.all("name").filter(|n| !n.is_empty()).map(ServiceName::new).collect();
    if names.is_empty() {
        return Err(ApiError::BadRequest("required query parameter 'name' not set".into()));
    }
    for name in &names {
        validate_name("?name", name).map_err(ApiError::BadRequest)?;
    }
    let read = |tables: &Tables, _: &QueryParams| -> Vec<(ServiceName, Vec<Listed>)> {
        let all = all_listed(tables);
        let applies = |listed: &Listed, name: &ServiceName| {
            let rule = listed.rule();
            let side = match by {
                MatchBy::Source => rule.source,
                MatchBy::Destination => rule.destination,
            };
            &side == name || is_wildcard(&side)
        };
        names.iter().map(|n| (n.clone(), all.iter().filter(|l| applies(l, n)).cloned().collect())).collect()
    };
    let render = |found: Vec<(ServiceName, Vec<Listed>)>| {
        acl.public();
        let map: Map<String, Value> = found
            .into_iter()
            .map(|(name, mut listed)| {
                acl.retain(&mut listed, may_read);
                (name.to_string(), listed.iter().map(Listed::to_json).collect())
            })
            .collect();
        Value::Object(map)
    };
    blocking_json(&state, raw.as_deref(), INTENTION_TABLES, read, render).await
}

/// `GET /v1/connect/intentions/check?source=&destination=`: `{"Allowed": bool}`,
/// the default action applying when no intention does.
pub async fn check(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let (source, destination) = pair_params(&QueryParams::parse(raw.as_deref()))?;
    acl.require(AclPermission::Named(NamedResource::Service, destination.to_string(), Access::Read))?;
    let read = |tables: &Tables, _: &QueryParams| tables.mesh().authorize(&source, &destination).allowed();
    let render = |allowed: bool| json!({"Allowed": allowed});
    blocking_json(&state, raw.as_deref(), INTENTION_TABLES, read, render).await
}

// ---- the agent's authorize endpoint ----

/// The service a SPIFFE service ID names:
/// `spiffe://<trust domain>[/ap/<partition>]/ns/<namespace>/dc/<dc>/svc/<service>`.
/// Only the default namespace and partition exist in Weft.
fn spiffe_service(uri: &str) -> Result<ServiceName, ApiError> {
    let invalid = || {
        ApiError::BadRequest(format!("ClientCertURI {uri:?} is not a valid Connect service identifier (spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>)"))
    };
    let rest = uri.strip_prefix("spiffe://").ok_or_else(invalid)?;
    let (trust_domain, path) = rest.split_once('/').ok_or_else(invalid)?;
    if trust_domain.is_empty() || path.contains(['?', '#']) {
        return Err(invalid());
    }
    let segments: Vec<&str> = path.split('/').collect();
    let segments = match segments.as_slice() {
        ["ap", partition, rest @ ..] => {
            check_namespace("ClientCertURI's partition", Some(partition))?;
            rest
        }
        all => all,
    };
    let ["ns", namespace, "dc", datacenter, "svc", service] = segments else { return Err(invalid()) };
    if datacenter.is_empty() || service.is_empty() {
        return Err(invalid());
    }
    check_namespace("ClientCertURI's namespace", Some(namespace))?;
    let service = ServiceName::new(*service);
    if is_wildcard(&service) {
        return Err(invalid());
    }
    validate_name("ClientCertURI's service", &service).map_err(ApiError::BadRequest)?;
    Ok(service)
}

/// `POST /v1/agent/connect/authorize` with `{"Target": "api", "ClientCertURI":
/// "spiffe://.../svc/web"}`: may the client's service connect to Target?
/// `{"Authorized": bool, "Reason": ...}`. Read from this agent's copy of the
/// state, without a round trip to the leader: proxies ask on every inbound
/// connection (Consul answers from the agent's cache).
pub async fn authorize(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    let body: AuthorizeBody = decode_body(&body)?;
    let target = ServiceName::new(
        body.target
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::BadRequest("Target service must be specified".into()))?,
    );
    validate_name("Target", &target).map_err(ApiError::BadRequest)?;
    if is_wildcard(&target) {
        return Err(ApiError::BadRequest("Target must name one service, not '*'".into()));
    }
    // Consul: only the target's own (who may write it) asks.
    acl.require(AclPermission::Named(NamedResource::Service, target.to_string(), Access::Write))?;
    let uri = body
        .client_cert_uri
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("ClientCertURI must be given".into()))?;
    let source = spiffe_service(&uri)?;
    let set = state.backend.store().read().mesh().intention_set(&target);
    let decision = set.decide_l4(&source);
    let reason = match set.rule_for(&source) {
        Some(rule) if !rule.is_l7() => format!("Matched intention: {}", describe(rule)),
        _ => decision.reason.clone(),
    };
    Ok(Json(json!({"Authorized": decision.allowed(), "Reason": reason})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_service_ids_parse_and_others_are_refused() {
        for uri in [
            "spiffe://11111111-2222.weft/ns/default/dc/dc1/svc/web",
            "spiffe://any/ap/default/ns/default/dc/dc2/svc/web",
        ] {
            assert_eq!(spiffe_service(uri).unwrap(), ServiceName::new("web"), "{uri}");
        }
        for uri in [
            "https://x/ns/default/dc/dc1/svc/web",
            "spiffe:///ns/default/dc/dc1/svc/web",
            "spiffe://x/ns/default/dc/dc1/svc/",
            "spiffe://x/ns/default/dc/dc1/svc/web/extra",
            "spiffe://x/ns/default/dc/dc1/agent/client/dc/dc1",
            "spiffe://x",
            "spiffe://x/ns/other/dc/dc1/svc/web",
            "spiffe://x/ns/default/dc/dc1/svc/*",
            "spiffe://x/ns/default/dc/dc1/svc/web?x=1",
        ] {
            let error = spiffe_service(uri).unwrap_err();
            assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST, "{uri}");
        }
    }

    #[test]
    fn intention_ids_are_uuid_v4() {
        let id = new_intention_id();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, new_intention_id());
    }

    #[test]
    fn actions_parse_in_any_case_and_anything_else_is_a_400() {
        assert_eq!(parse_action(Some("allow")).unwrap(), IntentionAction::Allow);
        assert_eq!(parse_action(Some("DENY")).unwrap(), IntentionAction::Deny);
        for bad in [None, Some(""), Some("permit")] {
            let error = parse_action(bad).unwrap_err().to_string();
            assert!(error.contains("Action"), "{error}");
        }
    }
}
