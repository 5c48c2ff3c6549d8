//! The Raft state machine: applies committed entries to the [`StateStore`]
//! and makes, stores and installs snapshots of it.
//!
//! The state itself lives in memory; what is durable is the Raft log and the
//! latest snapshot. On start-up the snapshot is loaded and openraft re-applies
//! the committed log after it, so the state comes back exactly.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use weft_api::command::CommandOutcome;
use weft_api::ids::RaftIndex;

use super::storage::{SnapshotStore, StoredSnapshot};
use super::{ServerNode, TypeConfig};
use crate::store::{StateStore, StoreData};
use crate::telemetry::{Stage, Timers};

type NodeId = u64;

/// Applies the log to the state store; the only writer of that store.
pub struct StateMachine {
    store: Arc<StateStore>,
    snapshots: SnapshotStore,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, ServerNode>,
    timers: Timers,
}

impl StateMachine {
    /// Loads the latest snapshot (if any) into `store`.
    pub fn open(
        store: Arc<StateStore>,
        snapshots: SnapshotStore,
        timers: Timers,
    ) -> Result<Self, StorageError<NodeId>> {
        let mut machine =
            StateMachine { store, snapshots, last_applied: None, last_membership: StoredMembership::default(), timers };
        if let Some(stored) = machine.snapshots.load()? {
            machine.load(&stored)?;
        }
        Ok(machine)
    }

    fn load(&mut self, stored: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let data = StoreData::decode(&stored.data)
            .map_err(|e| StorageIOError::read_snapshot(Some(stored.meta.signature()), &e))?;
        self.store.restore(data);
        self.last_applied = stored.meta.last_log_id;
        self.last_membership = stored.meta.last_membership.clone();
        self.store.mark_applied(RaftIndex(self.last_applied.map(|l| l.index).unwrap_or(0)));
        Ok(())
    }
}

/// Builds a snapshot from a copy of the state taken between two applies.
pub struct SnapshotBuilder {
    data: StoreData,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, ServerNode>,
    snapshots: SnapshotStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let snapshot_id = match self.last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.leader_id.node_id, log_id.index),
            None => "empty".to_owned(),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.last_membership.clone(), snapshot_id };
        let data = self.data.encode();
        self.snapshots.save(&StoredSnapshot { meta: meta.clone(), data: data.clone() }).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, ServerNode>), StorageError<NodeId>> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        for entry in entries {
            let started = Instant::now();
            let index = RaftIndex(entry.log_id.index);
            let outcome = match &entry.payload {
                EntryPayload::Blank => CommandOutcome::Done,
                EntryPayload::Normal(command) => self.store.apply(index, command),
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    CommandOutcome::Done
                }
            };
            self.last_applied = Some(entry.log_id);
            self.store.mark_applied(index);
            self.timers.since(Stage::FsmApply, started);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            data: self.store.export(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ServerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot.into_inner() };
        self.load(&stored)?;
        self.snapshots.save(&stored).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .snapshots
            .load()?
            .map(|stored| Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
