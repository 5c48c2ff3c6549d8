//! The sessions table, and the rules that end a session with the catalog:
//! a session lives while its node is registered and none of the checks it
//! is bound to is missing or critical. When it ends, the keys it holds are
//! released or deleted (`KvTable::drop_session`).
//!
//! All of it is decided in `apply` from the tables alone. What depends on
//! time is not: a TTL is watched by the leader, which writes a
//! `SessionDestroy` when one runs out, and a lock delay is kept by each
//! server's state store by its own clock (see `Changed`).

use std::collections::BTreeMap;

use weft_api::catalog::HealthStatus;
use weft_api::command::CommandOutcome;
use weft_api::ids::{Indexes, NodeName, RaftIndex};
use weft_api::session::Session;

use super::{Changed, Table, Tables};

#[derive(Clone, Debug, Default)]
pub struct SessionTable {
    sessions: BTreeMap<String, Session>,
}

impl SessionTable {
    pub(super) fn from_sessions(sessions: Vec<Session>) -> Self {
        Self { sessions: sessions.into_iter().map(|s| (s.id.clone(), s)).collect() }
    }

    pub fn get(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Every session, by ID.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// The sessions of `node`.
    pub fn of_node<'a>(&'a self, node: &'a NodeName) -> impl Iterator<Item = &'a Session> + 'a {
        self.sessions.values().filter(move |s| s.node == *node)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

impl Tables {
    /// Why `session`'s checks do not allow it, if they do not: one it is
    /// bound to is missing or critical (Consul's messages).
    fn check_refusal(&self, session: &Session) -> Option<String> {
        session.checks().find_map(|id| match self.catalog.check(&session.node, id) {
            None => Some(format!("Missing check '{id}' registration")),
            Some(check) if check.status == HealthStatus::Critical => Some(format!("Check '{id}' is in critical state")),
            Some(_) => None,
        })
    }

    pub(super) fn create_session(
        &mut self,
        index: RaftIndex,
        session: &Session,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if self.sessions.sessions.contains_key(&session.id) {
            return CommandOutcome::Rejected(format!("Session ID {:?} already exists", session.id));
        }
        if self.catalog.node(&session.node).is_none() {
            return CommandOutcome::Rejected("Missing node registration".into());
        }
        if let Some(refusal) = self.check_refusal(session) {
            return CommandOutcome::Rejected(refusal);
        }
        let stored = Session { indexes: Indexes { create: index, modify: index }, ..session.clone() };
        self.sessions.sessions.insert(session.id.clone(), stored);
        changed.mark(Table::Sessions);
        changed.renewed.push(session.id.clone());
        CommandOutcome::Done
    }

    /// Ends a session, if it exists: its keys are released or deleted.
    pub(super) fn destroy_session(&mut self, index: RaftIndex, id: &str, changed: &mut Changed) -> CommandOutcome {
        if let Some(session) = self.sessions.sessions.remove(id) {
            changed.mark(Table::Sessions);
            self.kv.drop_session(index, &session, changed);
        }
        CommandOutcome::Done
    }

    /// `Cas(true)` if the session exists (and is noted as renewed).
    pub(super) fn renew_session(&self, id: &str, changed: &mut Changed) -> CommandOutcome {
        let exists = self.sessions.sessions.contains_key(id);
        if exists {
            changed.renewed.push(id.to_owned());
        }
        CommandOutcome::Cas(exists)
    }

    /// After a change to the catalog: ends every session whose node is gone
    /// or whose checks no longer allow it.
    pub(super) fn end_unhealthy_sessions(&mut self, index: RaftIndex, changed: &mut Changed) {
        let ended: Vec<String> = self
            .sessions
            .iter()
            .filter(|session| self.catalog.node(&session.node).is_none() || self.check_refusal(session).is_some())
            .map(|session| session.id.clone())
            .collect();
        for id in ended {
            self.destroy_session(index, &id, changed);
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_api::catalog::{Check, HealthStatus, Node, Registration};
    use weft_api::command::Command;
    use weft_api::session::Behavior;

    use super::*;
    use crate::store::StoreData;

    fn register(node: &str, status: HealthStatus) -> Command {
        Command::Register(Box::new(Registration {
            node: Node { name: node.into(), address: "10.0.0.1".into(), ..Node::default() },
            checks: vec![Check {
                node: node.into(),
                id: "serfHealth".into(),
                name: "alive".into(),
                status,
                ..Check::default()
            }],
            ..Registration::default()
        }))
    }

    fn session(id: &str, behavior: Behavior) -> Command {
        Command::SessionCreate(Session {
            id: id.into(),
            node: "vm1".into(),
            node_checks: vec!["serfHealth".into()],
            lock_delay_ms: 15_000,
            behavior,
            ..Session::default()
        })
    }

    fn acquire(key: &str, session: &str) -> Command {
        Command::KvAcquire { key: key.into(), value: b"v".to_vec(), flags: 0, session: session.into(), cas: None }
    }

    #[test]
    fn a_session_holds_its_locks_until_its_check_fails_then_releases_or_deletes_them() {
        let mut tables = Tables::default();
        // No node yet: refused.
        let refused = tables.apply(RaftIndex(1), &session("s1", Behavior::Release)).0;
        assert_eq!(refused, CommandOutcome::Rejected("Missing node registration".into()));
        tables.apply(RaftIndex(2), &register("vm1", HealthStatus::Passing));
        assert_eq!(tables.apply(RaftIndex(3), &session("s1", Behavior::Release)).0, CommandOutcome::Done);
        assert_eq!(tables.apply(RaftIndex(4), &session("s2", Behavior::Delete)).0, CommandOutcome::Done);

        // One holder at a time; the holder may write again without a new lock index.
        assert_eq!(tables.apply(RaftIndex(5), &acquire("lock", "s1")).0, CommandOutcome::Cas(true));
        assert_eq!(tables.apply(RaftIndex(6), &acquire("lock", "s2")).0, CommandOutcome::Cas(false));
        assert_eq!(tables.apply(RaftIndex(7), &acquire("lock", "s1")).0, CommandOutcome::Cas(true));
        assert_eq!(tables.apply(RaftIndex(8), &acquire("other", "s2")).0, CommandOutcome::Cas(true));
        assert_eq!(tables.kv().get("lock").unwrap().lock_index, 1);
        assert_eq!(tables.kv().lock_holder("lock"), Some("s1"));
        let unknown = tables.apply(RaftIndex(9), &acquire("lock", "nope")).0;
        assert!(matches!(unknown, CommandOutcome::Rejected(_)), "{unknown:?}");
        assert_eq!(
            tables.apply(RaftIndex(10), &Command::SessionRenew { id: "s1".into() }).0,
            CommandOutcome::Cas(true)
        );
        assert_eq!(
            tables.apply(RaftIndex(11), &Command::SessionRenew { id: "x".into() }).0,
            CommandOutcome::Cas(false)
        );

        // The locks survive a snapshot.
        let copy = Tables::from_data(StoreData::decode(&tables.to_data().encode()).unwrap());
        assert_eq!(copy.kv().lock_holder("other"), Some("s2"));
        assert_eq!(copy.sessions().len(), 2);

        // The node's check turns critical: both sessions end, s1's key is
        // released (and modified, so watchers wake), s2's deleted; each
        // starts its lock delay.
        let (_, changed) = tables.apply(RaftIndex(12), &register("vm1", HealthStatus::Critical));
        assert!(tables.sessions().is_empty());
        let released = tables.kv().get("lock").unwrap();
        assert_eq!((released.indexes.modify, tables.kv().lock_holder("lock")), (RaftIndex(12), None));
        assert!(tables.kv().get("other").is_none());
        let mut delays = changed.lock_delays.clone();
        delays.sort();
        assert_eq!(delays, [("lock".to_owned(), 15_000), ("other".to_owned(), 15_000)]);
        assert!(changed.tables().contains(&Table::Sessions) && changed.tables().contains(&Table::Kv));
        // A critical check refuses a new session.
        let refused = tables.apply(RaftIndex(13), &session("s3", Behavior::Release)).0;
        assert_eq!(refused, CommandOutcome::Rejected("Check 'serfHealth' is in critical state".into()));
    }

    #[test]
    fn the_state_store_forgets_the_renewals_of_ended_sessions_and_passed_lock_delays() {
        let store = crate::store::StateStore::new();
        store.apply(RaftIndex(1), &register("vm1", HealthStatus::Passing));
        store.apply(RaftIndex(2), &session("s1", Behavior::Release));
        store.apply(RaftIndex(3), &acquire("lock", "s1"));
        store.apply(RaftIndex(4), &Command::SessionRenew { id: "s1".into() });
        assert_eq!(store.clocked.lock().unwrap().renewed.len(), 1);
        store.apply(RaftIndex(5), &Command::SessionDestroy { id: "s1".into() });
        assert!(store.lock_delay_left("lock").is_some_and(|left| left > std::time::Duration::from_secs(14)));
        let clocked = store.clocked.lock().unwrap();
        assert!(clocked.renewed.is_empty(), "{clocked:?}");
    }

    #[test]
    fn a_destroyed_session_releases_and_a_deleted_node_ends_its_sessions() {
        let mut tables = Tables::default();
        tables.apply(RaftIndex(1), &register("vm1", HealthStatus::Passing));
        tables.apply(RaftIndex(2), &session("s1", Behavior::Release));
        tables.apply(RaftIndex(3), &acquire("lock", "s1"));
        let release =
            Command::KvRelease { key: "lock".into(), value: b"w".to_vec(), flags: 0, session: "s2".into(), cas: None };
        assert_eq!(tables.apply(RaftIndex(4), &release).0, CommandOutcome::Cas(false), "s2 does not hold it");
        assert_eq!(tables.apply(RaftIndex(5), &Command::SessionDestroy { id: "s1".into() }).0, CommandOutcome::Done);
        assert_eq!(tables.kv().lock_holder("lock"), None);
        assert_eq!(tables.apply(RaftIndex(6), &Command::SessionDestroy { id: "s1".into() }).0, CommandOutcome::Done);
        // A new holder takes a new lock index.
        tables.apply(RaftIndex(7), &session("s2", Behavior::Release));
        tables.apply(RaftIndex(8), &acquire("lock", "s2"));
        assert_eq!(tables.kv().get("lock").unwrap().lock_index, 2);
        let deregister =
            Command::Deregister(weft_api::catalog::Deregistration { node: "vm1".into(), ..Default::default() });
        tables.apply(RaftIndex(9), &deregister);
        assert!(tables.sessions().is_empty());
        assert_eq!(tables.kv().lock_holder("lock"), None);
    }
}
