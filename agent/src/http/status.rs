//! `/v1/status/*`, `/v1/operator/raft/*` and `/v1/agent/self`: who leads,
//! who the peers are, and membership changes. A client agent or a follower
//! asks the leader over RPC (the leader's HTTP API may be on its loopback).

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use weft_acl::Permission;
use weft_api::acl::{Access, GlobalResource, NamedResource};

use super::authz::Acl;
use super::error::ApiError;
use super::query::{check_datacenter, meta_headers, QueryParams};
use super::AppState;

/// The leader's RPC address as a JSON string; `""` when there is none.
pub async fn leader(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    acl.public();
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let leader = state.backend.leader().map(|l| l.rpc_addr).unwrap_or_default();
    Ok(Json(leader).into_response())
}

/// The RPC addresses of the servers in the Raft configuration.
pub async fn peers(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    acl.public();
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let configuration = match state.backend.server() {
        Some(server) => server.raft_configuration(),
        None => state.backend.leader_raft_configuration().await?,
    };
    let peers: Vec<String> = configuration.servers.into_iter().map(|s| s.rpc_addr).collect();
    Ok(Json(peers).into_response())
}

/// Answered by the leader (which knows every server's last index), as in
/// Consul; `?stale` on a server answers from that server's view.
pub async fn raft_configuration(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Global(GlobalResource::Operator, Access::Read))?;
    let query = QueryParams::parse(raw.as_deref());
    check_datacenter(&query, &state.backend)?;
    let configuration = match state.backend.server() {
        Some(server) if query.flag("stale") || server.is_leader() => server.raft_configuration(),
        _ => state.backend.leader_raft_configuration().await?,
    };
    let servers: Vec<Value> = configuration
        .servers
        .iter()
        .map(|s| {
            json!({
                "ID": s.id.to_string(),
                "Node": s.name,
                "Address": s.rpc_addr,
                "HTTPAddress": s.http_addr,
                "Leader": s.leader,
                "Voter": s.voter,
                "ProtocolVersion": "3",
                "LastIndex": s.last_index,
            })
        })
        .collect();
    let body = json!({"Servers": servers, "Index": configuration.index.get()});
    Ok((meta_headers(&state.backend, configuration.index), Json(body)).into_response())
}

/// `DELETE /v1/operator/raft/peer?id=<id or name>` or `?address=<rpc addr>`.
pub async fn remove_peer(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Global(GlobalResource::Operator, Access::Write))?;
    let query = QueryParams::parse(raw.as_deref());
    check_datacenter(&query, &state.backend)?;
    let peer = query
        .get("id")
        .or_else(|| query.get("address"))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::BadRequest("Must specify either ?id or ?address".into()))?;
    state.backend.remove_peer(peer).await?;
    Ok(().into_response())
}

/// The parts of Consul's `/v1/agent/self` that tools read.
pub async fn agent_self(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    acl.require(Permission::Named(NamedResource::Agent, state.node.name.to_string(), Access::Read))?;
    let config = &state.config;
    let stats = match state.backend.server() {
        Some(server) => {
            let raft = server.raft_stats();
            json!({
                // Consul reports these as strings.
                "raft": {
                    "state": raft.state,
                    "term": raft.term.to_string(),
                    "last_log_index": raft.last_log_index.to_string(),
                    "applied_index": raft.applied_index.to_string(),
                    "last_snapshot_index": raft.last_snapshot_index.to_string(),
                    "purged_index": raft.purged_index.to_string(),
                    "size_on_disk": raft.size_on_disk.to_string(),
                },
            })
        }
        None => json!({"agent": {"applied_index": state.backend.store().applied_index().get().to_string()}}),
    };
    let body = json!({
        "Config": {
            "Datacenter": config.datacenter,
            "NodeName": config.node_name,
            "NodeID": state.node.id,
            "Server": config.server,
            "Revision": "",
            "Version": env!("CARGO_PKG_VERSION"),
            "PrimaryDatacenter": config.datacenter,
        },
        "Member": {
            "Name": config.node_name,
            "Addr": config.rpc_addr.ip().to_string(),
            "Port": config.rpc_addr.port(),
            "Tags": {"role": if config.server { "consul" } else { "node" }, "dc": config.datacenter},
            "Status": 1,
        },
        "Stats": stats,
        "Meta": {},
        "Coord": Value::Null,
        "DebugConfig": {
            "HTTPAddrs": [format!("tcp://{}", config.http_addr)],
            "DNSAddrs": [format!("udp://{}", config.dns_addr)],
            "DNSDomain": format!("{}.", config.domain),
            "DataDir": config.data_dir,
        },
        "xDS": Value::Null,
    });
    Ok(Json(body).into_response())
}
