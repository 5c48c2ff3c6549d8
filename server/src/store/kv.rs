//! The KV table: keys in lexical order, so prefix listings are range scans,
//! and which session holds each locked key (`?acquire=`; see
//! `weft_api::session`). A lock lives and dies with its key: deleting the
//! key drops it.

use std::collections::BTreeMap;

use weft_api::command::CommandOutcome;
use weft_api::ids::{Indexes, RaftIndex};
use weft_api::kv::KvEntry;
use weft_api::session::{Behavior, Session};
use weft_api::txn::{KvOp, KvVerb, TxnError, TxnOutcome};

use super::sessions::SessionTable;
use super::{Changed, Table};

#[derive(Clone, Debug, Default)]
pub struct KvTable {
    entries: BTreeMap<String, KvEntry>,
    /// Locked key -> the session that holds it.
    locks: BTreeMap<String, String>,
}

/// A key as it was before a transaction's operation changed it: its entry
/// and its lock holder, or nothing.
type Before = Option<(KvEntry, Option<String>)>;

impl KvTable {
    pub(super) fn from_parts(entries: Vec<KvEntry>, locks: Vec<(String, String)>) -> Self {
        Self { entries: entries.into_iter().map(|e| (e.key.clone(), e)).collect(), locks: locks.into_iter().collect() }
    }

    /// The session holding `key`, if it is locked.
    pub fn lock_holder(&self, key: &str) -> Option<&str> {
        self.locks.get(key).map(String::as_str)
    }

    /// Every lock, by key.
    pub(super) fn locks(&self) -> impl Iterator<Item = (&String, &String)> {
        self.locks.iter()
    }

    /// Removes `key` with its lock, returning what it was.
    fn take(&mut self, key: &str) -> Before {
        let entry = self.entries.remove(key)?;
        Some((entry, self.locks.remove(key)))
    }

    /// Puts back what [`Self::take`] (or an overwrite) removed.
    fn put_back(&mut self, key: String, before: Before) {
        match before {
            Some((entry, holder)) => {
                self.entries.insert(key.clone(), entry);
                match holder {
                    Some(holder) => self.locks.insert(key, holder),
                    None => self.locks.remove(&key),
                };
            }
            None => {
                self.entries.remove(&key);
                self.locks.remove(&key);
            }
        }
    }

    /// What `key` is now, for an undo list.
    fn before(&self, key: &str) -> Before {
        let entry = self.entries.get(key)?.clone();
        Some((entry, self.locks.get(key).cloned()))
    }

    /// Writes `key`, keeping its create index and lock index.
    fn write(&mut self, index: RaftIndex, key: &str, value: &[u8], flags: u64, lock_index: Option<u64>) -> KvEntry {
        let existing = self.entries.get(key);
        let entry = KvEntry {
            key: key.to_owned(),
            value: value.to_vec(),
            flags,
            lock_index: lock_index.or(existing.map(|e| e.lock_index)).unwrap_or(0),
            indexes: Indexes { create: existing.map(|e| e.indexes.create).unwrap_or(index), modify: index },
        };
        self.entries.insert(key.to_owned(), entry.clone());
        entry
    }

    fn modify_index(&self, key: &str) -> Option<u64> {
        self.entries.get(key).map(|e| e.indexes.modify.get())
    }

    /// Whether a check-and-set at `cas` misses: `key`'s ModifyIndex is not
    /// `cas` (0: the key must not exist). No `cas`, no check.
    fn cas_misses(&self, key: &str, cas: Option<u64>) -> bool {
        cas.is_some_and(|cas| self.modify_index(key).unwrap_or(0) != cas)
    }

    /// Sets `key` and locks it for `session`, which must exist (a new
    /// holder bumps the lock index): `Ok(None)` if another session holds
    /// it, `Err` (Consul's words) if the session is missing or unknown.
    /// The one rule for `?acquire=` and a transaction's `lock`.
    fn lock(
        &mut self,
        index: RaftIndex,
        (key, value, flags): (&str, &[u8], u64),
        session: &str,
        sessions: &SessionTable,
    ) -> Result<Option<KvEntry>, String> {
        if session.is_empty() {
            return Err("missing session".into());
        }
        if sessions.get(session).is_none() {
            return Err(format!("invalid session {session:?}"));
        }
        let lock_index = match self.locks.get(key) {
            Some(holder) if holder == session => None,
            Some(_) => return Ok(None),
            None => Some(self.entries.get(key).map(|e| e.lock_index).unwrap_or(0) + 1),
        };
        let entry = self.write(index, key, value, flags, lock_index);
        self.locks.insert(key.to_owned(), session.to_owned());
        Ok(Some(entry))
    }

    /// Sets `key` and unlocks it, if `session` holds it (else `None`). The
    /// one rule for `?release=` and a transaction's `unlock`.
    fn unlock(&mut self, index: RaftIndex, (key, value, flags): (&str, &[u8], u64), session: &str) -> Option<KvEntry> {
        if self.locks.get(key).map(String::as_str) != Some(session) {
            return None;
        }
        let entry = self.write(index, key, value, flags, None);
        self.locks.remove(key);
        Some(entry)
    }

    /// `?acquire=<session>`: [`Self::lock`], with `cas`; `Cas(false)` when
    /// another session holds the key.
    pub(super) fn acquire(
        &mut self,
        index: RaftIndex,
        write: (&str, &[u8], u64),
        session: &str,
        (cas, sessions): (Option<u64>, &SessionTable),
        changed: &mut Changed,
    ) -> CommandOutcome {
        if self.cas_misses(write.0, cas) {
            return CommandOutcome::Cas(false);
        }
        match self.lock(index, write, session, sessions) {
            Err(refusal) => CommandOutcome::Rejected(refusal),
            Ok(locked) => {
                if locked.is_some() {
                    changed.mark(Table::Kv);
                }
                CommandOutcome::Cas(locked.is_some())
            }
        }
    }

    /// `?release=<session>`: [`Self::unlock`], with `cas`.
    pub(super) fn release(
        &mut self,
        index: RaftIndex,
        write: (&str, &[u8], u64),
        session: &str,
        cas: Option<u64>,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if self.cas_misses(write.0, cas) {
            return CommandOutcome::Cas(false);
        }
        let unlocked = self.unlock(index, write, session).is_some();
        if unlocked {
            changed.mark(Table::Kv);
        }
        CommandOutcome::Cas(unlocked)
    }

    /// A session ended: each key it holds is released (modified at
    /// `index`, so watchers wake) or deleted, per its behavior, and starts
    /// its lock delay.
    pub(super) fn drop_session(&mut self, index: RaftIndex, session: &Session, changed: &mut Changed) {
        let held: Vec<String> =
            self.locks.iter().filter(|(_, holder)| **holder == session.id).map(|(key, _)| key.clone()).collect();
        for key in held {
            match session.behavior {
                Behavior::Release => {
                    self.locks.remove(&key);
                    if let Some(entry) = self.entries.get_mut(&key) {
                        entry.indexes.modify = index;
                    }
                }
                Behavior::Delete => {
                    self.take(&key);
                }
            }
            changed.mark(Table::Kv);
            if session.lock_delay_ms > 0 {
                changed.lock_delays.push((key, session.lock_delay_ms));
            }
        }
    }

    pub(super) fn set(
        &mut self,
        index: RaftIndex,
        key: &str,
        value: &[u8],
        flags: u64,
        cas: Option<u64>,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if self.cas_misses(key, cas) {
            return CommandOutcome::Cas(false);
        }
        // A plain write keeps the key's lock and lock index, as in Consul.
        self.write(index, key, value, flags, None);
        changed.mark(Table::Kv);
        if cas.is_some() {
            CommandOutcome::Cas(true)
        } else {
            CommandOutcome::Done
        }
    }

    pub(super) fn delete(
        &mut self,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
        changed: &mut Changed,
    ) -> CommandOutcome {
        if recurse {
            let doomed: Vec<String> = self.prefix(key).map(|e| e.key.clone()).collect();
            for key in &doomed {
                self.take(key);
            }
            if !doomed.is_empty() {
                changed.mark(Table::Kv);
            }
            return CommandOutcome::Done;
        }
        if let Some(cas) = cas {
            let current = self.entries.get(key).map(|e| e.indexes.modify.get());
            if current != Some(cas) {
                return CommandOutcome::Cas(false);
            }
        }
        if self.take(key).is_some() {
            changed.mark(Table::Kv);
        }
        if cas.is_some() {
            CommandOutcome::Cas(true)
        } else {
            CommandOutcome::Done
        }
    }

    /// Runs a transaction's operations in order, as one write at `index`:
    /// if any fails, every change it made is undone and the outcome lists
    /// each failure (Consul goes on past the first, to name them all).
    pub(super) fn txn(
        &mut self,
        index: RaftIndex,
        ops: &[KvOp],
        sessions: &SessionTable,
        changed: &mut Changed,
    ) -> CommandOutcome {
        // Each key as it was before an operation changed it, in order.
        let mut undo: Vec<(String, Before)> = Vec::new();
        let mut outcome = TxnOutcome::default();
        for (i, op) in ops.iter().enumerate() {
            match self.txn_write(index, op, sessions, &mut undo) {
                Ok(found) => outcome.results.extend(found),
                Err(what) => outcome.errors.push(TxnError { op_index: i as u32, what }),
            }
        }
        if outcome.errors.is_empty() {
            if !undo.is_empty() {
                changed.mark(Table::Kv);
            }
        } else {
            for (key, before) in undo.into_iter().rev() {
                self.put_back(key, before);
            }
            outcome.results.clear();
        }
        CommandOutcome::Txn(outcome)
    }

    /// A transaction with no write, against this table as it is.
    pub fn read_txn(&self, ops: &[KvOp]) -> TxnOutcome {
        let mut outcome = TxnOutcome::default();
        for (i, op) in ops.iter().enumerate() {
            match self.txn_read(op) {
                Ok(found) => outcome.results.extend(found),
                Err(what) => outcome.errors.push(TxnError { op_index: i as u32, what }),
            }
        }
        if !outcome.errors.is_empty() {
            outcome.results.clear();
        }
        outcome
    }

    /// One operation of a transaction; what it changed goes on `undo`.
    fn txn_write(
        &mut self,
        index: RaftIndex,
        op: &KvOp,
        sessions: &SessionTable,
        undo: &mut Vec<(String, Before)>,
    ) -> Result<Vec<KvEntry>, String> {
        let key = op.key.as_str();
        let verb = op.verb;
        if !verb.writes() {
            return self.txn_read(op);
        }
        if key.is_empty() && verb != KvVerb::DeleteTree {
            return Err(format!("{}: Missing key name", verb.as_str()));
        }
        let modify_index = self.modify_index(key);
        let without_value = |entry: KvEntry| vec![KvEntry { value: Vec::new(), ..entry }];
        let write = (key, op.value.as_slice(), op.flags);
        match verb {
            KvVerb::Cas if self.cas_misses(key, Some(op.index)) => {
                Err(format!("failed to set key {key:?}, index is stale"))
            }
            KvVerb::Set | KvVerb::Cas => {
                undo.push((key.to_owned(), self.before(key)));
                Ok(without_value(self.write(index, key, &op.value, op.flags, None)))
            }
            KvVerb::Lock => {
                let before = self.before(key);
                match self.lock(index, write, &op.session, sessions)? {
                    Some(entry) => {
                        undo.push((key.to_owned(), before));
                        Ok(without_value(entry))
                    }
                    None => Err(format!("failed to lock key {key:?}, lock is already held")),
                }
            }
            KvVerb::Unlock if op.session.is_empty() => Err("missing session".into()),
            KvVerb::Unlock => {
                let before = self.before(key);
                match self.unlock(index, write, &op.session) {
                    Some(entry) => {
                        undo.push((key.to_owned(), before));
                        Ok(without_value(entry))
                    }
                    None => {
                        Err(format!("failed to unlock key {key:?}, lock isn't held, or is held by another session"))
                    }
                }
            }
            // A delete-cas of a key that is not there succeeds, as in Consul.
            KvVerb::DeleteCas if modify_index.is_some_and(|modify| modify != op.index) => {
                Err(format!("failed to delete key {key:?}, index is stale"))
            }
            KvVerb::Delete | KvVerb::DeleteCas => {
                if let Some(removed) = self.take(key) {
                    undo.push((key.to_owned(), Some(removed)));
                }
                Ok(Vec::new())
            }
            KvVerb::DeleteTree => {
                let doomed: Vec<String> = self.prefix(key).map(|e| e.key.clone()).collect();
                for key in doomed {
                    let removed = self.take(&key);
                    undo.push((key, removed));
                }
                Ok(Vec::new())
            }
            _ => unreachable!("reads are answered by txn_read"),
        }
    }

    /// One operation that reads.
    fn txn_read(&self, op: &KvOp) -> Result<Vec<KvEntry>, String> {
        let key = op.key.as_str();
        let entry = self.entries.get(key);
        let without_value = |entry: &KvEntry| KvEntry { value: Vec::new(), ..entry.clone() };
        match op.verb {
            KvVerb::Get => entry.cloned().map(|e| vec![e]).ok_or_else(|| format!("key {key:?} doesn't exist")),
            KvVerb::GetOrEmpty => {
                Ok(vec![entry.cloned().unwrap_or_else(|| KvEntry { key: key.to_owned(), ..KvEntry::default() })])
            }
            KvVerb::GetTree => Ok(self.prefix(key).cloned().collect()),
            KvVerb::CheckIndex => match entry {
                None => Err(format!("failed to check index, key {key:?} doesn't exist")),
                Some(e) if e.indexes.modify.get() != op.index => Err(format!(
                    "failed index check for key {key:?}, current modify index {} != {}",
                    e.indexes.modify.get(),
                    op.index
                )),
                Some(e) => Ok(vec![without_value(e)]),
            },
            KvVerb::CheckSession => match entry {
                None => Err(format!("failed to check session, key {key:?} doesn't exist")),
                Some(e) => match self.lock_holder(key).unwrap_or_default() {
                    holder if holder == op.session => Ok(vec![without_value(e)]),
                    holder => Err(format!(
                        "failed session check for key {key:?}, current session {holder:?} != {:?}",
                        op.session
                    )),
                },
            },
            KvVerb::CheckNotExists => match entry {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(Vec::new()),
            },
            verb => Err(format!("{} writes; a read-only transaction cannot run it", verb.as_str())),
        }
    }

    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, entry)| entry)
    }

    /// Keys under `prefix`; with a separator, each key is cut just after the
    /// first separator past the prefix and duplicates are folded (Consul's
    /// `?keys&separator=/`).
    pub fn keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for entry in self.prefix(prefix) {
            let key = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match entry.key[prefix.len()..].find(sep) {
                    Some(at) => entry.key[..prefix.len() + at + sep.len()].to_owned(),
                    None => entry.key.clone(),
                },
                None => entry.key.clone(),
            };
            if keys.last() != Some(&key) {
                keys.push(key);
            }
        }
        keys
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &KvEntry> {
        self.entries.values()
    }
}

#[cfg(test)]
mod tests {
    use weft_api::command::Command;

    use super::super::Tables;
    use super::*;

    fn set(key: &str, cas: Option<u64>) -> Command {
        Command::KvSet { key: key.into(), value: b"v".to_vec(), flags: 0, cas }
    }

    fn op(verb: KvVerb, key: &str, index: u64) -> KvOp {
        KvOp { verb, key: key.into(), value: b"new".to_vec(), flags: 3, index, session: String::new() }
    }

    #[test]
    fn a_transaction_that_fails_anywhere_leaves_the_table_as_it_was() {
        let mut tables = Tables::default();
        tables.apply(RaftIndex(1), &set("a", None));
        tables.apply(RaftIndex(2), &set("tree/1", None));
        tables.apply(RaftIndex(3), &set("tree/2", None));
        let before = tables.to_data().encode();
        // Writes, then touches the same keys again, then fails at the end.
        let ops = vec![
            op(KvVerb::Set, "a", 0),
            op(KvVerb::Set, "b", 0),
            op(KvVerb::DeleteTree, "tree/", 0),
            op(KvVerb::Set, "tree/1", 0),
            op(KvVerb::Delete, "a", 0),
            op(KvVerb::CheckNotExists, "b", 0),
        ];
        let (outcome, changed) = tables.apply(RaftIndex(4), &Command::Txn(ops));
        let CommandOutcome::Txn(outcome) = outcome else { panic!("a transaction's outcome") };
        assert_eq!(outcome.errors, [TxnError { op_index: 5, what: "key \"b\" exists".into() }]);
        assert!(outcome.results.is_empty());
        assert!(changed.tables().is_empty());
        assert!(tables.to_data().encode() == before, "rolled back to the same bytes");

        // The same without the failing check: applied at one index.
        let ops = vec![op(KvVerb::Set, "a", 0), op(KvVerb::Cas, "c", 0), op(KvVerb::DeleteCas, "gone", 7)];
        let (outcome, changed) = tables.apply(RaftIndex(5), &Command::Txn(ops));
        let CommandOutcome::Txn(outcome) = outcome else { panic!("a transaction's outcome") };
        assert!(outcome.errors.is_empty(), "{outcome:?}");
        let written: Vec<(&str, &[u8], RaftIndex)> =
            outcome.results.iter().map(|e| (e.key.as_str(), e.value.as_slice(), e.indexes.modify)).collect();
        assert_eq!(written, [("a", &b""[..], RaftIndex(5)), ("c", &b""[..], RaftIndex(5))]);
        assert_eq!(changed.tables(), &[Table::Kv]);
        assert_eq!(tables.kv().get("a").unwrap().indexes, Indexes { create: RaftIndex(1), modify: RaftIndex(5) });
        assert_eq!(tables.kv().get("c").unwrap().value, b"new");
    }

    #[test]
    fn a_read_transaction_gets_values_and_checks_without_writing() {
        let mut tables = Tables::default();
        tables.apply(RaftIndex(1), &set("a", None));
        let read = tables.kv().read_txn(&[op(KvVerb::Get, "a", 0), op(KvVerb::CheckIndex, "a", 1)]);
        assert!(read.errors.is_empty());
        assert_eq!((read.results[0].value.as_slice(), read.results[1].value.as_slice()), (&b"v"[..], &b""[..]));
        let read = tables.kv().read_txn(&[op(KvVerb::CheckIndex, "a", 2), op(KvVerb::Set, "a", 0)]);
        assert_eq!(read.errors.len(), 2);
        assert!(read.results.is_empty());
    }

    #[test]
    fn cas_zero_creates_only_once() {
        let mut tables = Tables::default();
        assert_eq!(tables.apply(RaftIndex(5), &set("a", Some(0))).0, CommandOutcome::Cas(true));
        assert_eq!(tables.apply(RaftIndex(6), &set("a", Some(0))).0, CommandOutcome::Cas(false));
        assert_eq!(tables.apply(RaftIndex(7), &set("a", Some(5))).0, CommandOutcome::Cas(true));
        let entry = tables.kv().get("a").unwrap();
        assert_eq!(entry.indexes, Indexes { create: RaftIndex(5), modify: RaftIndex(7) });
        assert_eq!(tables.index(Table::Kv), RaftIndex(7));
    }

    #[test]
    fn failed_cas_changes_nothing() {
        let mut tables = Tables::default();
        tables.apply(RaftIndex(1), &set("a", None));
        let (outcome, changed) = tables.apply(RaftIndex(2), &set("a", Some(9)));
        assert_eq!(outcome, CommandOutcome::Cas(false));
        assert!(changed.tables().is_empty());
        assert_eq!(tables.index(Table::Kv), RaftIndex(1));
    }

    #[test]
    fn keys_with_separator_fold_folders() {
        let mut tables = Tables::default();
        for (i, key) in ["web/a", "web/b/c", "web/b/d", "api/x"].iter().enumerate() {
            tables.apply(RaftIndex(i as u64 + 1), &set(key, None));
        }
        assert_eq!(tables.kv().keys("web/", Some("/")), vec!["web/a", "web/b/"]);
        assert_eq!(tables.kv().keys("", None).len(), 4);
    }

    #[test]
    fn recursive_delete_takes_the_prefix_only() {
        let mut tables = Tables::default();
        for (i, key) in ["web/a", "web/b", "webby", "api"].iter().enumerate() {
            tables.apply(RaftIndex(i as u64 + 1), &set(key, None));
        }
        tables.apply(RaftIndex(9), &Command::KvDelete { key: "web/".into(), recurse: true, cas: None });
        assert_eq!(tables.kv().keys("", None), vec!["api", "webby"]);
    }

    #[test]
    fn a_batch_applies_in_order_with_one_outcome_each() {
        let mut tables = Tables::default();
        let batch = Command::Batch(vec![
            set("a", Some(0)),
            set("a", Some(0)),
            Command::KvDelete { key: "missing".into(), recurse: false, cas: Some(3) },
            Command::Batch(vec![]),
        ]);
        let (outcome, changed) = tables.apply(RaftIndex(4), &batch);
        let CommandOutcome::Batch(outcomes) = outcome else { panic!("a batch has a batch outcome") };
        assert_eq!(outcomes[..3], [CommandOutcome::Cas(true), CommandOutcome::Cas(false), CommandOutcome::Cas(false)]);
        assert!(matches!(outcomes[3], CommandOutcome::Rejected(_)), "no nested batches");
        assert_eq!(changed.tables(), &[Table::Kv]);
        assert_eq!(tables.kv().get("a").unwrap().indexes.modify, RaftIndex(4));
    }
}
