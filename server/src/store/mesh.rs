//! Intentions, config entries and the CA's public state. The tables and their
//! commands are settled here; their rules live beside them (intentions':
//! `super::intentions`; config entries': `super::config_entries`).

use std::collections::BTreeMap;

use weft_api::command::CommandOutcome;
use weft_api::ids::{Indexes, RaftIndex, ServiceName};
use weft_api::mesh::{CaState, ConfigEntry, Intention};

use super::config_entries::check_against;
use super::intentions::check_intention_alone;
use super::{Changed, Table};

#[derive(Clone, Debug, Default)]
pub struct MeshTables {
    intentions: BTreeMap<String, Intention>,
    /// (source, destination) -> ID: a pair has at most one intention.
    intention_pairs: BTreeMap<(ServiceName, ServiceName), String>,
    config_entries: BTreeMap<(String, String), ConfigEntry>,
    ca: Option<CaState>,
}

/// The entry a `ConfigEntryCas` writes.
pub(super) fn entry_of(kind: &str, name: &str, body: &str) -> ConfigEntry {
    ConfigEntry { kind: kind.to_owned(), name: name.to_owned(), body: body.to_owned(), indexes: Indexes::default() }
}

/// Keeps `create` from the stored record, sets `modify` to `index`.
fn indexes_for(existing: Option<Indexes>, index: RaftIndex) -> Indexes {
    Indexes { create: existing.map(|i| i.create).unwrap_or(index), modify: index }
}

impl MeshTables {
    pub(super) fn from_parts(
        intentions: Vec<Intention>,
        config_entries: Vec<ConfigEntry>,
        ca: Option<CaState>,
    ) -> Self {
        Self {
            intention_pairs: intentions
                .iter()
                .map(|i| ((i.source.clone(), i.destination.clone()), i.id.clone()))
                .collect(),
            intentions: intentions.into_iter().map(|i| (i.id.clone(), i)).collect(),
            config_entries: config_entries.into_iter().map(|e| ((e.kind.clone(), e.name.clone()), e)).collect(),
            ca,
        }
    }

    /// A legacy `IntentionUpsert` in the log, checked here as it always
    /// was, so an old log replays to the same state. A leader now sends
    /// intentions as a [`Command::Checked`](weft_api::command::Command)
    /// ([`Self::put_intention`]).
    pub(super) fn upsert_intention(
        &mut self,
        index: RaftIndex,
        intention: &Intention,
        changed: &mut Changed,
    ) -> CommandOutcome {
        match check_intention_alone(intention).and_then(|()| self.check_intention(intention)) {
            Ok(()) => self.put_intention(index, intention, changed),
            Err(reason) => CommandOutcome::Rejected(reason),
        }
    }

    /// What an intention must satisfy given the tables: its pair has no
    /// other intention, in this table or in a service-intentions entry.
    pub(super) fn check_intention(&self, intention: &Intention) -> Result<(), String> {
        let pair = (intention.source.clone(), intention.destination.clone());
        if let Some(other) = self.intention_pairs.get(&pair).filter(|id| **id != intention.id) {
            return Err(format!(
                "an intention from {} to {} already exists (ID {other})",
                intention.source, intention.destination
            ));
        }
        if self
            .config_entry_rules()
            .iter()
            .any(|r| r.source == intention.source && r.destination == intention.destination)
        {
            return Err(format!(
                "the service-intentions entry for {} already holds the intention from {} (edit it with weft config write)",
                intention.destination, intention.source
            ));
        }
        Ok(())
    }

    /// Stores an intention that was checked.
    pub(super) fn put_intention(
        &mut self,
        index: RaftIndex,
        intention: &Intention,
        changed: &mut Changed,
    ) -> CommandOutcome {
        let pair = (intention.source.clone(), intention.destination.clone());
        let indexes = indexes_for(self.intentions.get(&intention.id).map(|i| i.indexes), index);
        // An update may move an intention to another pair: forget the old one.
        let stored = Intention { indexes, ..intention.clone() };
        if let Some(previous) = self.intentions.insert(intention.id.clone(), stored) {
            self.intention_pairs.remove(&(previous.source, previous.destination));
        }
        self.intention_pairs.insert(pair, intention.id.clone());
        changed.mark(Table::Intentions);
        CommandOutcome::Done
    }

    pub(super) fn delete_intention(&mut self, id: &str, changed: &mut Changed) -> CommandOutcome {
        if let Some(removed) = self.intentions.remove(id) {
            self.intention_pairs.remove(&(removed.source, removed.destination));
            changed.mark(Table::Intentions);
        }
        CommandOutcome::Done
    }

    /// A legacy `ConfigEntryUpsert` in the log: checked against the tables
    /// here, as it always was (see [`Self::upsert_intention`]).
    pub(super) fn upsert_config_entry(
        &mut self,
        index: RaftIndex,
        entry: &ConfigEntry,
        changed: &mut Changed,
    ) -> CommandOutcome {
        // Checked alone before it was proposed (`check_proposal`).
        if let Err(reason) = check_against(self, entry) {
            return CommandOutcome::Rejected(reason);
        }
        self.insert_config_entry(index, entry.clone(), changed);
        CommandOutcome::Done
    }

    /// A legacy `ConfigEntryCas`: a check-and-set on one entry, `body: Some`
    /// writes it, `None` deletes it, only if its ModifyIndex is `cas` (0:
    /// only if there is none; a delete needs the entry to exist). An entry
    /// that breaks a rule against the tables is refused first.
    pub(super) fn cas_config_entry(
        &mut self,
        index: RaftIndex,
        (kind, name): (&str, &str),
        cas: u64,
        body: Option<&str>,
        changed: &mut Changed,
    ) -> CommandOutcome {
        match body {
            Some(body) => {
                let entry = entry_of(kind, name, body);
                if let Err(reason) = check_against(self, &entry) {
                    return CommandOutcome::Rejected(reason);
                }
                self.cas_put_config_entry(index, entry, cas, changed)
            }
            None => {
                if self.config_entry(kind, name).map(|e| e.indexes.modify.get()) != Some(cas) {
                    return CommandOutcome::Cas(false);
                }
                self.delete_config_entry(kind, name, changed);
                CommandOutcome::Cas(true)
            }
        }
    }

    /// Stores an entry that was checked.
    pub(super) fn put_config_entry(
        &mut self,
        index: RaftIndex,
        entry: &ConfigEntry,
        changed: &mut Changed,
    ) -> CommandOutcome {
        self.insert_config_entry(index, entry.clone(), changed);
        CommandOutcome::Done
    }

    /// Writes an entry that was checked, only if its ModifyIndex is `cas`
    /// (0: only if there is none).
    pub(super) fn cas_put_config_entry(
        &mut self,
        index: RaftIndex,
        entry: ConfigEntry,
        cas: u64,
        changed: &mut Changed,
    ) -> CommandOutcome {
        let current = self.config_entry(&entry.kind, &entry.name).map(|e| e.indexes.modify.get());
        if current.unwrap_or(0) != cas {
            return CommandOutcome::Cas(false);
        }
        self.insert_config_entry(index, entry, changed);
        CommandOutcome::Cas(true)
    }

    fn insert_config_entry(&mut self, index: RaftIndex, entry: ConfigEntry, changed: &mut Changed) {
        let key = (entry.kind.clone(), entry.name.clone());
        let indexes = indexes_for(self.config_entries.get(&key).map(|e| e.indexes), index);
        self.config_entries.insert(key, ConfigEntry { indexes, ..entry });
        changed.mark(Table::ConfigEntries);
    }

    /// These tables with `entry` written (for checks that need it in place).
    pub(super) fn with_config_entry(&self, entry: ConfigEntry) -> MeshTables {
        let mut tables = self.clone();
        tables.config_entries.insert((entry.kind.clone(), entry.name.clone()), entry);
        tables
    }

    pub(super) fn delete_config_entry(&mut self, kind: &str, name: &str, changed: &mut Changed) -> CommandOutcome {
        if self.config_entries.remove(&(kind.to_owned(), name.to_owned())).is_some() {
            changed.mark(Table::ConfigEntries);
        }
        CommandOutcome::Done
    }

    pub(super) fn set_ca_state(&mut self, index: RaftIndex, state: &CaState, changed: &mut Changed) -> CommandOutcome {
        let indexes = indexes_for(self.ca.as_ref().map(|c| c.indexes), index);
        self.ca = Some(CaState { indexes, ..state.clone() });
        changed.mark(Table::Ca);
        CommandOutcome::Done
    }

    /// Every intention of the intentions table, by ID (for every rule that
    /// applies to a destination, in evaluation order, see `intention_set`).
    pub fn intentions(&self) -> impl Iterator<Item = &Intention> {
        self.intentions.values()
    }

    pub fn intention(&self, id: &str) -> Option<&Intention> {
        self.intentions.get(id)
    }

    /// The intention for exactly this pair (`*` matches only `*`).
    pub fn intention_exact(&self, source: &ServiceName, destination: &ServiceName) -> Option<&Intention> {
        let id = self.intention_pairs.get(&(source.clone(), destination.clone()))?;
        self.intentions.get(id)
    }

    /// Every config entry, by kind then name.
    pub fn config_entries(&self) -> impl Iterator<Item = &ConfigEntry> {
        self.config_entries.values()
    }

    /// The entries of one kind, by name.
    pub fn config_entries_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a ConfigEntry> + 'a {
        self.config_entries.values().filter(move |e| e.kind == kind)
    }

    pub fn config_entry(&self, kind: &str, name: &str) -> Option<&ConfigEntry> {
        self.config_entries.get(&(kind.to_owned(), name.to_owned()))
    }

    pub fn ca(&self) -> Option<&CaState> {
        self.ca.as_ref()
    }
}
