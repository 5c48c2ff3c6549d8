//! `PUT /v1/txn`: Consul's transactions, of KV operations (`weft_api::txn`).
//! One with a write is one Raft entry through the servers, applied whole or
//! not at all (`authz::write`, `key:write` on each written key and
//! `key:read` on each read one); one without is answered from this agent's
//! copy, with `?stale` or `?consistent` as for any read. 200 with `Results`
//! when it was applied, 409 with `Errors` (each operation that failed) when
//! it was rolled back, as in Consul.
//!
//! Node, Service and Check operations are refused with a 400 naming the
//! operation: Weft's transactions hold KV operations only, for now.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use weft_acl::command_permissions;
use weft_api::acl::{Access, NamedResource};
use weft_api::command::{Command, CommandOutcome};
use weft_api::txn::{validate, writes, KvOp, KvVerb, TxnError, TxnOutcome, MAX_TXN_BODY_BYTES};
use weft_server::store::Table;

use super::authz::{self, Acl};
use super::body::field;
use super::error::ApiError;
use super::kv::entry_json;
use super::query::{check_datacenter, meta_headers, QueryParams, ReadOptions};
use super::AppState;

/// The kinds of operation Consul's transactions hold.
const OPERATION_KINDS: [&str; 4] = ["KV", "Node", "Service", "Check"];

pub async fn handle(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    check_datacenter(&query, &state.backend)?;
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::PayloadTooLarge(format!(
                "Request body too large, max size: {MAX_TXN_BODY_BYTES} bytes"
            )))
        }
        Err(rejection) => return Err(ApiError::BadRequest(rejection.body_text())),
    };
    let ops = match parse(&body)? {
        Parsed::Ops(ops) => ops,
        // Consul fails these in the transaction: a 409 naming each, nothing run.
        Parsed::UnknownVerbs(errors) => {
            acl.public();
            return Ok(answer(TxnOutcome { results: Vec::new(), errors }, None, &state));
        }
    };
    // Too many operations, or a value too large: Consul's 413s.
    validate(&ops).map_err(|refusal| ApiError::PayloadTooLarge(refusal.to_string()))?;
    let outcome = if writes(&ops) {
        match authz::write(&state, &acl, Command::Txn(ops)).await?.outcome {
            CommandOutcome::Txn(outcome) => (outcome, None),
            CommandOutcome::Rejected(reason) => return Err(ApiError::BadRequest(reason)),
            other => {
                return Err(ApiError::Cluster(weft_server::ServerError::Fatal(format!(
                    "a transaction came back as {other:?}"
                ))))
            }
        }
    } else {
        let options = ReadOptions::from_query(&query, &state.backend)?;
        let command = Command::Txn(ops);
        let needed = command_permissions(&command, &*state.backend.store().read());
        for permission in needed {
            acl.require(permission)?;
        }
        options.barrier(&state.backend).await?;
        let Command::Txn(ops) = command else { unreachable!("built above") };
        let tables = state.backend.store().read();
        (tables.kv().read_txn(&ops), Some(tables.index(Table::Kv)))
    };
    let (mut outcome, index) = outcome;
    // A key found by get-tree is listed only if the token may read it.
    acl.retain(&mut outcome.results, |acl, entry| acl.allows_named(NamedResource::Key, &entry.key, Access::Read));
    Ok(answer(outcome, index, &state))
}

/// 200 with `Results`, or 409 with `Errors`; a read carries the index
/// headers of the copy it was read from.
fn answer(outcome: TxnOutcome, index: Option<weft_api::ids::RaftIndex>, state: &AppState) -> Response {
    let rolled_back = !outcome.errors.is_empty();
    let results: Vec<Value> = {
        let tables = state.backend.store().read();
        let holder = |key: &str| tables.kv().lock_holder(key).map(str::to_owned);
        outcome.results.iter().map(|entry| json!({"KV": entry_json(entry, holder(&entry.key).as_deref())})).collect()
    };
    let errors: Vec<Value> =
        outcome.errors.iter().map(|error| json!({"OpIndex": error.op_index, "What": error.what})).collect();
    let list = |items: Vec<Value>| if items.is_empty() { Value::Null } else { Value::Array(items) };
    let body = Json(json!({"Results": list(results), "Errors": list(errors)}));
    let status = if rolled_back { StatusCode::CONFLICT } else { StatusCode::OK };
    match index {
        Some(index) => (status, meta_headers(&state.backend, index), body).into_response(),
        None => (status, body).into_response(),
    }
}

enum Parsed {
    Ops(Vec<KvOp>),
    UnknownVerbs(Vec<TxnError>),
}

fn bad_body(reason: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Failed to parse body: {reason}"))
}

/// The request body: a JSON array of operations, each an object with one
/// of `KV`, `Node`, `Service` or `Check`.
fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(bad_body)?;
    let Value::Array(items) = value else { return Err(bad_body("the body must be a JSON array of operations")) };
    let mut ops = Vec::with_capacity(items.len());
    let mut unknown = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else { return Err(bad_body(format!("operation {i} is not an object"))) };
        let kinds: Vec<&str> = OPERATION_KINDS.into_iter().filter(|kind| field(item, kind).is_some()).collect();
        let kv = match kinds[..] {
            ["KV"] => field(item, "KV").and_then(Value::as_object),
            [other] => {
                return Err(ApiError::BadRequest(format!(
                    "operation {i} is a {other} operation; Weft's transactions hold KV operations only"
                )))
            }
            _ => None,
        };
        let Some(kv) = kv else {
            return Err(bad_body(format!("operation {i} must hold exactly one of KV, Node, Service or Check")));
        };
        let text = |name: &str| match field(kv, name) {
            None => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(bad_body(format!("operation {i}: {name} must be a string, not {other}"))),
        };
        let number = |name: &str| match field(kv, name) {
            None => Ok(0),
            Some(value) => value
                .as_u64()
                .ok_or_else(|| bad_body(format!("operation {i}: {name} must be a whole number, not {value}"))),
        };
        let verb_name = text("Verb")?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(text("Value")?)
            .map_err(|e| bad_body(format!("operation {i}: Value is not base64: {e}")))?;
        let Some(verb) = KvVerb::parse(&verb_name) else {
            unknown.push(TxnError { op_index: i as u32, what: format!("unknown KV verb {verb_name:?}") });
            continue;
        };
        ops.push(KvOp {
            verb,
            key: text("Key")?,
            value,
            flags: number("Flags")?,
            index: number("Index")?,
            session: text("Session")?,
        });
    }
    Ok(if unknown.is_empty() { Parsed::Ops(ops) } else { Parsed::UnknownVerbs(unknown) })
}
