//! `/v1/kv/<key>`: Consul's key/value API (GET with `recurse`, `keys`,
//! `separator`, `raw`; PUT with `cas`, `flags`; DELETE with `recurse`, `cas`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use weft_api::command::Command;
use weft_api::kv::{KvEntry, MAX_VALUE_BYTES};
use weft_server::store::Table;

use super::authz::{self, Acl};
use super::error::ApiError;
use super::query::{check_datacenter, meta_headers, parse_filter, QueryParams, ReadOptions};
use super::AppState;
use weft_api::acl::{Access, NamedResource};

/// The key named by the request path (percent-decoded, without `/v1/kv/`).
/// Keys are UTF-8: bytes that are not are refused, never replaced (a lossy
/// decoding would make `%FF` and `%FE` one key, and one PUT overwrite
/// another's data).
fn key_from(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix("/v1/kv").unwrap_or("").trim_start_matches('/');
    match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(key) => Ok(key.into_owned()),
        Err(_) => Err(ApiError::BadRequest(format!("Invalid key {raw:?}: keys must be valid UTF-8"))),
    }
}

/// A PUT's value: the body, read no further than [`MAX_VALUE_BYTES`] (the
/// route's body limit), so an oversized upload is refused with Consul's 413
/// before the rest of it is read.
fn value_of(body: Result<Bytes, BytesRejection>, headers: &axum::http::HeaderMap) -> Result<Bytes, ApiError> {
    match body {
        Ok(body) if body.len() <= MAX_VALUE_BYTES => Ok(body),
        Ok(body) => Err(too_large(body.len().to_string())),
        Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            let length = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
            Err(too_large(length.unwrap_or("more than the limit's").to_owned()))
        }
        Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
    }
}

fn too_large(length: String) -> ApiError {
    ApiError::PayloadTooLarge(format!("Request body({length} bytes) too large, max size: {MAX_VALUE_BYTES} bytes"))
}

pub async fn handle(
    State(state): State<AppState>,
    acl: Acl,
    method: Method,
    uri: Uri,
    RawQuery(raw_query): RawQuery,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw_query.as_deref());
    let key = key_from(&uri)?;
    match method {
        Method::GET => get(&state, &acl, key, &query).await,
        Method::PUT => put(&state, &acl, key, &query, value_of(body, &headers)?).await,
        Method::DELETE => delete(&state, &acl, key, &query).await,
        other => {
            Err(ApiError::MethodNotAllowed(format!("method {other} not allowed on /v1/kv (use GET, PUT or DELETE)")))
        }
    }
}

/// An entry in Consul's shape; `session`: the session holding it, if locked.
pub(super) fn entry_json(entry: &KvEntry, session: Option<&str>) -> Value {
    let value = if entry.value.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(&entry.value))
    };
    let mut json = json!({
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": value,
        "CreateIndex": entry.indexes.create.get(),
        "ModifyIndex": entry.indexes.modify.get(),
    });
    if let Some(session) = session {
        json["Session"] = Value::String(session.to_owned());
    }
    json
}

/// What a KV GET found: entries with the session holding each, or keys.
enum Found {
    Entries(Vec<(KvEntry, Option<String>)>),
    Keys(Vec<String>),
}

/// A single key needs `key:read` on it (403 otherwise); a listing keeps
/// the keys the token may list (`?keys`) or read (`?recurse`).
async fn get(state: &AppState, acl: &Acl, key: String, query: &QueryParams) -> Result<Response, ApiError> {
    let options = ReadOptions::from_query(query, &state.backend)?;
    // Checked before anything is read: a bad expression is a 400, not ignored.
    let filter = parse_filter(query)?;
    let (recurse, keys_only) = (query.flag("recurse"), query.flag("keys"));
    if !recurse && !keys_only {
        acl.require(weft_acl::Permission::Named(NamedResource::Key, key.clone(), Access::Read))?;
    }
    let separator = query.get("separator").map(str::to_owned);
    options.barrier(&state.backend).await?;
    let result = state
        .backend
        .store()
        .blocking_read(&[Table::Kv], options.min_index, options.wait, |tables| {
            let kv = tables.kv();
            let table_index = tables.index(Table::Kv);
            if keys_only {
                (Found::Keys(kv.keys(&key, separator.as_deref())), table_index)
            } else if recurse {
                (Found::Entries(kv.prefix(&key).map(|e| with_holder(kv, e)).collect()), table_index)
            } else {
                match kv.get(&key) {
                    // A single key's own index: writes to other keys don't end the wait.
                    Some(entry) => {
                        (Found::Entries(vec![with_holder(kv, entry)]), entry.indexes.modify.max(tables.restore_index()))
                    }
                    None => (Found::Entries(Vec::new()), table_index),
                }
            }
        })
        .await;
    let headers = meta_headers(&state.backend, result.index);
    let found = match result.value {
        Found::Keys(mut keys) => {
            acl.retain(&mut keys, |acl, key| acl.allows_named(NamedResource::Key, key, Access::List));
            Found::Keys(keys)
        }
        Found::Entries(mut entries) => {
            acl.retain(&mut entries, |acl, (entry, _)| acl.allows_named(NamedResource::Key, &entry.key, Access::Read));
            Found::Entries(entries)
        }
    };
    match found {
        Found::Keys(keys) if keys.is_empty() => Ok((axum::http::StatusCode::NOT_FOUND, headers).into_response()),
        Found::Keys(keys) => Ok((headers, Json(keys)).into_response()),
        Found::Entries(entries) if entries.is_empty() => {
            Ok((axum::http::StatusCode::NOT_FOUND, headers).into_response())
        }
        Found::Entries(entries) if query.flag("raw") && !recurse => {
            let value = entries.into_iter().next().map(|(e, _)| e.value).unwrap_or_default();
            Ok((headers, value).into_response())
        }
        Found::Entries(entries) => {
            let mut entries: Vec<Value> = entries.iter().map(|(e, holder)| entry_json(e, holder.as_deref())).collect();
            if let Some(filter) = &filter {
                filter.retain(&mut entries);
            }
            if entries.is_empty() {
                return Ok((axum::http::StatusCode::NOT_FOUND, headers).into_response());
            }
            Ok((headers, Json(entries)).into_response())
        }
    }
}

/// `entry` with the session holding it, if locked.
fn with_holder(kv: &weft_server::store::KvTable, entry: &KvEntry) -> (KvEntry, Option<String>) {
    (entry.clone(), kv.lock_holder(&entry.key).map(str::to_owned))
}

/// A PUT: a plain write, or with `?acquire=<session>` / `?release=<session>`
/// a lock taken or given up (`false` when another session holds it, or the
/// key is in its lock delay).
async fn put(state: &AppState, acl: &Acl, key: String, query: &QueryParams, body: Bytes) -> Result<Response, ApiError> {
    check_datacenter(query, &state.backend)?;
    if key.is_empty() {
        return Err(ApiError::BadRequest("Missing key name: PUT /v1/kv/<key>".into()));
    }
    let flags = query.u64("flags")?.unwrap_or(0);
    let cas = query.u64("cas")?;
    let value = body.to_vec();
    let session = |name: &str| query.get(name).map(str::to_owned);
    let command = match (session("acquire"), session("release")) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("Conflicting flags: ?acquire with ?release".into())),
        (Some(session), None) => Command::KvAcquire { key, value, flags, session, cas },
        (None, Some(session)) => Command::KvRelease { key, value, flags, session, cas },
        (None, None) => Command::KvSet { key, value, flags, cas },
    };
    authz::write_bool(state, acl, command).await
}

async fn delete(state: &AppState, acl: &Acl, key: String, query: &QueryParams) -> Result<Response, ApiError> {
    check_datacenter(query, &state.backend)?;
    let recurse = query.flag("recurse");
    if key.is_empty() && !recurse {
        return Err(ApiError::BadRequest("Missing key name: DELETE /v1/kv/<key> (or ?recurse for a prefix)".into()));
    }
    let cas = query.u64("cas")?;
    if recurse && cas.is_some() {
        return Err(ApiError::BadRequest("?cas cannot be combined with ?recurse".into()));
    }
    authz::write_bool(state, acl, Command::KvDelete { key, recurse, cas }).await
}
