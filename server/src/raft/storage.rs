//! Durable Raft storage in sled: the log (entries, vote, committed and purged
//! markers) and the latest state-machine snapshot.
//!
//! Durability rule: openraft is told an append or a vote is done only after
//! sled has flushed it to disk (`flush_async`), so an acknowledged write
//! survives a crash.
//!
//! `append` writes the entries to sled and hands openraft's completion
//! callback to a flusher task, which flushes on a blocking thread (sled's own
//! `flush_async` costs far more CPU) and completes every callback waiting.
//! openraft 0.9 waits for each append to complete before the next, so in
//! practice each append gets its own flush; what amortizes fsyncs over many
//! writes is the server's write batching (`crate::batch`).
//!
//! **Architecture Invariant:** this is the only module that knows sled.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, StorageError, StorageIOError, Vote};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;

use super::{codec, TypeConfig};

type NodeId = u64;

const VOTE: &[u8] = b"vote";
const SLED_CACHE_BYTES: u64 = 32 * 1024 * 1024;
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Why the data directory's Raft storage could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open Raft storage at {path}: {source} (is another weft process using this --data-dir?)")]
pub struct StorageOpenError {
    path: String,
    source: sled::Error,
}

/// Opens (or creates) the Raft storage under `dir`.
pub fn open_storage(dir: &Path) -> Result<(LogStore, SnapshotStore), StorageOpenError> {
    let err = |source| StorageOpenError { path: dir.display().to_string(), source };
    let db = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        // sled's default page cache is 1 GiB; the log is read back rarely
        // (lagging followers, restarts), so a small cache is enough.
        .cache_capacity(SLED_CACHE_BYTES)
        .open()
        .map_err(err)?;
    let log = db.open_tree("log").map_err(err)?;
    let meta = db.open_tree("meta").map_err(err)?;
    let snapshots = db.open_tree("snapshot").map_err(err)?;
    let (flusher, pending) = mpsc::unbounded_channel();
    tokio::spawn(flush_in_groups(db.clone(), pending));
    Ok((
        LogStore { db: db.clone(), log, meta, flusher },
        SnapshotStore { db, snapshots, replacing: Default::default() },
    ))
}

/// Completes append callbacks once their entries are on disk, one flush for
/// every callback that is waiting when the flush starts.
async fn flush_in_groups(db: sled::Db, mut pending: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    while let Some(first) = pending.recv().await {
        let mut group = vec![first];
        while let Ok(next) = pending.try_recv() {
            group.push(next);
        }
        let flushing = db.clone();
        let flushed = match tokio::task::spawn_blocking(move || flushing.flush()).await {
            Ok(result) => result,
            Err(join) => Err(sled::Error::Io(std::io::Error::other(join.to_string()))),
        };
        if let Err(error) = &flushed {
            tracing::error!(%error, "flushing the Raft log failed");
        }
        for callback in group {
            let result = flushed.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
            callback.log_io_completed(result);
        }
    }
}

/// The Raft log. Cloning shares the same underlying trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_io(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_io(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<NodeId>> {
        match self.meta.get(key).map_err(read_io)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(read_io)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError<NodeId>> {
        self.meta.insert(key, codec::encode(value)).map_err(write_io)?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match self.log.last().map_err(read_io)? {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = codec::decode(&bytes).map_err(read_io)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    /// Bytes on disk of the whole database (log and snapshot), for figures.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range((Bound::Included(index_key(start)), end)) {
            let (_, bytes) = item.map_err(read_io)?;
            entries.push(codec::decode(&bytes).map_err(read_io)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(VOTE, vote)?;
        self.db.flush_async().await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Not flushed on its own: losing it only means re-applying from the
        // snapshot up to what the leader says is committed.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.log_id.index), codec::encode(&entry));
        }
        if let Err(error) = self.log.apply_batch(batch) {
            callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
            return Err(write_io(error));
        }
        if let Err(unsent) = self.flusher.send(callback) {
            let error = std::io::Error::other("the Raft log flusher has stopped");
            unsent.0.log_io_completed(Err(std::io::Error::other(error.to_string())));
            return Err(write_io(error));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let doomed: Vec<_> =
            self.log.range(index_key(log_id.index)..).keys().collect::<Result<_, _>>().map_err(write_io)?;
        let mut batch = sled::Batch::default();
        for key in doomed {
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(write_io)?;
        self.db.flush_async().await.map_err(write_io)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: a crash half-way leaves extra entries,
        // never a gap that the state claims not to have.
        self.put_meta(LAST_PURGED, &log_id)?;
        let doomed: Vec<_> =
            self.log.range(..=index_key(log_id.index)).keys().collect::<Result<_, _>>().map_err(write_io)?;
        let mut batch = sled::Batch::default();
        for key in doomed {
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(write_io)?;
        Ok(())
    }
}

/// The latest snapshot: its metadata and the encoded state it holds.
#[derive(Clone)]
pub struct SnapshotStore {
    db: sled::Db,
    snapshots: sled::Tree,
    /// Serializes the check-then-replace in `save`.
    replacing: std::sync::Arc<std::sync::Mutex<()>>,
}

/// A stored snapshot as raw parts; the state machine gives them meaning.
pub struct StoredSnapshot {
    pub meta: openraft::SnapshotMeta<NodeId, super::ServerNode>,
    pub data: Vec<u8>,
}

const SNAPSHOT_META: &[u8] = b"current.meta";
const SNAPSHOT_DATA: &[u8] = b"current.data";

impl SnapshotStore {
    /// Replaces the stored snapshot, atomically, and flushes it.
    ///
    /// A snapshot older than the stored one is dropped: openraft may finish
    /// building a snapshot after it installed a newer one from the leader,
    /// and the log behind the newer one may already be purged.
    pub async fn save(&self, snapshot: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let signature = Some(snapshot.meta.signature());
        {
            let _replacing = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
            let stored: Option<openraft::SnapshotMeta<NodeId, super::ServerNode>> =
                match self.snapshots.get(SNAPSHOT_META).map_err(|e| StorageIOError::read_snapshot(None, &e))? {
                    Some(bytes) => codec::decode(&bytes).ok(),
                    None => None,
                };
            if stored.is_some_and(|stored| stored.last_log_id > snapshot.meta.last_log_id) {
                tracing::debug!(snapshot = %snapshot.meta.snapshot_id, "not storing a snapshot older than the stored one");
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            batch.insert(SNAPSHOT_META, codec::encode(&snapshot.meta));
            batch.insert(SNAPSHOT_DATA, snapshot.data.as_slice());
            self.snapshots.apply_batch(batch).map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        }
        self.db.flush_async().await.map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        Ok(())
    }

    pub fn load(&self) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
        let read = |e: String| -> StorageError<NodeId> {
            StorageIOError::read_snapshot(None, openraft::AnyError::error(e)).into()
        };
        let meta = self.snapshots.get(SNAPSHOT_META).map_err(|e| read(e.to_string()))?;
        let data = self.snapshots.get(SNAPSHOT_DATA).map_err(|e| read(e.to_string()))?;
        match (meta, data) {
            (Some(meta), Some(data)) => Ok(Some(StoredSnapshot {
                meta: codec::decode(&meta).map_err(|e| read(e.to_string()))?,
                data: data.to_vec(),
            })),
            _ => Ok(None),
        }
    }
}
