//! Compiling a discovery chain: the service-router, service-splitter and
//! service-resolver entries that apply to one upstream, read in that order
//! into a [`DiscoveryChain`] (routes, weighted splits, targets).
//!
//! Entries are validated when written (see `config_entries`), so reading
//! them here only fails on what depends on several entries at once (a
//! redirect loop, nested splitters too deep); such a chain is reported, and
//! the sidecar keeps its last good one.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use weft_api::chain::{
    target_id, DiscoveryChain, Fault, FaultAbort, FaultDelay, HeaderEdits, QueryMatch, QueryTest, RetryPolicy, Route,
    RouteMatch, Split, Target,
};
use weft_api::ids::{Datacenter, ServiceName};
use weft_api::intentions::PathMatch;

use super::config_entries::{
    as_object, effective_protocol, field, list_field, resolver_load_balancer, str_field, SERVICE_RESOLVER,
    SERVICE_ROUTER, SERVICE_SPLITTER,
};
use super::mesh::MeshTables;
use super::service_intentions::parse_header;

/// How long a sidecar may take to connect to a target unless its resolver says.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Redirects and nested splitters followed at most.
const MAX_DEPTH: usize = 8;

/// The chain for traffic to `service` in `datacenter`.
pub fn compile(mesh: &MeshTables, service: &ServiceName, datacenter: &Datacenter) -> Result<DiscoveryChain, String> {
    let protocol = effective_protocol(mesh, service.as_str()).protocol;
    let mut compiler = Compiler { mesh, datacenter, targets: BTreeMap::new() };
    let mut routes = Vec::new();
    if protocol.is_http_like() {
        if let Some(router) = body_of(mesh, SERVICE_ROUTER, service.as_str()) {
            for (i, route) in list_field(&router, "Routes", "Routes")?.iter().enumerate() {
                let path = format!("Routes[{i}]");
                routes.push(compiler.route(
                    service,
                    as_object(route, &path)?,
                    &format!("service-router {service}, route {}", i + 1),
                )?);
            }
        }
    }
    let default_splits = compiler.splits(service, None, 0)?;
    routes.push(Route {
        origin: "default route".to_owned(),
        matches: RouteMatch::default(),
        splits: default_splits,
        request_timeout_ms: compiler.resolver_request_timeout(service),
        retry: RetryPolicy::default(),
        prefix_rewrite: None,
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        fault: None,
    });
    Ok(DiscoveryChain { service: service.clone(), protocol, routes, targets: compiler.targets })
}

fn body_of(mesh: &MeshTables, kind: &str, name: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(&mesh.config_entry(kind, name)?.body) {
        Ok(Value::Object(body)) => Some(body),
        _ => None,
    }
}

struct Compiler<'a> {
    mesh: &'a MeshTables,
    datacenter: &'a Datacenter,
    targets: BTreeMap<String, Target>,
}

fn duration_ms(value: Option<&Value>, path: &str) -> Result<Option<u64>, String> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => weft_api::duration::parse(text)
            .map(|d| Some(d.as_millis().min(u128::from(u64::MAX)) as u64))
            .map_err(|e| format!("{path}: {e}")),
        // Consul also takes nanoseconds as a number.
        Some(Value::Number(nanos)) => Ok(nanos.as_u64().map(|n| n / 1_000_000)),
        Some(other) => Err(format!("{path} must be a duration like \"5s\", not {other}")),
    }
}

fn header_edits(object: &Map<String, Value>, name: &str, path: &str) -> Result<HeaderEdits, String> {
    let Some(edits) = field(object, name) else { return Ok(HeaderEdits::default()) };
    let edits = as_object(edits, path)?;
    let map = |key: &str| -> Result<BTreeMap<String, String>, String> {
        match field(edits, key) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(values)) => values
                .iter()
                .map(|(k, v)| match v {
                    Value::String(v) => Ok((k.clone(), v.clone())),
                    other => Err(format!("{path}.{key}.{k} must be a string, not {other}")),
                })
                .collect(),
            Some(other) => Err(format!("{path}.{key} must be a map of header names to values, not {other}")),
        }
    };
    let remove = list_field(edits, "Remove", &format!("{path}.Remove"))?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("{path}.Remove must list header names")))
        .collect::<Result<_, _>>()?;
    Ok(HeaderEdits { add: map("Add")?, set: map("Set")?, remove })
}

impl Compiler<'_> {
    /// One router route: its match, and the splits of its destination.
    fn route(&mut self, own: &ServiceName, route: &Map<String, Value>, origin: &str) -> Result<Route, String> {
        let matches = match field(route, "Match").and_then(|m| field(m.as_object()?, "HTTP")) {
            Some(http) => route_match(as_object(http, &format!("{origin}: Match.HTTP"))?, origin)?,
            None => RouteMatch::default(),
        };
        let empty = Map::new();
        let destination = match field(route, "Destination") {
            Some(destination) => as_object(destination, &format!("{origin}: Destination"))?,
            None => &empty,
        };
        let service = str_field(destination, "Service", "Destination.Service")?.map(ServiceName::new);
        let service = service.unwrap_or_else(|| own.clone());
        let subset = str_field(destination, "ServiceSubset", "Destination.ServiceSubset")?;
        let splits = self.splits(&service, subset, 0)?;
        let codes = list_field(destination, "RetryOnStatusCodes", "Destination.RetryOnStatusCodes")?
            .iter()
            .map(|code| {
                code.as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .ok_or_else(|| format!("{origin}: RetryOnStatusCodes must be status codes"))
            })
            .collect::<Result<_, _>>()?;
        let retry = RetryPolicy {
            num_retries: field(destination, "NumRetries").and_then(Value::as_u64).unwrap_or(0).min(10) as u32,
            on_connect_failure: field(destination, "RetryOnConnectFailure").and_then(Value::as_bool).unwrap_or(false),
            on_status_codes: codes,
            per_try_timeout_ms: duration_ms(field(destination, "PerTryTimeout"), "Destination.PerTryTimeout")?,
        };
        let request_timeout_ms = duration_ms(field(destination, "RequestTimeout"), "Destination.RequestTimeout")?
            .or_else(|| self.resolver_request_timeout(&service));
        Ok(Route {
            origin: origin.to_owned(),
            matches,
            splits,
            request_timeout_ms,
            retry,
            prefix_rewrite: str_field(destination, "PrefixRewrite", "Destination.PrefixRewrite")?.map(str::to_owned),
            request_headers: header_edits(destination, "RequestHeaders", "Destination.RequestHeaders")?,
            response_headers: header_edits(destination, "ResponseHeaders", "Destination.ResponseHeaders")?,
            fault: fault(route, origin)?,
        })
    }

    /// The splits for traffic to `service` (its splitter's, when it has one
    /// and no subset was asked for), each resolved to a target.
    fn splits(&mut self, service: &ServiceName, subset: Option<&str>, depth: usize) -> Result<Vec<Split>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("splitters nest deeper than {MAX_DEPTH} levels at {service}"));
        }
        let splitter = body_of(self.mesh, SERVICE_SPLITTER, service.as_str()).filter(|_| subset.is_none());
        let Some(splitter) = splitter else {
            let target = self.resolve(service, subset, 0)?;
            return Ok(vec![Split {
                weight: 100.0,
                target,
                request_headers: HeaderEdits::default(),
                response_headers: HeaderEdits::default(),
            }]);
        };
        let mut splits = Vec::new();
        for (i, split) in list_field(&splitter, "Splits", "Splits")?.iter().enumerate() {
            let path = format!("service-splitter {service}, Splits[{i}]");
            let split = as_object(split, &path)?;
            let weight = field(split, "Weight").and_then(Value::as_f64).unwrap_or(0.0);
            let to = str_field(split, "Service", "Service")?.map(ServiceName::new).unwrap_or_else(|| service.clone());
            let to_subset = str_field(split, "ServiceSubset", "ServiceSubset")?;
            let request_headers = header_edits(split, "RequestHeaders", &format!("{path}.RequestHeaders"))?;
            let response_headers = header_edits(split, "ResponseHeaders", &format!("{path}.ResponseHeaders"))?;
            // A split to another service goes through that service's own
            // splitter; a split to this service (or a subset) resolves directly.
            let nested = if &to == service || to_subset.is_some() {
                let target = self.resolve(&to, to_subset, 0)?;
                vec![Split {
                    weight: 100.0,
                    target,
                    request_headers: HeaderEdits::default(),
                    response_headers: HeaderEdits::default(),
                }]
            } else {
                self.splits(&to, None, depth + 1)?
            };
            for inner in nested {
                splits.push(Split {
                    weight: weight * inner.weight / 100.0,
                    target: inner.target,
                    request_headers: request_headers.clone(),
                    response_headers: response_headers.clone(),
                });
            }
        }
        Ok(splits)
    }

    fn resolver_request_timeout(&self, service: &ServiceName) -> Option<u64> {
        let resolver = body_of(self.mesh, SERVICE_RESOLVER, service.as_str())?;
        duration_ms(field(&resolver, "RequestTimeout"), "RequestTimeout").ok().flatten()
    }

    /// The target for `service` (and `subset`, else its resolver's default
    /// subset), following redirects; its ID.
    fn resolve(&mut self, service: &ServiceName, subset: Option<&str>, depth: usize) -> Result<String, String> {
        if depth > MAX_DEPTH {
            return Err(format!("service-resolver redirects loop or nest deeper than {MAX_DEPTH} at {service}"));
        }
        let resolver = body_of(self.mesh, SERVICE_RESOLVER, service.as_str()).unwrap_or_default();
        if let Some(redirect) = field(&resolver, "Redirect").and_then(Value::as_object) {
            let to = str_field(redirect, "Service", "Redirect.Service")?.map(ServiceName::new);
            let to_subset = str_field(redirect, "ServiceSubset", "Redirect.ServiceSubset")?;
            if to.is_some() || to_subset.is_some() {
                let to = to.unwrap_or_else(|| service.clone());
                return self.resolve(&to, to_subset, depth + 1);
            }
        }
        let subset = subset.or(str_field(&resolver, "DefaultSubset", "DefaultSubset")?);
        let id = target_id(service, subset, self.datacenter.as_str());
        if self.targets.contains_key(&id) {
            return Ok(id);
        }
        let definition = subset.and_then(|s| field(&resolver, "Subsets")?.as_object()?.get(s)?.as_object());
        let filter = definition.and_then(|d| field(d, "Filter")).and_then(Value::as_str).filter(|f| !f.is_empty());
        let only_passing = definition.and_then(|d| field(d, "OnlyPassing")).and_then(Value::as_bool).unwrap_or(false);
        let connect_timeout_ms =
            duration_ms(field(&resolver, "ConnectTimeout"), "ConnectTimeout")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS);
        // Reserve the ID first: a failover pointing back here ends there.
        self.targets.insert(
            id.clone(),
            Target {
                service: service.clone(),
                subset: subset.map(str::to_owned),
                filter: filter.map(str::to_owned),
                only_passing,
                failover: Vec::new(),
                connect_timeout_ms,
                load_balancer: resolver_load_balancer(self.mesh, service.as_str()),
            },
        );
        let failover = field(&resolver, "Failover").and_then(Value::as_object).and_then(|failovers| {
            subset.and_then(|s| failovers.get(s)).or_else(|| failovers.get("*")).and_then(Value::as_object)
        });
        let mut failover_ids = Vec::new();
        if let Some(failover) = failover {
            let mut options: Vec<(Option<ServiceName>, Option<&str>)> = Vec::new();
            if field(failover, "Service").is_some() || field(failover, "ServiceSubset").is_some() {
                options.push((
                    str_field(failover, "Service", "Failover.Service")?.map(ServiceName::new),
                    str_field(failover, "ServiceSubset", "Failover.ServiceSubset")?,
                ));
            }
            for target in list_field(failover, "Targets", "Failover.Targets")? {
                let Some(target) = target.as_object() else { continue };
                options.push((
                    str_field(target, "Service", "Failover.Targets.Service")?.map(ServiceName::new),
                    str_field(target, "ServiceSubset", "Failover.Targets.ServiceSubset")?,
                ));
            }
            for (to, to_subset) in options {
                let to = to.unwrap_or_else(|| service.clone());
                let failover_id = self.resolve(&to, to_subset, depth + 1)?;
                if failover_id != id {
                    failover_ids.push(failover_id);
                }
            }
        }
        if let Some(target) = self.targets.get_mut(&id) {
            target.failover = failover_ids;
        }
        Ok(id)
    }
}

/// `Match.HTTP` of a router route.
fn route_match(http: &Map<String, Value>, origin: &str) -> Result<RouteMatch, String> {
    let path = if let Some(exact) = str_field(http, "PathExact", "PathExact")? {
        Some(PathMatch::Exact(exact.to_owned()))
    } else if let Some(prefix) = str_field(http, "PathPrefix", "PathPrefix")? {
        Some(PathMatch::Prefix(prefix.to_owned()))
    } else {
        str_field(http, "PathRegex", "PathRegex")?.map(|regex| PathMatch::Regex(regex.to_owned()))
    };
    let methods =
        list_field(http, "Methods", "Methods")?.iter().filter_map(Value::as_str).map(str::to_ascii_uppercase).collect();
    let headers = list_field(http, "Header", "Header")?
        .iter()
        .enumerate()
        .map(|(i, header)| parse_header(header, &format!("{origin}: Match.HTTP.Header[{i}]")))
        .collect::<Result<_, _>>()?;
    let query = list_field(http, "QueryParam", "QueryParam")?
        .iter()
        .enumerate()
        .map(|(i, param)| {
            let at = format!("{origin}: Match.HTTP.QueryParam[{i}]");
            let param = as_object(param, &at)?;
            let name =
                str_field(param, "Name", &format!("{at}.Name"))?.ok_or_else(|| format!("{at}.Name must be set"))?;
            let test = if let Some(exact) = str_field(param, "Exact", "Exact")? {
                QueryTest::Exact(exact.to_owned())
            } else if let Some(regex) = str_field(param, "Regex", "Regex")? {
                QueryTest::Regex(regex.to_owned())
            } else {
                QueryTest::Present
            };
            Ok(QueryMatch { name: name.to_owned(), test })
        })
        .collect::<Result<_, String>>()?;
    Ok(RouteMatch { path, methods, headers, query })
}

/// A route's `Fault { Delay { Duration, Percentage }, Abort { HttpStatus, Percentage } }`
/// (Weft's, like Istio's fault injection).
fn fault(route: &Map<String, Value>, origin: &str) -> Result<Option<Fault>, String> {
    let Some(fault) = field(route, "Fault") else { return Ok(None) };
    let fault = as_object(fault, &format!("{origin}: Fault"))?;
    let percentage = |object: &Map<String, Value>| field(object, "Percentage").and_then(Value::as_f64).unwrap_or(100.0);
    let delay = match field(fault, "Delay").and_then(Value::as_object) {
        Some(delay) => Some(FaultDelay {
            duration_ms: duration_ms(field(delay, "Duration"), "Fault.Delay.Duration")?.unwrap_or(0),
            percentage: percentage(delay),
        }),
        None => None,
    };
    let abort = field(fault, "Abort").and_then(Value::as_object).map(|abort| FaultAbort {
        status: field(abort, "HttpStatus").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok()).unwrap_or(503),
        percentage: percentage(abort),
    });
    Ok(Some(Fault { delay, abort }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_api::command::{Command, CommandOutcome};
    use weft_api::ids::RaftIndex;
    use weft_api::mesh::ConfigEntry;

    use super::super::Tables;
    use super::*;

    fn tables_with(entries: &[(&str, &str, Value)]) -> Tables {
        let mut tables = Tables::default();
        for (i, (kind, name, body)) in entries.iter().enumerate() {
            let entry = ConfigEntry {
                kind: (*kind).into(),
                name: (*name).into(),
                body: body.to_string(),
                ..Default::default()
            };
            let outcome = tables.apply(RaftIndex(i as u64 + 1), &Command::ConfigEntryUpsert(entry)).0;
            assert_eq!(outcome, CommandOutcome::Done, "{kind} {name}");
        }
        tables
    }

    fn chain(tables: &Tables, service: &str) -> DiscoveryChain {
        compile(tables.mesh(), &ServiceName::new(service), &Datacenter::new("dc1")).unwrap()
    }

    #[test]
    fn a_service_with_no_entries_has_one_route_to_itself() {
        let chain = chain(&Tables::default(), "api");
        assert_eq!(chain.routes.len(), 1);
        assert_eq!(chain.routes[0].splits[0].target, "api.default.dc1");
        let target = &chain.targets["api.default.dc1"];
        assert_eq!((target.subset.as_deref(), target.connect_timeout_ms), (None, DEFAULT_CONNECT_TIMEOUT_MS));
    }

    #[test]
    fn router_then_splitter_then_resolver() {
        let tables = tables_with(&[
            ("service-defaults", "api", json!({"Protocol": "http"})),
            (
                "service-resolver",
                "api",
                json!({"DefaultSubset": "v1", "ConnectTimeout": "2s",
                       "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                                   "v2": {"Filter": "Service.Meta.version == v2"}},
                       "Failover": {"v2": {"ServiceSubset": "v1"}}}),
            ),
            (
                "service-splitter",
                "api",
                json!({"Splits": [{"Weight": 90, "ServiceSubset": "v1"},
                                  {"Weight": 10, "ServiceSubset": "v2", "RequestHeaders": {"Set": {"x-canary": "1"}}}]}),
            ),
            (
                "service-router",
                "api",
                json!({"Routes": [{
                    "Match": {"HTTP": {"Header": [{"Name": "user-agent", "Regex": ".*Mobile.*"}]}},
                    "Destination": {"ServiceSubset": "v2", "NumRetries": 3, "RetryOnStatusCodes": [503],
                                    "RequestTimeout": "1500ms"},
                    "Fault": {"Abort": {"HttpStatus": 418, "Percentage": 5}}
                }]}),
            ),
        ]);
        let chain = chain(&tables, "api");
        assert_eq!(chain.routes.len(), 2);
        let mobile = &chain.routes[0];
        assert_eq!(mobile.origin, "service-router api, route 1");
        assert_eq!(mobile.splits.len(), 1);
        assert_eq!(mobile.splits[0].target, "v2.api.default.dc1");
        assert_eq!((mobile.retry.num_retries, mobile.request_timeout_ms), (3, Some(1500)));
        assert_eq!(mobile.fault.as_ref().unwrap().abort.as_ref().unwrap().status, 418);
        let default = &chain.routes[1];
        let weights: Vec<(f64, &str)> = default.splits.iter().map(|s| (s.weight, s.target.as_str())).collect();
        assert_eq!(weights, [(90.0, "v1.api.default.dc1"), (10.0, "v2.api.default.dc1")]);
        assert_eq!(default.splits[1].request_headers.set["x-canary"], "1");
        let v2 = &chain.targets["v2.api.default.dc1"];
        assert_eq!(v2.filter.as_deref(), Some("Service.Meta.version == v2"));
        assert_eq!(v2.failover, ["v1.api.default.dc1"]);
        assert_eq!(v2.connect_timeout_ms, 2000);
    }

    #[test]
    fn redirects_are_followed_and_loops_refused() {
        let tables = tables_with(&[("service-resolver", "old", json!({"Redirect": {"Service": "new"}}))]);
        assert_eq!(chain(&tables, "old").routes[0].splits[0].target, "new.default.dc1");
        // A write that would close a loop is refused, saying why.
        let mut tables = tables_with(&[("service-resolver", "a", json!({"Redirect": {"Service": "b"}}))]);
        let closing = ConfigEntry {
            kind: "service-resolver".into(),
            name: "b".into(),
            body: json!({"Redirect": {"Service": "a"}}).to_string(),
            ..Default::default()
        };
        let (outcome, _) = tables.apply(RaftIndex(9), &Command::ConfigEntryUpsert(closing));
        assert!(matches!(&outcome, CommandOutcome::Rejected(r) if r.contains("loop")), "{outcome:?}");
    }
}
