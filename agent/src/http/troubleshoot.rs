//! `GET /v1/discovery-chain/<service>` (the compiled chain) and
//! `GET /v1/agent/troubleshoot/route` (where one request would go and
//! whether it would be allowed), both from this agent's view, by the same
//! code the sidecars run, so nobody has to guess why traffic went where it
//! went. `weft troubleshoot route` prints the latter.
//!
//! The chain is Weft's compiled form (`weft_api::chain`) under `"Chain"`,
//! not Consul's node graph.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use weft_api::chain::{CompiledChain, RequestView};
use weft_api::ids::ServiceName;
use weft_api::intentions::{ConnectionDecision, RequestAttributes};
use weft_api::proxy::Endpoint;
use weft_server::store::{compile_discovery_chain, effective_protocol, Table, Tables};

use weft_acl::Permission;
use weft_api::acl::{Access, NamedResource};

use super::authz::Acl;
use super::error::ApiError;
use super::query::QueryParams;
use super::read::blocking_json;
use super::AppState;
use crate::connect::snapshot::{target_endpoints, Reach};

const CHAIN_TABLES: &[Table] = &[Table::ConfigEntries];

/// `GET /v1/discovery-chain/<service>`: blocking on config entries.
pub async fn discovery_chain(
    State(state): State<AppState>,
    acl: Acl,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Named(NamedResource::Service, service.clone(), Access::Read))?;
    let service = ServiceName::new(service);
    let datacenter = state.config.datacenter.clone();
    let read = |tables: &Tables, _: &QueryParams| compile_discovery_chain(tables.mesh(), &service, &datacenter);
    let render = |chain: Result<_, String>| match chain {
        Ok(chain) => json!({"Chain": chain}),
        Err(error) => json!({"Error": error}),
    };
    blocking_json(&state, raw.as_deref(), CHAIN_TABLES, read, render).await
}

/// `GET /v1/agent/troubleshoot/route?source=web&destination=api&method=GET&path=/x&header=Name:Value`.
pub async fn route(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    let required = |name: &str| {
        query.get(name).filter(|v| !v.is_empty()).ok_or_else(|| ApiError::BadRequest(format!("?{name} is required")))
    };
    let source = ServiceName::new(required("source")?);
    let destination = ServiceName::new(required("destination")?);
    for service in [&source, &destination] {
        acl.require(Permission::Named(NamedResource::Service, service.to_string(), Access::Read))?;
    }
    let method = query.get("method").filter(|m| !m.is_empty()).unwrap_or("GET").to_ascii_uppercase();
    let full_path = query.get("path").filter(|p| !p.is_empty()).unwrap_or("/").to_owned();
    let (path, query_string) = match full_path.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (full_path.clone(), None),
    };
    let headers: Vec<(String, String)> = query
        .all("header")
        .map(|h| {
            h.split_once(':')
                .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                .ok_or_else(|| ApiError::BadRequest(format!("?header={h}: give Name:Value")))
        })
        .collect::<Result<_, _>>()?;
    let header = |name: &str| headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();

    let tables = state.backend.store().read();
    let reach = Reach::new(&tables, &state.config.network);
    let mesh = tables.mesh();
    let protocol = effective_protocol(mesh, destination.as_str()).protocol;
    let chain = compile_discovery_chain(mesh, &destination, &state.config.datacenter).map_err(ApiError::BadRequest)?;
    let compiled = CompiledChain::new(chain).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let view = RequestView { method: &method, path: &path, query: query_string.as_deref(), header: &header };
    let (index, route) = compiled.route(&view).ok_or_else(|| ApiError::NotFound("no route matches".into()))?;
    let splits: Vec<Value> = route
        .splits
        .iter()
        .map(|split| {
            let target = compiled.chain.targets.get(&split.target);
            let endpoints: Vec<String> = target
                .map(|t| {
                    let endpoint = |e: &Endpoint| match e.gateway {
                        None => format!("{} ({})", e.address, e.node),
                        Some(gateway) => format!("{} ({}, through the mesh gateway at {gateway})", e.address, e.node),
                    };
                    target_endpoints(&tables, &reach, t).iter().map(endpoint).collect()
                })
                .unwrap_or_default();
            json!({
                "Weight": split.weight,
                "Target": split.target,
                "Subset": target.and_then(|t| t.subset.clone()),
                "Failover": target.map(|t| t.failover.clone()).unwrap_or_default(),
                "Endpoints": endpoints,
            })
        })
        .collect();
    let set = mesh.intention_set(&destination);
    let decision = if protocol.is_http_like() {
        let attributes = RequestAttributes { method: &method, path: &path, header: &header };
        set.decide_request(&source, &attributes)
    } else {
        set.decide_l4(&source)
    };
    let layer = match set.decide_connection(&source) {
        ConnectionDecision::PerRequest { .. } if protocol.is_http_like() => "L7",
        _ => "L4",
    };
    let body = json!({
        "Source": source,
        "Destination": destination,
        "Protocol": protocol.as_str(),
        "Request": {"Method": method, "Path": full_path, "Headers": headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>()},
        "Route": {"Index": index + 1, "Origin": route.origin, "RequestTimeoutMs": route.request_timeout_ms,
                  "Retries": route.retry.num_retries, "PrefixRewrite": route.prefix_rewrite, "Fault": route.fault},
        "Splits": splits,
        "Intention": {"Allowed": decision.allowed(), "Layer": layer, "Reason": decision.reason},
    });
    Ok(Json(body).into_response())
}
