//! The KV table: keys in lexical order, so prefix listings are range scans.

use std::collections::BTreeMap;

use weft_api::command::CommandOutcome;
use weft_api::ids::{Indexes, RaftIndex};
use weft_api::kv::KvEntry;

use super::{Changed, Table};

#[derive(Clone, Debug, Default)]
pub struct KvTable {
    entries: BTreeMap<String, KvEntry>,
}

impl KvTable {
    pub(super) fn from_entries(entries: Vec<KvEntry>) -> Self {
        Self { entries: entries.into_iter().map(|e| (e.key.clone(), e)).collect() }
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
        let existing = self.entries.get(key);
        if let Some(cas) = cas {
            let current = existing.map(|e| e.indexes.modify.get()).unwrap_or(0);
            if current != cas {
                return CommandOutcome::Cas(false);
            }
        }
        let create = existing.map(|e| e.indexes.create).unwrap_or(index);
        self.entries.insert(
            key.to_owned(),
            KvEntry {
                key: key.to_owned(),
                value: value.to_vec(),
                flags,
                lock_index: existing.map(|e| e.lock_index).unwrap_or(0),
                indexes: Indexes { create, modify: index },
            },
        );
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
                self.entries.remove(key);
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
        if self.entries.remove(key).is_some() {
            changed.mark(Table::Kv);
        }
        if cas.is_some() {
            CommandOutcome::Cas(true)
        } else {
            CommandOutcome::Done
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
