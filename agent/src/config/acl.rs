//! The `acl` block, validated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use weft_api::acl::Access;

use super::file::AclFile;

/// ACLs as this agent enforces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclConfig {
    pub enabled: bool,
    /// What no rule covers: `Write` for `allow`, `Deny` for `deny`.
    pub default_policy: Access,
    pub enable_token_persistence: bool,
    pub tokens: AclTokens,
    /// Log in with an auth method at start (see [`crate::acl::login_at_start`]).
    pub login: Option<AclLogin>,
}

/// `acl { login { ... } }`: the auth method this agent logs in with when
/// it starts; the token becomes its services' and its `default` token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclLogin {
    pub auth_method: String,
    pub bearer_token_file: PathBuf,
    pub meta: BTreeMap<String, String>,
}

/// The tokens an agent is configured with (SecretIDs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclTokens {
    pub initial_management: Option<String>,
    pub agent: Option<String>,
    pub default: Option<String>,
}

impl Default for AclConfig {
    /// ACLs off: everything allowed, as Consul without ACLs.
    fn default() -> AclConfig {
        AclConfig {
            enabled: false,
            default_policy: Access::Write,
            enable_token_persistence: false,
            tokens: AclTokens::default(),
            login: None,
        }
    }
}

/// The validated block, adding a problem for each thing wrong.
pub(super) fn acl_config(file: Option<&AclFile>, problem: &mut impl FnMut(String)) -> AclConfig {
    let Some(file) = file else { return AclConfig::default() };
    let enabled = file.enabled.unwrap_or(false);
    let default_policy = match file.default_policy.as_deref() {
        None | Some("allow") => Access::Write,
        Some("deny") => Access::Deny,
        Some(other) => {
            problem(format!("acl.default_policy {other:?} must be \"allow\" or \"deny\""));
            Access::Deny
        }
    };
    if let Some(down) = file.down_policy.as_deref() {
        if !matches!(down, "allow" | "deny" | "extend-cache" | "async-cache") {
            problem(format!("acl.down_policy {down:?} must be allow, deny, extend-cache or async-cache"));
        }
    }
    for (name, ttl) in [("token_ttl", &file.token_ttl), ("policy_ttl", &file.policy_ttl), ("role_ttl", &file.role_ttl)]
    {
        if let Some(Err(error)) = ttl.as_deref().map(weft_api::duration::parse) {
            problem(format!("acl.{name}: {error}"));
        }
    }
    let login = file.login.as_ref().and_then(|login| match (&login.auth_method, &login.bearer_token_file) {
        (Some(auth_method), Some(path)) if !auth_method.is_empty() => Some(AclLogin {
            auth_method: auth_method.clone(),
            bearer_token_file: path.clone(),
            meta: login.meta.clone(),
        }),
        _ => {
            problem("acl.login needs auth_method and bearer_token_file".into());
            None
        }
    });
    if login.is_some() && !enabled {
        problem("acl.login is set but ACLs are not enabled (acl.enabled = true)".into());
    }
    let tokens = file.tokens.clone().unwrap_or_default();
    let token = |value: Option<String>| value.filter(|t| !t.trim().is_empty());
    AclConfig {
        enabled,
        default_policy,
        enable_token_persistence: file.enable_token_persistence.unwrap_or(false),
        tokens: AclTokens {
            initial_management: token(tokens.initial_management),
            agent: token(tokens.agent).or(token(tokens.agent_recovery)),
            default: token(tokens.default),
        },
        login,
    }
}
