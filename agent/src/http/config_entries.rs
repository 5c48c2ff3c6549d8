//! `/v1/config/*`: Consul's config entries API (`service-defaults`,
//! `service-router`, the `mesh` entry, ...) over the replicated
//! config-entries table.
//!
//! A body is kept as written, in Consul's JSON, minus `Kind`, `Name` and
//! the indexes: the record holds those, and reads put them back from it
//! (`Kind`, `Name`, `CreateIndex`, `ModifyIndex`) whatever case the write
//! used. The rules for each kind are `weft_server::store`'s
//! `validate_config_entry`. This handler runs them before the Raft write so
//! it can answer with a 400, and the state store runs them again when it
//! applies the write.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};
use weft_api::command::Command;
use weft_api::mesh::ConfigEntry;
use weft_server::store::{validate_config_entry, validate_kind, Table, Tables};
use weft_server::ReadConsistency;

use weft_acl::Permission;
use weft_api::acl::{Access, NamedResource};

use super::authz::{self, Acl};
use super::error::ApiError;
use super::query::{check_datacenter, meta_headers, QueryParams, ReadOptions};
use super::read::blocking_json;
use super::AppState;
use crate::decode::normalize_key;

/// Normalized names of the fields the record holds rather than the body.
const RECORD_FIELDS: [&str; 4] = ["kind", "name", "createindex", "modifyindex"];

// ---- Consul's shapes ----

/// An entry as Consul answers it: the body as written, with `Kind`, `Name`,
/// `CreateIndex` and `ModifyIndex` from the record.
pub fn entry_json(entry: &ConfigEntry) -> Value {
    let mut object = match serde_json::from_str(&entry.body) {
        Ok(Value::Object(body)) => body,
        // Only a snapshot from before validation could hold anything else.
        _ => Map::new(),
    };
    object.retain(|key, _| !RECORD_FIELDS.contains(&normalize_key(key).as_str()));
    object.insert("Kind".into(), Value::String(entry.kind.clone()));
    object.insert("Name".into(), Value::String(entry.name.clone()));
    object.insert("CreateIndex".into(), entry.indexes.create.get().into());
    object.insert("ModifyIndex".into(), entry.indexes.modify.get().into());
    Value::Object(object)
}

/// `PUT /v1/config`'s body as a record: `Kind` and `Name` (any case) taken
/// out, the indexes dropped, every other field kept as written.
fn entry_from_body(body: &[u8]) -> Result<ConfigEntry, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::BadRequest("Request decode failed: the request body is empty".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("Request decode failed: malformed JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::BadRequest("Request decode failed: a config entry must be a JSON object".into()));
    };
    let (mut kind, mut name, mut rest) = (None, None, Map::new());
    for (key, value) in fields {
        match normalize_key(&key).as_str() {
            "kind" => kind = Some(value),
            "name" => name = Some(value),
            "createindex" | "modifyindex" => {}
            _ => {
                rest.insert(key, value);
            }
        }
    }
    let text = |field: &str, value: Option<Value>| match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(ApiError::BadRequest(format!("{field} must be a string, not {other}"))),
    };
    Ok(ConfigEntry {
        kind: text("Kind", kind)?,
        name: text("Name", name)?,
        body: Value::Object(rest).to_string(),
        indexes: Default::default(),
    })
}

/// A kind from the path; unknown ones are a 400 listing those accepted.
fn path_kind(kind: &str) -> Result<(), ApiError> {
    validate_kind(kind).map_err(ApiError::BadRequest)
}

// ---- writes ----

/// `PUT /v1/config[?cas=<ModifyIndex>]` with an entry in Consul's JSON
/// (`{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}`):
/// creates or replaces it. `true`, or `false` when `?cas` did not match
/// (0: only if there is no such entry).
pub async fn apply(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    check_datacenter(&query, &state.backend)?;
    let cas = query.u64("cas")?;
    let entry = entry_from_body(&body)?;
    // Judge the entry against the leader's view of the others (a router
    // needs its service's protocol), then let the store judge it again.
    state.backend.read_barrier(ReadConsistency::Default).await?;
    validate_config_entry(state.backend.store().read().mesh(), &entry).map_err(ApiError::BadRequest)?;
    let command = match cas {
        Some(cas) => Command::ConfigEntryCas { kind: entry.kind, name: entry.name, cas, body: Some(entry.body) },
        None => Command::ConfigEntryUpsert(entry),
    };
    authz::write_bool(&state, &acl, command).await
}

/// `DELETE /v1/config/<kind>/<name>[?cas=<ModifyIndex>]`: `true` (also when
/// there was nothing to delete), or `false` when `?cas` did not match.
/// Entries that depend on this one are left alone (a router whose
/// service-defaults goes away keeps working on what is stored).
pub async fn delete(
    State(state): State<AppState>,
    acl: Acl,
    Path((kind, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    check_datacenter(&query, &state.backend)?;
    path_kind(&kind)?;
    let command = match query.u64("cas")? {
        Some(cas) => Command::ConfigEntryCas { kind, name, cas, body: None },
        None => Command::ConfigEntryDelete { kind, name },
    };
    authz::write_bool(&state, &acl, command).await
}

// ---- reads ----

/// What reading an entry needs: `service:read` on its service
/// (`intentions:read` for service-intentions); mesh-wide entries are
/// readable by all, as in Consul.
fn may_read(acl: &Acl, kind: &str, name: &str) -> bool {
    match kind {
        "service-intentions" => acl.allows(&Permission::Intentions(name.to_owned(), Access::Read)),
        "proxy-defaults" | "mesh" => {
            acl.public();
            true
        }
        _ => acl.allows_named(NamedResource::Service, name, Access::Read),
    }
}

/// `GET /v1/config/<kind>/<name>`: the entry; blocking. 404 if there is none.
pub async fn get(
    State(state): State<AppState>,
    acl: Acl,
    Path((kind, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    path_kind(&kind)?;
    if !may_read(&acl, &kind, &name) {
        return Err(ApiError::Forbidden(format!(
            "token with AccessorID '{}' may not read {kind} {name:?}",
            acl.accessor_id()
        )));
    }
    let options = ReadOptions::from_query(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    options.barrier(&state.backend).await?;
    let found = state
        .backend
        .store()
        .blocking_read(&[Table::ConfigEntries], options.min_index, options.wait, |tables| {
            (tables.mesh().config_entry(&kind, &name).cloned(), tables.index(Table::ConfigEntries))
        })
        .await;
    match found.value {
        Some(entry) => Ok((meta_headers(&state.backend, found.index), Json(entry_json(&entry))).into_response()),
        None => Err(ApiError::NotFound(format!("Config entry not found for {kind:?} / {name:?}"))),
    }
}

/// `GET /v1/config/<kind>`: every entry of that kind, by name; blocking, `?filter=`.
pub async fn list(
    State(state): State<AppState>,
    acl: Acl,
    Path(kind): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    path_kind(&kind)?;
    let read = |tables: &Tables, _: &QueryParams| -> Vec<ConfigEntry> {
        tables.mesh().config_entries_of(&kind).cloned().collect()
    };
    let render = |mut found: Vec<ConfigEntry>| {
        acl.retain(&mut found, |acl, entry| may_read(acl, &entry.kind, &entry.name));
        Value::Array(found.iter().map(entry_json).collect())
    };
    blocking_json(&state, raw.as_deref(), &[Table::ConfigEntries], read, render).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_api::ids::{Indexes, RaftIndex};

    use super::*;

    #[test]
    fn kind_and_name_come_out_of_the_body_in_any_case_and_the_rest_stays_as_written() {
        for body in [
            r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http", "ModifyIndex": 9}"#,
            r#"{"kind": "service-defaults", "name": "web", "Protocol": "http", "create_index": 3}"#,
        ] {
            let entry = entry_from_body(body.as_bytes()).unwrap();
            assert_eq!((entry.kind.as_str(), entry.name.as_str()), ("service-defaults", "web"));
            assert_eq!(entry.body, r#"{"Protocol":"http"}"#);
        }
        let entry = entry_from_body(br#"{"Name": "x", "meta": {"Team_Name": "a"}, "protocol": "grpc"}"#).unwrap();
        assert_eq!(
            (entry.kind.as_str(), entry.name.as_str()),
            ("", "x"),
            "a missing Kind is the validator's to refuse"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&entry.body).unwrap(),
            json!({"meta": {"Team_Name": "a"}, "protocol": "grpc"})
        );
    }

    #[test]
    fn bodies_that_are_not_an_entry_are_a_400() {
        for (body, message) in [
            ("", "empty"),
            ("{nope", "malformed JSON"),
            ("[1, 2]", "JSON object"),
            (r#"{"Kind": 5, "Name": "web"}"#, "Kind must be a string"),
            (r#"{"Kind": "mesh", "Name": ["mesh"]}"#, "Name must be a string"),
        ] {
            let error = entry_from_body(body.as_bytes()).unwrap_err();
            assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert!(error.to_string().contains(message), "{body}: {error}");
        }
    }

    #[test]
    fn reads_put_kind_name_and_indexes_from_the_record() {
        let entry = ConfigEntry {
            kind: "mesh".into(),
            name: "mesh".into(),
            body: r#"{"kind": "stale", "NAME": "x", "DefaultIntentionAction": "allow"}"#.into(),
            indexes: Indexes { create: RaftIndex(4), modify: RaftIndex(7) },
        };
        let expected = json!({
            "Kind": "mesh", "Name": "mesh", "DefaultIntentionAction": "allow", "CreateIndex": 4, "ModifyIndex": 7,
        });
        assert_eq!(entry_json(&entry), expected);
    }

    #[test]
    fn unknown_kinds_in_paths_are_a_400_listing_the_accepted_ones() {
        let error = path_kind("service-default").unwrap_err();
        assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains("service-defaults, proxy-defaults, service-resolver"), "{error}");
        assert!(path_kind("ingress-gateway").is_ok());
    }
}
