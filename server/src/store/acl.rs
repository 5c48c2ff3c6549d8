//! The ACL tables (see [`weft_api::acl`]): policies, roles and tokens, the
//! latter found by their secret's hash, auth methods with their binding
//! rules, and whether the cluster was bootstrapped. Records arrive validated and parsed; here only what needs
//! the tables is checked (names unique, links to existing policies and
//! roles, the built-ins kept), in log order.

use std::collections::{BTreeMap, HashMap};

use weft_acl::AclSource;
use weft_api::acl::{
    AclAuthMethod, AclBindingRule, AclPolicy, AclRole, AclToken, ANONYMOUS_TOKEN_ACCESSOR_ID,
    GLOBAL_MANAGEMENT_POLICY_ID,
};
use weft_api::command::CommandOutcome;
use weft_api::ids::{Indexes, RaftIndex};

use super::{Changed, Table};

#[derive(Clone, Debug, Default)]
pub struct AclTables {
    /// By AccessorID.
    tokens: BTreeMap<String, AclToken>,
    /// SecretID hash to AccessorID.
    by_secret: HashMap<String, String>,
    /// By ID.
    policies: BTreeMap<String, AclPolicy>,
    /// By ID.
    roles: BTreeMap<String, AclRole>,
    /// By name.
    auth_methods: BTreeMap<String, AclAuthMethod>,
    /// By ID.
    binding_rules: BTreeMap<String, AclBindingRule>,
    /// The index `PUT /v1/acl/bootstrap` succeeded at (Consul's reset index).
    bootstrap_index: Option<RaftIndex>,
}

/// The ACL tables as a snapshot holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AclData {
    pub tokens: Vec<AclToken>,
    pub policies: Vec<AclPolicy>,
    pub roles: Vec<AclRole>,
    pub auth_methods: Vec<AclAuthMethod>,
    pub binding_rules: Vec<AclBindingRule>,
    pub bootstrap_index: Option<RaftIndex>,
}

fn rejected(reason: impl Into<String>) -> CommandOutcome {
    CommandOutcome::Rejected(reason.into())
}

impl AclTables {
    pub(super) fn from_data(data: AclData) -> AclTables {
        AclTables {
            by_secret: data.tokens.iter().map(|t| (t.secret_sha256.clone(), t.accessor_id.clone())).collect(),
            tokens: data.tokens.into_iter().map(|t| (t.accessor_id.clone(), t)).collect(),
            policies: data.policies.into_iter().map(|p| (p.id.clone(), p)).collect(),
            roles: data.roles.into_iter().map(|r| (r.id.clone(), r)).collect(),
            auth_methods: data.auth_methods.into_iter().map(|m| (m.name.clone(), m)).collect(),
            binding_rules: data.binding_rules.into_iter().map(|r| (r.id.clone(), r)).collect(),
            bootstrap_index: data.bootstrap_index,
        }
    }

    pub(super) fn to_data(&self) -> AclData {
        AclData {
            tokens: self.tokens.values().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
            auth_methods: self.auth_methods.values().cloned().collect(),
            binding_rules: self.binding_rules.values().cloned().collect(),
            bootstrap_index: self.bootstrap_index,
        }
    }

    pub fn tokens(&self) -> impl Iterator<Item = &AclToken> {
        self.tokens.values()
    }

    pub fn token(&self, accessor_id: &str) -> Option<&AclToken> {
        self.tokens.get(accessor_id)
    }

    pub fn policies(&self) -> impl Iterator<Item = &AclPolicy> {
        self.policies.values()
    }

    pub fn policy_by_name(&self, name: &str) -> Option<&AclPolicy> {
        self.policies.values().find(|p| p.name == name)
    }

    pub fn roles(&self) -> impl Iterator<Item = &AclRole> {
        self.roles.values()
    }

    pub fn role_by_name(&self, name: &str) -> Option<&AclRole> {
        self.roles.values().find(|r| r.name == name)
    }

    pub fn auth_methods(&self) -> impl Iterator<Item = &AclAuthMethod> {
        self.auth_methods.values()
    }

    pub fn auth_method(&self, name: &str) -> Option<&AclAuthMethod> {
        self.auth_methods.get(name)
    }

    pub fn binding_rules(&self) -> impl Iterator<Item = &AclBindingRule> {
        self.binding_rules.values()
    }

    pub fn binding_rule(&self, id: &str) -> Option<&AclBindingRule> {
        self.binding_rules.get(id)
    }

    pub fn bootstrap_index(&self) -> Option<RaftIndex> {
        self.bootstrap_index
    }

    /// Makes the first management token, once; again only with the index
    /// the last bootstrap happened at (`reset_index`, from the operator's
    /// `acl-bootstrap-reset` file).
    pub(super) fn bootstrap(
        &mut self,
        index: RaftIndex,
        token: &AclToken,
        reset_index: Option<RaftIndex>,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if let Some(reset) = self.bootstrap_index.filter(|done| reset_index != Some(*done)) {
            return rejected(format!("ACL bootstrap no longer allowed (reset index: {})", reset.get()));
        }
        if !token.policies.iter().any(|p| p == GLOBAL_MANAGEMENT_POLICY_ID) {
            return rejected("the bootstrap token must be linked to the global-management policy");
        }
        if !self.policies.contains_key(GLOBAL_MANAGEMENT_POLICY_ID) {
            let policy = weft_api::acl::global_management_policy();
            self.policies
                .insert(policy.id.clone(), AclPolicy { indexes: Indexes { create: index, modify: index }, ..policy });
        }
        match self.set_token(index, token, changed) {
            CommandOutcome::Done => {
                self.bootstrap_index = Some(index);
                CommandOutcome::Done
            }
            other => other,
        }
    }

    /// Creates or updates a token (its secret never changes once made).
    pub(super) fn set_token(&mut self, index: RaftIndex, token: &AclToken, changed: &mut Changed) -> CommandOutcome {
        if token.accessor_id.is_empty() || token.secret_sha256.len() != 64 {
            return rejected("a token needs an AccessorID and its secret's SHA-256");
        }
        if let Some(owner) = self.by_secret.get(&token.secret_sha256).filter(|owner| **owner != token.accessor_id) {
            return rejected(format!("Invalid Token: SecretID is already in use (by {owner})"));
        }
        if let Some(missing) = token.policies.iter().find(|id| !self.policies.contains_key(*id)) {
            return rejected(format!("cannot find policy {missing}"));
        }
        if let Some(missing) = token.roles.iter().find(|id| !self.roles.contains_key(*id)) {
            return rejected(format!("cannot find role {missing}"));
        }
        // A login's token outlives no method: one deleted while the login
        // was under way is refused here, in log order.
        if !token.auth_method.is_empty() && !self.auth_methods.contains_key(&token.auth_method) {
            return rejected(format!("ACL not found: auth method {:?} not found", token.auth_method));
        }
        let existing = self.tokens.get(&token.accessor_id);
        if existing.is_some_and(|existing| existing.secret_sha256 != token.secret_sha256) {
            return rejected("Invalid Token: SecretID cannot be changed");
        }
        let create = existing.map_or(index, |t| t.indexes.create);
        let record = AclToken { indexes: Indexes { create, modify: index }, ..token.clone() };
        self.by_secret.insert(record.secret_sha256.clone(), record.accessor_id.clone());
        self.tokens.insert(record.accessor_id.clone(), record);
        changed.mark(Table::Acl);
        CommandOutcome::Done
    }

    pub(super) fn delete_token(&mut self, accessor_id: &str, changed: &mut Changed) -> CommandOutcome {
        if accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID {
            return rejected("Delete of the anonymous token is not allowed");
        }
        if let Some(token) = self.tokens.remove(accessor_id) {
            self.by_secret.remove(&token.secret_sha256);
            changed.mark(Table::Acl);
        }
        CommandOutcome::Done
    }

    pub(super) fn set_policy(&mut self, index: RaftIndex, policy: &AclPolicy, changed: &mut Changed) -> CommandOutcome {
        if policy.id.is_empty() || policy.name.is_empty() {
            return rejected("a policy needs an ID and a Name");
        }
        if self.policies.values().any(|p| p.name == policy.name && p.id != policy.id) {
            return rejected(format!("Invalid Policy: A Policy with Name {:?} already exists", policy.name));
        }
        let existing = self.policies.get(&policy.id);
        if policy.id == GLOBAL_MANAGEMENT_POLICY_ID && existing.is_some_and(|p| p.rules != policy.rules) {
            return rejected("Changing the Rules for the builtin global-management policy is not permitted");
        }
        let create = existing.map_or(index, |p| p.indexes.create);
        let record = AclPolicy { indexes: Indexes { create, modify: index }, ..policy.clone() };
        self.policies.insert(record.id.clone(), record);
        changed.mark(Table::Acl);
        CommandOutcome::Done
    }

    pub(super) fn delete_policy(&mut self, id: &str, changed: &mut Changed) -> CommandOutcome {
        if id == GLOBAL_MANAGEMENT_POLICY_ID {
            return rejected("Deletion of the builtin global-management policy is not permitted");
        }
        if self.policies.remove(id).is_some() {
            changed.mark(Table::Acl);
        }
        CommandOutcome::Done
    }

    pub(super) fn set_role(&mut self, index: RaftIndex, role: &AclRole, changed: &mut Changed) -> CommandOutcome {
        if role.id.is_empty() || role.name.is_empty() {
            return rejected("a role needs an ID and a Name");
        }
        if self.roles.values().any(|r| r.name == role.name && r.id != role.id) {
            return rejected(format!("Invalid Role: A Role with Name {:?} already exists", role.name));
        }
        if let Some(missing) = role.policies.iter().find(|id| !self.policies.contains_key(*id)) {
            return rejected(format!("cannot find policy {missing}"));
        }
        let create = self.roles.get(&role.id).map_or(index, |r| r.indexes.create);
        let record = AclRole { indexes: Indexes { create, modify: index }, ..role.clone() };
        self.roles.insert(record.id.clone(), record);
        changed.mark(Table::Acl);
        CommandOutcome::Done
    }

    pub(super) fn delete_role(&mut self, id: &str, changed: &mut Changed) -> CommandOutcome {
        if self.roles.remove(id).is_some() {
            changed.mark(Table::Acl);
        }
        CommandOutcome::Done
    }

    /// Creates or updates an auth method (its type never changes).
    pub(super) fn set_auth_method(
        &mut self,
        index: RaftIndex,
        method: &AclAuthMethod,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if method.name.is_empty() {
            return rejected("Invalid Auth Method: no Name is set");
        }
        let existing = self.auth_methods.get(&method.name);
        if existing.is_some_and(|existing| existing.method_type != method.method_type) {
            return rejected("the Type field of an Auth Method is immutable");
        }
        let create = existing.map_or(index, |m| m.indexes.create);
        let record = AclAuthMethod { indexes: Indexes { create, modify: index }, ..method.clone() };
        self.auth_methods.insert(record.name.clone(), record);
        changed.mark(Table::Acl);
        CommandOutcome::Done
    }

    /// Deletes an auth method, its binding rules and its logins' tokens.
    pub(super) fn delete_auth_method(&mut self, name: &str, changed: &mut Changed) -> CommandOutcome {
        if self.auth_methods.remove(name).is_none() {
            return CommandOutcome::Done;
        }
        self.binding_rules.retain(|_, rule| rule.auth_method != name);
        let logins: Vec<String> =
            self.tokens.values().filter(|t| t.auth_method == name).map(|t| t.accessor_id.clone()).collect();
        for accessor_id in logins {
            if let Some(token) = self.tokens.remove(&accessor_id) {
                self.by_secret.remove(&token.secret_sha256);
            }
        }
        changed.mark(Table::Acl);
        CommandOutcome::Done
    }

    /// Creates or updates a binding rule (its auth method never changes).
    pub(super) fn set_binding_rule(
        &mut self,
        index: RaftIndex,
        rule: &AclBindingRule,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if rule.id.is_empty() {
            return rejected("a binding rule needs an ID");
        }
        if !self.auth_methods.contains_key(&rule.auth_method) {
            return rejected(format!("cannot find auth method with name {:?}", rule.auth_method));
        }
        let existing = self.binding_rules.get(&rule.id);
        if existing.is_some_and(|existing| existing.auth_method != rule.auth_method) {
            return rejected("the AuthMethod field of an Binding Rule is immutable");
        }
        let create = existing.map_or(index, |r| r.indexes.create);
        let record = AclBindingRule { indexes: Indexes { create, modify: index }, ..rule.clone() };
        self.binding_rules.insert(record.id.clone(), record);
        changed.mark(Table::Acl);
        CommandOutcome::Done
    }

    pub(super) fn delete_binding_rule(&mut self, id: &str, changed: &mut Changed) -> CommandOutcome {
        if self.binding_rules.remove(id).is_some() {
            changed.mark(Table::Acl);
        }
        CommandOutcome::Done
    }
}

impl AclSource for AclTables {
    fn token_by_secret_sha256(&self, secret_sha256: &str) -> Option<&AclToken> {
        self.tokens.get(self.by_secret.get(secret_sha256)?)
    }

    fn policy(&self, id: &str) -> Option<&AclPolicy> {
        self.policies.get(id)
    }

    fn role(&self, id: &str) -> Option<&AclRole> {
        self.roles.get(id)
    }
}

#[cfg(test)]
mod tests {
    use weft_api::acl::{global_management_policy, GLOBAL_MANAGEMENT_POLICY_ID};
    use weft_api::command::Command;

    use super::super::Tables;
    use super::*;

    fn token(accessor: &str, hash: char, policies: &[&str]) -> AclToken {
        AclToken {
            accessor_id: accessor.into(),
            secret_sha256: hash.to_string().repeat(64),
            policies: policies.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn bootstrap_happens_once_and_names_its_reset_index() {
        let mut tables = Tables::default();
        let management = token("a1", 'a', &[GLOBAL_MANAGEMENT_POLICY_ID]);
        let bootstrap = |token: AclToken, reset_index| Command::AclBootstrap { token: Box::new(token), reset_index };
        assert_eq!(tables.apply(RaftIndex(5), &bootstrap(management, None)).0, CommandOutcome::Done);
        let again = token("a2", 'b', &[GLOBAL_MANAGEMENT_POLICY_ID]);
        let refused = tables.apply(RaftIndex(6), &bootstrap(again.clone(), None)).0;
        assert_eq!(refused, CommandOutcome::Rejected("ACL bootstrap no longer allowed (reset index: 5)".into()));
        let wrong = tables.apply(RaftIndex(6), &bootstrap(again.clone(), Some(RaftIndex(4)))).0;
        assert!(matches!(wrong, CommandOutcome::Rejected(_)), "a wrong reset index");
        assert_eq!(tables.apply(RaftIndex(7), &bootstrap(again, Some(RaftIndex(5)))).0, CommandOutcome::Done);
        assert_eq!(tables.acl().bootstrap_index(), Some(RaftIndex(7)), "reset once: the next needs index 7");
        assert!(tables.acl().token_by_secret_sha256(&"a".repeat(64)).is_some());
        assert!(tables.acl().policy(GLOBAL_MANAGEMENT_POLICY_ID).is_some());
    }

    #[test]
    fn links_must_exist_names_are_unique_and_the_built_ins_stay() {
        let mut tables = Tables::default();
        let apply = |tables: &mut Tables, index, command| tables.apply(RaftIndex(index), &command).0;
        let dangling = apply(&mut tables, 1, Command::AclTokenSet(Box::new(token("t", 'c', &["nope"]))));
        assert!(matches!(dangling, CommandOutcome::Rejected(r) if r.contains("cannot find policy nope")));
        let policy = AclPolicy { id: "p1".into(), name: "kv".into(), ..Default::default() };
        assert_eq!(apply(&mut tables, 2, Command::AclPolicySet(Box::new(policy.clone()))), CommandOutcome::Done);
        let twin = AclPolicy { id: "p2".into(), ..policy.clone() };
        assert!(matches!(apply(&mut tables, 3, Command::AclPolicySet(Box::new(twin))), CommandOutcome::Rejected(_)));
        assert_eq!(
            apply(&mut tables, 4, Command::AclTokenSet(Box::new(token("t", 'c', &["p1"])))),
            CommandOutcome::Done
        );
        let stolen = apply(&mut tables, 5, Command::AclTokenSet(Box::new(token("u", 'c', &[]))));
        assert!(matches!(stolen, CommandOutcome::Rejected(r) if r.contains("already in use")));
        let rekeyed = apply(&mut tables, 6, Command::AclTokenSet(Box::new(token("t", 'd', &[]))));
        assert!(matches!(rekeyed, CommandOutcome::Rejected(r) if r.contains("cannot be changed")));
        assert_eq!(tables.acl().token("t").unwrap().indexes, Indexes { create: RaftIndex(4), modify: RaftIndex(4) });

        let management = global_management_policy();
        apply(&mut tables, 7, Command::AclPolicySet(Box::new(management.clone())));
        let weakened = AclPolicy { rules: Default::default(), ..management };
        assert!(matches!(
            apply(&mut tables, 8, Command::AclPolicySet(Box::new(weakened))),
            CommandOutcome::Rejected(_)
        ));
        let delete = Command::AclPolicyDelete { id: GLOBAL_MANAGEMENT_POLICY_ID.into() };
        assert!(matches!(apply(&mut tables, 9, delete), CommandOutcome::Rejected(_)));
        let anonymous = Command::AclTokenDelete { accessor_id: ANONYMOUS_TOKEN_ACCESSOR_ID.into() };
        assert!(matches!(apply(&mut tables, 10, anonymous), CommandOutcome::Rejected(_)));
        assert_eq!(apply(&mut tables, 11, Command::AclTokenDelete { accessor_id: "t".into() }), CommandOutcome::Done);
        assert!(tables.acl().token_by_secret_sha256(&"c".repeat(64)).is_none());
        assert_eq!(tables.index(Table::Acl), RaftIndex(11));
    }

    #[test]
    fn deleting_an_auth_method_takes_its_rules_and_its_logins_tokens() {
        let mut tables = Tables::default();
        let apply = |tables: &mut Tables, index, command| tables.apply(RaftIndex(index), &command).0;
        let rule = AclBindingRule { id: "r1".into(), auth_method: "k8s".into(), ..Default::default() };
        let orphan = apply(&mut tables, 1, Command::AclBindingRuleSet(Box::new(rule.clone())));
        assert!(matches!(orphan, CommandOutcome::Rejected(r) if r.contains("cannot find auth method")));
        let method = AclAuthMethod { name: "k8s".into(), ..Default::default() };
        assert_eq!(apply(&mut tables, 2, Command::AclAuthMethodSet(Box::new(method))), CommandOutcome::Done);
        assert_eq!(apply(&mut tables, 3, Command::AclBindingRuleSet(Box::new(rule))), CommandOutcome::Done);
        let login = AclToken { auth_method: "k8s".into(), ..token("l1", 'e', &[]) };
        assert_eq!(apply(&mut tables, 4, Command::AclTokenSet(Box::new(login.clone()))), CommandOutcome::Done);
        assert_eq!(apply(&mut tables, 5, Command::AclTokenSet(Box::new(token("t", 'f', &[])))), CommandOutcome::Done);

        assert_eq!(apply(&mut tables, 6, Command::AclAuthMethodDelete { name: "k8s".into() }), CommandOutcome::Done);
        assert!(tables.acl().binding_rule("r1").is_none() && tables.acl().token("l1").is_none());
        assert!(tables.acl().token_by_secret_sha256(&"e".repeat(64)).is_none());
        assert!(tables.acl().token("t").is_some(), "tokens made directly stay");
        // A login that finishes after its method went is refused.
        let late = apply(&mut tables, 7, Command::AclTokenSet(Box::new(login)));
        assert!(matches!(late, CommandOutcome::Rejected(r) if r.contains("auth method \"k8s\" not found")));
    }
}
