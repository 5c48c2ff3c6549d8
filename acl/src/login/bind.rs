//! Binding rules over a login's identity: every rule of the method whose
//! selector matches adds what it binds (Consul applies all matching rules,
//! not the first). A bind name is filled from `${value.<attribute>}`, its
//! values lower-cased, and must then be a valid name for what it binds.

use weft_api::acl::{AclBindingRule, BindType, JwtConfig};
use weft_filter::Filter;

use super::identity::Identity;
use super::LoginError;

/// What a login's token gets, by name: the server links roles and policies
/// that exist, and skips those that do not (as Consul does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bindings {
    pub services: Vec<String>,
    pub nodes: Vec<String>,
    pub roles: Vec<String>,
    pub policies: Vec<String>,
}

impl Bindings {
    fn add(list: &mut Vec<String>, name: String) {
        if !list.contains(&name) {
            list.push(name);
        }
    }
}

/// Applies `rules` (the method's) to `identity`. A rule whose selector does
/// not parse matches nothing; one whose bind name comes out invalid fails
/// the login.
pub fn bind<'a>(
    rules: impl IntoIterator<Item = &'a AclBindingRule>,
    identity: &Identity,
) -> Result<Bindings, LoginError> {
    let selectable = identity.selectable();
    let mut bindings = Bindings::default();
    for rule in rules {
        let matches = rule.selector.trim().is_empty()
            || Filter::parse(&rule.selector).is_ok_and(|filter| filter.matches(&selectable));
        if !matches {
            continue;
        }
        let name =
            interpolate(&rule.bind_name, identity).map_err(|_| LoginError::InvalidBindName(rule.bind_name.clone()))?;
        if !valid_name(rule.bind_type, &name) {
            return Err(LoginError::InvalidBindName(name));
        }
        let list = match rule.bind_type {
            BindType::Service => &mut bindings.services,
            BindType::Node => &mut bindings.nodes,
            BindType::Role => &mut bindings.roles,
            BindType::Policy => &mut bindings.policies,
        };
        Bindings::add(list, name);
    }
    Ok(bindings)
}

/// Checks a rule before it is written: its selector parses, and its bind
/// name, filled with a stand-in for every attribute, is valid. The error
/// is Consul's text.
pub fn check_binding_rule(rule: &AclBindingRule, config: &JwtConfig) -> Result<(), String> {
    if !rule.selector.trim().is_empty() {
        Filter::parse(&rule.selector).map_err(|e| format!("invalid Binding Rule: Selector is invalid: {e}"))?;
    }
    if rule.bind_name.is_empty() {
        return Err("Invalid Binding Rule: no BindName is set".into());
    }
    let mut stand_in = Identity::blank(config);
    stand_in.values.values_mut().for_each(|value| *value = "fake".into());
    let name =
        interpolate(&rule.bind_name, &stand_in).map_err(|e| format!("Invalid Binding Rule: invalid BindName: {e}"))?;
    if !valid_name(rule.bind_type, &name) {
        return Err(format!("Invalid Binding Rule: invalid BindName: invalid bind name: {name:?}"));
    }
    Ok(())
}

/// Fills `${value.<attribute>}` from `identity`, lower-cased.
pub fn interpolate(template: &str, identity: &Identity) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end =
            after.find('}').ok_or_else(|| format!("error interpreting template: unclosed \"${{\" in {template:?}"))?;
        let variable = after[..end].trim();
        let value = variable
            .strip_prefix("value.")
            .and_then(|attribute| identity.values.get(attribute))
            .ok_or_else(|| format!("error interpreting template: unknown variable accessed: {variable}"))?;
        out.push_str(&value.to_lowercase());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Consul's name rules: service and node identities are lower-case DNS-ish
/// names; roles and policies are referred to by name.
fn valid_name(bind_type: BindType, name: &str) -> bool {
    if name.is_empty() || name.len() > 256 {
        return false;
    }
    match bind_type {
        BindType::Service | BindType::Node => {
            let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            let bytes = name.as_bytes();
            edge(bytes[0]) && edge(bytes[bytes.len() - 1]) && bytes.iter().all(|&c| edge(c) || c == b'-' || c == b'_')
        }
        BindType::Role | BindType::Policy => name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(selector: &str, bind_type: BindType, bind_name: &str) -> AclBindingRule {
        AclBindingRule { selector: selector.into(), bind_type, bind_name: bind_name.into(), ..Default::default() }
    }

    #[test]
    fn every_matching_rule_binds_and_names_come_from_the_claims() {
        let identity = Identity {
            values: [("sa".to_owned(), "Web".to_owned()), ("ns".to_owned(), "prod".to_owned())].into(),
            lists: [("groups".to_owned(), vec!["admins".to_owned()])].into(),
        };
        let rules = [
            rule("value.ns == prod", BindType::Service, "${value.sa}"),
            rule("value.ns == dev", BindType::Service, "dev-${value.sa}"),
            rule("\"admins\" in list.groups", BindType::Role, "operators"),
            rule("", BindType::Service, "${value.sa}"),
            rule("this is not a selector ((", BindType::Policy, "never"),
        ];
        let bindings = bind(&rules, &identity).unwrap();
        assert_eq!(bindings.services, ["web"], "lower-cased, once");
        assert_eq!(bindings.roles, ["operators"]);
        assert!(bindings.policies.is_empty());

        let dotted = Identity { values: [("sa".to_owned(), "a.b".to_owned())].into(), ..Default::default() };
        let refused = bind(&[rule("", BindType::Service, "${value.sa}")], &dotted).unwrap_err();
        assert_eq!(refused, LoginError::InvalidBindName("a.b".into()));
    }

    #[test]
    fn a_rule_is_checked_before_it_is_written() {
        let config = JwtConfig { claim_mappings: [("sub".to_owned(), "sa".to_owned())].into(), ..Default::default() };
        assert_eq!(check_binding_rule(&rule("value.sa != default", BindType::Service, "${value.sa}"), &config), Ok(()));
        let unknown = check_binding_rule(&rule("", BindType::Service, "${value.nope}"), &config).unwrap_err();
        assert!(unknown.contains("unknown variable accessed: value.nope"), "{unknown}");
        assert!(check_binding_rule(&rule("value.sa ==", BindType::Service, "x"), &config).is_err());
        assert!(check_binding_rule(&rule("", BindType::Service, "Upper"), &config).is_err());
        assert!(check_binding_rule(&rule("", BindType::Role, "Upper_Role"), &config).is_ok());
    }
}
