//! A discovery chain: how a sidecar sends one upstream's traffic, compiled
//! from the destination's config entries (service-router, then
//! service-splitter, then service-resolver) into routes, weighted splits
//! and targets. Sidecars receive the compiled chain, never raw entries, so
//! they only match and pick; `GET /v1/discovery-chain/<service>` and
//! `weft troubleshoot route` show the very same chain.
//!
//! [`CompiledChain`] holds a chain with its regexes compiled; matching a
//! request ([`CompiledChain::route`]) and picking a split
//! ([`Route::pick`]) are here so the sidecar and the troubleshooter decide
//! alike.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::ids::ServiceName;
use crate::intentions::{anchored_regex, HeaderMatch, HeaderTest, PathMatch};
use crate::mesh::Protocol;
use crate::proxy::LoadBalancer;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryChain {
    /// The upstream's service: what the caller asked for.
    pub service: ServiceName,
    pub protocol: Protocol,
    /// In order; the first whose match fits a request decides. The last
    /// matches everything (the default route).
    pub routes: Vec<Route>,
    /// Every target a route can send to, by ID.
    pub targets: BTreeMap<String, Target>,
}

/// Which requests a route takes, and what it does with them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Where it comes from, for `weft troubleshoot route`
    /// (`service-router api, route 2`, or `default route`).
    pub origin: String,
    pub matches: RouteMatch,
    /// Weights (percent) add up to 100.
    pub splits: Vec<Split>,
    /// The whole request, retries included.
    pub request_timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    /// Replaces the matched path prefix (a `PathPrefix` match only).
    pub prefix_rewrite: Option<String>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub fault: Option<Fault>,
}

/// Every part given must match; an empty match takes every request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    /// Upper case; empty matches any method.
    pub methods: Vec<String>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

/// A test of one query parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMatch {
    pub name: String,
    pub test: QueryTest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryTest {
    Present,
    Exact(String),
    Regex(String),
}

/// A share of a route's traffic, sent to one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// Percent of the route's requests.
    pub weight: f64,
    pub target: String,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first try (0: none).
    pub num_retries: u32,
    /// Retry a request that could not reach any endpoint.
    pub on_connect_failure: bool,
    /// Retry a response with one of these status codes.
    pub on_status_codes: Vec<u16>,
    /// Each try's own limit.
    pub per_try_timeout_ms: Option<u64>,
}

/// Headers added (appended), set (replaced) and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderEdits {
    pub add: BTreeMap<String, String>,
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// Faults injected into a route's requests, each for a share of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultDelay {
    pub duration_ms: u64,
    pub percentage: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultAbort {
    pub status: u16,
    pub percentage: f64,
}

/// Where traffic goes: a service, or one subset of its instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub service: ServiceName,
    pub subset: Option<String>,
    /// Consul's filter expression over the instances (`Service.Meta.version == "v2"`).
    pub filter: Option<String>,
    /// Only instances whose checks all pass (warning excluded).
    pub only_passing: bool,
    /// Tried in order when this target has no healthy endpoint.
    pub failover: Vec<String>,
    pub connect_timeout_ms: u64,
    pub load_balancer: LoadBalancer,
}

/// The ID Consul gives a target: `[<subset>.]<service>.default.<dc>`.
pub fn target_id(service: &ServiceName, subset: Option<&str>, datacenter: &str) -> String {
    match subset {
        Some(subset) => format!("{subset}.{service}.default.{datacenter}"),
        None => format!("{service}.default.{datacenter}"),
    }
}

/// What a route match sees of a request.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The request's values of a header (name in lower case).
    pub header: &'a dyn Fn(&str) -> Vec<&'a str>,
}

/// A chain with its regexes compiled, ready to route requests.
#[derive(Clone, Debug)]
pub struct CompiledChain {
    pub chain: DiscoveryChain,
    matchers: Vec<CompiledMatch>,
}

#[derive(Clone, Debug)]
struct CompiledMatch {
    path_regex: Option<Regex>,
    header_regexes: Vec<Option<Regex>>,
    query_regexes: Vec<Option<Regex>>,
}

/// A regex that does not compile (refused when the entry was written).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {pattern:?} is not a valid regular expression: {reason}")]
pub struct ChainError {
    pub origin: String,
    pub pattern: String,
    pub reason: String,
}

fn anchored(origin: &str, pattern: &str) -> Result<Regex, ChainError> {
    anchored_regex(pattern).map_err(|e| ChainError {
        origin: origin.to_owned(),
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })
}

impl CompiledChain {
    pub fn new(chain: DiscoveryChain) -> Result<CompiledChain, ChainError> {
        let matchers = chain
            .routes
            .iter()
            .map(|route| {
                let m = &route.matches;
                let path_regex = match &m.path {
                    Some(PathMatch::Regex(pattern)) => Some(anchored(&route.origin, pattern)?),
                    _ => None,
                };
                let header_regexes = m
                    .headers
                    .iter()
                    .map(|h| match &h.test {
                        HeaderTest::Regex(pattern) => anchored(&route.origin, pattern).map(Some),
                        _ => Ok(None),
                    })
                    .collect::<Result<_, _>>()?;
                let query_regexes = m
                    .query
                    .iter()
                    .map(|q| match &q.test {
                        QueryTest::Regex(pattern) => anchored(&route.origin, pattern).map(Some),
                        _ => Ok(None),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(CompiledMatch { path_regex, header_regexes, query_regexes })
            })
            .collect::<Result<_, ChainError>>()?;
        Ok(CompiledChain { chain, matchers })
    }

    /// The first route that takes `request`, with its position.
    pub fn route(&self, request: &RequestView<'_>) -> Option<(usize, &Route)> {
        self.chain
            .routes
            .iter()
            .zip(&self.matchers)
            .position(|(route, compiled)| matches(&route.matches, compiled, request))
            .map(|i| (i, &self.chain.routes[i]))
    }
}

fn matches(m: &RouteMatch, compiled: &CompiledMatch, request: &RequestView<'_>) -> bool {
    if !m.methods.is_empty() && !m.methods.iter().any(|method| method.eq_ignore_ascii_case(request.method)) {
        return false;
    }
    if !m.path.as_ref().is_none_or(|path| path.matches(request.path, compiled.path_regex.as_ref())) {
        return false;
    }
    let headers_match =
        m.headers.iter().zip(&compiled.header_regexes).all(|(header, regex)| {
            header.matches(&(request.header)(&header.name.to_ascii_lowercase()), regex.as_ref())
        });
    headers_match
        && m.query.iter().zip(&compiled.query_regexes).all(|(query, regex)| {
            let value = query_value(request.query, &query.name);
            match (&query.test, value) {
                (_, None) => false,
                (QueryTest::Present, Some(_)) => true,
                (QueryTest::Exact(expected), Some(value)) => value == *expected,
                (QueryTest::Regex(_), Some(value)) => regex.as_ref().is_some_and(|r| r.is_match(&value)),
            }
        })
}

/// The first value of query parameter `name`, percent-decoded.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |text: &str| percent_encoding::percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned();
        (decode(key) == name).then(|| decode(value))
    })
}

impl Route {
    /// The split a request falls in, given `roll` uniform in [0, 100).
    pub fn pick(&self, roll: f64) -> Option<&Split> {
        let mut total = 0.0;
        for split in &self.splits {
            total += split.weight;
            if roll < total {
                return Some(split);
            }
        }
        self.splits.iter().rev().find(|s| s.weight > 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(origin: &str, matches: RouteMatch, splits: &[(f64, &str)]) -> Route {
        Route {
            origin: origin.into(),
            matches,
            splits: splits
                .iter()
                .map(|(weight, target)| Split {
                    weight: *weight,
                    target: (*target).into(),
                    request_headers: HeaderEdits::default(),
                    response_headers: HeaderEdits::default(),
                })
                .collect(),
            request_timeout_ms: None,
            retry: RetryPolicy::default(),
            prefix_rewrite: None,
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            fault: None,
        }
    }

    fn chain(routes: Vec<Route>) -> CompiledChain {
        CompiledChain::new(DiscoveryChain {
            service: "api".into(),
            protocol: Protocol::Http,
            routes,
            targets: BTreeMap::new(),
        })
        .unwrap()
    }

    fn view<'a>(
        method: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        header: &'a dyn Fn(&str) -> Vec<&'a str>,
    ) -> RequestView<'a> {
        RequestView { method, path, query, header }
    }

    fn none(_: &str) -> Vec<&'static str> {
        Vec::new()
    }

    #[test]
    fn the_first_matching_route_decides() {
        let mobile = RouteMatch {
            headers: vec![HeaderMatch {
                name: "User-Agent".into(),
                test: HeaderTest::Regex(".*Mobile.*".into()),
                invert: false,
            }],
            ..RouteMatch::default()
        };
        let admin = RouteMatch { path: Some(PathMatch::Prefix("/admin".into())), ..RouteMatch::default() };
        let debug = RouteMatch {
            query: vec![QueryMatch { name: "debug".into(), test: QueryTest::Exact("on now".into()) }],
            ..RouteMatch::default()
        };
        let chain = chain(vec![
            route("router 1", mobile, &[(100.0, "v2")]),
            route("router 2", admin, &[(100.0, "admin")]),
            route("router 3", debug, &[(100.0, "debug")]),
            route("default route", RouteMatch::default(), &[(100.0, "v1")]),
        ]);
        let phone = |name: &str| if name == "user-agent" { vec!["Foo Mobile Safari"] } else { Vec::new() };
        assert_eq!(chain.route(&view("GET", "/", None, &phone)).unwrap().0, 0);
        assert_eq!(chain.route(&view("GET", "/admin/x", None, &none)).unwrap().0, 1);
        assert_eq!(chain.route(&view("GET", "/", Some("a=1&debug=on+now"), &none)).unwrap().0, 2);
        assert_eq!(chain.route(&view("GET", "/", Some("debug=off"), &none)).unwrap().0, 3);
    }

    #[test]
    fn splits_take_their_share_of_the_rolls() {
        let route = route("default", RouteMatch::default(), &[(90.0, "v1"), (10.0, "v2"), (0.0, "v3")]);
        assert_eq!(route.pick(0.0).unwrap().target, "v1");
        assert_eq!(route.pick(89.99).unwrap().target, "v1");
        assert_eq!(route.pick(90.0).unwrap().target, "v2");
        assert_eq!(route.pick(99.999).unwrap().target, "v2");
        assert_eq!(target_id(&"api".into(), Some("v2"), "dc1"), "v2.api.default.dc1");
    }
}
