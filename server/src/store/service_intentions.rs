//! `service-intentions` config entries as intention rules.
//!
//! An entry holds every intention of one destination (its `Name`), one per
//! `Sources[]` item: an L4 `Action`, or L7 `Permissions` checked in order
//! for each HTTP request. Reading a body here is the one place that turns
//! Consul's shape into [`IntentionRule`]s, for the store's validation and
//! for every decision (see `MeshTables::intention_set`).
//!
//! Keys are matched the way Consul decodes them (see `config_entries`), and
//! a key this code does not know is an error rather than ignored: a typo in
//! `PathPrefix` must not quietly widen a permission.

use serde_json::{Map, Value};
use weft_api::ids::ServiceName;
use weft_api::intentions::{
    is_wildcard, HeaderMatch, HeaderTest, HttpMatch, IntentionRule, PathMatch, Permission, RuleOrigin, Verdict,
};
use weft_api::mesh::IntentionAction;

use super::config_entries::{as_object, field, list_field, str_field};
use super::intentions::validate_name;

const SOURCE_KEYS: &[&str] =
    &["Name", "Action", "Permissions", "Description", "Type", "Precedence", "Namespace", "Partition", "LegacyID"];
const PERMISSION_KEYS: &[&str] = &["Action", "HTTP"];
const HTTP_KEYS: &[&str] = &["PathExact", "PathPrefix", "PathRegex", "Methods", "Header"];
const HEADER_KEYS: &[&str] = &["Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert"];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// The rules of the entry for `destination` whose body is `body`; the error
/// names the field at fault (`Sources[1].Permissions[0].HTTP.PathRegex`).
pub fn rules_of(destination: &str, body: &Map<String, Value>) -> Result<Vec<IntentionRule>, String> {
    only_known_keys(body, &["Sources", "Meta", "JWT"], "the service-intentions entry")?;
    let destination = ServiceName::new(destination);
    let mut rules: Vec<IntentionRule> = Vec::new();
    for (i, source) in list_field(body, "Sources", "Sources")?.iter().enumerate() {
        let path = format!("Sources[{i}]");
        let source = as_object(source, &path)?;
        only_known_keys(source, SOURCE_KEYS, &path)?;
        let name = ServiceName::new(
            str_field(source, "Name", &format!("{path}.Name"))?.ok_or_else(|| format!("{path}.Name must be set"))?,
        );
        validate_name(&format!("{path}.Name"), &name)?;
        if rules.iter().any(|r| r.source == name) {
            return Err(format!("{path}.Name: {name} is listed twice; a source has one intention per destination"));
        }
        for (key, allowed) in [("Namespace", "default"), ("Partition", "default"), ("Type", "consul")] {
            if let Some(value) = str_field(source, key, &format!("{path}.{key}"))? {
                if value != allowed {
                    return Err(format!("{path}.{key} {value:?}: Weft only has {allowed:?}"));
                }
            }
        }
        let action = str_field(source, "Action", &format!("{path}.Action"))?;
        let permissions = list_field(source, "Permissions", &format!("{path}.Permissions"))?;
        let verdict = match (action, permissions.is_empty()) {
            (Some(action), true) => Verdict::Action(parse_action(action, &format!("{path}.Action"))?),
            (None, false) => {
                if is_wildcard(&destination) {
                    return Err(format!("{path}.Permissions: L7 permissions need one destination service, not \"*\""));
                }
                let permissions = permissions
                    .iter()
                    .enumerate()
                    .map(|(j, p)| parse_permission(p, &format!("{path}.Permissions[{j}]")))
                    .collect::<Result<_, _>>()?;
                Verdict::Permissions(permissions)
            }
            (Some(_), false) => return Err(format!("{path}: give Action or Permissions, not both")),
            (None, true) => return Err(format!("{path}: give an Action (allow or deny) or Permissions")),
        };
        rules.push(IntentionRule {
            source: name,
            destination: destination.clone(),
            origin: RuleOrigin::ConfigEntry,
            verdict,
        });
    }
    Ok(rules)
}

fn only_known_keys(object: &Map<String, Value>, known: &[&str], path: &str) -> Result<(), String> {
    let normalized = |key: &str| key.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_lowercase();
    match object.keys().find(|key| !known.iter().any(|k| normalized(k) == normalized(key))) {
        Some(unknown) => Err(format!("{path} has an unknown field {unknown:?} (known: {})", known.join(", "))),
        None => Ok(()),
    }
}

fn parse_action(action: &str, path: &str) -> Result<IntentionAction, String> {
    match action.to_ascii_lowercase().as_str() {
        "allow" => Ok(IntentionAction::Allow),
        "deny" => Ok(IntentionAction::Deny),
        _ => Err(format!("{path} must be \"allow\" or \"deny\", not {action:?}")),
    }
}

fn parse_permission(value: &Value, path: &str) -> Result<Permission, String> {
    let permission = as_object(value, path)?;
    only_known_keys(permission, PERMISSION_KEYS, path)?;
    let action_path = format!("{path}.Action");
    let action = str_field(permission, "Action", &action_path)?.ok_or_else(|| format!("{action_path} must be set"))?;
    let action = parse_action(action, &action_path)?;
    let http_path = format!("{path}.HTTP");
    let http = field(permission, "HTTP").ok_or_else(|| format!("{http_path} must be set"))?;
    Ok(Permission { action, http: parse_http(as_object(http, &http_path)?, &http_path)? })
}

fn parse_http(http: &Map<String, Value>, path: &str) -> Result<HttpMatch, String> {
    only_known_keys(http, HTTP_KEYS, path)?;
    let mut paths = Vec::new();
    if let Some(exact) = str_field(http, "PathExact", &format!("{path}.PathExact"))? {
        paths.push(PathMatch::Exact(starting_with_slash(exact, &format!("{path}.PathExact"))?));
    }
    if let Some(prefix) = str_field(http, "PathPrefix", &format!("{path}.PathPrefix"))? {
        paths.push(PathMatch::Prefix(starting_with_slash(prefix, &format!("{path}.PathPrefix"))?));
    }
    if let Some(regex) = str_field(http, "PathRegex", &format!("{path}.PathRegex"))? {
        paths.push(PathMatch::Regex(regex.to_owned()));
    }
    if paths.len() > 1 {
        return Err(format!("{path}: give at most one of PathExact, PathPrefix and PathRegex"));
    }
    let mut methods = Vec::new();
    for (i, method) in list_field(http, "Methods", &format!("{path}.Methods"))?.iter().enumerate() {
        let method_path = format!("{path}.Methods[{i}]");
        let method = method.as_str().ok_or_else(|| format!("{method_path} must be a string"))?.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(format!("{method_path} {method:?} is not an HTTP method ({})", METHODS.join(", ")));
        }
        methods.push(method);
    }
    let headers = list_field(http, "Header", &format!("{path}.Header"))?
        .iter()
        .enumerate()
        .map(|(i, header)| parse_header(header, &format!("{path}.Header[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(HttpMatch { path: paths.pop(), methods, headers })
}

fn starting_with_slash(value: &str, path: &str) -> Result<String, String> {
    if value.starts_with('/') {
        Ok(value.to_owned())
    } else {
        Err(format!("{path} {value:?} must begin with '/'"))
    }
}

pub(super) fn parse_header(value: &Value, path: &str) -> Result<HeaderMatch, String> {
    let header = as_object(value, path)?;
    only_known_keys(header, HEADER_KEYS, path)?;
    let name = str_field(header, "Name", &format!("{path}.Name"))?.ok_or_else(|| format!("{path}.Name must be set"))?;
    let flag = |key: &str| match field(header, key) {
        None => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(other) => Err(format!("{path}.{key} must be true or false, not {other}")),
    };
    let mut tests = Vec::new();
    if flag("Present")? {
        tests.push(HeaderTest::Present);
    }
    for (key, make) in [
        ("Exact", HeaderTest::Exact as fn(String) -> HeaderTest),
        ("Prefix", HeaderTest::Prefix),
        ("Suffix", HeaderTest::Suffix),
        ("Regex", HeaderTest::Regex),
    ] {
        if let Some(value) = str_field(header, key, &format!("{path}.{key}"))? {
            tests.push(make(value.to_owned()));
        }
    }
    if tests.len() != 1 {
        return Err(format!("{path}: give exactly one of Present, Exact, Prefix, Suffix and Regex"));
    }
    Ok(HeaderMatch { name: name.to_owned(), test: tests.remove(0), invert: flag("Invert")? })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(body: Value) -> Result<Vec<IntentionRule>, String> {
        rules_of("api", body.as_object().unwrap())
    }

    #[test]
    fn l4_and_l7_sources_are_read_in_consul_shape() {
        let found = rules(json!({"Sources": [
            {"Name": "web", "Action": "allow"},
            {"name": "admin", "permissions": [
                {"action": "deny", "http": {"path_prefix": "/admin", "methods": ["delete"],
                 "header": [{"name": "x-user", "exact": "root", "invert": true}]}},
                {"Action": "allow", "HTTP": {"PathRegex": "/v[12]/.*"}}
            ]}
        ]}))
        .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].verdict, Verdict::Action(IntentionAction::Allow));
        let Verdict::Permissions(permissions) = &found[1].verdict else { panic!("L7: {found:?}") };
        assert_eq!(permissions[0].http.methods, ["DELETE"]);
        assert_eq!(permissions[0].http.path, Some(PathMatch::Prefix("/admin".into())));
        assert_eq!(
            permissions[0].http.headers,
            [HeaderMatch { name: "x-user".into(), test: HeaderTest::Exact("root".into()), invert: true }]
        );
    }

    #[test]
    fn mistakes_are_refused_naming_the_field() {
        for (body, message) in [
            (json!({"Sources": [{"Name": "web"}]}), "Sources[0]: give an Action"),
            (json!({"Sources": [{"Name": "web", "Action": "maybe"}]}), "Sources[0].Action"),
            (json!({"Sources": [{"Action": "allow"}]}), "Sources[0].Name must be set"),
            (json!({"Sources": [{"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}]}), "twice"),
            (
                json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefx": "/"}}]}]}),
                "unknown field \"PathPrefx\"",
            ),
            (
                json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "allow",
                       "HTTP": {"PathExact": "/a", "PathPrefix": "/b"}}]}]}),
                "at most one of PathExact",
            ),
            (
                json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"Methods": ["FETCH"]}}]}]}),
                "Sources[0].Permissions[0].HTTP.Methods[0]",
            ),
            (
                json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "allow",
                       "HTTP": {"Header": [{"Name": "x", "Exact": "1", "Prefix": "2"}]}}]}]}),
                "exactly one of Present",
            ),
            (json!({"Sources": [{"Name": "web", "Action": "allow", "Namespace": "team"}]}), "Namespace"),
        ] {
            let error = rules(body.clone()).unwrap_err();
            assert!(error.contains(message), "{body}: {error}");
        }
        let wildcard = rules_of(
            "*",
            json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {}}]}]})
                .as_object()
                .unwrap(),
        );
        assert!(wildcard.unwrap_err().contains("one destination service"));
    }
}
