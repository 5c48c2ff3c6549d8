//! Query parameters the way Consul reads them (a flag's presence means true:
//! `?recurse`, `?recurse=`, `?recurse=1`), the blocking-query options every
//! read takes, and the `X-Consul-*` headers every read answers with.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use percent_encoding::percent_decode_str;
use weft_api::catalog::{Node, Service};
use weft_api::ids::NodeName;
use weft_api::ids::RaftIndex;
use weft_server::ReadConsistency;

use crate::backend::Backend;

use super::error::ApiError;

/// Consul's default and maximum `?wait`.
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// Decoded query parameters, in order.
#[derive(Clone, Debug, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    pub fn parse(raw: Option<&str>) -> Self {
        let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(name), decode(value))
            })
            .collect();
        Self { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`?tag=a&tag=b`).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A flag: present means true, whatever its value.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A numeric parameter; a value that is not a number is a 400.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!("Invalid value for ?{name}: {text:?} is not a non-negative integer"))
            }),
        }
    }
}

/// How a read should be served.
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    pub consistency: ReadConsistency,
    /// Block until the data's index is above this (0: don't block).
    pub min_index: RaftIndex,
    pub wait: Duration,
}

impl ReadOptions {
    /// Reads `?stale`, `?consistent`, `?index`, `?wait` and checks `?dc`.
    pub fn from_query(query: &QueryParams, server: &Backend) -> Result<Self, ApiError> {
        check_datacenter(query, server)?;
        let consistency = match (query.flag("stale"), query.flag("consistent")) {
            (true, true) => {
                return Err(ApiError::BadRequest(
                    "Cannot specify ?stale with ?consistent, conflicting semantics.".into(),
                ))
            }
            (true, false) => ReadConsistency::Stale,
            (false, true) => ReadConsistency::Consistent,
            (false, false) => ReadConsistency::Default,
        };
        let min_index = RaftIndex(query.u64("index")?.unwrap_or(0));
        let wait = match query.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(text) => weft_api::duration::parse(text)
                .map_err(|e| ApiError::BadRequest(format!("Invalid wait time: {e}")))?
                .min(MAX_WAIT),
        };
        Ok(Self { consistency, min_index, wait })
    }

    /// Waits until the local state is fresh enough for this read.
    pub async fn barrier(&self, server: &Backend) -> Result<(), ApiError> {
        server.read_barrier(self.consistency).await.map_err(ApiError::from)
    }
}

/// `?dc=` naming another datacenter is an error, as in Consul (there is no
/// WAN federation yet).
pub fn check_datacenter(query: &QueryParams, server: &Backend) -> Result<(), ApiError> {
    match query.get("dc") {
        Some(dc) if !dc.is_empty() && dc != server.datacenter().as_str() => {
            Err(ApiError::Cluster(weft_server::ServerError::LeaderUnreachable(format!("No path to datacenter {dc:?}"))))
        }
        _ => Ok(()),
    }
}

/// `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`.
pub fn meta_headers(server: &Backend, index: RaftIndex) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-consul-index", HeaderValue::from(index.get().max(1)));
    let known_leader = if server.leader().is_some() { "true" } else { "false" };
    headers.insert("x-consul-knownleader", HeaderValue::from_static(known_leader));
    let last_contact = server.last_contact().map(|d| d.as_millis() as u64).unwrap_or(0);
    headers.insert("x-consul-lastcontact", HeaderValue::from(last_contact));
    headers
}

/// The `?filter=` expression (Consul's filter language, evaluated over the
/// JSON each listed item is answered with), if given; a bad one is a 400.
pub fn parse_filter(query: &QueryParams) -> Result<Option<weft_filter::Filter>, ApiError> {
    match query.get("filter").filter(|f| !f.trim().is_empty()) {
        None => Ok(None),
        Some(expression) => weft_filter::Filter::parse(expression)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("Failed to create boolean expression evaluator: {e}"))),
    }
}

/// Keeps the items `?filter=` selects (all of them without one).
pub fn filter_items(
    query: &QueryParams,
    mut items: Vec<serde_json::Value>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    if let Some(filter) = parse_filter(query)? {
        filter.retain(&mut items);
    }
    Ok(items)
}

/// Which instances a service or node read keeps, and in what order:
/// `?tag=` (repeatable; all must match), `?node-meta=key:value` (repeatable;
/// all must match) and `?near=<node>|_agent`.
pub struct InstanceSelector {
    tags: Vec<String>,
    node_meta: Vec<(String, String)>,
    near: Option<NodeName>,
}

impl InstanceSelector {
    /// `this_node` stands for `?near=_agent`.
    pub fn from_query(query: &QueryParams, this_node: &NodeName) -> Self {
        let near = query.get("near").filter(|n| !n.is_empty()).map(|n| match n {
            "_agent" => this_node.clone(),
            other => NodeName::new(other),
        });
        Self {
            tags: query.all("tag").map(str::to_owned).collect(),
            node_meta: query
                .all("node-meta")
                .filter_map(|pair| pair.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            near,
        }
    }

    pub fn node_matches(&self, node: &Node) -> bool {
        self.node_meta.iter().all(|(k, v)| node.meta.get(k) == Some(v))
    }

    pub fn matches(&self, node: &Node, service: &Service) -> bool {
        self.node_matches(node) && self.tags.iter().all(|t| service.tags.iter().any(|s| s == t))
    }

    /// `?near=`: that node's instances first. Weft keeps no network
    /// coordinates, so the rest keep their order.
    pub fn order<T>(&self, items: &mut [T], node_of: impl Fn(&T) -> &NodeName) {
        if let Some(near) = &self.near {
            items.sort_by_key(|item| node_of(item) != near);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_true_when_present_in_any_form() {
        for raw in ["recurse", "recurse=", "recurse=1", "recurse=true", "a=b&recurse"] {
            assert!(QueryParams::parse(Some(raw)).flag("recurse"), "{raw}");
        }
        assert!(!QueryParams::parse(Some("recursive")).flag("recurse"));
    }

    #[test]
    fn numbers_that_are_not_numbers_are_a_400() {
        let query = QueryParams::parse(Some("index=abc"));
        assert!(matches!(query.u64("index"), Err(ApiError::BadRequest(_))));
        assert_eq!(QueryParams::parse(Some("index=42")).u64("index").unwrap(), Some(42));
    }

    #[test]
    fn values_are_percent_decoded_and_repeatable() {
        let query = QueryParams::parse(Some("tag=a%20b&tag=c"));
        assert_eq!(query.all("tag").collect::<Vec<_>>(), vec!["a b", "c"]);
    }
}
