//! From a token's secret to what it may do: its record (found by the
//! secret's hash), its policies, its roles' policies and identities, and
//! its own identities, merged into an [`Authorizer`], and cached until the
//! ACL tables change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weft_api::acl::{Access, AclPolicy, AclRole, AclToken, Rules, GLOBAL_MANAGEMENT_POLICY_ID};

use crate::authorizer::{node_identity_rules, service_identity_rules, Authorizer};

/// The ACL state tokens are resolved against (the state store's ACL tables).
pub trait AclSource {
    fn token_by_secret_sha256(&self, secret_sha256: &str) -> Option<&AclToken>;
    fn policy(&self, id: &str) -> Option<&AclPolicy>;
    fn role(&self, id: &str) -> Option<&AclRole>;
}

/// Why a secret gives no rights.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No token has this secret (Consul's wording: clients match on it).
    #[error("ACL not found")]
    NotFound,
    /// The token's expiration time has passed (Consul treats it as gone).
    #[error("ACL not found")]
    Expired,
}

/// A resolved token.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub accessor_id: String,
    /// Linked to the global-management policy.
    pub management: bool,
    /// Seconds since the Unix epoch after which it no longer resolves.
    pub expiration_time: Option<i64>,
    pub authorizer: Arc<Authorizer>,
}

/// Resolves the token whose secret hashes to `secret_sha256`, in
/// `datacenter`, with `default` for what its rules leave out.
pub fn resolve(
    source: &impl AclSource,
    secret_sha256: &str,
    datacenter: &str,
    default: Access,
) -> Result<Resolved, ResolveError> {
    let token = source.token_by_secret_sha256(secret_sha256).ok_or(ResolveError::NotFound)?;
    let in_datacenter =
        |datacenters: &[String]| datacenters.is_empty() || datacenters.iter().any(|dc| dc == datacenter);
    let roles: Vec<&AclRole> = token.roles.iter().filter_map(|id| source.role(id)).collect();
    let policy_ids = token.policies.iter().chain(roles.iter().flat_map(|role| role.policies.iter()));
    let policies: Vec<&AclPolicy> =
        policy_ids.filter_map(|id| source.policy(id)).filter(|policy| in_datacenter(&policy.datacenters)).collect();
    let service_identities =
        token.service_identities.iter().chain(roles.iter().flat_map(|r| r.service_identities.iter()));
    let node_identities = token.node_identities.iter().chain(roles.iter().flat_map(|r| r.node_identities.iter()));
    let identity_rules: Vec<Rules> = service_identities
        .filter(|identity| in_datacenter(&identity.datacenters))
        .map(service_identity_rules)
        .chain(node_identities.filter(|identity| identity.datacenter == datacenter).map(node_identity_rules))
        .collect();
    let rules = policies.iter().map(|policy| &policy.rules).chain(identity_rules.iter());
    Ok(Resolved {
        accessor_id: token.accessor_id.clone(),
        management: policies.iter().any(|policy| policy.id == GLOBAL_MANAGEMENT_POLICY_ID),
        expiration_time: token.expiration_time,
        authorizer: Arc::new(Authorizer::new(default, rules)),
    })
}

/// Resolved tokens by secret hash, valid for one version of the ACL
/// tables (their Raft index): a change to any token, policy or role
/// resolves everything anew.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<(u64, HashMap<String, Arc<Resolved>>)>,
}

/// Tokens kept at most; beyond, the cache starts over.
const CACHED_TOKENS: usize = 4096;

impl TokenCache {
    /// The token whose secret hashes to `secret_sha256`, as resolved by
    /// `resolve` for the ACL tables at `acl_index` (from the cache when it
    /// was resolved for that index), if it has not expired at `now`.
    pub fn get(
        &self,
        acl_index: u64,
        secret_sha256: &str,
        now: i64,
        resolve: impl FnOnce() -> Result<Resolved, ResolveError>,
    ) -> Result<Arc<Resolved>, ResolveError> {
        let cached = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if entries.0 != acl_index {
                *entries = (acl_index, HashMap::new());
            }
            entries.1.get(secret_sha256).cloned()
        };
        let resolved = match cached {
            Some(resolved) => resolved,
            None => {
                let resolved = Arc::new(resolve()?);
                let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
                if entries.0 == acl_index {
                    if entries.1.len() >= CACHED_TOKENS {
                        entries.1.clear();
                    }
                    entries.1.insert(secret_sha256.to_owned(), resolved.clone());
                }
                resolved
            }
        };
        match resolved.expiration_time {
            Some(expires) if now > expires => Err(ResolveError::Expired),
            _ => Ok(resolved),
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_api::acl::{NamedResource, ServiceIdentity};

    use super::*;
    use crate::parse::parse_rules;

    #[derive(Default)]
    struct Tables {
        tokens: Vec<AclToken>,
        policies: Vec<AclPolicy>,
        roles: Vec<AclRole>,
    }

    impl AclSource for Tables {
        fn token_by_secret_sha256(&self, hash: &str) -> Option<&AclToken> {
            self.tokens.iter().find(|t| t.secret_sha256 == hash)
        }
        fn policy(&self, id: &str) -> Option<&AclPolicy> {
            self.policies.iter().find(|p| p.id == id)
        }
        fn role(&self, id: &str) -> Option<&AclRole> {
            self.roles.iter().find(|r| r.id == id)
        }
    }

    fn tables() -> Tables {
        let kv = AclPolicy {
            id: "p1".into(),
            name: "kv".into(),
            rules: parse_rules(r#"key_prefix "app/" { policy = "write" }"#).unwrap(),
            ..Default::default()
        };
        let elsewhere = AclPolicy {
            id: "p2".into(),
            name: "elsewhere".into(),
            rules: parse_rules(r#"key_prefix "" { policy = "write" }"#).unwrap(),
            datacenters: vec!["dc2".into()],
            ..Default::default()
        };
        let role = AclRole {
            id: "r1".into(),
            policies: vec!["p1".into()],
            service_identities: vec![ServiceIdentity { service_name: "web".into(), datacenters: Vec::new() }],
            ..Default::default()
        };
        let token = AclToken {
            accessor_id: "a1".into(),
            secret_sha256: "h1".into(),
            policies: vec!["p2".into()],
            roles: vec!["r1".into()],
            expiration_time: Some(100),
            ..Default::default()
        };
        Tables { tokens: vec![token], policies: vec![kv, elsewhere], roles: vec![role] }
    }

    #[test]
    fn a_token_has_its_roles_policies_and_identities_in_its_datacenter_only() {
        let resolved = resolve(&tables(), "h1", "dc1", Access::Deny).unwrap();
        let authz = &resolved.authorizer;
        assert_eq!(authz.named(NamedResource::Key, "app/x"), Access::Write);
        assert_eq!(authz.named(NamedResource::Key, "other"), Access::Deny, "p2 is for dc2");
        assert_eq!(authz.named(NamedResource::Service, "web"), Access::Write);
        assert!(!resolved.management);
        assert_eq!(resolve(&tables(), "nope", "dc1", Access::Deny).unwrap_err(), ResolveError::NotFound);
    }

    #[test]
    fn the_cache_holds_until_the_tables_change_and_expiry_is_checked_on_every_use() {
        let cache = TokenCache::default();
        let tables = tables();
        let mut resolutions = 0;
        for _ in 0..3 {
            cache
                .get(7, "h1", 50, || {
                    resolutions += 1;
                    resolve(&tables, "h1", "dc1", Access::Deny)
                })
                .unwrap();
        }
        assert_eq!(resolutions, 1);
        cache
            .get(8, "h1", 50, || {
                resolutions += 1;
                resolve(&tables, "h1", "dc1", Access::Deny)
            })
            .unwrap();
        assert_eq!(resolutions, 2, "a new index resolves again");
        let expired = cache.get(8, "h1", 101, || resolve(&tables, "h1", "dc1", Access::Deny));
        assert_eq!(expired.unwrap_err(), ResolveError::Expired);
    }
}
