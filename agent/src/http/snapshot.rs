//! `GET /v1/snapshot` saves the whole replicated state; `PUT /v1/snapshot`
//! replaces it, through Raft, so every server restores the same thing.
//!
//! The format is Weft's own (a WEFTSNAP header, a version, then every table
//! in postcard), not Consul's tar archive: a Consul snapshot cannot be
//! restored into Weft.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use weft_api::command::{Command, CommandOutcome, MAX_RESTORE_BYTES, RESTORE_CHUNK_BYTES};
use weft_api::ids::RaftIndex;
use weft_server::store::StoreData;
use weft_server::ServerError;

use weft_acl::Permission;
use weft_api::acl::{Access, GlobalResource};

use super::authz::{self, Acl};
use super::error::ApiError;
use super::query::{check_datacenter, meta_headers, QueryParams, ReadOptions};
use super::AppState;

/// Management only: a snapshot holds every secret the servers keep.
fn management() -> Permission {
    Permission::Global(GlobalResource::Acl, Access::Write)
}

pub async fn save(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    acl.require(management())?;
    if state.backend.server().is_none() {
        return save_through_a_server(&state, &acl, raw.as_deref()).await;
    }
    let query = QueryParams::parse(raw.as_deref());
    let options = ReadOptions::from_query(&query, &state.backend)?;
    options.barrier(&state.backend).await?;
    let index = state.backend.store().applied_index();
    let data = state.backend.store().export().encode();
    let mut headers = meta_headers(&state.backend, index);
    headers.insert("content-type", "application/octet-stream".parse().expect("static header"));
    Ok((headers, data).into_response())
}

/// A client agent's copy lacks the CA's private keys (only servers sign),
/// so a snapshot that can be restored comes from the leader.
async fn save_through_a_server(state: &AppState, acl: &Acl, raw: Option<&str>) -> Result<Response, ApiError> {
    let unreachable = |reason: String| ApiError::Cluster(ServerError::LeaderUnreachable(reason));
    state.backend.read_barrier(weft_server::ReadConsistency::Default).await?;
    let leader = state.backend.leader().ok_or(ApiError::Cluster(ServerError::NoLeader))?;
    let path = match raw {
        Some(query) if !query.is_empty() => format!("/v1/snapshot?{query}"),
        _ => "/v1/snapshot".to_owned(),
    };
    let token = acl.enabled().then(|| acl.secret().to_owned());
    let client = weft_api::client::HttpClient::new(&leader.http_addr, token).with_timeout(Duration::from_secs(60));
    let answer = client.get(&path).await.map_err(|e| unreachable(e.to_string()))?;
    if !answer.is_success() {
        return Err(unreachable(format!("the leader answered {}: {}", answer.status, answer.text().trim())));
    }
    let index = RaftIndex(answer.consul_index().unwrap_or(1));
    let mut headers = meta_headers(&state.backend, index);
    headers.insert("content-type", "application/octet-stream".parse().expect("static header"));
    Ok((headers, answer.body).into_response())
}

/// The largest snapshot `PUT /v1/snapshot` (and so `weft snapshot
/// restore`) takes: the route reads no further. (The Raft log then carries
/// it in parts of a megabyte.)
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

pub async fn restore(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    if body.len() as u64 > MAX_RESTORE_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "snapshot is {} bytes; the limit is {MAX_RESTORE_BYTES}",
            body.len()
        )));
    }
    // Refuse a bad file here, before it reaches the Raft log.
    StoreData::decode(&body).map_err(|e| ApiError::BadRequest(format!("cannot restore: {e}")))?;
    // In parts of a megabyte, one log entry each: an entry the size of the
    // snapshot could never replicate.
    let id = weft_api::ids::uuid_v4(rand::random());
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let parts = body.chunks(RESTORE_CHUNK_BYTES).scan(0u64, |offset, bytes| {
        let part = Command::RestoreChunk { id: id.clone(), offset: *offset, bytes: bytes.to_vec() };
        *offset += bytes.len() as u64;
        Some(part)
    });
    let commands = std::iter::once(Command::RestoreBegin { id: id.clone(), total: body.len() as u64, sha256 })
        .chain(parts)
        .chain(std::iter::once(Command::RestoreFinish { id: id.clone() }));
    let mut last = None;
    for command in commands {
        let applied = authz::write(&state, &acl, command).await?;
        if let CommandOutcome::Rejected(reason) = applied.outcome {
            return Err(ApiError::BadRequest(format!("cannot restore: {reason}")));
        }
        last = Some(applied.index);
    }
    tracing::info!(bytes = body.len(), "snapshot restored");
    Ok((meta_headers(&state.backend, last.unwrap_or_default()), ()).into_response())
}
