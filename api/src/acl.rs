//! ACLs as the servers keep them: policies (rules in Consul's language,
//! parsed into typed [`Rules`] before they are written), roles, tokens
//! (their secrets only as SHA-256 hashes), and the auth methods and binding
//! rules that turn a workload's JWT into a token (`POST /v1/acl/login`).
//!
//! Parsing rules and deciding from them live in `weft-acl`; the HTTP layer
//! maps these records to Consul's JSON. These shapes are stored in the Raft
//! log, so, like [`crate::command`], they only grow by new enum variants at
//! the end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::Indexes;

/// What a rule allows. Writing implies reading, reading implies listing;
/// `Deny` refuses all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    Deny,
    List,
    Read,
    Write,
}

impl Access {
    /// Consul's spelling (`deny`, `list`, `read`, `write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::List => "list",
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    pub fn parse(text: &str) -> Option<Access> {
        match text {
            "deny" => Some(Access::Deny),
            "list" => Some(Access::List),
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            _ => None,
        }
    }

    /// Whether having `self` grants `wanted`.
    pub fn grants(self, wanted: Access) -> bool {
        self != Access::Deny && self >= wanted
    }
}

/// A resource with one rule for the whole datacenter (`operator = "read"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GlobalResource {
    Acl,
    Keyring,
    Mesh,
    Operator,
    Peering,
}

impl GlobalResource {
    pub const ALL: [GlobalResource; 5] = [
        GlobalResource::Acl,
        GlobalResource::Keyring,
        GlobalResource::Mesh,
        GlobalResource::Operator,
        GlobalResource::Peering,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GlobalResource::Acl => "acl",
            GlobalResource::Keyring => "keyring",
            GlobalResource::Mesh => "mesh",
            GlobalResource::Operator => "operator",
            GlobalResource::Peering => "peering",
        }
    }
}

/// A resource with rules per name (`service "web" { ... }`) or name prefix
/// (`service_prefix "we" { ... }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NamedResource {
    Agent,
    Event,
    Key,
    Node,
    Query,
    Service,
    Session,
}

impl NamedResource {
    pub const ALL: [NamedResource; 7] = [
        NamedResource::Agent,
        NamedResource::Event,
        NamedResource::Key,
        NamedResource::Node,
        NamedResource::Query,
        NamedResource::Service,
        NamedResource::Session,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NamedResource::Agent => "agent",
            NamedResource::Event => "event",
            NamedResource::Key => "key",
            NamedResource::Node => "node",
            NamedResource::Query => "query",
            NamedResource::Service => "service",
            NamedResource::Session => "session",
        }
    }
}

/// One rule on a named resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NamedRule {
    pub resource: NamedResource,
    /// The name, or the prefix of the names, the rule covers.
    pub name: String,
    pub prefix: bool,
    pub access: Access,
    /// `service` rules only: access to the intentions whose destination it
    /// covers (none given: `write` gives `read`, as in Consul).
    pub intentions: Option<Access>,
}

/// A policy's rules, parsed: what `weft-acl` decides from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rules {
    pub global: Vec<(GlobalResource, Access)>,
    pub named: Vec<NamedRule>,
}

/// A policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclPolicy {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The rules as written (HCL or JSON), shown back as they came.
    pub rules_text: String,
    pub rules: Rules,
    /// Where it applies; empty: everywhere.
    pub datacenters: Vec<String>,
    pub indexes: Indexes,
}

/// A service identity: write on the service (and its sidecar), read on
/// every service and node (for discovery).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceIdentity {
    pub service_name: String,
    pub datacenters: Vec<String>,
}

/// A node identity: write on the node, read on every service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_name: String,
    pub datacenter: String,
}

/// A role: policies and identities a token may take together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRole {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Policy IDs.
    pub policies: Vec<String>,
    pub service_identities: Vec<ServiceIdentity>,
    pub node_identities: Vec<NodeIdentity>,
    pub indexes: Indexes,
}

/// A token. Its secret is kept only as a SHA-256 hash: it is shown once,
/// when the token is made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclToken {
    pub accessor_id: String,
    /// SHA-256 of the SecretID, hex.
    pub secret_sha256: String,
    pub description: String,
    /// Policy IDs.
    pub policies: Vec<String>,
    /// Role IDs.
    pub roles: Vec<String>,
    pub service_identities: Vec<ServiceIdentity>,
    pub node_identities: Vec<NodeIdentity>,
    pub local: bool,
    /// The auth method whose login made it; empty for tokens made directly.
    pub auth_method: String,
    /// Seconds since the Unix epoch after which it is refused.
    pub expiration_time: Option<i64>,
    /// Seconds since the Unix epoch when it was made (by the server that
    /// took the request).
    pub create_time: i64,
    pub indexes: Indexes,
}

/// An auth method: how a workload proves who it is to get a token
/// (`POST /v1/acl/login`). Weft has Consul's `jwt` type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclAuthMethod {
    pub name: String,
    pub method_type: AuthMethodType,
    pub display_name: String,
    pub description: String,
    /// How long the tokens its logins make live, in milliseconds; 0: until
    /// logout.
    pub max_token_ttl_ms: u64,
    /// Its tokens are global (Consul's `TokenLocality`); else local.
    pub token_locality_global: bool,
    pub config: JwtConfig,
    pub indexes: Indexes,
}

/// The kinds of auth method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthMethodType {
    /// A JWT verified with keys the method names (Consul's `jwt`).
    #[default]
    Jwt,
}

impl AuthMethodType {
    pub const ALL: [AuthMethodType; 1] = [AuthMethodType::Jwt];

    /// Consul's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethodType::Jwt => "jwt",
        }
    }

    pub fn parse(name: &str) -> Option<AuthMethodType> {
        AuthMethodType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// A `jwt` auth method's settings (Consul's `Config`), validated when the
/// method is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtConfig {
    /// Where the keys that sign its JWTs come from.
    pub keys: JwtKeySource,
    /// The `iss` a JWT must carry; empty: any.
    pub bound_issuer: String,
    /// A JWT's `aud` must name one of these; with none bound, a JWT that
    /// has an `aud` is refused.
    pub bound_audiences: Vec<String>,
    /// Claim (a name, or a JSON pointer from `/`) to the attribute binding
    /// rules see as `value.<attribute>`.
    pub claim_mappings: BTreeMap<String, String>,
    /// Claim to the attribute binding rules see as `list.<attribute>`.
    pub list_claim_mappings: BTreeMap<String, String>,
    /// Signing algorithms accepted; empty: every asymmetric one.
    pub supported_algs: Vec<String>,
    /// Consul's leeways, in nanoseconds: 0 for the default (150 s, 150 s,
    /// 60 s), negative for none.
    pub expiration_leeway_ns: i64,
    pub not_before_leeway_ns: i64,
    pub clock_skew_leeway_ns: i64,
}

impl Default for JwtConfig {
    fn default() -> JwtConfig {
        JwtConfig {
            keys: JwtKeySource::Static(Vec::new()),
            bound_issuer: String::new(),
            bound_audiences: Vec::new(),
            claim_mappings: BTreeMap::new(),
            list_claim_mappings: BTreeMap::new(),
            supported_algs: Vec::new(),
            expiration_leeway_ns: 0,
            not_before_leeway_ns: 0,
            clock_skew_leeway_ns: 0,
        }
    }
}

/// Where a `jwt` auth method's keys come from: exactly one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtKeySource {
    /// Public keys, PEM (`JWTValidationPubKeys`).
    Static(Vec<String>),
    /// A JWKS document (`JWKSURL`), fetched with `ca_cert` (PEM; empty: the
    /// system's roots) as the roots to trust.
    Jwks { url: String, ca_cert: String },
    /// An OpenID provider's discovery document (`OIDCDiscoveryURL`), which
    /// names its JWKS and its issuer.
    OidcDiscovery { url: String, ca_cert: String },
}

/// A binding rule: for the logins through `auth_method` whose identity
/// matches `selector`, what the token gets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclBindingRule {
    pub id: String,
    pub description: String,
    pub auth_method: String,
    /// A filter expression over `value.<attribute>` and `list.<attribute>`;
    /// empty: every login.
    pub selector: String,
    pub bind_type: BindType,
    /// The name bound, with `${value.<attribute>}` filled in at login.
    pub bind_name: String,
    pub indexes: Indexes,
}

/// What a binding rule gives a login's token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BindType {
    /// A service identity.
    #[default]
    Service,
    /// A node identity, in the server's datacenter.
    Node,
    /// An existing role, by name.
    Role,
    /// An existing policy, by name.
    Policy,
}

impl BindType {
    pub const ALL: [BindType; 4] = [BindType::Service, BindType::Node, BindType::Role, BindType::Policy];

    /// Consul's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BindType::Service => "service",
            BindType::Node => "node",
            BindType::Role => "role",
            BindType::Policy => "policy",
        }
    }

    pub fn parse(name: &str) -> Option<BindType> {
        BindType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The built-in policy that grants everything (Consul's ID).
pub const GLOBAL_MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
pub const GLOBAL_MANAGEMENT_POLICY_NAME: &str = "global-management";
/// The anonymous token: what a request without a token is (Consul's IDs).
pub const ANONYMOUS_TOKEN_ACCESSOR_ID: &str = "00000000-0000-0000-0000-000000000002";
pub const ANONYMOUS_TOKEN_SECRET: &str = "anonymous";

/// The rules of the global-management policy.
pub fn global_management_rules() -> Rules {
    let everything = |resource| NamedRule {
        resource,
        name: String::new(),
        prefix: true,
        access: Access::Write,
        intentions: (resource == NamedResource::Service).then_some(Access::Write),
    };
    Rules {
        global: GlobalResource::ALL.iter().map(|resource| (*resource, Access::Write)).collect(),
        named: NamedResource::ALL.iter().map(|resource| everything(*resource)).collect(),
    }
}

/// The global-management policy as it is first written.
pub fn global_management_policy() -> AclPolicy {
    AclPolicy {
        id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
        name: GLOBAL_MANAGEMENT_POLICY_NAME.into(),
        description: "Builtin Policy that grants unlimited access".into(),
        rules_text: String::new(),
        rules: global_management_rules(),
        datacenters: Vec::new(),
        indexes: Indexes::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_grants_read_and_list_and_deny_grants_nothing() {
        assert!(Access::Write.grants(Access::Read) && Access::Read.grants(Access::List));
        assert!(!Access::List.grants(Access::Read) && !Access::Read.grants(Access::Write));
        assert!(!Access::Deny.grants(Access::Deny) && !Access::Deny.grants(Access::List));
        for access in [Access::Deny, Access::List, Access::Read, Access::Write] {
            assert_eq!(Access::parse(access.as_str()), Some(access));
        }
    }
}
