//! `/v1/catalog/*`: register and deregister, list services and nodes, and
//! look up one service or node, in Consul's JSON shapes.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use weft_acl::Permission;
use weft_api::catalog::{
    sidecar_name, Check, Deregistration, HealthStatus, Node, Registration, Service, Weights, CONNECT_PROXY_KIND,
    INGRESS_GATEWAY_KIND,
};
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::{CheckId, Datacenter, Indexes, NodeName, ServiceId, ServiceName};
use weft_api::mesh::Protocol;
use weft_filter::Filter;
use weft_server::store::{
    ingress_listeners, ExposedService, NodeServices, ServiceInstance, Table, Tables, INGRESS_GATEWAY,
};

use super::authz::{self, Acl};
use super::error::ApiError;
use super::query::{check_datacenter, meta_headers, InstanceSelector, QueryParams};
use super::read::{blocking_json, blocking_json_filtered};
use super::AppState;
use crate::decode::decode_body;
use weft_api::acl::{Access, NamedResource};

// ---- request bodies (field names normalized: see `decode`) ----

#[derive(Deserialize)]
struct RegisterBody {
    #[serde(rename = "id")]
    id: Option<String>,
    #[serde(rename = "node")]
    node: Option<String>,
    #[serde(rename = "address")]
    address: Option<String>,
    #[serde(rename = "datacenter")]
    datacenter: Option<String>,
    #[serde(rename = "taggedaddresses")]
    tagged_addresses: Option<BTreeMap<String, String>>,
    #[serde(rename = "nodemeta")]
    node_meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "service")]
    service: Option<ServiceBody>,
    #[serde(rename = "check")]
    check: Option<CheckBody>,
    #[serde(rename = "checks")]
    checks: Option<Vec<CheckBody>>,
    #[serde(rename = "skipnodeupdate")]
    skip_node_update: Option<bool>,
}

#[derive(Deserialize)]
struct ServiceBody {
    #[serde(rename = "id")]
    id: Option<String>,
    #[serde(rename = "service")]
    name: Option<String>,
    #[serde(rename = "kind")]
    kind: Option<String>,
    #[serde(rename = "tags")]
    tags: Option<Vec<String>>,
    #[serde(rename = "address")]
    address: Option<String>,
    #[serde(rename = "port")]
    port: Option<u16>,
    #[serde(rename = "meta")]
    meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "taggedaddresses")]
    tagged_addresses: Option<BTreeMap<String, ServiceAddressBody>>,
    #[serde(rename = "enabletagoverride")]
    enable_tag_override: Option<bool>,
    #[serde(rename = "weights")]
    weights: Option<WeightsBody>,
}

#[derive(Deserialize)]
struct ServiceAddressBody {
    #[serde(rename = "address", default)]
    address: String,
    #[serde(rename = "port", default)]
    port: u16,
}

#[derive(Deserialize)]
struct WeightsBody {
    #[serde(rename = "passing", default)]
    passing: u32,
    #[serde(rename = "warning", default)]
    warning: u32,
}

#[derive(Deserialize)]
struct CheckBody {
    #[serde(rename = "checkid")]
    id: Option<String>,
    #[serde(rename = "name")]
    name: Option<String>,
    #[serde(rename = "status")]
    status: Option<String>,
    #[serde(rename = "notes")]
    notes: Option<String>,
    #[serde(rename = "output")]
    output: Option<String>,
    #[serde(rename = "serviceid")]
    service_id: Option<String>,
    #[serde(rename = "type")]
    check_type: Option<String>,
}

#[derive(Deserialize)]
struct DeregisterBody {
    #[serde(rename = "node")]
    node: Option<String>,
    #[serde(rename = "serviceid")]
    service_id: Option<String>,
    #[serde(rename = "checkid")]
    check_id: Option<String>,
    #[serde(rename = "datacenter")]
    datacenter: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn check_body_datacenter(state: &AppState, datacenter: &Option<String>) -> Result<(), ApiError> {
    match non_empty(datacenter.clone()) {
        Some(dc) if dc != state.backend.datacenter().as_str() => {
            Err(ApiError::BadRequest(format!("Datacenter {dc:?} is not this agent's ({})", state.backend.datacenter())))
        }
        _ => Ok(()),
    }
}

fn registration_from(body: RegisterBody, datacenter: &Datacenter) -> Result<Registration, ApiError> {
    let node_name = non_empty(body.node).ok_or_else(|| ApiError::BadRequest("Must provide node".into()))?;
    let skip_node_update = body.skip_node_update.unwrap_or(false);
    let address = body.address.unwrap_or_default();
    if address.is_empty() && !skip_node_update {
        return Err(ApiError::BadRequest("Must provide address".into()));
    }
    let node = Node {
        name: NodeName::new(&node_name),
        id: body.id.unwrap_or_default(),
        address,
        datacenter: datacenter.clone(),
        tagged_addresses: body.tagged_addresses.unwrap_or_default(),
        meta: body.node_meta.unwrap_or_default(),
        indexes: Default::default(),
    };
    let service = match body.service {
        None => None,
        Some(s) => {
            let name = non_empty(s.name).ok_or_else(|| ApiError::BadRequest("Must provide service name".into()))?;
            Some(Service {
                node: node.name.clone(),
                id: ServiceId::new(non_empty(s.id).unwrap_or_else(|| name.clone())),
                name: ServiceName::new(name),
                kind: s.kind.unwrap_or_default(),
                tags: s.tags.unwrap_or_default(),
                address: s.address.unwrap_or_default(),
                port: s.port.unwrap_or(0),
                meta: s.meta.unwrap_or_default(),
                tagged_addresses: s
                    .tagged_addresses
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, a)| (k, weft_api::addr::join_host_port(&a.address, a.port)))
                    .collect(),
                enable_tag_override: s.enable_tag_override.unwrap_or(false),
                weights: s.weights.map(|w| Weights { passing: w.passing, warning: w.warning }).unwrap_or_default(),
                indexes: Default::default(),
            })
        }
    };
    let mut checks = Vec::new();
    for c in body.check.into_iter().chain(body.checks.unwrap_or_default()) {
        let status = match non_empty(c.status) {
            None => HealthStatus::Critical,
            Some(text) => HealthStatus::parse(&text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Invalid check status {text:?} (use passing, warning, critical or maintenance)"
                ))
            })?,
        };
        let name = c.name.unwrap_or_default();
        let id = non_empty(c.id).unwrap_or_else(|| name.clone());
        if id.is_empty() {
            return Err(ApiError::BadRequest("Each check needs a CheckID or a Name".into()));
        }
        checks.push(Check {
            node: node.name.clone(),
            id: CheckId::new(id),
            name,
            status,
            notes: c.notes.unwrap_or_default(),
            output: c.output.unwrap_or_default(),
            service_id: ServiceId::new(c.service_id.unwrap_or_default()),
            check_type: c.check_type.unwrap_or_default(),
            ..Check::default()
        });
    }
    Ok(Registration { node, skip_node_update, service, checks })
}

/// Applies a catalog write; a rejection by the state store is a 400.
async fn write_true(state: &AppState, acl: &Acl, command: Command) -> Result<Response, ApiError> {
    let applied = authz::write(state, acl, command).await?;
    match applied.outcome {
        CommandOutcome::Rejected(reason) => Err(ApiError::BadRequest(reason)),
        _ => Ok((meta_headers(&state.backend, applied.index), Json(true)).into_response()),
    }
}

pub async fn register(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let body: RegisterBody = decode_body(&body)?;
    check_body_datacenter(&state, &body.datacenter)?;
    let registration = registration_from(body, state.backend.datacenter())?;
    write_true(&state, &acl, Command::Register(Box::new(registration))).await
}

pub async fn deregister(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_datacenter(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    let body: DeregisterBody = decode_body(&body)?;
    check_body_datacenter(&state, &body.datacenter)?;
    let node = non_empty(body.node).ok_or_else(|| ApiError::BadRequest("Must provide node".into()))?;
    let deregistration = Deregistration {
        node: NodeName::new(node),
        service_id: non_empty(body.service_id).map(ServiceId::new),
        check_id: non_empty(body.check_id).map(CheckId::new),
    };
    write_true(&state, &acl, Command::Deregister(deregistration)).await
}

// ---- reads ----

pub fn node_json(node: &Node) -> Value {
    json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": node.tagged_addresses,
        "Meta": node.meta,
        "CreateIndex": node.indexes.create.get(),
        "ModifyIndex": node.indexes.modify.get(),
    })
}

fn service_tagged_addresses(service: &Service) -> Value {
    let map: serde_json::Map<String, Value> = service
        .tagged_addresses
        .iter()
        .map(|(k, v)| {
            let (address, port) = weft_api::addr::split_host_port(v);
            (k.clone(), json!({"Address": address, "Port": port}))
        })
        .collect();
    Value::Object(map)
}

/// A service as `/v1/catalog/node/<node>` and the agent endpoints show it.
pub fn service_json(service: &Service) -> Value {
    json!({
        "ID": service.id,
        "Service": service.name,
        "Kind": service.kind,
        "Tags": service.tags,
        "Address": service.address,
        "TaggedAddresses": service_tagged_addresses(service),
        "Meta": service.meta,
        "Port": service.port,
        "Weights": {"Passing": service.weights.passing, "Warning": service.weights.warning},
        "EnableTagOverride": service.enable_tag_override,
        "Datacenter": Value::Null,
        "CreateIndex": service.indexes.create.get(),
        "ModifyIndex": service.indexes.modify.get(),
    })
}

/// A service instance flattened with its node, as `/v1/catalog/service/<name>` shows it.
fn service_node_json(instance: &ServiceInstance) -> Value {
    let (node, service) = (&instance.node, &instance.service);
    json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": node.tagged_addresses,
        "NodeMeta": node.meta,
        "ServiceKind": service.kind,
        "ServiceID": service.id,
        "ServiceName": service.name,
        "ServiceTags": service.tags,
        "ServiceAddress": service.address,
        "ServiceTaggedAddresses": service_tagged_addresses(service),
        "ServiceWeights": {"Passing": service.weights.passing, "Warning": service.weights.warning},
        "ServiceMeta": service.meta,
        "ServicePort": service.port,
        "ServiceEnableTagOverride": service.enable_tag_override,
        "CreateIndex": service.indexes.create.get(),
        "ModifyIndex": service.indexes.modify.get(),
    })
}

const CATALOG_TABLES: &[Table] = &[Table::Nodes, Table::Services];

/// What `/v1/catalog/services` reads: each name with its tags, or, with a
/// `?filter=` (which Consul runs over every service instance, in the shape
/// of `/v1/catalog/service/<name>`), the instances to filter first.
enum ServiceListing {
    Names(BTreeMap<ServiceName, BTreeSet<String>>),
    Instances(Vec<ServiceInstance>),
}

/// Whether `acl` may see `instance`: its service and its node.
pub fn may_see(acl: &Acl, node: &NodeName, service: &ServiceName) -> bool {
    acl.allows_named(NamedResource::Service, service.as_str(), Access::Read)
        && acl.allows_named(NamedResource::Node, node.as_str(), Access::Read)
}

/// `GET /v1/catalog/gateway-services/<gateway>`: the services an ingress
/// gateway's listeners expose, one entry per listener and service (Weft
/// has no terminating gateways, and a mesh gateway links none). Needs
/// `service:read` on the gateway; services the token may not read are left
/// out, as in Consul.
pub async fn gateway_services(
    State(state): State<AppState>,
    acl: Acl,
    Path(gateway): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Named(NamedResource::Service, gateway.clone(), Access::Read))?;
    let gateway = ServiceName::new(gateway);
    let read = |tables: &Tables, _: &QueryParams| {
        let indexes = tables.mesh().config_entry(INGRESS_GATEWAY, gateway.as_str()).map(|e| e.indexes);
        let listeners = ingress_listeners(tables.mesh(), &gateway);
        let linked = listeners.into_iter().flat_map(|listener| {
            let services = listener.services.into_iter();
            services.map(move |service| (listener.port, listener.protocol, service))
        });
        (indexes.unwrap_or_default(), linked.collect())
    };
    let render = |(indexes, mut entries): (Indexes, Vec<(u16, Protocol, ExposedService)>)| {
        acl.retain(&mut entries, |acl, (_, _, service)| {
            acl.allows_named(NamedResource::Service, service.name.as_str(), Access::Read)
        });
        let entries = entries.iter().map(|(port, protocol, service)| {
            let mut entry = json!({
                "Gateway": {"Name": gateway},
                "Service": {"Name": service.name},
                "GatewayKind": INGRESS_GATEWAY_KIND,
                "Port": port,
                "Protocol": protocol.as_str(),
                "CreateIndex": indexes.create.get(),
                "ModifyIndex": indexes.modify.get(),
            });
            if !service.hosts.is_empty() {
                entry["Hosts"] = json!(service.hosts);
            }
            entry
        });
        Value::Array(entries.collect())
    };
    blocking_json(&state, raw.as_deref(), &[Table::ConfigEntries], read, render).await
}

/// `GET /v1/catalog/datacenters`: the datacenters this agent knows, nearest
/// first (Consul's order); a Weft cluster is one datacenter. No ACL, as in
/// Consul.
pub async fn datacenters(State(state): State<AppState>, acl: Acl) -> Json<Vec<String>> {
    acl.public();
    Json(vec![state.config.datacenter.to_string()])
}

pub async fn services(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let read = |tables: &Tables, query: &QueryParams| {
        let catalog = tables.catalog();
        if query.get("filter").is_none_or(|f| f.trim().is_empty()) {
            return ServiceListing::Names(catalog.service_names());
        }
        let instances = catalog
            .services()
            .filter_map(|s| Some(ServiceInstance { node: catalog.node(&s.node)?.clone(), service: s.clone() }))
            .collect();
        ServiceListing::Instances(instances)
    };
    let render = |listing: ServiceListing, filter: Option<&Filter>| {
        let mut names = match (listing, filter) {
            (ServiceListing::Names(names), _) => names,
            (ServiceListing::Instances(instances), filter) => {
                let mut names: BTreeMap<ServiceName, BTreeSet<String>> = BTreeMap::new();
                let kept = instances.into_iter().filter(|i| filter.is_none_or(|f| f.matches(&service_node_json(i))));
                for instance in kept {
                    names.entry(instance.service.name).or_default().extend(instance.service.tags);
                }
                names
            }
        };
        let before = names.len();
        names.retain(|name, _| acl.allows_named(NamedResource::Service, name.as_str(), Access::Read));
        acl.public();
        if names.len() < before {
            acl.mark_filtered();
        }
        Ok(Value::Object(names.into_iter().map(|(name, tags)| (name.to_string(), json!(tags))).collect()))
    };
    blocking_json_filtered(&state, raw.as_deref(), CATALOG_TABLES, read, render).await
}

pub async fn service(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    instances(state, acl, ServiceName::new(name), None, raw).await
}

/// `GET /v1/catalog/connect/<service>`: the service's sidecar proxies
/// (Consul's connect-capable instances), as `/v1/health/connect` finds them.
pub async fn connect(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let sidecars = sidecar_name(&ServiceName::new(name));
    instances(state, acl, sidecars, Some(CONNECT_PROXY_KIND), raw).await
}

/// Instances of `name`; only those of `kind` if given.
async fn instances(
    state: AppState,
    acl: Acl,
    name: ServiceName,
    kind: Option<&'static str>,
    raw: Option<String>,
) -> Result<Response, ApiError> {
    let this_node = state.node.name.clone();
    let read = |tables: &Tables, query: &QueryParams| {
        let selector = InstanceSelector::from_query(query, &this_node);
        let mut found: Vec<ServiceInstance> = tables
            .catalog()
            .service_instances(&name)
            .into_iter()
            .filter(|i| selector.matches(&i.node, &i.service))
            .filter(|i| kind.is_none_or(|kind| i.service.kind == kind))
            .collect();
        selector.order(&mut found, |i| &i.node.name);
        found
    };
    let render = |mut instances: Vec<ServiceInstance>| {
        acl.retain(&mut instances, |acl, i| may_see(acl, &i.node.name, &i.service.name));
        Value::Array(instances.iter().map(service_node_json).collect())
    };
    blocking_json(&state, raw.as_deref(), CATALOG_TABLES, read, render).await
}

pub async fn nodes(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let this_node = state.node.name.clone();
    let read = |tables: &Tables, query: &QueryParams| {
        let selector = InstanceSelector::from_query(query, &this_node);
        let mut nodes: Vec<Node> = tables.catalog().nodes().filter(|n| selector.node_matches(n)).cloned().collect();
        selector.order(&mut nodes, |n| &n.name);
        nodes
    };
    let render = |mut nodes: Vec<Node>| {
        acl.retain(&mut nodes, |acl, n| acl.allows_named(NamedResource::Node, n.name.as_str(), Access::Read));
        Value::Array(nodes.iter().map(node_json).collect())
    };
    blocking_json(&state, raw.as_deref(), &[Table::Nodes], read, render).await
}

pub async fn node(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let name = NodeName::new(name);
    let read = |tables: &Tables, _: &QueryParams| tables.catalog().node_services(&name);
    let visible = acl.allows_named(NamedResource::Node, name.as_str(), Access::Read);
    // `?filter=` selects among the node's services, as in Consul.
    let render = |found: Option<NodeServices>, filter: Option<&Filter>| match found {
        // Consul answers an unknown node with 200 and `null`, and a node the
        // token may not see the same way.
        None => Ok(Value::Null),
        Some(_) if !visible => {
            acl.mark_filtered();
            Ok(Value::Null)
        }
        Some(mut found) => {
            acl.retain(&mut found.services, |acl, s| {
                acl.allows_named(NamedResource::Service, s.name.as_str(), Access::Read)
            });
            let services: serde_json::Map<String, Value> = found
                .services
                .iter()
                .map(|s| (s.id.to_string(), service_json(s)))
                .filter(|(_, s)| filter.is_none_or(|f| f.matches(s)))
                .collect();
            Ok(json!({"Node": node_json(&found.node), "Services": services}))
        }
    };
    blocking_json_filtered(&state, raw.as_deref(), CATALOG_TABLES, read, render).await
}
