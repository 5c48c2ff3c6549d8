//! ACLs on the servers: the built-ins the leader writes when ACLs are on
//! (the global-management policy, the anonymous token, the configured
//! initial management token), and the check of the token a client agent
//! forwards with a write it makes for an HTTP caller: the agent checked it
//! too, but a server trusts no agent with more than its own node.

use weft_acl::{command_permissions, Permission, TokenCache};
use weft_api::acl::{
    global_management_policy, Access, AclToken, ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET,
    GLOBAL_MANAGEMENT_POLICY_ID,
};
use weft_api::command::Command;

use crate::ca::unix_now;
use crate::join::secret_hash;
use crate::server::Server;
use crate::store::{Table, Tables};

/// ACLs as the servers enforce them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAcl {
    pub enabled: bool,
    /// What no rule covers: `Write` for `allow`, `Deny` for `deny`.
    pub default_policy: Access,
    /// A management token (SecretID) to make when ACLs start.
    pub initial_management: Option<String>,
}

impl Default for ServerAcl {
    /// ACLs off.
    fn default() -> ServerAcl {
        ServerAcl { enabled: false, default_policy: Access::Write, initial_management: None }
    }
}

/// On the leader, with ACLs on: writes the built-ins that are missing.
pub(crate) async fn ensure_built_ins(server: &Server) {
    let acl = &server.inner.acl;
    if !acl.enabled {
        return;
    }
    let mut missing = Vec::new();
    {
        let tables = server.store().read();
        let acl_tables = tables.acl();
        if weft_acl::AclSource::policy(acl_tables, GLOBAL_MANAGEMENT_POLICY_ID).is_none() {
            missing.push(Command::AclPolicySet(Box::new(global_management_policy())));
        }
        if acl_tables.token(ANONYMOUS_TOKEN_ACCESSOR_ID).is_none() {
            missing.push(Command::AclTokenSet(Box::new(AclToken {
                accessor_id: ANONYMOUS_TOKEN_ACCESSOR_ID.into(),
                secret_sha256: secret_hash(ANONYMOUS_TOKEN_SECRET),
                description: "Anonymous Token".into(),
                create_time: unix_now(),
                ..Default::default()
            })));
        }
        if let Some(secret) = &acl.initial_management {
            let hash = secret_hash(secret);
            if weft_acl::AclSource::token_by_secret_sha256(acl_tables, &hash).is_none() {
                missing.push(Command::AclTokenSet(Box::new(AclToken {
                    accessor_id: weft_api::ids::uuid_v4(rand::random()),
                    secret_sha256: hash,
                    description: "Initial Management Token".into(),
                    policies: vec![GLOBAL_MANAGEMENT_POLICY_ID.into()],
                    create_time: unix_now(),
                    ..Default::default()
                })));
            }
        }
    }
    // In order: the token needs the policy.
    for command in missing {
        let kind = command.kind();
        if let Err(error) = server.write_local(&command).await {
            tracing::warn!(%error, kind, "could not write an ACL built-in; will retry");
            return;
        }
        tracing::info!(kind, "ACL built-in written");
    }
}

/// Whether the token `secret` forwarded with `command` may write it.
pub(crate) fn authorize_forwarded(
    server: &Server,
    cache: &TokenCache,
    command: &Command,
    secret: &str,
) -> Result<(), tonic::Status> {
    let acl = &server.inner.acl;
    let hash = secret_hash(secret);
    let tables = server.store().read();
    let resolved = cache
        .get(tables.index(Table::Acl).get(), &hash, unix_now(), || {
            weft_acl::resolve(tables.acl(), &hash, server.datacenter().as_str(), acl.default_policy)
        })
        .map_err(|error| tonic::Status::permission_denied(error.to_string()))?;
    let missing: Option<Permission> =
        command_permissions(command, &*tables).into_iter().find(|p| !resolved.authorizer.allows(p));
    match missing {
        None => Ok(()),
        Some(permission) => {
            let on = permission.name().map(|name| format!(" on {name:?}")).unwrap_or_default();
            tracing::info!(accessor = %resolved.accessor_id, permission = %permission.label(), "a forwarded write was refused by ACL");
            Err(tonic::Status::permission_denied(format!(
                "Permission denied: token with AccessorID '{}' lacks permission '{}'{on}",
                resolved.accessor_id,
                permission.label()
            )))
        }
    }
}

/// What the ACL rules need to know of a write that names a record by ID.
impl weft_acl::Owners for Tables {
    fn intention_destination(&self, id: &str) -> Option<String> {
        self.mesh().intention(id).map(|i| i.destination.to_string())
    }

    fn session_node(&self, id: &str) -> Option<String> {
        self.sessions().get(id).map(|s| s.node.to_string())
    }
}
