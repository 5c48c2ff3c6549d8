//! `/v1/event/*`: user events, in Consul's shapes. Firing one is a write
//! through the servers (`authz::write`, `event:write` on its name); every
//! agent receives it on its state stream and lists it if the event's
//! filters select its node and services (`weft_api::event`).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use weft_api::acl::{Access, NamedResource};
use weft_api::command::{Command, CommandOutcome};
use weft_api::event::{event_index, UserEvent, EVENT_VERSION};
use weft_api::ids::RaftIndex;
use weft_server::store::{FiredEvent, Table, Tables};

use super::authz::{self, Acl};
use super::error::ApiError;
use super::query::{check_datacenter, meta_headers, QueryParams, ReadOptions};
use super::AppState;

fn event_json(event: &UserEvent, ltime: RaftIndex) -> Value {
    let payload = match event.payload.is_empty() {
        true => Value::Null,
        false => Value::String(base64::engine::general_purpose::STANDARD.encode(&event.payload)),
    };
    json!({
        "ID": event.id,
        "Name": event.name,
        "Payload": payload,
        "NodeFilter": event.node_filter,
        "ServiceFilter": event.service_filter,
        "TagFilter": event.tag_filter,
        "Version": EVENT_VERSION,
        "LTime": ltime.get(),
    })
}

/// `PUT /v1/event/fire/<name>?node=&service=&tag=`, the body its payload:
/// answers the event as fired, its `LTime` the Raft index that fired it.
/// A name, size or filter Consul refuses is a 400 before any write: the
/// servers check every event before proposing it (`check_proposal`).
pub async fn fire(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    payload: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    check_datacenter(&query, &state.backend)?;
    let filter = |name: &str| query.get(name).unwrap_or_default().to_owned();
    let event = UserEvent {
        id: weft_api::ids::uuid_v4(rand::random()),
        name,
        payload: payload.to_vec(),
        node_filter: filter("node"),
        service_filter: filter("service"),
        tag_filter: filter("tag"),
    };
    let applied = authz::write(&state, &acl, Command::FireEvent(event.clone())).await?;
    match applied.outcome {
        CommandOutcome::Rejected(reason) => Err(ApiError::BadRequest(reason)),
        _ => Ok(Json(event_json(&event, applied.index)).into_response()),
    }
}

/// `GET /v1/event/list?name=`: the events this agent received (the last
/// 256 fired whose filters select it), oldest first, those the token may
/// not `event:read` left out. A blocking query on Consul's event index,
/// which is not a Raft index: it returns once the newest event listed
/// differs from the one `?index` names.
pub async fn list(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    let options = ReadOptions::from_query(&query, &state.backend)?;
    let name = query.get("name").filter(|name| !name.is_empty()).map(str::to_owned);
    let node = state.node.name.clone();
    let read = |tables: &Tables| {
        let services = tables.catalog().node_services(&node).map(|n| n.services).unwrap_or_default();
        let services = || services.iter().map(|s| (s.name.as_str(), s.tags.as_slice()));
        let mut received: Vec<FiredEvent> = tables
            .events()
            .fired()
            .filter(|fired| name.as_ref().is_none_or(|name| fired.event.name == *name))
            .filter(|fired| fired.event.selects(node.as_str(), services()))
            .cloned()
            .collect();
        acl.retain(&mut received, |acl, fired| acl.allows_named(NamedResource::Event, &fired.event.name, Access::Read));
        let index = RaftIndex(event_index(received.last().map(|fired| fired.event.id.as_str())));
        (received, index)
    };
    let moved = |index: RaftIndex| options.min_index == RaftIndex::ZERO || index != options.min_index;
    let result = state.backend.store().read_until(&[Table::Events], options.wait, read, moved).await;
    let body: Vec<Value> = result.value.iter().map(|fired| event_json(&fired.event, fired.ltime)).collect();
    Ok((meta_headers(&state.backend, result.index), Json(body)).into_response())
}
