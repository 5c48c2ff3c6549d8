//! Join tokens, agent enrollments and the agent CA (see
//! [`weft_api::join`]): the tokens that let a new agent in, the enrollment
//! each agent recorded with one, and the CA that signs agents' certificates.
//! Only hashes are kept; the checks at redemption (known, not expired, not
//! used up) happen here, in the log's order, so two agents racing for the
//! last use of a token cannot both win.

use std::collections::BTreeMap;

use weft_api::command::CommandOutcome;
use weft_api::ids::{Indexes, NodeName, RaftIndex};
use weft_api::join::{AgentCaRecord, AgentCredentialRecord, JoinTokenRecord};

use super::{Changed, Table};

/// What a redemption would do (see [`JoinTables::redeemable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redemption {
    LetIn,
    AlreadyIn,
}

#[derive(Clone, Debug, Default)]
pub struct JoinTables {
    /// By ID.
    tokens: BTreeMap<String, JoinTokenRecord>,
    credentials: BTreeMap<NodeName, AgentCredentialRecord>,
    agent_ca: Option<AgentCaRecord>,
}

impl JoinTables {
    pub(super) fn from_parts(
        tokens: Vec<JoinTokenRecord>,
        credentials: Vec<AgentCredentialRecord>,
        agent_ca: Option<AgentCaRecord>,
    ) -> Self {
        JoinTables {
            tokens: tokens.into_iter().map(|t| (t.id.clone(), t)).collect(),
            credentials: credentials.into_iter().map(|c| (c.node.clone(), c)).collect(),
            agent_ca,
        }
    }

    /// The servers' agent CA, once the first leader has made it.
    pub fn agent_ca(&self) -> Option<&AgentCaRecord> {
        self.agent_ca.as_ref()
    }

    /// `node`'s enrollment, if it has one.
    pub fn credential(&self, node: &NodeName) -> Option<&AgentCredentialRecord> {
        self.credentials.get(node)
    }

    /// Whether a certificate carrying `enrollment` is one issued under
    /// `node`'s current enrollment (not revoked, not replaced).
    pub fn is_enrolled(&self, node: &NodeName, enrollment: &str) -> bool {
        self.credentials.get(node).is_some_and(|c| !enrollment.is_empty() && c.enrollment_id() == enrollment)
    }

    /// Sets the agent CA; it is made once and never replaced.
    pub(super) fn set_agent_ca(&mut self, ca: &AgentCaRecord, changed: &mut Changed) -> CommandOutcome {
        if self.agent_ca.is_some() {
            return CommandOutcome::Rejected("the agent CA exists".into());
        }
        if ca.cert_pem.is_empty() || ca.key_pem.is_empty() {
            return CommandOutcome::Rejected("the agent CA needs a certificate and a key".into());
        }
        self.agent_ca = Some(ca.clone());
        changed.mark(Table::Join);
        CommandOutcome::Done
    }

    /// Revokes `node`'s enrollment.
    /// Records `credential` as its node's enrollment, replacing any (the
    /// caller proved it is that node with a JWT).
    pub(super) fn set_credential(
        &mut self,
        index: RaftIndex,
        credential: &AgentCredentialRecord,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if credential.node.is_empty() || credential.secret_sha256.is_empty() {
            return CommandOutcome::Rejected("a credential needs a node and a secret".into());
        }
        let create = self.credentials.get(&credential.node).map_or(index, |c| c.indexes.create);
        let record = AgentCredentialRecord { indexes: Indexes { create, modify: index }, ..credential.clone() };
        self.credentials.insert(credential.node.clone(), record);
        changed.mark(Table::Join);
        CommandOutcome::Done
    }

    pub(super) fn revoke(&mut self, node: &NodeName, changed: &mut Changed) -> CommandOutcome {
        match self.credentials.remove(node) {
            Some(_) => {
                changed.mark(Table::Join);
                CommandOutcome::Done
            }
            None => CommandOutcome::Rejected(format!("node {node:?} has no enrollment")),
        }
    }

    pub fn tokens(&self) -> impl Iterator<Item = &JoinTokenRecord> {
        self.tokens.values()
    }

    pub fn credentials(&self) -> impl Iterator<Item = &AgentCredentialRecord> {
        self.credentials.values()
    }

    /// Whether `secret_sha256` is the hash of `node`'s credential.
    pub fn is_credential(&self, node: &NodeName, secret_sha256: &str) -> bool {
        self.credentials.get(node).is_some_and(|c| c.secret_sha256 == secret_sha256)
    }

    pub(super) fn create(
        &mut self,
        index: RaftIndex,
        token: &JoinTokenRecord,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if token.id.is_empty() || token.secret_sha256.is_empty() {
            return CommandOutcome::Rejected("a join token needs an ID and a secret".into());
        }
        if self.tokens.contains_key(&token.id) {
            return CommandOutcome::Rejected(format!("join token {} exists", token.id));
        }
        let record = JoinTokenRecord { indexes: Indexes { create: index, modify: index }, ..token.clone() };
        self.tokens.insert(token.id.clone(), record);
        changed.mark(Table::Join);
        CommandOutcome::Done
    }

    pub(super) fn delete(&mut self, id: &str, changed: &mut Changed) -> CommandOutcome {
        if self.tokens.remove(id).is_some() {
            changed.mark(Table::Join);
        }
        CommandOutcome::Done
    }

    /// What redeeming the token whose secret hashes to `secret_sha256` for
    /// `credential` at `now` would do: let the node in (the token known, not
    /// expired), nothing (the node is in with this very credential: a
    /// repeated request), or be refused. A node's credential is never
    /// replaced: that would hand its identity to whoever holds a token.
    pub fn redeemable(
        &self,
        secret_sha256: &str,
        credential: &AgentCredentialRecord,
        now: i64,
    ) -> Result<Redemption, String> {
        let node = &credential.node;
        if let Some(existing) = self.credentials.get(node) {
            return match existing.secret_sha256 == credential.secret_sha256 {
                true => Ok(Redemption::AlreadyIn),
                false => Err(format!("node {node:?} has already joined; a new agent needs a node name of its own")),
            };
        }
        let Some(token) = self.tokens.values().find(|t| t.secret_sha256 == secret_sha256) else {
            return Err("unknown join token (deleted, used up, or never made)".into());
        };
        if now > token.expires_at {
            return Err(format!("join token {} has expired", token.id));
        }
        Ok(Redemption::LetIn)
    }

    pub(super) fn redeem(
        &mut self,
        index: RaftIndex,
        secret_sha256: &str,
        credential: &AgentCredentialRecord,
        now: i64,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if credential.node.is_empty() || credential.secret_sha256.is_empty() {
            return CommandOutcome::Rejected("a credential needs a node and a secret".into());
        }
        match self.redeemable(secret_sha256, credential, now) {
            Err(reason) => return CommandOutcome::Rejected(reason),
            Ok(Redemption::AlreadyIn) => return CommandOutcome::Done,
            Ok(Redemption::LetIn) => {}
        }
        let Some(token) = self.tokens.values_mut().find(|t| t.secret_sha256 == secret_sha256) else {
            return CommandOutcome::Rejected("unknown join token".into());
        };
        token.uses_left = token.uses_left.saturating_sub(1);
        token.indexes.modify = index;
        let token_id = token.id.clone();
        if token.uses_left == 0 {
            self.tokens.remove(&token_id);
        }
        let create = self.credentials.get(&credential.node).map_or(index, |c| c.indexes.create);
        let record =
            AgentCredentialRecord { token_id, indexes: Indexes { create, modify: index }, ..credential.clone() };
        self.credentials.insert(credential.node.clone(), record);
        changed.mark(Table::Join);
        CommandOutcome::Done
    }
}

#[cfg(test)]
mod tests {
    use weft_api::command::Command;

    use super::super::Tables;
    use super::*;

    fn token(uses: u32) -> JoinTokenRecord {
        JoinTokenRecord {
            id: "t1".into(),
            secret_sha256: "h".into(),
            expires_at: 100,
            uses_left: uses,
            ..Default::default()
        }
    }

    fn redeem(node: &str, now: i64) -> Command {
        let credential =
            AgentCredentialRecord { node: node.into(), secret_sha256: format!("c-{node}"), ..Default::default() };
        Command::JoinTokenRedeem { secret_sha256: "h".into(), credential, now }
    }

    #[test]
    fn a_token_lets_in_as_many_agents_as_it_has_uses_until_it_expires() {
        let mut tables = Tables::default();
        assert_eq!(tables.apply(RaftIndex(1), &Command::JoinTokenCreate(token(2))).0, CommandOutcome::Done);
        assert!(
            matches!(tables.apply(RaftIndex(2), &redeem("vm1", 101)).0, CommandOutcome::Rejected(r) if r.contains("expired"))
        );
        assert_eq!(tables.apply(RaftIndex(3), &redeem("vm1", 50)).0, CommandOutcome::Done);
        assert_eq!(tables.apply(RaftIndex(4), &redeem("vm2", 50)).0, CommandOutcome::Done);
        assert!(
            matches!(tables.apply(RaftIndex(5), &redeem("vm3", 50)).0, CommandOutcome::Rejected(r) if r.contains("unknown"))
        );
        let again = JoinTokenRecord { id: "t2".into(), ..token(1) };
        tables.apply(RaftIndex(6), &Command::JoinTokenCreate(again));
        let mut taken = redeem("vm1", 50);
        if let Command::JoinTokenRedeem { credential, .. } = &mut taken {
            credential.secret_sha256 = "someone else's".into();
        }
        let taken = tables.apply(RaftIndex(7), &taken).0;
        assert!(
            matches!(taken, CommandOutcome::Rejected(r) if r.contains("already joined")),
            "a node is never taken over"
        );
        assert_eq!(tables.apply(RaftIndex(8), &redeem("vm1", 50)).0, CommandOutcome::Done, "asking again is harmless");
        let join = tables.join();
        assert!(join.is_credential(&"vm1".into(), "c-vm1") && join.is_credential(&"vm2".into(), "c-vm2"));
        assert!(!join.is_credential(&"vm1".into(), "c-vm2") && !join.is_credential(&"vm3".into(), "c-vm3"));
        assert_eq!(join.tokens().count(), 1, "the used-up token is gone, t2 is left");
        assert_eq!(tables.index(Table::Join), RaftIndex(6));
    }

    #[test]
    fn a_revoked_enrollment_is_gone_and_the_agent_ca_is_made_once() {
        let mut tables = Tables::default();
        tables.apply(RaftIndex(1), &Command::JoinTokenCreate(token(2)));
        tables.apply(RaftIndex(2), &redeem("vm1", 50));
        let enrollment = tables.join().credential(&"vm1".into()).unwrap().enrollment_id().to_owned();
        assert!(tables.join().is_enrolled(&"vm1".into(), &enrollment) && !tables.join().is_enrolled(&"vm1".into(), ""));
        let revoke = Command::AgentCredentialDelete { node: "vm1".into() };
        assert_eq!(tables.apply(RaftIndex(3), &revoke).0, CommandOutcome::Done);
        assert!(!tables.join().is_enrolled(&"vm1".into(), &enrollment));
        assert!(matches!(tables.apply(RaftIndex(4), &revoke).0, CommandOutcome::Rejected(_)));

        let ca = AgentCaRecord { cert_pem: "cert".into(), key_pem: "key".into() };
        assert_eq!(tables.apply(RaftIndex(5), &Command::AgentCaSet(ca.clone())).0, CommandOutcome::Done);
        let other = AgentCaRecord { cert_pem: "other".into(), ..ca.clone() };
        assert!(matches!(tables.apply(RaftIndex(6), &Command::AgentCaSet(other)).0, CommandOutcome::Rejected(_)));
        assert_eq!(tables.join().agent_ca(), Some(&ca));
    }
}
