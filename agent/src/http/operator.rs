//! `/v1/operator/usage` and `/v1/operator/autopilot/health`: what the
//! datacenter holds, and whether its servers can lose one. Both need
//! `operator:read`, as in Consul.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use weft_acl::Permission;
use weft_api::acl::{Access, GlobalResource};
use weft_api::catalog::SERVER_SERVICE;
use weft_api::ids::NodeName;
use weft_server::liveness::LIVENESS_CHECK_ID;
use weft_server::store::{Table, Tables};
use weft_server::PeerStatus;

use super::agent::MemberStatus;
use super::authz::Acl;
use super::error::ApiError;
use super::query::{check_datacenter, QueryParams};
use super::read::blocking_json;
use super::AppState;

/// The kinds of mesh instance Consul counts apart. Weft keeps no record of
/// connect-native services, so that count is always 0.
const MESH_KINDS: [&str; 6] =
    ["api-gateway", "connect-native", "connect-proxy", "ingress-gateway", "mesh-gateway", "terminating-gateway"];

/// How far behind the leader's log a server may be and still count as
/// healthy (Consul's autopilot `MaxTrailingLogs`).
const MAX_TRAILING_LOGS: u64 = 250;

/// `GET /v1/operator/usage`: services, instances and nodes in this
/// datacenter (a blocking query on the catalog). Services and instances
/// count the servers' own `consul` service; billable instances do not,
/// nor any proxy or gateway.
pub async fn usage(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    acl.require(Permission::Global(GlobalResource::Operator, Access::Read))?;
    let read = |tables: &Tables, _: &QueryParams| {
        let catalog = tables.catalog();
        let mut mesh: BTreeMap<&str, u64> = MESH_KINDS.iter().map(|kind| (*kind, 0)).collect();
        let (mut instances, mut billable) = (0u64, 0u64);
        for service in catalog.services() {
            instances += 1;
            if let Some(count) = mesh.get_mut(service.kind.as_str()) {
                *count += 1;
            }
            if service.kind.is_empty() && service.name.as_str() != SERVER_SERVICE {
                billable += 1;
            }
        }
        json!({
            "Services": catalog.service_names().len(),
            "ServiceInstances": instances,
            "ConnectServiceInstances": mesh,
            "BillableServiceInstances": billable,
            "Nodes": catalog.nodes().count(),
        })
    };
    let datacenter = state.config.datacenter.to_string();
    let render = move |usage: Value| json!({ "Usage": { datacenter: usage } });
    blocking_json(&state, raw.as_deref(), &[Table::Nodes, Table::Services], read, render).await
}

/// `GET /v1/operator/autopilot/health`, from the leader's view of the
/// Raft configuration. A server is `alive` (Consul's `SerfStatus`) while
/// its node's `serfHealth` check passes, that is while its heartbeats reach
/// the leader; it is healthy when alive and, unless it leads, holding the
/// leader's log to within [`MAX_TRAILING_LOGS`] entries. The failure
/// tolerance is how many healthy voters may fail with a quorum left. As in
/// Consul, the status is 429 when a server is unhealthy.
pub async fn autopilot_health(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Global(GlobalResource::Operator, Access::Read))?;
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let configuration = state.backend.leader_raft_configuration().await?;
    let members: BTreeMap<&str, MemberStatus> = {
        let tables = state.backend.store().read();
        let catalog = tables.catalog();
        let status = |name: &str| {
            let checks = catalog.node_checks(&NodeName::new(name));
            let liveness = checks.iter().find(|c| c.id.as_str() == LIVENESS_CHECK_ID);
            liveness.map_or(MemberStatus::Failed, MemberStatus::of)
        };
        configuration.servers.iter().map(|s| (s.name.as_str(), status(&s.name))).collect()
    };
    let alive = |server: &PeerStatus| members[server.name.as_str()] == MemberStatus::Alive;
    let leader_index = configuration.servers.iter().find(|s| s.leader).and_then(|s| s.last_index).unwrap_or(0);
    let in_step = |server: &PeerStatus| {
        server.leader || server.last_index.is_some_and(|index| leader_index.saturating_sub(index) <= MAX_TRAILING_LOGS)
    };
    let healthy = |server: &PeerStatus| alive(server) && in_step(server);
    let servers: Vec<Value> = configuration
        .servers
        .iter()
        .map(|server| {
            json!({
                "ID": server.id.to_string(),
                "Name": server.name,
                "Address": server.rpc_addr,
                "SerfStatus": members[server.name.as_str()].as_str(),
                "Leader": server.leader,
                "Voter": server.voter,
                "LastIndex": server.last_index.unwrap_or(0),
                "Healthy": healthy(server),
            })
        })
        .collect();
    let voters = configuration.servers.iter().filter(|s| s.voter).count();
    let healthy_voters = configuration.servers.iter().filter(|s| s.voter && healthy(s)).count();
    let tolerance = healthy_voters.saturating_sub(voters / 2 + 1);
    let all_healthy = configuration.servers.iter().all(healthy);
    let status = if all_healthy { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS };
    let body = json!({"Healthy": all_healthy, "FailureTolerance": tolerance, "Servers": servers});
    Ok((status, Json(body)).into_response())
}
