//! `/v1/health/*`: service instances with their checks, and checks by
//! service, node or state, in Consul's shapes. `?passing` keeps only
//! instances whose every check (node-level included) passes.

use std::collections::BTreeSet;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::{json, Value};
use weft_acl::Permission;
use weft_api::catalog::{sidecar_name, Check, HealthStatus, CONNECT_PROXY_KIND, INGRESS_GATEWAY_KIND};
use weft_api::ids::{NodeName, ServiceName};
use weft_server::store::{gateways_exposing, ServiceHealth, Table, Tables};

use super::authz::Acl;
use super::catalog::{may_see, node_json, service_json};
use super::error::ApiError;
use super::query::{InstanceSelector, QueryParams};
use super::read::blocking_json;
use super::AppState;
use weft_api::acl::{Access, NamedResource};

const HEALTH_TABLES: &[Table] = &[Table::Nodes, Table::Services, Table::Checks];
/// Which gateways expose a service is in their config entries.
const INGRESS_TABLES: &[Table] = &[Table::Nodes, Table::Services, Table::Checks, Table::ConfigEntries];

pub fn check_json(check: &Check) -> Value {
    json!({
        "Node": check.node,
        "CheckID": check.id,
        "Name": check.name,
        "Status": check.status.as_str(),
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": check.service_tags,
        "Type": check.check_type,
        "CreateIndex": check.indexes.create.get(),
        "ModifyIndex": check.indexes.modify.get(),
    })
}

fn checks_json(checks: &[Check]) -> Value {
    Value::Array(checks.iter().map(check_json).collect())
}

/// One instance with its node and checks, as `/v1/health/service` shows it
/// (and as `?filter=` and service-resolver subset filters see it).
pub fn health_entry_json(entry: &ServiceHealth) -> Value {
    json!({"Node": node_json(&entry.node), "Service": service_json(&entry.service), "Checks": checks_json(&entry.checks)})
}

/// `GET /v1/health/connect/<service>`: the service's sidecars (the
/// `<service>-sidecar-proxy` instances of kind `connect-proxy`), in the
/// same shape and with the same options as `/v1/health/service`.
pub async fn connect(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let sidecars = sidecar_name(&ServiceName::new(name));
    instances(state, acl, move |_| vec![sidecars.clone()], Some(CONNECT_PROXY_KIND), HEALTH_TABLES, raw).await
}

pub async fn service(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let name = ServiceName::new(name);
    instances(state, acl, move |_| vec![name.clone()], None, HEALTH_TABLES, raw).await
}

/// `/v1/health/ingress/<service>`: the instances of the ingress gateways
/// whose listeners expose `service`, with their checks. Needs
/// `service:read` on `service`, as in Consul.
pub async fn ingress(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Named(NamedResource::Service, name.clone(), Access::Read))?;
    let gateways = move |tables: &Tables| {
        let exposing = gateways_exposing(tables.mesh(), &name).into_iter().map(|(gateway, _)| gateway);
        exposing.collect::<BTreeSet<_>>().into_iter().collect()
    };
    instances(state, acl, gateways, Some(INGRESS_GATEWAY_KIND), INGRESS_TABLES, raw).await
}

/// Instances of the services `names` gives, with their checks; only those
/// of `kind` if given. A blocking query on `tables`.
async fn instances(
    state: AppState,
    acl: Acl,
    names: impl Fn(&Tables) -> Vec<ServiceName>,
    kind: Option<&'static str>,
    tables: &[Table],
    raw: Option<String>,
) -> Result<Response, ApiError> {
    let this_node = state.node.name.clone();
    let read = move |tables: &Tables, query: &QueryParams| {
        let selector = InstanceSelector::from_query(query, &this_node);
        let passing_only = query.flag("passing");
        let catalog = tables.catalog();
        let mut found: Vec<ServiceHealth> = names(tables)
            .iter()
            .flat_map(|name| catalog.service_health(name))
            .filter(|h| selector.matches(&h.node, &h.service))
            .filter(|h| kind.is_none_or(|kind| h.service.kind == kind))
            .filter(|h| !passing_only || h.is_passing())
            .collect();
        selector.order(&mut found, |h| &h.node.name);
        found
    };
    let render = |mut entries: Vec<ServiceHealth>| {
        acl.retain(&mut entries, |acl, h| may_see(acl, &h.node.name, &h.service.name));
        Value::Array(entries.iter().map(health_entry_json).collect())
    };
    blocking_json(&state, raw.as_deref(), tables, read, render).await
}

/// Whether `acl` may see `check`: its node's, and its service's if any.
fn may_see_check(acl: &Acl, check: &Check) -> bool {
    match check.service_name.is_empty() {
        true => acl.allows_named(NamedResource::Node, check.node.as_str(), Access::Read),
        false => may_see(acl, &check.node, &check.service_name),
    }
}

/// The checks `acl` may see, in Consul's shape.
fn visible_checks(acl: &Acl, mut checks: Vec<Check>) -> Value {
    acl.retain(&mut checks, may_see_check);
    checks_json(&checks)
}

pub async fn service_checks(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let name = ServiceName::new(name);
    let read = move |tables: &Tables, _: &QueryParams| {
        tables.catalog().checks().filter(|c| c.service_name == name).cloned().collect::<Vec<_>>()
    };
    blocking_json(&state, raw.as_deref(), HEALTH_TABLES, read, |checks| visible_checks(&acl, checks)).await
}

pub async fn node(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let name = NodeName::new(name);
    let read = move |tables: &Tables, _: &QueryParams| tables.catalog().node_checks(&name);
    blocking_json(&state, raw.as_deref(), HEALTH_TABLES, read, |checks| visible_checks(&acl, checks)).await
}

pub async fn in_state(
    State(state): State<AppState>,
    acl: Acl,
    Path(wanted): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let wanted = match wanted.as_str() {
        "any" => None,
        other => Some(HealthStatus::parse(other).filter(|s| *s != HealthStatus::Maintenance).ok_or_else(|| {
            ApiError::BadRequest(format!("Invalid check state {other:?}: use any, passing, warning or critical"))
        })?),
    };
    let read = move |tables: &Tables, _: &QueryParams| {
        tables.catalog().checks().filter(|c| wanted.is_none_or(|w| c.status == w)).cloned().collect::<Vec<_>>()
    };
    blocking_json(&state, raw.as_deref(), HEALTH_TABLES, read, |checks| visible_checks(&acl, checks)).await
}
