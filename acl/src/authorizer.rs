//! What a token may do: the rules of its policies, roles and identities,
//! merged once into an [`Authorizer`] that answers each question without
//! walking policies again.
//!
//! Consul's rules: for a name, an exact rule beats every prefix rule, and
//! the longest matching prefix beats shorter ones; where several policies
//! give a rule for the same name (or the same prefix), `deny` wins, else the
//! strongest access. A name no rule covers gets the default policy's
//! access. `mesh` and `peering` fall back to `operator` when no rule names
//! them. Intentions on a destination follow its `service` rule's
//! `intentions`, else `read` when the service may be read (Consul's
//! implied grant), else nothing.

use std::collections::{BTreeMap, HashMap};

use weft_api::acl::{Access, GlobalResource, NamedResource, NamedRule, NodeIdentity, Rules, ServiceIdentity};
use weft_api::catalog::SIDECAR_SUFFIX;

/// One right a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Permission {
    /// `operator:read`, `acl:write`, ...
    Global(GlobalResource, Access),
    /// `service:write` on "web", `key:read` on "a/b", ...
    Named(NamedResource, String, Access),
    /// `intentions:write` on the destination "web".
    Intentions(String, Access),
}

impl Permission {
    /// Consul's `resource:access` (`service:write`).
    pub fn label(&self) -> String {
        match self {
            Permission::Global(resource, access) => format!("{}:{}", resource.as_str(), access.as_str()),
            Permission::Named(resource, _, access) => format!("{}:{}", resource.as_str(), access.as_str()),
            Permission::Intentions(_, access) => format!("intentions:{}", access.as_str()),
        }
    }

    /// The name the right is on, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Permission::Global(..) => None,
            Permission::Named(_, name, _) | Permission::Intentions(name, _) => Some(name),
        }
    }
}

/// Access and intentions granted by merged rules for one name or prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grant {
    access: Access,
    intentions: Option<Access>,
}

/// `deny` wins, else the stronger.
fn merge(a: Access, b: Access) -> Access {
    if a == Access::Deny || b == Access::Deny {
        Access::Deny
    } else {
        a.max(b)
    }
}

impl Grant {
    fn merge(self, other: Grant) -> Grant {
        let intentions = match (self.intentions, other.intentions) {
            (Some(a), Some(b)) => Some(merge(a, b)),
            (a, b) => a.or(b),
        };
        Grant { access: merge(self.access, other.access), intentions }
    }
}

/// A token's rights, merged (see the module docs).
#[derive(Clone, Debug)]
pub struct Authorizer {
    global: BTreeMap<GlobalResource, Access>,
    /// By resource, then name: looked up by `&str`, with no allocation.
    exact: HashMap<NamedResource, HashMap<String, Grant>>,
    /// Per resource, longest prefix first.
    prefixes: HashMap<NamedResource, Vec<(String, Grant)>>,
    default: Access,
}

/// The rules a service identity stands for.
pub fn service_identity_rules(identity: &ServiceIdentity) -> Rules {
    let write = |name: String| NamedRule {
        resource: NamedResource::Service,
        name,
        prefix: false,
        access: Access::Write,
        intentions: None,
    };
    let read_all =
        |resource| NamedRule { resource, name: String::new(), prefix: true, access: Access::Read, intentions: None };
    Rules {
        global: Vec::new(),
        named: vec![
            write(identity.service_name.clone()),
            write(format!("{}{SIDECAR_SUFFIX}", identity.service_name)),
            read_all(NamedResource::Service),
            read_all(NamedResource::Node),
        ],
    }
}

/// The rules a node identity stands for.
pub fn node_identity_rules(identity: &NodeIdentity) -> Rules {
    Rules {
        global: Vec::new(),
        named: vec![
            NamedRule {
                resource: NamedResource::Node,
                name: identity.node_name.clone(),
                prefix: false,
                access: Access::Write,
                intentions: None,
            },
            NamedRule {
                resource: NamedResource::Service,
                name: String::new(),
                prefix: true,
                access: Access::Read,
                intentions: None,
            },
        ],
    }
}

impl Authorizer {
    /// What `rules` (from every policy, role and identity of a token) grant,
    /// with `default` for everything they leave out.
    pub fn new<'a>(default: Access, rules: impl IntoIterator<Item = &'a Rules>) -> Authorizer {
        let mut global: BTreeMap<GlobalResource, Access> = BTreeMap::new();
        let mut exact: HashMap<(NamedResource, String), Grant> = HashMap::new();
        let mut prefixes: HashMap<(NamedResource, String), Grant> = HashMap::new();
        for rules in rules {
            for (resource, access) in &rules.global {
                global.entry(*resource).and_modify(|a| *a = merge(*a, *access)).or_insert(*access);
            }
            for rule in &rules.named {
                let grant = Grant { access: rule.access, intentions: rule.intentions };
                let table = if rule.prefix { &mut prefixes } else { &mut exact };
                table.entry((rule.resource, rule.name.clone())).and_modify(|g| *g = g.merge(grant)).or_insert(grant);
            }
        }
        let mut by_resource: HashMap<NamedResource, Vec<(String, Grant)>> = HashMap::new();
        for ((resource, prefix), grant) in prefixes {
            by_resource.entry(resource).or_default().push((prefix, grant));
        }
        for list in by_resource.values_mut() {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        let mut exact_by_resource: HashMap<NamedResource, HashMap<String, Grant>> = HashMap::new();
        for ((resource, name), grant) in exact {
            exact_by_resource.entry(resource).or_default().insert(name, grant);
        }
        Authorizer { global, exact: exact_by_resource, prefixes: by_resource, default }
    }

    /// Everything allowed (`default_policy = "allow"` with no rules, or ACLs off).
    pub fn allow_all() -> Authorizer {
        Authorizer::new(Access::Write, [])
    }

    fn grant(&self, resource: NamedResource, name: &str) -> Option<Grant> {
        if let Some(grant) = self.exact.get(&resource).and_then(|names| names.get(name)) {
            return Some(*grant);
        }
        self.prefixes.get(&resource)?.iter().find(|(prefix, _)| name.starts_with(prefix.as_str())).map(|(_, g)| *g)
    }

    /// The access granted on `resource` named `name`.
    pub fn named(&self, resource: NamedResource, name: &str) -> Access {
        self.grant(resource, name).map_or(self.default, |grant| grant.access)
    }

    /// The access granted on a datacenter-wide resource.
    pub fn global(&self, resource: GlobalResource) -> Access {
        let fallback = || match resource {
            GlobalResource::Mesh | GlobalResource::Peering => self.global.get(&GlobalResource::Operator).copied(),
            _ => None,
        };
        self.global.get(&resource).copied().or_else(fallback).unwrap_or(self.default)
    }

    /// The access granted on the intentions whose destination is `service`.
    pub fn intentions(&self, service: &str) -> Access {
        match self.grant(NamedResource::Service, service) {
            Some(Grant { intentions: Some(access), .. }) => access,
            Some(Grant { access, .. }) if access.grants(Access::Read) => Access::Read,
            Some(_) => Access::Deny,
            None => self.default,
        }
    }

    /// Whether `permission` is granted.
    pub fn allows(&self, permission: &Permission) -> bool {
        match permission {
            Permission::Global(resource, wanted) => self.global(*resource).grants(*wanted),
            Permission::Named(resource, name, wanted) => self.named(*resource, name).grants(*wanted),
            Permission::Intentions(service, wanted) => self.intentions(service).grants(*wanted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_rules;

    fn authorizer(default: Access, policies: &[&str]) -> Authorizer {
        let rules: Vec<Rules> = policies.iter().map(|text| parse_rules(text).unwrap()).collect();
        Authorizer::new(default, &rules)
    }

    #[test]
    fn exact_beats_prefix_and_the_longest_prefix_wins() {
        let authz = authorizer(
            Access::Deny,
            &[r#"
            key_prefix "" { policy = "read" }
            key_prefix "foo/" { policy = "write" }
            key_prefix "foo/private/" { policy = "deny" }
            key "foo/private/shared" { policy = "read" }
        "#],
        );
        assert_eq!(authz.named(NamedResource::Key, "bar"), Access::Read);
        assert_eq!(authz.named(NamedResource::Key, "foo/x"), Access::Write);
        assert_eq!(authz.named(NamedResource::Key, "foo/private/x"), Access::Deny);
        assert_eq!(authz.named(NamedResource::Key, "foo/private/shared"), Access::Read);
        assert_eq!(authz.named(NamedResource::Service, "web"), Access::Deny, "the default");
    }

    #[test]
    fn across_policies_deny_wins_else_the_strongest() {
        let authz = authorizer(
            Access::Deny,
            &[
                r#"service "web" { policy = "read" }  node_prefix "" { policy = "read" }  key "k" { policy = "write" }"#,
                r#"service "web" { policy = "write" } node_prefix "" { policy = "deny" }  key "k" { policy = "read" }"#,
            ],
        );
        assert_eq!(authz.named(NamedResource::Service, "web"), Access::Write);
        assert_eq!(authz.named(NamedResource::Node, "n1"), Access::Deny);
        assert_eq!(authz.named(NamedResource::Key, "k"), Access::Write);
    }

    #[test]
    fn intentions_are_implied_by_service_read_and_set_by_intentions() {
        let authz = authorizer(
            Access::Deny,
            &[r#"service "web" { policy = "write" }
                 service "api" { policy = "read" intentions = "write" }
                 service "db" { policy = "deny" }"#],
        );
        assert_eq!(authz.intentions("web"), Access::Read);
        assert_eq!(authz.intentions("api"), Access::Write);
        assert_eq!(authz.intentions("db"), Access::Deny);
        assert_eq!(authz.intentions("other"), Access::Deny);
        assert!(Authorizer::allow_all().allows(&Permission::Intentions("other".into(), Access::Write)));
    }

    #[test]
    fn mesh_falls_back_to_operator_and_globals_to_the_default() {
        let authz = authorizer(Access::Deny, &[r#"operator = "write""#]);
        assert_eq!(authz.global(GlobalResource::Mesh), Access::Write);
        assert_eq!(authz.global(GlobalResource::Acl), Access::Deny);
        let authz = authorizer(Access::Write, &[r#"mesh = "read""#]);
        assert_eq!(authz.global(GlobalResource::Mesh), Access::Read);
        assert_eq!(authz.global(GlobalResource::Keyring), Access::Write);
    }

    #[test]
    fn identities_write_their_own_and_read_for_discovery() {
        let web = service_identity_rules(&ServiceIdentity { service_name: "web".into(), datacenters: Vec::new() });
        let node = node_identity_rules(&NodeIdentity { node_name: "vm1".into(), datacenter: "dc1".into() });
        let authz = Authorizer::new(Access::Deny, [&web, &node]);
        assert_eq!(authz.named(NamedResource::Service, "web"), Access::Write);
        assert_eq!(authz.named(NamedResource::Service, "web-sidecar-proxy"), Access::Write);
        assert_eq!(authz.named(NamedResource::Service, "payments"), Access::Read);
        assert_eq!(authz.named(NamedResource::Node, "vm1"), Access::Write);
        assert_eq!(authz.named(NamedResource::Node, "vm2"), Access::Read);
        assert_eq!(authz.named(NamedResource::Key, "x"), Access::Deny);
        let permission = Permission::Named(NamedResource::Service, "payments".into(), Access::Write);
        assert!(!authz.allows(&permission));
        assert_eq!((permission.label(), permission.name()), ("service:write".to_owned(), Some("payments")));
    }

    #[test]
    fn global_management_grants_everything() {
        let authz = Authorizer::new(Access::Deny, [&weft_api::acl::global_management_rules()]);
        for resource in GlobalResource::ALL {
            assert_eq!(authz.global(resource), Access::Write);
        }
        for resource in NamedResource::ALL {
            assert_eq!(authz.named(resource, "anything"), Access::Write);
        }
        assert_eq!(authz.intentions("anything"), Access::Write);
    }
}
