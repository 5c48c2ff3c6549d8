//! Intentions as the mesh decides with them: the rules that apply to one
//! destination, in Consul's evaluation order, and the two decisions made
//! from them, for a connection (L4) and for an HTTP request (L7).
//!
//! Servers (the `check` and `authorize` endpoints) and sidecars (every
//! connection and every request) decide with this one code, so the API
//! never answers "allowed" where a sidecar would refuse.
//!
//! A rule comes from the intentions table (an L4 action, addressed by ID) or
//! from a source of a `service-intentions` config entry (an action, or L7
//! `Permissions`). For one (source, destination) pair there is at most one
//! rule; the first rule in evaluation order whose source matches decides.
//! An L7 rule decides per request: its first matching permission, else the
//! mesh-wide default. Where only L4 can be judged (the `check` and
//! `authorize` endpoints, a `tcp` service), an L7 rule counts as a deny, as
//! in Consul.

use std::cmp::Ordering;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::ids::ServiceName;
use crate::mesh::IntentionAction;

/// The name that matches every service.
pub const WILDCARD: &str = "*";

pub fn is_wildcard(name: &ServiceName) -> bool {
    name.as_str() == WILDCARD
}

/// Consul's precedence (higher is evaluated first): exact source and
/// destination 9, any source to an exact destination 8, an exact source to
/// any destination 6, any to any 5. Weft has no namespaces, so of Consul's
/// nine levels only these four exist. Computed, never stored.
pub fn precedence(source: &ServiceName, destination: &ServiceName) -> u8 {
    match (is_wildcard(source), is_wildcard(destination)) {
        (false, false) => 9,
        (true, false) => 8,
        (false, true) => 6,
        (true, true) => 5,
    }
}

/// Where a rule was written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuleOrigin {
    /// The intentions table (`/v1/connect/intentions`, `weft intention`).
    Intention { id: String },
    /// A source of the destination's `service-intentions` config entry.
    ConfigEntry,
}

/// One intention: what a source may do to a destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentionRule {
    pub source: ServiceName,
    pub destination: ServiceName,
    pub origin: RuleOrigin,
    pub verdict: Verdict,
}

/// An L4 action, or L7 permissions checked in order for each request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Action(IntentionAction),
    Permissions(Vec<Permission>),
}

/// One L7 permission: the action for requests its match selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub action: IntentionAction,
    pub http: HttpMatch,
}

/// Which requests a permission selects; every part given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpMatch {
    pub path: Option<PathMatch>,
    /// Upper-case method names; empty matches any method.
    pub methods: Vec<String>,
    pub headers: Vec<HeaderMatch>,
}

/// A test of the request's path (without its query string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// A test of one request header (several values are joined with `,`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Matched without regard to case.
    pub name: String,
    pub test: HeaderTest,
    /// Selects the requests the test does not.
    pub invert: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeaderTest {
    Present,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
}

/// A rule that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntentionError {
    #[error("{rule}: {field} {pattern:?} is not a valid regular expression: {reason}")]
    BadRegex { rule: String, field: &'static str, pattern: String, reason: String },
}

impl IntentionRule {
    pub fn precedence(&self) -> u8 {
        precedence(&self.source, &self.destination)
    }

    pub fn is_l7(&self) -> bool {
        matches!(self.verdict, Verdict::Permissions(_))
    }
}

impl fmt::Display for IntentionRule {
    /// `intention web => api (ID 1b2c…)` or `service-intentions api, source web`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            RuleOrigin::Intention { id } => write!(f, "intention {} => {} (ID {id})", self.source, self.destination),
            RuleOrigin::ConfigEntry => write!(f, "service-intentions {}, source {}", self.destination, self.source),
        }
    }
}

impl fmt::Display for HttpMatch {
    /// `DELETE /admin*`: methods, then the path test (`*` marks a prefix,
    /// `~` a regex), then header tests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.methods.is_empty() {
            parts.push(self.methods.join("|"));
        }
        match &self.path {
            Some(PathMatch::Exact(path)) => parts.push(path.clone()),
            Some(PathMatch::Prefix(prefix)) => parts.push(format!("{prefix}*")),
            Some(PathMatch::Regex(regex)) => parts.push(format!("~{regex}")),
            None => {}
        }
        for header in &self.headers {
            let not = if header.invert { "!" } else { "" };
            parts.push(match &header.test {
                HeaderTest::Present => format!("{not}{}", header.name),
                HeaderTest::Exact(v) => format!("{}{not}={v}", header.name),
                HeaderTest::Prefix(v) => format!("{}{not}={v}*", header.name),
                HeaderTest::Suffix(v) => format!("{}{not}=*{v}", header.name),
                HeaderTest::Regex(v) => format!("{}{not}~{v}", header.name),
            });
        }
        if parts.is_empty() {
            return f.write_str("any request");
        }
        f.write_str(&parts.join(" "))
    }
}

/// Consul's evaluation order: precedence, highest first; then source and
/// destination names, so that the order is the same everywhere.
pub fn evaluation_order(a: &IntentionRule, b: &IntentionRule) -> Ordering {
    b.precedence()
        .cmp(&a.precedence())
        .then_with(|| a.source.cmp(&b.source))
        .then_with(|| a.destination.cmp(&b.destination))
        .then_with(|| a.origin.cmp(&b.origin))
}

/// What an HTTP request shows an L7 permission.
pub struct RequestAttributes<'a> {
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    /// The request's values of a header (name in lower case).
    pub header: &'a dyn Fn(&str) -> Vec<&'a str>,
}

/// The outcome of a decision, and why, in words for logs and 403 bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: IntentionAction,
    pub reason: String,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.action == IntentionAction::Allow
    }
}

/// A connection's fate: decided now, or per request by an L7 rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionDecision {
    Decided(Decision),
    PerRequest { rule: String },
}

/// The rules for one destination, sorted and with regexes compiled, ready
/// to decide. Cheap to query; build it again when the rules change.
#[derive(Clone, Debug)]
pub struct IntentionSet {
    rules: Vec<CompiledRule>,
    default_action: IntentionAction,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    rule: IntentionRule,
    permissions: Vec<CompiledPermission>,
}

#[derive(Clone, Debug)]
struct CompiledPermission {
    action: IntentionAction,
    http: HttpMatch,
    path_regex: Option<Regex>,
    header_regexes: Vec<Option<Regex>>,
}

/// `pattern` compiled to match a whole value, as Envoy (and so Consul)
/// matches regexes in intentions and routes.
pub fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

impl PathMatch {
    /// Whether `path` (without its query) matches; `regex` is this test's
    /// compiled regex, for `Regex`.
    pub fn matches(&self, path: &str, regex: Option<&Regex>) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatch::Regex(_) => regex.is_some_and(|r| r.is_match(path)),
        }
    }
}

impl HeaderMatch {
    /// Whether a request whose values of this header are `values` matches
    /// (several values are joined with `,`); `regex` as for [`PathMatch`].
    pub(crate) fn matches(&self, values: &[&str], regex: Option<&Regex>) -> bool {
        let joined = values.join(",");
        let found = !values.is_empty()
            && match &self.test {
                HeaderTest::Present => true,
                HeaderTest::Exact(v) => joined == *v,
                HeaderTest::Prefix(v) => joined.starts_with(v.as_str()),
                HeaderTest::Suffix(v) => joined.ends_with(v.as_str()),
                HeaderTest::Regex(_) => regex.is_some_and(|r| r.is_match(&joined)),
            };
        found != self.invert
    }
}

fn compile(rule: &IntentionRule, field: &'static str, pattern: &str) -> Result<Regex, IntentionError> {
    anchored_regex(pattern).map_err(|e| IntentionError::BadRegex {
        rule: rule.to_string(),
        field,
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })
}

impl CompiledPermission {
    fn new(rule: &IntentionRule, permission: &Permission) -> Result<Self, IntentionError> {
        let path_regex = match &permission.http.path {
            Some(PathMatch::Regex(pattern)) => Some(compile(rule, "PathRegex", pattern)?),
            _ => None,
        };
        let header_regexes = permission
            .http
            .headers
            .iter()
            .map(|header| match &header.test {
                HeaderTest::Regex(pattern) => compile(rule, "Header.Regex", pattern).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { action: permission.action, http: permission.http.clone(), path_regex, header_regexes })
    }

    fn matches(&self, request: &RequestAttributes<'_>) -> bool {
        let http = &self.http;
        if !http.methods.is_empty() && !http.methods.iter().any(|m| m.eq_ignore_ascii_case(request.method)) {
            return false;
        }
        http.path.as_ref().is_none_or(|path| path.matches(request.path, self.path_regex.as_ref()))
            && http.headers.iter().zip(&self.header_regexes).all(|(header, regex)| {
                header.matches(&(request.header)(&header.name.to_ascii_lowercase()), regex.as_ref())
            })
    }
}

impl IntentionSet {
    /// Sorts `rules` into evaluation order and compiles their regexes.
    pub fn new(mut rules: Vec<IntentionRule>, default_action: IntentionAction) -> Result<Self, IntentionError> {
        rules.sort_by(evaluation_order);
        let rules = rules
            .into_iter()
            .map(|rule| {
                let permissions = match &rule.verdict {
                    Verdict::Action(_) => Vec::new(),
                    Verdict::Permissions(permissions) => {
                        permissions.iter().map(|p| CompiledPermission::new(&rule, p)).collect::<Result<_, _>>()?
                    }
                };
                Ok(CompiledRule { rule, permissions })
            })
            .collect::<Result<_, IntentionError>>()?;
        Ok(Self { rules, default_action })
    }

    /// No rules, and deny by default.
    pub fn deny_all() -> Self {
        Self { rules: Vec::new(), default_action: IntentionAction::Deny }
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> impl Iterator<Item = &IntentionRule> {
        self.rules.iter().map(|r| &r.rule)
    }

    pub fn default_action(&self) -> IntentionAction {
        self.default_action
    }

    /// The rule that applies to traffic from `source`: the first, in
    /// evaluation order, naming it or `*` as its source.
    pub fn rule_for(&self, source: &ServiceName) -> Option<&IntentionRule> {
        self.compiled_rule_for(source).map(|r| &r.rule)
    }

    fn compiled_rule_for(&self, source: &ServiceName) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| &r.rule.source == source || is_wildcard(&r.rule.source))
    }

    fn by_default(&self, why: &str) -> Decision {
        let action = self.default_action;
        Decision { action, reason: format!("{why}; the mesh default is to {}", action_name(action)) }
    }

    /// A connection from `source`: decided by its rule's action or the
    /// default, or left to each request when its rule has L7 permissions.
    pub fn decide_connection(&self, source: &ServiceName) -> ConnectionDecision {
        match self.compiled_rule_for(source) {
            None => ConnectionDecision::Decided(self.by_default(&format!("no intention matches {source}"))),
            Some(CompiledRule { rule, .. }) => match &rule.verdict {
                Verdict::Action(action) => ConnectionDecision::Decided(Decision {
                    action: *action,
                    reason: format!("{rule} says {}", action_name(*action)),
                }),
                Verdict::Permissions(_) => ConnectionDecision::PerRequest { rule: rule.to_string() },
            },
        }
    }

    /// A connection where requests cannot be seen (`check`, `authorize`, a
    /// `tcp` service): an L7 rule counts as a deny, as in Consul.
    pub fn decide_l4(&self, source: &ServiceName) -> Decision {
        match self.decide_connection(source) {
            ConnectionDecision::Decided(decision) => decision,
            ConnectionDecision::PerRequest { rule } => Decision {
                action: IntentionAction::Deny,
                reason: format!("{rule} has L7 permissions, which only an HTTP sidecar can check"),
            },
        }
    }

    /// One HTTP request from `source`.
    pub fn decide_request(&self, source: &ServiceName, request: &RequestAttributes<'_>) -> Decision {
        let Some(compiled) = self.compiled_rule_for(source) else {
            return self.by_default(&format!("no intention matches {source}"));
        };
        let rule = &compiled.rule;
        match &rule.verdict {
            Verdict::Action(action) => {
                Decision { action: *action, reason: format!("{rule} says {}", action_name(*action)) }
            }
            Verdict::Permissions(_) => match compiled.permissions.iter().position(|p| p.matches(request)) {
                Some(i) => {
                    let permission = &compiled.permissions[i];
                    Decision {
                        action: permission.action,
                        reason: format!(
                            "{rule}, permission {} ({}), says {}",
                            i + 1,
                            permission.http,
                            action_name(permission.action)
                        ),
                    }
                }
                None => {
                    self.by_default(&format!("no permission of {rule} matches {} {}", request.method, request.path))
                }
            },
        }
    }
}

pub fn action_name(action: IntentionAction) -> &'static str {
    match action {
        IntentionAction::Allow => "allow",
        IntentionAction::Deny => "deny",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IntentionAction::{Allow, Deny};

    fn rule(source: &str, destination: &str, verdict: Verdict) -> IntentionRule {
        IntentionRule {
            source: source.into(),
            destination: destination.into(),
            origin: RuleOrigin::ConfigEntry,
            verdict,
        }
    }

    fn request<'a>(method: &'a str, path: &'a str, header: &'a dyn Fn(&str) -> Vec<&'a str>) -> RequestAttributes<'a> {
        RequestAttributes { method, path, header }
    }

    fn no_headers(_: &str) -> Vec<&'static str> {
        Vec::new()
    }

    #[test]
    fn the_most_specific_rule_decides_then_the_default() {
        let set = IntentionSet::new(
            vec![
                rule("*", "api", Verdict::Action(Deny)),
                rule("web", "api", Verdict::Action(Allow)),
                rule("*", "*", Verdict::Action(Allow)),
            ],
            Deny,
        )
        .unwrap();
        assert!(set.decide_l4(&"web".into()).allowed());
        assert!(!set.decide_l4(&"other".into()).allowed());
        let order: Vec<u8> = set.rules().map(IntentionRule::precedence).collect();
        assert_eq!(order, [9, 8, 5]);

        let empty = IntentionSet::new(Vec::new(), Allow).unwrap();
        let decision = empty.decide_l4(&"web".into());
        assert!(decision.allowed() && decision.reason.contains("mesh default is to allow"), "{decision:?}");
    }

    #[test]
    fn l7_permissions_decide_per_request_in_order_with_the_default_last() {
        let permissions = vec![
            Permission {
                action: Deny,
                http: HttpMatch {
                    path: Some(PathMatch::Prefix("/admin".into())),
                    methods: vec!["DELETE".into()],
                    ..HttpMatch::default()
                },
            },
            Permission {
                action: Allow,
                http: HttpMatch { path: Some(PathMatch::Regex("/(admin|api)/.*".into())), ..HttpMatch::default() },
            },
            Permission {
                action: Allow,
                http: HttpMatch {
                    headers: vec![HeaderMatch {
                        name: "X-Debug".into(),
                        test: HeaderTest::Exact("1".into()),
                        invert: false,
                    }],
                    ..HttpMatch::default()
                },
            },
        ];
        let set = IntentionSet::new(vec![rule("web", "api", Verdict::Permissions(permissions))], Deny).unwrap();
        let web = ServiceName::new("web");
        assert!(matches!(set.decide_connection(&web), ConnectionDecision::PerRequest { .. }));
        assert!(!set.decide_l4(&web).allowed(), "L7 rules count as deny where requests are unseen");

        let denied = set.decide_request(&web, &request("DELETE", "/admin/users", &no_headers));
        assert!(!denied.allowed());
        assert!(denied.reason.contains("permission 1"), "{}", denied.reason);
        assert!(denied.reason.contains("DELETE /admin*"), "{}", denied.reason);
        assert!(set.decide_request(&web, &request("GET", "/admin/users", &no_headers)).allowed());
        // Regexes match the whole path.
        assert!(!set.decide_request(&web, &request("GET", "/x/admin/users", &no_headers)).allowed());
        let debug = |name: &str| if name == "x-debug" { vec!["1"] } else { Vec::new() };
        assert!(set.decide_request(&web, &request("GET", "/", &debug)).allowed());
        let fallthrough = set.decide_request(&web, &request("GET", "/", &no_headers));
        assert!(!fallthrough.allowed() && fallthrough.reason.contains("no permission"), "{fallthrough:?}");
    }

    #[test]
    fn inverted_and_present_header_tests() {
        let http = HttpMatch {
            headers: vec![HeaderMatch { name: "authorization".into(), test: HeaderTest::Present, invert: true }],
            ..HttpMatch::default()
        };
        let set = IntentionSet::new(
            vec![rule("*", "api", Verdict::Permissions(vec![Permission { action: Deny, http }]))],
            Allow,
        )
        .unwrap();
        let with_token = |name: &str| if name == "authorization" { vec!["Bearer x"] } else { Vec::new() };
        assert!(!set.decide_request(&"web".into(), &request("GET", "/", &no_headers)).allowed());
        assert!(set.decide_request(&"web".into(), &request("GET", "/", &with_token)).allowed());
    }

    #[test]
    fn a_bad_regex_is_refused_naming_the_rule() {
        let http = HttpMatch { path: Some(PathMatch::Regex("(".into())), ..HttpMatch::default() };
        let error = IntentionSet::new(
            vec![rule("web", "api", Verdict::Permissions(vec![Permission { action: Allow, http }]))],
            Deny,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("service-intentions api, source web") && error.contains("PathRegex"), "{error}");
    }
}
