//! Consul's rule language, HCL or JSON, into typed [`Rules`].
//!
//! ```hcl
//! key_prefix "" { policy = "read" }
//! key "foo/bar" { policy = "write" }
//! service "web" { policy = "write" intentions = "write" }
//! operator = "read"
//! ```
//!
//! is, in JSON, `{"key_prefix": {"": {"policy": "read"}}, ...}`. Both are
//! read into one JSON value, then checked strictly: an unknown resource, an
//! unknown setting or an unknown access level is an error naming it.
//! Parsing happens before a policy is written, never in the state machine.

use serde_json::Value;
use weft_api::acl::{Access, GlobalResource, NamedResource, NamedRule, Rules};

/// Why rules did not parse (Consul's wording leads: clients match on it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Failed to parse ACL rules: {0}")]
pub struct RulesError(String);

fn invalid(text: impl Into<String>) -> RulesError {
    RulesError(text.into())
}

/// Parses `text` (HCL, or JSON when it starts with `{`).
pub fn parse_rules(text: &str) -> Result<Rules, RulesError> {
    let value: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?
    } else {
        hcl::from_str(&one_item_per_line(text)).map_err(|e| invalid(format!("invalid HCL: {e}")))?
    };
    let Value::Object(top) = value else { return Err(invalid("the rules must be an object of resources")) };
    let mut rules = Rules::default();
    for (key, value) in &top {
        if let Some(resource) = GlobalResource::ALL.iter().find(|r| r.as_str() == key) {
            let access = match value {
                Value::String(text) => access(text, key)?,
                _ => return Err(invalid(format!("{key} takes a policy string, such as {key} = \"read\""))),
            };
            rules.global.push((*resource, access));
            continue;
        }
        let (name, prefix) = match key.strip_suffix("_prefix") {
            Some(name) => (name, true),
            None => (key.as_str(), false),
        };
        let Some(resource) = NamedResource::ALL.iter().find(|r| r.as_str() == name) else {
            return Err(invalid(format!("unknown resource {key:?}")));
        };
        for (label, body) in labelled(key, value)? {
            rules.named.push(named_rule(*resource, label, prefix, &body, key)?);
        }
    }
    Ok(rules)
}

/// HCL 1 (Consul's) lets blocks and attributes share a line
/// (`service "web" { policy = "write" intentions = "read" }`); HCL 2
/// wants each on its own. Outside strings, puts a line break after `{`,
/// around `}`, and after a string value that another attribute follows.
fn one_item_per_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        out.push(c);
        if in_string {
            match c {
                '\\' => out.extend(chars.next()),
                '"' => {
                    in_string = false;
                    let mut rest = chars.clone();
                    while rest.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                        rest.next();
                    }
                    if rest.peek().is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') {
                        out.push('\n');
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => out.push('\n'),
            '}' => out.push('\n'),
            _ => {}
        }
        if chars.peek() == Some(&'}') {
            out.push('\n');
        }
    }
    out
}

/// `resource "label" { ... }` blocks, however HCL or JSON wrote them (an
/// object by label, or a list of such objects).
fn labelled(key: &str, value: &Value) -> Result<Vec<(String, Value)>, RulesError> {
    let objects: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut blocks = Vec::new();
    for object in objects {
        let Value::Object(by_label) = object else {
            return Err(invalid(format!(
                "{key} takes labelled blocks, such as {key} \"name\" {{ policy = \"read\" }}"
            )));
        };
        for (label, body) in by_label {
            match body {
                Value::Array(bodies) => blocks.extend(bodies.iter().map(|b| (label.clone(), b.clone()))),
                body => blocks.push((label.clone(), body.clone())),
            }
        }
    }
    Ok(blocks)
}

fn named_rule(
    resource: NamedResource,
    name: String,
    prefix: bool,
    body: &Value,
    key: &str,
) -> Result<NamedRule, RulesError> {
    let Value::Object(settings) = body else {
        return Err(invalid(format!("{key} {name:?} takes a block, such as {{ policy = \"read\" }}")));
    };
    let mut policy = None;
    let mut intentions = None;
    for (setting, value) in settings {
        let Value::String(text) = value else {
            return Err(invalid(format!("{key} {name:?}: {setting} must be a string")));
        };
        match setting.as_str() {
            "policy" => policy = Some(access(text, key)?),
            "intentions" if resource == NamedResource::Service => {
                let access = access(text, key)?;
                if access == Access::List {
                    return Err(invalid(format!("{key} {name:?}: intentions may be read, write or deny")));
                }
                intentions = Some(access);
            }
            other => return Err(invalid(format!("{key} {name:?}: unknown setting {other:?}"))),
        }
    }
    let access = policy.ok_or_else(|| invalid(format!("{key} {name:?} needs a policy")))?;
    if access == Access::List && resource != NamedResource::Key {
        return Err(invalid(format!("{key} {name:?}: \"list\" applies to keys only")));
    }
    Ok(NamedRule { resource, name, prefix, access, intentions })
}

fn access(text: &str, key: &str) -> Result<Access, RulesError> {
    Access::parse(text).ok_or_else(|| invalid(format!("{key}: invalid policy {text:?} (read, write, list or deny)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_say_the_same_thing() {
        let hcl = r#"
            key_prefix "" { policy = "read" }
            key_prefix "foo/" { policy = "write" }
            key "foo/bar/secret" { policy = "deny" }
            service "web" {
              policy = "write"
              intentions = "write"
            }
            node_prefix "" { policy = "read" }
            operator = "read"
        "#;
        let json = r#"{"key_prefix": {"": {"policy": "read"}, "foo/": {"policy": "write"}},
            "key": {"foo/bar/secret": {"policy": "deny"}},
            "service": {"web": {"policy": "write", "intentions": "write"}},
            "node_prefix": {"": {"policy": "read"}}, "operator": "read"}"#;
        let (mut from_hcl, mut from_json) = (parse_rules(hcl).unwrap(), parse_rules(json).unwrap());
        for rules in [&mut from_hcl, &mut from_json] {
            rules.named.sort_by(|a, b| (a.resource, &a.name, a.prefix).cmp(&(b.resource, &b.name, b.prefix)));
        }
        assert_eq!(from_hcl, from_json);
        assert_eq!(from_hcl.global, [(GlobalResource::Operator, Access::Read)]);
        assert_eq!(from_hcl.named.len(), 5);
        let web = from_hcl.named.iter().find(|r| r.name == "web").unwrap();
        assert_eq!((web.access, web.intentions, web.prefix), (Access::Write, Some(Access::Write), false));
        assert_eq!(parse_rules("").unwrap(), Rules::default());
        // HCL 1 one-liners, as Consul takes them.
        let one_line = r#"service "web" { policy = "write" intentions = "write" } node_prefix "" { policy = "read" }"#;
        let rules = parse_rules(one_line).unwrap();
        assert_eq!(rules.named.len(), 2);
        assert_eq!(rules.named.iter().find(|r| r.name == "web").unwrap().intentions, Some(Access::Write));
    }

    #[test]
    fn mistakes_are_errors_that_name_them() {
        for (rules, named) in [
            (r#"keys "" { policy = "read" }"#, "unknown resource \"keys\""),
            (r#"key "" { policy = "readonly" }"#, "invalid policy \"readonly\""),
            (r#"key "" { polcy = "read" }"#, "unknown setting \"polcy\""),
            (r#"key "" { }"#, "needs a policy"),
            (r#"service "" { policy = "list" }"#, "keys only"),
            (r#"node "" { policy = "read" intentions = "read" }"#, "unknown setting \"intentions\""),
            (r#"operator = "sometimes""#, "invalid policy"),
            ("key_prefix {", "invalid HCL"),
        ] {
            let error = parse_rules(rules).unwrap_err().to_string();
            assert!(error.starts_with("Failed to parse ACL rules: ") && error.contains(named), "{rules}: {error}");
        }
    }
}
