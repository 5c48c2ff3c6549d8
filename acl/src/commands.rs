//! What each write needs: the one mapping from a [`Command`] to the
//! [`Permission`]s its token must hold, used by the agent's HTTP handlers
//! and by the servers' RPC authorization alike (a client agent forwards the
//! caller's token, and the servers check it again).
//!
//! Consul's rules: a registration needs `node:write` on the node and
//! `service:write` on the service; KV needs `key:write`; an intention needs
//! `intentions:write` on its destination; a config entry needs
//! `service:write` on its service (`intentions:write` for
//! `service-intentions`) or `mesh:write` for the mesh-wide kinds; ACL
//! changes need `acl:write`; a user event `event:write` on its name. The CA, restores and join tables need
//! `acl:write` too (Consul's management).

use weft_api::acl::{Access, GlobalResource, NamedResource};
use weft_api::command::Command;

use crate::authorizer::Permission;

/// Config entry kinds that are mesh-wide (`mesh:write`).
const MESH_WIDE_KINDS: [&str; 3] = ["proxy-defaults", "mesh", "ingress-gateway"];

/// What a write names only by ID, looked up in the caller's copy of the
/// state (a delete names only the ID).
pub trait Owners {
    /// The destination of the intention `id`.
    fn intention_destination(&self, id: &str) -> Option<String>;
    /// The node of the session `id`.
    fn session_node(&self, id: &str) -> Option<String>;
}

/// The permissions `command` needs; `owners` finds what it names by ID.
pub fn command_permissions(command: &Command, owners: &dyn Owners) -> Vec<Permission> {
    let named = |resource, name: &str| Permission::Named(resource, name.to_owned(), Access::Write);
    let management = || Permission::Global(GlobalResource::Acl, Access::Write);
    let config_entry = |kind: &str, name: &str| match kind {
        "service-intentions" => Permission::Intentions(name.to_owned(), Access::Write),
        kind if MESH_WIDE_KINDS.contains(&kind) => Permission::Global(GlobalResource::Mesh, Access::Write),
        _ => named(NamedResource::Service, name),
    };
    match command {
        Command::KvSet { key, .. } | Command::KvDelete { key, .. } => vec![named(NamedResource::Key, key)],
        Command::FireEvent(event) => vec![named(NamedResource::Event, &event.name)],
        Command::SessionCreate(session) => vec![named(NamedResource::Session, session.node.as_str())],
        // Ending or renewing what is not there changes nothing; any session
        // writer may learn that.
        Command::SessionDestroy { id } | Command::SessionRenew { id } => {
            vec![named(NamedResource::Session, &owners.session_node(id).unwrap_or_default())]
        }
        // Consul asks key:write; the session's existence is checked in apply.
        Command::KvAcquire { key, .. } | Command::KvRelease { key, .. } => vec![named(NamedResource::Key, key)],
        // Each operation on its key: a write needs key:write, a read key:read.
        Command::Txn(ops) => ops
            .iter()
            .map(|op| {
                let access = if op.verb.writes() { Access::Write } else { Access::Read };
                Permission::Named(NamedResource::Key, op.key.clone(), access)
            })
            .collect(),
        Command::Register(registration) => {
            let mut needed = vec![];
            if !registration.skip_node_update {
                needed.push(named(NamedResource::Node, registration.node.name.as_str()));
            }
            if let Some(service) = &registration.service {
                needed.push(named(NamedResource::Service, service.name.as_str()));
            }
            if registration.service.is_none() && !registration.checks.is_empty() {
                needed.push(named(NamedResource::Node, registration.node.name.as_str()));
            }
            needed
        }
        Command::Deregister(deregistration) => vec![named(NamedResource::Node, deregistration.node.as_str())],
        Command::NodeLeave(node) => vec![named(NamedResource::Node, node.name.as_str())],
        Command::IntentionUpsert(intention) => {
            vec![Permission::Intentions(intention.destination.to_string(), Access::Write)]
        }
        Command::IntentionDelete { id } => match owners.intention_destination(id) {
            Some(destination) => vec![Permission::Intentions(destination, Access::Write)],
            // Deleting what is not there changes nothing; any intention
            // writer may learn that.
            None => vec![Permission::Intentions("*".into(), Access::Write)],
        },
        Command::ConfigEntryUpsert(entry) => vec![config_entry(&entry.kind, &entry.name)],
        Command::ConfigEntryDelete { kind, name } | Command::ConfigEntryCas { kind, name, .. } => {
            vec![config_entry(kind, name)]
        }
        Command::Batch(commands) => {
            commands.iter().flat_map(|command| command_permissions(command, owners)).collect()
        }
        // Anyone may try; it works once.
        Command::AclBootstrap { .. } => Vec::new(),
        Command::AclTokenSet(_)
        | Command::AclTokenDelete { .. }
        | Command::AclPolicySet(_)
        | Command::AclPolicyDelete { .. }
        | Command::AclRoleSet(_)
        | Command::AclRoleDelete { .. }
        | Command::AclAuthMethodSet(_)
        | Command::AclAuthMethodDelete { .. }
        | Command::AclBindingRuleSet(_)
        | Command::AclBindingRuleDelete { .. }
        | Command::CaSetState(_)
        | Command::Restore { .. }
        | Command::RestoreBegin { .. }
        | Command::RestoreChunk { .. }
        | Command::RestoreFinish { .. }
        | Command::JoinTokenCreate(_)
        | Command::JoinTokenDelete { .. }
        | Command::JoinTokenRedeem { .. }
        | Command::AgentCaSet(_)
        | Command::AgentCredentialDelete { .. }
        | Command::AgentCredentialSet(_)
        // Only a leader makes one, for itself (`check_proposal` refuses it from anyone).
        | Command::Checked { .. } => vec![management()],
    }
}

#[cfg(test)]
mod tests {
    use weft_api::catalog::{Node, Registration, Service};
    use weft_api::mesh::{ConfigEntry, Intention};

    use super::*;

    struct Known;

    impl Owners for Known {
        fn intention_destination(&self, id: &str) -> Option<String> {
            (id == "i1").then(|| "db".to_owned())
        }

        fn session_node(&self, id: &str) -> Option<String> {
            (id == "s1").then(|| "vm1".to_owned())
        }
    }

    fn labels(command: &Command) -> Vec<(String, Option<String>)> {
        command_permissions(command, &Known).iter().map(|p| (p.label(), p.name().map(str::to_owned))).collect()
    }

    #[test]
    fn each_write_needs_what_consul_asks() {
        let node = Node { name: "vm1".into(), ..Default::default() };
        let register = Command::Register(Box::new(Registration {
            node,
            service: Some(Service { name: "web".into(), ..Default::default() }),
            ..Default::default()
        }));
        assert_eq!(
            labels(&register),
            [("node:write".into(), Some("vm1".into())), ("service:write".into(), Some("web".into()))]
        );
        let kv = Command::KvSet { key: "a/b".into(), value: Vec::new(), flags: 0, cas: None };
        assert_eq!(labels(&kv), [("key:write".into(), Some("a/b".into()))]);
        let intention = Command::IntentionUpsert(Intention { destination: "api".into(), ..Default::default() });
        assert_eq!(labels(&intention), [("intentions:write".into(), Some("api".into()))]);
        assert_eq!(
            labels(&Command::IntentionDelete { id: "i1".into() }),
            [("intentions:write".into(), Some("db".into()))]
        );
        let entry = |kind: &str| {
            Command::ConfigEntryUpsert(ConfigEntry { kind: kind.into(), name: "web".into(), ..Default::default() })
        };
        assert_eq!(labels(&entry("service-router")), [("service:write".into(), Some("web".into()))]);
        assert_eq!(labels(&entry("service-intentions")), [("intentions:write".into(), Some("web".into()))]);
        assert_eq!(labels(&entry("proxy-defaults")), [("mesh:write".into(), None)]);
        assert_eq!(labels(&Command::Restore { snapshot: Vec::new() }), [("acl:write".into(), None)]);
        assert_eq!(labels(&Command::Batch(vec![kv.clone(), intention])).len(), 2);
        assert_eq!(
            labels(&Command::SessionDestroy { id: "s1".into() }),
            [("session:write".into(), Some("vm1".into()))]
        );
    }
}
