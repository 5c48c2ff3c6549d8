//! Config entries' rules: the kinds Weft accepts, what each kind's body may
//! hold, and how entries depend on one another (routing and splitting need
//! an HTTP-like protocol; a subset a route or a split names must be defined
//! by the destination's service-resolver).
//!
//! A body is Consul's JSON as written, minus `Kind` and `Name` (the record
//! holds those). Its field names match the way Consul decodes them: any
//! case, `_` and `-` ignored (`PathRegex`, `path_regex`). The keys of maps
//! that hold user data (`Subsets` names, `Config`, `Meta`) are read exactly
//! as written.
//!
//! As with intentions' rules, these are pure functions of the tables. The
//! leader checks a write against its tables and proposes it as a
//! `Command::Checked`, which `apply` takes only if those tables have not
//! changed since, so two racing writes can't break a rule between them. The
//! HTTP API checks first, so it can answer with a 400 before anything
//! reaches Raft. Only writes are checked:
//! deleting an entry that others depend on (a service-defaults under a
//! router) is allowed.

use serde_json::{Map, Value};
use weft_api::ids::ServiceName;
use weft_api::intentions::{IntentionRule, IntentionSet};
use weft_api::mesh::{ConfigEntry, IntentionAction, Protocol};
use weft_api::proxy::{HashPolicy, HashSource, LoadBalancer};

use super::inbound_policy;
use super::intentions::{validate_name, DEFAULT_ACTION_FIELD, MESH_CONFIG_KIND, MESH_CONFIG_NAME, WILDCARD};
use super::mesh::MeshTables;
use super::service_intentions::rules_of;
use super::upstream_config::validate_upstream_config;

pub const SERVICE_DEFAULTS: &str = "service-defaults";
pub const PROXY_DEFAULTS: &str = "proxy-defaults";
pub const SERVICE_RESOLVER: &str = "service-resolver";
pub const SERVICE_SPLITTER: &str = "service-splitter";
pub const SERVICE_ROUTER: &str = "service-router";
pub const SERVICE_INTENTIONS: &str = "service-intentions";
pub const INGRESS_GATEWAY: &str = "ingress-gateway";

/// Every kind Weft accepts, in the order messages list them.
pub const CONFIG_ENTRY_KINDS: [&str; 8] = [
    SERVICE_DEFAULTS,
    PROXY_DEFAULTS,
    SERVICE_RESOLVER,
    SERVICE_SPLITTER,
    SERVICE_ROUTER,
    SERVICE_INTENTIONS,
    INGRESS_GATEWAY,
    MESH_CONFIG_KIND,
];

/// The only name a proxy-defaults entry may have.
pub const PROXY_DEFAULTS_NAME: &str = "global";

/// How far the weights of a splitter's splits may add up from 100.
const WEIGHT_TOLERANCE: f64 = 0.01;

/// Where a service's protocol comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolSource {
    /// The service's `service-defaults` entry (`Protocol`).
    ServiceDefaults,
    /// The `proxy-defaults` entry (`Config.protocol`).
    ProxyDefaults,
    /// Neither sets one: tcp.
    Default,
}

/// A service's effective protocol and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveProtocol {
    pub protocol: Protocol,
    pub source: ProtocolSource,
}

// ---- reading bodies ----

fn normalized(key: &str) -> String {
    key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

/// `object`'s field `name` (Consul's spelling), its key matched the way Consul
/// decodes field names (any case, `_` and `-` ignored). A JSON null counts as absent.
pub fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let wanted = normalized(name);
    object.iter().find(|(key, _)| normalized(key) == wanted).map(|(_, value)| value).filter(|v| !v.is_null())
}

/// A stored entry's body as an object (`None` if it is not one).
pub(super) fn stored_body(entry: &ConfigEntry) -> Option<Map<String, Value>> {
    match serde_json::from_str(&entry.body) {
        Ok(Value::Object(body)) => Some(body),
        _ => None,
    }
}

pub(super) fn as_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    value.as_object().ok_or_else(|| format!("{path} must be an object, not {value}"))
}

/// The object at `object.name` (`path` names it in errors), if there is one.
pub(super) fn object_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    field(object, name).map(|value| as_object(value, path)).transpose()
}

/// The list at `object.name`; absent is empty.
pub(super) fn list_field<'a>(object: &'a Map<String, Value>, name: &str, path: &str) -> Result<&'a [Value], String> {
    match field(object, name) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!("{path} must be a list, not {other}")),
    }
}

/// The whole number (at most `u32::MAX`) at `object.name`, if set.
pub(super) fn count_field(object: &Map<String, Value>, name: &str, path: &str) -> Result<Option<u32>, String> {
    match field(object, name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{path}.{name} must be a whole number, not {value}")),
    }
}

/// The string at `object.name`; absent or empty is `None`.
pub(super) fn str_field<'a>(object: &'a Map<String, Value>, name: &str, path: &str) -> Result<Option<&'a str>, String> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str()).filter(|t| !t.is_empty())),
        Some(other) => Err(format!("{path} must be a string, not {other}")),
    }
}

// ---- what the tables say ----

/// A service's effective protocol: its service-defaults' `Protocol`, else
/// proxy-defaults' `Config.protocol`, else tcp. Anything routing or
/// splitting traffic for the service decides from this.
pub fn effective_protocol(mesh: &MeshTables, service: &str) -> EffectiveProtocol {
    // Stored entries were validated, so a name that does not parse is unset.
    let set = |value: Option<&Value>| value.and_then(Value::as_str).and_then(Protocol::parse);
    let own = mesh.config_entry(SERVICE_DEFAULTS, service).and_then(stored_body);
    if let Some(protocol) = own.as_ref().and_then(|body| set(field(body, "Protocol"))) {
        return EffectiveProtocol { protocol, source: ProtocolSource::ServiceDefaults };
    }
    let global = mesh.config_entry(PROXY_DEFAULTS, PROXY_DEFAULTS_NAME).and_then(stored_body);
    let config = global.as_ref().and_then(|body| field(body, "Config")).and_then(Value::as_object);
    if let Some(protocol) = config.and_then(|config| set(field(config, "protocol"))) {
        return EffectiveProtocol { protocol, source: ProtocolSource::ProxyDefaults };
    }
    EffectiveProtocol { protocol: Protocol::Tcp, source: ProtocolSource::Default }
}

/// The subset names `service`'s service-resolver defines; `None` if it has
/// no service-resolver.
pub fn resolver_subsets(mesh: &MeshTables, service: &str) -> Option<Vec<String>> {
    let body = stored_body(mesh.config_entry(SERVICE_RESOLVER, service)?).unwrap_or_default();
    Some(match field(&body, "Subsets") {
        Some(Value::Object(subsets)) => subsets.keys().cloned().collect(),
        _ => Vec::new(),
    })
}

// ---- the rules ----

/// Checks everything a write of `entry` must satisfy, given the other
/// entries in `mesh`: [`check_alone`], then [`check_against`]. The error
/// names the field (Consul's spelling). The HTTP API asks this of its copy
/// of the tables, to answer with a 400 before anything reaches Raft.
pub fn validate_config_entry(mesh: &MeshTables, entry: &ConfigEntry) -> Result<(), String> {
    check_alone(entry)?;
    check_against(mesh, entry)
}

/// What `entry` must satisfy on its own: its kind and name, its body's
/// shape and field types, regexes that compile, weights that add up.
/// Checked before the entry is proposed (`store::check_proposal`), never in
/// `apply`: whether a pattern compiles is the regex crate's call and may
/// change with its version, and every server, whatever its build, must
/// reach the same state from the same log.
pub fn check_alone(entry: &ConfigEntry) -> Result<(), String> {
    validate_kind_and_name(&entry.kind, &entry.name)?;
    let body = body_of(entry)?;
    match entry.kind.as_str() {
        SERVICE_DEFAULTS => {
            check_protocol(field(&body, "Protocol"), "Protocol")?;
            inbound_policy::check_service_defaults(&body)?;
            validate_upstream_config(&body)
        }
        PROXY_DEFAULTS => {
            check_proxy_config(&body)?;
            inbound_policy::check_proxy_defaults(&body)?;
            validate_upstream_config(&body)
        }
        MESH_CONFIG_KIND => {
            check_default_intention_action(&body)?;
            match field(&body, inbound_policy::ALLOW_PERMISSIVE_FIELD) {
                None | Some(Value::Bool(_)) => Ok(()),
                Some(other) => {
                    Err(format!("{} must be true or false, not {other}", inbound_policy::ALLOW_PERMISSIVE_FIELD))
                }
            }
        }
        SERVICE_RESOLVER => {
            check_subsets(&body)?;
            load_balancer_of(&body).map(drop)
        }
        SERVICE_SPLITTER => check_split_weights(&body),
        SERVICE_ROUTER => check_route_regexes(&body),
        SERVICE_INTENTIONS => {
            let rules = rules_of(&entry.name, &body)?;
            IntentionSet::new(rules, IntentionAction::Deny).map(drop).map_err(|e| e.to_string())
        }
        INGRESS_GATEWAY => super::ingress_gateway::check_listeners(&body),
        _ => Ok(()),
    }
}

/// What `entry` must satisfy given the other entries in `mesh`: protocols
/// that allow routing, subsets that exist, chains that end, one intention
/// per pair, permissive mode allowed. The leader checks it before
/// proposing (`Tables::check_mesh_rules`); `apply` checks it only for the
/// unchecked variants older logs hold, so it reads only the entry and the
/// tables: no regex is compiled, no clock read.
pub fn check_against(mesh: &MeshTables, entry: &ConfigEntry) -> Result<(), String> {
    let body = body_of(entry)?;
    match entry.kind.as_str() {
        SERVICE_DEFAULTS | PROXY_DEFAULTS => inbound_policy::check_permissive_allowed(mesh, &body),
        SERVICE_RESOLVER => check_chain(mesh, entry),
        SERVICE_SPLITTER => {
            require_http_like_protocol(mesh, &entry.kind, &entry.name)?;
            check_split_subsets(mesh, &entry.name, &body)?;
            check_chain(mesh, entry)
        }
        SERVICE_ROUTER => {
            require_http_like_protocol(mesh, &entry.kind, &entry.name)?;
            check_route_subsets(mesh, &entry.name, &body)?;
            check_chain(mesh, entry)
        }
        SERVICE_INTENTIONS => check_service_intentions(mesh, &entry.name, &body),
        INGRESS_GATEWAY => super::ingress_gateway::validate_ingress_gateway(mesh, &body),
        _ => Ok(()),
    }
}

/// An entry's body, which must be a JSON object.
fn body_of(entry: &ConfigEntry) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(&entry.body) {
        Ok(Value::Object(body)) => Ok(body),
        _ => Err(format!("the {} entry {:?} must be a JSON object", entry.kind, entry.name)),
    }
}

/// A kind Weft accepts. Paths (`GET /v1/config/<kind>`) are checked with this too.
pub fn validate_kind(kind: &str) -> Result<(), String> {
    let accepted = CONFIG_ENTRY_KINDS.join(", ");
    if kind.is_empty() {
        return Err(format!("Kind must be set to one of: {accepted}"));
    }
    if !CONFIG_ENTRY_KINDS.contains(&kind) {
        return Err(format!("Kind {kind:?} is not a config entry kind Weft accepts; use one of: {accepted}"));
    }
    Ok(())
}

/// A known kind and a name that kind allows: `global` for proxy-defaults,
/// `mesh` for mesh, `*` only for service-intentions, else a service name.
pub fn validate_kind_and_name(kind: &str, name: &str) -> Result<(), String> {
    validate_kind(kind)?;
    validate_name("Name", &ServiceName::new(name))?;
    let only = match kind {
        PROXY_DEFAULTS => PROXY_DEFAULTS_NAME,
        MESH_CONFIG_KIND => MESH_CONFIG_NAME,
        SERVICE_INTENTIONS => return Ok(()),
        _ if name == WILDCARD => {
            return Err(format!("Name \"*\" (any service) is only allowed in service-intentions, not in {kind}"))
        }
        _ => return Ok(()),
    };
    if name != only {
        return Err(format!("Name of a {kind} entry must be {only:?}, not {name:?}"));
    }
    Ok(())
}

/// `service-defaults.Protocol`, `proxy-defaults.Config.protocol`: one of
/// [`Protocol::ALL`] in any case, or unset.
fn check_protocol(value: Option<&Value>, path: &str) -> Result<(), String> {
    let accepted = Protocol::ALL.map(Protocol::as_str).join(", ");
    match value {
        None => Ok(()),
        Some(Value::String(protocol)) if protocol.is_empty() || Protocol::parse(protocol).is_some() => Ok(()),
        Some(Value::String(protocol)) => Err(format!("{path} {protocol:?} is not supported; use one of: {accepted}")),
        Some(other) => Err(format!("{path} must be a string (one of: {accepted}), not {other}")),
    }
}

/// `proxy-defaults.Config`: a map of proxy settings whose `protocol`, if set,
/// is a protocol Weft knows.
fn check_proxy_config(body: &Map<String, Value>) -> Result<(), String> {
    match object_field(body, "Config", "Config")? {
        Some(config) => check_protocol(field(config, "protocol"), "Config.protocol"),
        None => Ok(()),
    }
}

/// `mesh.DefaultIntentionAction`: allow or deny (any case), or unset (deny).
fn check_default_intention_action(body: &Map<String, Value>) -> Result<(), String> {
    match field(body, DEFAULT_ACTION_FIELD) {
        None => Ok(()),
        Some(Value::String(action)) if action.eq_ignore_ascii_case("allow") || action.eq_ignore_ascii_case("deny") => {
            Ok(())
        }
        Some(other) => Err(format!("{DEFAULT_ACTION_FIELD} must be \"allow\" or \"deny\", not {other}")),
    }
}

/// `service-resolver.Subsets`: a map from subset name to an object
/// (`Filter`, `OnlyPassing`); `DefaultSubset` must be one of them.
fn check_subsets(body: &Map<String, Value>) -> Result<(), String> {
    let subsets = object_field(body, "Subsets", "Subsets")?;
    for (name, subset) in subsets.into_iter().flatten() {
        if name.is_empty() {
            return Err("Subsets: a subset name must not be empty".into());
        }
        as_object(subset, &format!("Subsets[{name:?}]"))?;
    }
    match str_field(body, "DefaultSubset", "DefaultSubset")? {
        Some(default) if !subsets.is_some_and(|s| s.contains_key(default)) => {
            Err(format!("DefaultSubset {default:?} is not one of the Subsets"))
        }
        _ => Ok(()),
    }
}

/// `service-resolver.LoadBalancer.Policy`: the ones Weft's sidecars do.
fn load_balancer_of(body: &Map<String, Value>) -> Result<LoadBalancer, String> {
    let Some(balancer) = object_field(body, "LoadBalancer", "LoadBalancer")? else {
        return Ok(LoadBalancer::RoundRobin);
    };
    let policies = hash_policies(balancer)?;
    let policy = str_field(balancer, "Policy", "LoadBalancer.Policy")?;
    if !policies.is_empty() && !matches!(policy, Some("ring_hash" | "maglev")) {
        return Err("LoadBalancer.HashPolicies only apply to the \"ring_hash\" and \"maglev\" policies".into());
    }
    match policy {
        None | Some("round_robin") => Ok(LoadBalancer::RoundRobin),
        Some("least_request") => Ok(LoadBalancer::LeastRequest),
        Some("ring_hash" | "maglev") => Ok(LoadBalancer::ConsistentHash(policies)),
        Some(other) => Err(format!(
            "LoadBalancer.Policy {other:?} is not a policy; use \"round_robin\", \"least_request\", \"ring_hash\" or \"maglev\""
        )),
    }
}

/// `LoadBalancer.HashPolicies`: each takes a `Field` (header, cookie,
/// query_parameter) with its `FieldValue`, or `SourceIP = true`.
fn hash_policies(balancer: &Map<String, Value>) -> Result<Vec<HashPolicy>, String> {
    let mut policies = Vec::new();
    for (i, item) in list_field(balancer, "HashPolicies", "LoadBalancer.HashPolicies")?.iter().enumerate() {
        let path = format!("LoadBalancer.HashPolicies[{i}]");
        let item = as_object(item, &path)?;
        let flag = |name: &str| match field(item, name) {
            None => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(other) => Err(format!("{path}.{name} must be true or false, not {other}")),
        };
        let field_name = str_field(item, "Field", &format!("{path}.Field"))?;
        let value = str_field(item, "FieldValue", &format!("{path}.FieldValue"))?;
        let source = match (field_name, value, flag("SourceIP")?) {
            (None, None, true) => HashSource::SourceIp,
            (_, _, true) => return Err(format!("{path}: set Field (with FieldValue) or SourceIP, not both")),
            (Some(kind), Some(value), false) => match kind {
                "header" => HashSource::Header(value.to_ascii_lowercase()),
                "cookie" => HashSource::Cookie(value.to_owned()),
                "query_parameter" => HashSource::QueryParameter(value.to_owned()),
                other => {
                    return Err(format!(
                        "{path}.Field {other:?} is not a field; use \"header\", \"cookie\" or \"query_parameter\""
                    ))
                }
            },
            (Some(kind), None, false) => return Err(format!("{path}.FieldValue must name the {kind} to hash")),
            (None, _, false) => return Err(format!("{path} needs a Field and FieldValue, or SourceIP = true")),
        };
        policies.push(HashPolicy { source, terminal: flag("Terminal")? });
    }
    Ok(policies)
}

/// How sidecars spread traffic to `service`: its service-resolver's
/// `LoadBalancer.Policy`, else round robin.
pub fn resolver_load_balancer(mesh: &MeshTables, service: &str) -> LoadBalancer {
    mesh.config_entry(SERVICE_RESOLVER, service)
        .and_then(stored_body)
        .and_then(|body| load_balancer_of(&body).ok())
        .unwrap_or_default()
}

/// Rounds a weight for messages (sums of floats are rarely exact).
fn weight_text(weight: f64) -> String {
    ((weight * 100.0).round() / 100.0).to_string()
}

/// `service-splitter.Splits`: at least one; each `Weight` between 0 and
/// 100; together they add up to 100 (within 0.01).
fn check_split_weights(body: &Map<String, Value>) -> Result<(), String> {
    let splits = list_field(body, "Splits", "Splits")?;
    if splits.is_empty() {
        return Err("Splits must list at least one split".into());
    }
    let mut total = 0.0;
    for (i, split) in splits.iter().enumerate() {
        let path = format!("Splits[{i}]");
        let weight = match field(as_object(split, &path)?, "Weight") {
            None => 0.0,
            Some(Value::Number(number)) => number.as_f64().unwrap_or(f64::NAN),
            Some(other) => return Err(format!("{path}.Weight must be a number, not {other}")),
        };
        if !(0.0..=100.0).contains(&weight) {
            return Err(format!("{path}.Weight {} must be between 0 and 100", weight_text(weight)));
        }
        total += weight;
    }
    if (total - 100.0).abs() > WEIGHT_TOLERANCE {
        return Err(format!("Splits: the weights must add up to 100, not {}", weight_text(total)));
    }
    Ok(())
}

/// The discovery chain of the entry's service must compile with the entry in
/// place: durations parse, redirects end, splitters do not nest too deep.
/// (Its routes' regexes were checked alone, with the router.)
fn check_chain(mesh: &MeshTables, entry: &ConfigEntry) -> Result<(), String> {
    let with_entry = mesh.with_config_entry(entry.clone());
    let service = ServiceName::new(entry.name.as_str());
    // Target names carry the datacenter; it does not matter for the check.
    super::discovery_chain::compile(&with_entry, &service, &weft_api::ids::Datacenter::new("dc"))
        .map(drop)
        .map_err(|reason| format!("the {} entry for {} cannot be used: {reason}", entry.kind, entry.name))
}

/// A router or splitter needs its service to speak an HTTP-like protocol.
fn require_http_like_protocol(mesh: &MeshTables, kind: &str, name: &str) -> Result<(), String> {
    let protocol = effective_protocol(mesh, name);
    if protocol.protocol.is_http_like() {
        return Ok(());
    }
    let source = match protocol.source {
        ProtocolSource::ServiceDefaults => "set by its service-defaults",
        ProtocolSource::ProxyDefaults => "set by proxy-defaults",
        ProtocolSource::Default => "the default",
    };
    Err(format!(
        "{kind} for {name} requires protocol http, http2 or grpc (set it in service-defaults); \
         {name}'s protocol is {:?} ({source})",
        protocol.protocol.as_str()
    ))
}

/// A service-intentions entry against the tables: L7 permissions only for
/// an HTTP-like destination, and no source that the intentions table
/// already has an intention for (a pair has one intention, wherever it is
/// written). Its sources read and its regexes compile: [`check_alone`].
fn check_service_intentions(mesh: &MeshTables, name: &str, body: &Map<String, Value>) -> Result<(), String> {
    let rules = rules_of(name, body)?;
    if rules.iter().any(IntentionRule::is_l7) {
        require_http_like_protocol(mesh, SERVICE_INTENTIONS, name)?;
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Some(existing) = mesh.intention_exact(&rule.source, &rule.destination) {
            return Err(format!(
                "Sources[{i}]: an intention from {} to {} already exists (ID {}); delete it \
                 (weft intention delete {} {}) or leave {} out of this entry",
                rule.source, rule.destination, existing.id, rule.source, rule.destination, rule.source
            ));
        }
    }
    Ok(())
}

pub(super) fn check_regex(pattern: Option<&str>, path: &str) -> Result<(), String> {
    let Some(pattern) = pattern else { return Ok(()) };
    regex::Regex::new(pattern).map(drop).map_err(|error| {
        // The regex crate's message ends with the one line that says what is wrong.
        let text = error.to_string();
        let reason = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_owned();
        format!("{path} {pattern:?} is not a valid regular expression: {reason}")
    })
}

/// `service-router.Routes[].Match.HTTP`: `PathRegex`, and `Regex` in each
/// `Header[]` and `QueryParam[]`, must compile.
fn check_route_regexes(body: &Map<String, Value>) -> Result<(), String> {
    for (i, route) in list_field(body, "Routes", "Routes")?.iter().enumerate() {
        let path = format!("Routes[{i}]");
        let route = as_object(route, &path)?;
        let Some(matcher) = object_field(route, "Match", &format!("{path}.Match"))? else { continue };
        let path = format!("{path}.Match.HTTP");
        let Some(http) = object_field(matcher, "HTTP", &path)? else { continue };
        check_regex(str_field(http, "PathRegex", &format!("{path}.PathRegex"))?, &format!("{path}.PathRegex"))?;
        for list in ["Header", "QueryParam"] {
            for (j, item) in list_field(http, list, &format!("{path}.{list}"))?.iter().enumerate() {
                let item_path = format!("{path}.{list}[{j}]");
                let item = as_object(item, &item_path)?;
                let regex_path = format!("{item_path}.Regex");
                check_regex(str_field(item, "Regex", &regex_path)?, &regex_path)?;
            }
        }
    }
    Ok(())
}

/// A subset a route or a split sends traffic to must be defined by the
/// destination service's service-resolver.
fn check_subset(mesh: &MeshTables, service: &str, subset: &str, path: &str) -> Result<(), String> {
    match resolver_subsets(mesh, service) {
        Some(names) if names.iter().any(|n| n == subset) => Ok(()),
        Some(names) if names.is_empty() => {
            Err(format!("{path} {subset:?}: the service-resolver for {service} defines no subsets"))
        }
        Some(names) => Err(format!(
            "{path} {subset:?}: the service-resolver for {service} has no such subset (it defines {})",
            names.join(", ")
        )),
        None => Err(format!(
            "{path} {subset:?}: there is no service-resolver for {service} defining it (write one with Subsets first)"
        )),
    }
}

/// The (service, subset) a destination names; the service defaults to `own`.
fn destination<'a>(
    target: &'a Map<String, Value>,
    own: &'a str,
    path: &str,
) -> Result<Option<(&'a str, &'a str)>, String> {
    let Some(subset) = str_field(target, "ServiceSubset", &format!("{path}.ServiceSubset"))? else { return Ok(None) };
    let service = str_field(target, "Service", &format!("{path}.Service"))?.unwrap_or(own);
    Ok(Some((service, subset)))
}

fn check_route_subsets(mesh: &MeshTables, router: &str, body: &Map<String, Value>) -> Result<(), String> {
    for (i, route) in list_field(body, "Routes", "Routes")?.iter().enumerate() {
        let path = format!("Routes[{i}].Destination");
        let Some(target) = object_field(as_object(route, &format!("Routes[{i}]"))?, "Destination", &path)? else {
            continue;
        };
        if let Some((service, subset)) = destination(target, router, &path)? {
            check_subset(mesh, service, subset, &format!("{path}.ServiceSubset"))?;
        }
    }
    Ok(())
}

fn check_split_subsets(mesh: &MeshTables, splitter: &str, body: &Map<String, Value>) -> Result<(), String> {
    for (i, split) in list_field(body, "Splits", "Splits")?.iter().enumerate() {
        let path = format!("Splits[{i}]");
        if let Some((service, subset)) = destination(as_object(split, &path)?, splitter, &path)? {
            check_subset(mesh, service, subset, &format!("{path}.ServiceSubset"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_api::command::{Command, CommandOutcome};
    use weft_api::ids::{Indexes, RaftIndex};

    use super::super::{Table, Tables};
    use super::*;

    #[test]
    fn load_balancers_and_hash_policies_are_read_and_mistakes_named() {
        let read = |balancer: Value| load_balancer_of(json!({"LoadBalancer": balancer}).as_object().unwrap());
        assert_eq!(read(json!({"Policy": "least_request"})), Ok(LoadBalancer::LeastRequest));
        assert_eq!(
            read(json!({"Policy": "maglev", "HashPolicies": [
                {"Field": "header", "FieldValue": "X-User", "Terminal": true}, {"SourceIP": true}]})),
            Ok(LoadBalancer::ConsistentHash(vec![
                HashPolicy { source: HashSource::Header("x-user".into()), terminal: true },
                HashPolicy { source: HashSource::SourceIp, terminal: false },
            ]))
        );
        for (bad, message) in [
            (json!({"Policy": "random"}), "\"ring_hash\""),
            (json!({"Policy": "round_robin", "HashPolicies": [{"SourceIP": true}]}), "only apply"),
            (json!({"Policy": "ring_hash", "HashPolicies": [{"Field": "header"}]}), "FieldValue must name the header"),
            (json!({"Policy": "ring_hash", "HashPolicies": [{"Field": "path", "FieldValue": "x"}]}), "\"path\""),
            (
                json!({"Policy": "ring_hash", "HashPolicies": [{"Field": "cookie", "FieldValue": "x", "SourceIP": true}]}),
                "not both",
            ),
        ] {
            let error = read(bad.clone()).unwrap_err();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }

    fn entry(kind: &str, name: &str, body: Value) -> ConfigEntry {
        ConfigEntry { kind: kind.into(), name: name.into(), body: body.to_string(), ..Default::default() }
    }

    /// Tables holding `entries`, each written through `apply` (so each must be valid).
    fn tables_with(entries: &[ConfigEntry]) -> Tables {
        let mut tables = Tables::default();
        for (i, entry) in entries.iter().enumerate() {
            let outcome = tables.apply(RaftIndex(i as u64 + 1), &Command::ConfigEntryUpsert(entry.clone())).0;
            assert_eq!(outcome, CommandOutcome::Done, "{entry:?}");
        }
        tables
    }

    /// The refusal of `candidate` over `tables`; panics if it is accepted.
    fn refusal(tables: &Tables, candidate: &ConfigEntry) -> String {
        validate_config_entry(tables.mesh(), candidate).expect_err(&format!("{candidate:?} should be refused"))
    }

    fn accepted(tables: &Tables, candidate: &ConfigEntry) {
        if let Err(reason) = validate_config_entry(tables.mesh(), candidate) {
            panic!("{candidate:?} should be accepted: {reason}");
        }
    }

    fn http_service(name: &str) -> ConfigEntry {
        entry(SERVICE_DEFAULTS, name, json!({"Protocol": "http"}))
    }

    #[test]
    fn service_intentions_need_http_for_l7_and_share_pairs_with_the_intentions_table() {
        let l7 = entry(
            SERVICE_INTENTIONS,
            "api",
            json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "deny", "HTTP": {"PathPrefix": "/admin"}}]}]}),
        );
        let error = refusal(&Tables::default(), &l7);
        assert!(error.contains("service-intentions for api requires protocol http"), "{error}");
        let mut tables = tables_with(&[http_service("api"), l7.clone()]);
        let bad_regex = entry(
            SERVICE_INTENTIONS,
            "api",
            json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "deny", "HTTP": {"PathRegex": "("}}]}]}),
        );
        assert!(refusal(&tables, &bad_regex).contains("PathRegex \"(\""));

        // The entry holds web => api: the intentions table may not hold it too.
        let intention = weft_api::mesh::Intention {
            id: "i1".into(),
            source: "web".into(),
            destination: "api".into(),
            ..Default::default()
        };
        let (outcome, _) = tables.apply(RaftIndex(10), &Command::IntentionUpsert(intention.clone()));
        assert!(matches!(&outcome, CommandOutcome::Rejected(r) if r.contains("service-intentions entry for api")));
        // ... and the other way round.
        let l4 = entry(SERVICE_INTENTIONS, "db", json!({"Sources": [{"Name": "web", "Action": "allow"}]}));
        let table_first = weft_api::mesh::Intention { destination: "db".into(), ..intention };
        assert_eq!(tables.apply(RaftIndex(11), &Command::IntentionUpsert(table_first)).0, CommandOutcome::Done);
        assert!(refusal(&tables, &l4).contains("already exists (ID i1)"));
    }

    #[test]
    fn only_known_kinds_with_a_proper_name() {
        let tables = Tables::default();
        let error = refusal(&tables, &entry("service-whatever", "web", json!({})));
        assert!(
            error.contains("\"service-whatever\"") && error.contains("service-defaults, proxy-defaults"),
            "{error}"
        );
        assert!(refusal(&tables, &entry("", "web", json!({}))).contains("Kind must be set"));
        assert!(refusal(&tables, &entry(SERVICE_DEFAULTS, "", json!({}))).contains("Name must be set"));
        assert!(refusal(&tables, &entry(SERVICE_DEFAULTS, "ns/web", json!({}))).contains("namespaces"));
        assert!(
            refusal(&tables, &entry(SERVICE_DEFAULTS, "*", json!({}))).contains("only allowed in service-intentions")
        );
        accepted(&tables, &entry(SERVICE_INTENTIONS, "*", json!({})));
        let error = refusal(&tables, &entry(PROXY_DEFAULTS, "web", json!({})));
        assert!(error.contains("must be \"global\""), "{error}");
        accepted(&tables, &entry(PROXY_DEFAULTS, "global", json!({})));
        let error = refusal(&tables, &entry(MESH_CONFIG_KIND, "global", json!({})));
        assert!(error.contains("must be \"mesh\""), "{error}");
        for kind in CONFIG_ENTRY_KINDS {
            let name = match kind {
                PROXY_DEFAULTS => "global",
                MESH_CONFIG_KIND => "mesh",
                _ => "web",
            };
            let error = refusal(&tables, &ConfigEntry { body: "[1]".into(), ..entry(kind, name, json!({})) });
            assert!(error.contains("JSON object"), "{kind}: {error}");
        }
    }

    #[test]
    fn service_defaults_protocol_is_a_known_one_in_any_case() {
        let tables = Tables::default();
        for protocol in ["tcp", "http", "HTTP2", "grpc", ""] {
            accepted(&tables, &entry(SERVICE_DEFAULTS, "web", json!({"Protocol": protocol})));
        }
        accepted(&tables, &entry(SERVICE_DEFAULTS, "web", json!({"protocol": "http"})));
        let error = refusal(&tables, &entry(SERVICE_DEFAULTS, "web", json!({"Protocol": "udp"})));
        assert!(error.starts_with("Protocol \"udp\" is not supported") && error.contains("tcp, http, http2, grpc"));
        let error = refusal(&tables, &entry(SERVICE_DEFAULTS, "web", json!({"protocol": 7})));
        assert!(error.starts_with("Protocol must be a string"), "{error}");
    }

    #[test]
    fn proxy_defaults_config_is_a_map_with_a_known_protocol() {
        let tables = Tables::default();
        let config = json!({"Config": {"protocol": "http", "local_connect_timeout_ms": 1000}});
        accepted(&tables, &entry(PROXY_DEFAULTS, "global", config));
        let error = refusal(&tables, &entry(PROXY_DEFAULTS, "global", json!({"Config": ["protocol"]})));
        assert!(error.starts_with("Config must be an object"), "{error}");
        let error = refusal(&tables, &entry(PROXY_DEFAULTS, "global", json!({"config": {"Protocol": "quic"}})));
        assert!(error.starts_with("Config.protocol \"quic\" is not supported"), "{error}");
    }

    #[test]
    fn mesh_default_intention_action_is_allow_or_deny() {
        let tables = Tables::default();
        for body in [json!({"DefaultIntentionAction": "allow"}), json!({"default_intention_action": "DENY"}), json!({})]
        {
            accepted(&tables, &entry(MESH_CONFIG_KIND, "mesh", body));
        }
        for body in [json!({"DefaultIntentionAction": "maybe"}), json!({"DefaultIntentionAction": true})] {
            let error = refusal(&tables, &entry(MESH_CONFIG_KIND, "mesh", body));
            assert!(error.starts_with("DefaultIntentionAction must be \"allow\" or \"deny\""), "{error}");
        }
    }

    #[test]
    fn resolver_subsets_are_objects_and_hold_the_default() {
        let tables = Tables::default();
        let subsets = json!({"v1": {"Filter": "Service.Meta.version == 1"}, "v2": {}});
        accepted(&tables, &entry(SERVICE_RESOLVER, "web", json!({"Subsets": subsets, "DefaultSubset": "v1"})));
        accepted(&tables, &entry(SERVICE_RESOLVER, "db", json!({"ConnectTimeout": "5s"})));
        let error =
            refusal(&tables, &entry(SERVICE_RESOLVER, "web", json!({"Subsets": subsets, "DefaultSubset": "v3"})));
        assert!(error.starts_with("DefaultSubset \"v3\""), "{error}");
        let error = refusal(&tables, &entry(SERVICE_RESOLVER, "web", json!({"Subsets": {"v1": "x"}})));
        assert!(error.starts_with("Subsets[\"v1\"] must be an object"), "{error}");
    }

    #[test]
    fn split_weights_are_each_0_to_100_and_add_up_to_100() {
        let tables = tables_with(&[http_service("web")]);
        let splitter = |weights: &[Value]| {
            let splits: Vec<Value> = weights.iter().map(|w| json!({"Weight": w, "Service": "web"})).collect();
            entry(SERVICE_SPLITTER, "web", json!({"Splits": splits}))
        };
        accepted(&tables, &splitter(&[json!(90), json!(10)]));
        accepted(&tables, &splitter(&[json!(33.33), json!(33.33), json!(33.34)]));
        accepted(&tables, &splitter(&[json!(99.995), json!(0)]));
        accepted(&tables, &splitter(&[json!(100)]));
        let error = refusal(&tables, &splitter(&[json!(90), json!(5)]));
        assert_eq!(error, "Splits: the weights must add up to 100, not 95");
        let error = refusal(&tables, &splitter(&[json!(120), json!(-20)]));
        assert_eq!(error, "Splits[0].Weight 120 must be between 0 and 100");
        let error = refusal(&tables, &splitter(&[json!(50), json!("50")]));
        assert!(error.starts_with("Splits[1].Weight must be a number"), "{error}");
        let error = refusal(&tables, &splitter(&[]));
        assert!(error.contains("at least one split"), "{error}");
        let error = refusal(&tables, &entry(SERVICE_SPLITTER, "web", json!({"splits": {"Weight": 100}})));
        assert!(error.starts_with("Splits must be a list"), "{error}");
    }

    #[test]
    fn routers_and_splitters_need_an_http_like_protocol_from_defaults() {
        let router = entry(SERVICE_ROUTER, "web", json!({"Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}}}]}));
        let splitter = entry(SERVICE_SPLITTER, "web", json!({"Splits": [{"Weight": 100}]}));

        // Nothing sets a protocol: tcp.
        let tables = Tables::default();
        assert_eq!(effective_protocol(tables.mesh(), "web").source, ProtocolSource::Default);
        let error = refusal(&tables, &router);
        assert_eq!(
            error,
            "service-router for web requires protocol http, http2 or grpc (set it in service-defaults); \
             web's protocol is \"tcp\" (the default)"
        );
        assert!(refusal(&tables, &splitter).starts_with("service-splitter for web requires protocol http"));
        // A resolver does not (Consul allows one for a tcp service).
        accepted(&tables, &entry(SERVICE_RESOLVER, "web", json!({"Subsets": {"v1": {}}})));

        // proxy-defaults sets it for every service ...
        let tables = tables_with(&[entry(PROXY_DEFAULTS, "global", json!({"Config": {"protocol": "HTTP2"}}))]);
        assert_eq!(
            effective_protocol(tables.mesh(), "web"),
            EffectiveProtocol { protocol: Protocol::Http2, source: ProtocolSource::ProxyDefaults }
        );
        accepted(&tables, &router);
        accepted(&tables, &splitter);

        // ... and a service's own service-defaults overrides it.
        let tcp = entry(SERVICE_DEFAULTS, "web", json!({"protocol": "tcp"}));
        let tables = tables_with(&[entry(PROXY_DEFAULTS, "global", json!({"Config": {"protocol": "http"}})), tcp]);
        let error = refusal(&tables, &router);
        assert!(error.ends_with("web's protocol is \"tcp\" (set by its service-defaults)"), "{error}");
        let tables = tables_with(&[entry(SERVICE_DEFAULTS, "web", json!({"Protocol": "grpc"}))]);
        accepted(&tables, &router);
        assert_eq!(effective_protocol(tables.mesh(), "other").protocol, Protocol::Tcp);
    }

    #[test]
    fn route_regexes_must_compile_and_the_error_names_the_route() {
        let tables = tables_with(&[http_service("web")]);
        let router = |http: Value| {
            let routes = json!([{"Match": {"HTTP": {"PathPrefix": "/"}}}, {"Match": {"HTTP": http}}]);
            entry(SERVICE_ROUTER, "web", json!({"Routes": routes}))
        };
        accepted(&tables, &router(json!({"PathRegex": "^/api/v[0-9]+/.*$"})));
        accepted(&tables, &router(json!({"Header": [{"Name": "x-debug", "Regex": "^(1|true)$"}]})));
        let error = refusal(&tables, &router(json!({"PathRegex": "/api/(v1"})));
        assert!(error.starts_with("Routes[1].Match.HTTP.PathRegex \"/api/(v1\" is not a valid regular expression: "));
        assert!(error.contains("unclosed group"), "{error}");
        let error = refusal(
            &tables,
            &router(json!({"header": [{"Name": "a", "Exact": "b"}, {"Name": "x", "regex": "[z-a]"}]})),
        );
        assert!(error.starts_with("Routes[1].Match.HTTP.Header[1].Regex \"[z-a]\" is not a valid"), "{error}");
        let error = refusal(&tables, &router(json!({"QueryParam": [{"Name": "q", "Regex": "*"}]})));
        assert!(error.starts_with("Routes[1].Match.HTTP.QueryParam[0].Regex"), "{error}");
        let error = refusal(&tables, &entry(SERVICE_ROUTER, "web", json!({"Routes": [{"Match": "/x"}]})));
        assert!(error.starts_with("Routes[0].Match must be an object"), "{error}");
    }

    #[test]
    fn a_routed_or_split_subset_must_be_defined_by_the_destinations_resolver() {
        let resolver = entry(SERVICE_RESOLVER, "api", json!({"Subsets": {"v1": {}, "v2": {}}}));
        let router = |destination: Value| {
            entry(
                SERVICE_ROUTER,
                "web",
                json!({"Routes": [{"Match": {"HTTP": {"PathPrefix": "/api"}}, "Destination": destination}]}),
            )
        };
        let tables = tables_with(&[http_service("web")]);
        let error = refusal(&tables, &router(json!({"Service": "api", "ServiceSubset": "v1"})));
        assert_eq!(
            error,
            "Routes[0].Destination.ServiceSubset \"v1\": there is no service-resolver for api defining it \
             (write one with Subsets first)"
        );

        let tables = tables_with(&[http_service("web"), resolver]);
        accepted(&tables, &router(json!({"Service": "api", "ServiceSubset": "v2"})));
        accepted(&tables, &router(json!({"Service": "api"})));
        let error = refusal(&tables, &router(json!({"service": "api", "service_subset": "v3"})));
        assert!(error.ends_with("the service-resolver for api has no such subset (it defines v1, v2)"), "{error}");
        // Without Service, the destination is the router's own service.
        let error = refusal(&tables, &router(json!({"ServiceSubset": "v1"})));
        assert!(error.contains("no service-resolver for web"), "{error}");

        let splits = json!({"Splits": [{"Weight": 50, "Service": "api", "ServiceSubset": "v1"}, {"Weight": 50, "Service": "api", "ServiceSubset": "canary"}]});
        let error = refusal(&tables, &entry(SERVICE_SPLITTER, "web", splits));
        assert!(error.starts_with("Splits[1].ServiceSubset \"canary\""), "{error}");
    }

    #[test]
    fn the_store_refuses_an_entry_that_breaks_a_rule_against_the_tables_and_changes_nothing() {
        let mut tables = tables_with(&[http_service("web")]);
        // db speaks tcp (the default): it cannot have a router.
        let bad = entry(SERVICE_ROUTER, "db", json!({"Routes": []}));
        let (outcome, changed) = tables.apply(RaftIndex(5), &Command::ConfigEntryUpsert(bad));
        assert!(matches!(&outcome, CommandOutcome::Rejected(r) if r.contains("requires protocol http")), "{outcome:?}");
        assert!(changed.tables().is_empty());
        assert_eq!(tables.index(Table::ConfigEntries), RaftIndex(1));
        assert_eq!(tables.mesh().config_entry(SERVICE_DEFAULTS, "web").unwrap().body, r#"{"Protocol":"http"}"#);

        // Deleting what a router depends on is allowed (as in Consul).
        let router = entry(SERVICE_ROUTER, "web", json!({"Routes": []}));
        assert_eq!(tables.apply(RaftIndex(6), &Command::ConfigEntryUpsert(router)).0, CommandOutcome::Done);
        let delete = Command::ConfigEntryDelete { kind: SERVICE_DEFAULTS.into(), name: "web".into() };
        assert_eq!(tables.apply(RaftIndex(7), &delete).0, CommandOutcome::Done);
        assert!(tables.mesh().config_entry(SERVICE_ROUTER, "web").is_some());
    }

    #[test]
    fn what_an_entry_must_satisfy_alone_is_checked_before_proposing_and_trusted_by_apply() {
        let bad_regex = entry(SERVICE_ROUTER, "web", json!({"Routes": [{"Match": {"HTTP": {"PathRegex": "("}}}]}));
        let upsert = Command::ConfigEntryUpsert(bad_regex);
        let refused = crate::store::check_proposal(&upsert).unwrap_err();
        assert!(refused.contains("PathRegex \"(\" is not a valid regular expression"), "{refused}");
        let udp = cas(SERVICE_DEFAULTS, "web", 0, Some(json!({"Protocol": "udp"})));
        assert!(crate::store::check_proposal(&udp).unwrap_err().contains("udp"));
        // apply compiles no regex: what reached the log was checked when it
        // was proposed, by whatever build proposed it.
        let mut tables = tables_with(&[http_service("web")]);
        assert_eq!(tables.apply(RaftIndex(5), &upsert).0, CommandOutcome::Done);
    }

    #[test]
    fn a_checked_write_applies_only_if_the_tables_it_was_checked_against_are_unchanged() {
        let mut tables = tables_with(&[http_service("web")]);
        let checked = |mesh_index: u64, command: Command| Command::Checked {
            mesh_index: RaftIndex(mesh_index),
            command: Box::new(command),
        };
        // Checked by the leader at index 1; applied as it is.
        let router = Command::ConfigEntryUpsert(entry(SERVICE_ROUTER, "web", json!({"Routes": []})));
        assert_eq!(tables.mesh_index(), RaftIndex(1));
        assert_eq!(tables.check_mesh_rules(&router), Ok(()));
        assert_eq!(tables.apply(RaftIndex(5), &checked(1, router)).0, CommandOutcome::Done);
        // Checked at 1 too, but the tables changed at 5: nothing applied,
        // whatever it holds (a router for a tcp service, here).
        let tcp_router = Command::ConfigEntryUpsert(entry(SERVICE_ROUTER, "db", json!({"Routes": []})));
        let (outcome, changed) = tables.apply(RaftIndex(6), &checked(1, tcp_router.clone()));
        assert_eq!(outcome, CommandOutcome::Outdated);
        assert!(changed.tables().is_empty());
        assert!(tables.mesh().config_entry(SERVICE_ROUTER, "db").is_none());
        // The leader's check refuses it; apply evaluates no rule at all.
        assert!(tables.check_mesh_rules(&tcp_router).unwrap_err().contains("requires protocol http"));
        assert_eq!(tables.apply(RaftIndex(7), &checked(5, tcp_router)).0, CommandOutcome::Done);
        // A check-and-set keeps its index check.
        let cas_put = cas(SERVICE_DEFAULTS, "web", 0, Some(json!({"Protocol": "grpc"})));
        assert_eq!(tables.apply(RaftIndex(8), &checked(7, cas_put)).0, CommandOutcome::Cas(false));
        // Only a leader makes one, alone; a batch may not hold one.
        let intention = Command::IntentionUpsert(weft_api::mesh::Intention {
            id: "i1".into(),
            source: "web".into(),
            destination: "db".into(),
            ..Default::default()
        });
        assert!(crate::store::check_proposal(&checked(7, intention.clone())).is_err());
        let batch = Command::Batch(vec![intention.clone()]);
        assert!(crate::store::check_proposal(&batch).unwrap_err().contains("travels alone"));
        let (outcome, _) = tables.apply(RaftIndex(9), &Command::Batch(vec![checked(7, intention.clone())]));
        assert!(matches!(&outcome, CommandOutcome::Batch(o) if matches!(o[0], CommandOutcome::Rejected(_))));
        assert_eq!(tables.apply(RaftIndex(10), &checked(7, intention)).0, CommandOutcome::Done);
        assert_eq!(tables.mesh_index(), RaftIndex(10));
    }

    fn cas(kind: &str, name: &str, cas: u64, body: Option<Value>) -> Command {
        Command::ConfigEntryCas { kind: kind.into(), name: name.into(), cas, body: body.map(|b| b.to_string()) }
    }

    #[test]
    fn check_and_set_writes_and_deletes_only_at_the_expected_index() {
        let mut tables = Tables::default();
        let web = |protocol: &str| Some(json!({"Protocol": protocol}));
        // 0: only if absent.
        assert_eq!(
            tables.apply(RaftIndex(3), &cas(SERVICE_DEFAULTS, "web", 0, web("http"))).0,
            CommandOutcome::Cas(true)
        );
        let (outcome, changed) = tables.apply(RaftIndex(4), &cas(SERVICE_DEFAULTS, "web", 0, web("grpc")));
        assert_eq!(outcome, CommandOutcome::Cas(false));
        assert!(changed.tables().is_empty());
        // Otherwise only at the current ModifyIndex.
        assert_eq!(
            tables.apply(RaftIndex(5), &cas(SERVICE_DEFAULTS, "web", 2, web("grpc"))).0,
            CommandOutcome::Cas(false)
        );
        assert_eq!(
            tables.apply(RaftIndex(6), &cas(SERVICE_DEFAULTS, "web", 3, web("grpc"))).0,
            CommandOutcome::Cas(true)
        );
        let stored = tables.mesh().config_entry(SERVICE_DEFAULTS, "web").unwrap();
        assert_eq!(stored.indexes, Indexes { create: RaftIndex(3), modify: RaftIndex(6) });
        assert_eq!(effective_protocol(tables.mesh(), "web").protocol, Protocol::Grpc);
        // An entry that breaks a rule against the tables is refused whatever the index.
        let outcome = tables.apply(RaftIndex(7), &cas(SERVICE_ROUTER, "db", 0, Some(json!({"Routes": []})))).0;
        assert!(matches!(outcome, CommandOutcome::Rejected(_)), "{outcome:?}");
        // Deletes: only if present at that index.
        assert_eq!(tables.apply(RaftIndex(8), &cas(SERVICE_DEFAULTS, "web", 3, None)).0, CommandOutcome::Cas(false));
        assert_eq!(tables.apply(RaftIndex(9), &cas(SERVICE_DEFAULTS, "db", 0, None)).0, CommandOutcome::Cas(false));
        assert_eq!(tables.apply(RaftIndex(10), &cas(SERVICE_DEFAULTS, "web", 6, None)).0, CommandOutcome::Cas(true));
        assert!(tables.mesh().config_entry(SERVICE_DEFAULTS, "web").is_none());
        assert_eq!(tables.index(Table::ConfigEntries), RaftIndex(10));
    }
}
