//! Durable Raft storage in sled: the log (entries, vote, committed and purged
//! markers) and the latest state-machine snapshot.
//!
//! Durability rule: openraft is told an append or a vote is done only after
//! sled has flushed it to disk (`flush_async`), so an acknowledged write
//! survives a crash.
//!
//! Integrity rule: every value is sealed with a checksum and the store's
//! extent is recorded in a witness file ([`super::integrity`]); opening the
//! store reads every record back and refuses a store that is damaged or
//! shorter than its witness, so a server never serves a history it lost.
//!
//! `append` writes the entries to sled and hands openraft's completion
//! callback to a flusher task, which flushes on a blocking thread (sled's own
//! `flush_async` costs far more CPU), completes every callback waiting, and
//! moves the witness up. openraft 0.9 waits for each append to complete
//! before the next, so in practice each append gets its own flush; what
//! amortizes fsyncs over many writes is the server's write batching
//! (`crate::batch`).
//!
//! **Architecture Invariant:** this is the only module that knows sled.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, StorageError, StorageIOError, Vote};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;

use super::integrity::{seal, unseal, Witness};
use super::{codec, TypeConfig};
use crate::telemetry::{Stage, Timers};

type NodeId = u64;

const VOTE: &[u8] = b"vote";
const SLED_CACHE_BYTES: u64 = 32 * 1024 * 1024;
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// The storage format, in the meta tree: 2 is sealed values. A store
/// without it was written before checksums, and is sealed when opened.
const FORMAT: &[u8] = b"format";
const FORMAT_SEALED: u32 = 2;

/// Why the data directory's Raft storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    #[error("cannot open Raft storage at {path}: {source} (is another weft process using this --data-dir?)")]
    Open { path: String, source: sled::Error },
    #[error(
        "the Raft storage at {path} is damaged: {what}. This server will not serve from it. To recover: on a \
         healthy server, `weft operator raft remove-peer --id <this server's name>`; here, move {path} and {path}.witness \
         aside (keep the node-id file) and start again: the server joins as a new member and catches up from the leader"
    )]
    Damaged { path: String, what: String },
}

/// Opens (or creates) the Raft storage under `dir`, and checks it whole.
pub fn open_storage(dir: &Path, timers: Timers) -> Result<(LogStore, SnapshotStore), StorageOpenError> {
    let path = dir.display().to_string();
    let damaged = |what: String| StorageOpenError::Damaged { path: path.clone(), what };
    // An I/O error (a lock held by another process, permissions) is not
    // damage; anything else sled cannot open (corruption, a settings file
    // it cannot read) is.
    let err = |source: sled::Error| match source {
        sled::Error::Io(_) => StorageOpenError::Open { path: path.clone(), source },
        source => damaged(format!("sled cannot read it: {source}")),
    };
    let witness_path = Witness::path(dir);
    let witness = Witness::read(&witness_path).map_err(&damaged)?;
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
    seal_old_format(&db, [&log, &meta, &snapshots]).map_err(err)?;
    let found = check(&log, &meta, &snapshots).map_err(&damaged)?;
    if let Some(witness) = witness {
        if found.last_index < witness.last_index {
            let last = found.last_index_text();
            return Err(damaged(format!(
                "its log ends at {last}, but this server had written up to index {} ({})",
                witness.last_index,
                witness_path.display()
            )));
        }
        if found.vote_term < witness.vote_term {
            return Err(damaged(format!(
                "its vote is for term {}, but this server had voted in term {} ({})",
                found.vote_term,
                witness.vote_term,
                witness_path.display()
            )));
        }
    }
    let witness = Arc::new(WitnessKeeper {
        path: witness_path,
        on_disk: tokio::sync::Mutex::new(OnDisk {
            witness: Witness { last_index: found.last_index, vote_term: found.vote_term },
            owed: None,
        }),
        appended: Mutex::new(found.last_index),
    });
    let (flusher, pending) = mpsc::unbounded_channel();
    tokio::spawn(flush_in_groups(db.clone(), witness.clone(), pending, timers));
    Ok((
        LogStore { db: db.clone(), log, meta, flusher, witness },
        SnapshotStore { db, snapshots, replacing: Default::default() },
    ))
}

/// Seals every value of a store written before checksums (no format
/// marker), once, and marks it sealed.
fn seal_old_format(db: &sled::Db, trees: [&sled::Tree; 3]) -> Result<(), sled::Error> {
    let [_, meta, _] = trees;
    if meta.get(FORMAT)?.is_some() {
        return Ok(());
    }
    let mut sealed = 0usize;
    for tree in trees {
        let mut batch = sled::Batch::default();
        for item in tree.iter() {
            let (key, value) = item?;
            batch.insert(key, seal(&value));
            sealed += 1;
        }
        tree.apply_batch(batch)?;
    }
    meta.insert(FORMAT, seal(&codec::encode(&FORMAT_SEALED)))?;
    db.flush()?;
    if sealed > 0 {
        tracing::info!(records = sealed, "sealed a Raft store written before checksums");
    }
    Ok(())
}

/// What a whole store holds, as [`check`] found it.
struct Found {
    /// The last log index, of an entry or of the purge point; 0 if none.
    last_index: u64,
    any_log: bool,
    vote_term: u64,
}

impl Found {
    fn last_index_text(&self) -> String {
        match self.any_log {
            true => format!("index {}", self.last_index),
            false => "nothing (it is empty)".to_owned(),
        }
    }
}

/// Reads every record back: each must open (checksum) and decode, log keys
/// must match their entries' indexes, with no gap after the purge point.
fn check(log: &sled::Tree, meta: &sled::Tree, snapshots: &sled::Tree) -> Result<Found, String> {
    fn value<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8], what: &str) -> Result<Option<T>, String> {
        let Some(bytes) = tree.get(key).map_err(|e| format!("reading the {what}: {e}"))? else { return Ok(None) };
        let payload = unseal(&bytes).map_err(|e| format!("the {what}: {e}"))?;
        codec::decode(payload).map(Some).map_err(|e| format!("the {what}: {e}"))
    }
    let vote: Option<Vote<NodeId>> = value(meta, VOTE, "vote")?;
    let last_purged: Option<LogId<NodeId>> = value(meta, LAST_PURGED, "purge marker")?;
    let _: Option<Option<LogId<NodeId>>> = value(meta, COMMITTED, "commit marker")?;
    let _: Option<openraft::SnapshotMeta<NodeId, super::ServerNode>> =
        value(snapshots, SNAPSHOT_META, "snapshot's metadata")?;
    if let Some(data) = snapshots.get(SNAPSHOT_DATA).map_err(|e| format!("reading the snapshot: {e}"))? {
        unseal(&data).map_err(|e| format!("the snapshot ({} bytes): {e}", data.len()))?;
    }
    let mut previous: Option<u64> = None;
    for item in log.iter() {
        let (key, bytes) = item.map_err(|e| format!("reading the log after index {previous:?}: {e}"))?;
        let key = <[u8; 8]>::try_from(key.as_ref()).map(u64::from_be_bytes).map_err(|_| "a log key is not an index")?;
        let entry: Entry<TypeConfig> = unseal(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|payload| codec::decode(payload).map_err(|e| e.to_string()))
            .map_err(|e| format!("log entry {key}: {e}"))?;
        if entry.log_id.index != key {
            return Err(format!("log entry {key} holds entry {}", entry.log_id.index));
        }
        let expected = match previous {
            Some(previous) => Some(previous + 1),
            // The first entry follows the purge point (or is at or before it,
            // if a purge stopped half-way).
            None => last_purged.map(|p| p.index + 1).filter(|next| key > *next),
        };
        if let Some(expected) = expected.filter(|expected| key != *expected) {
            return Err(format!("log entry {expected} is missing (the next is {key})"));
        }
        previous = Some(key);
    }
    let last_index = previous.max(last_purged.map(|p| p.index)).unwrap_or(0);
    Ok(Found {
        last_index,
        any_log: previous.is_some() || last_purged.is_some(),
        vote_term: vote.map(|v| v.leader_id.term).unwrap_or(0),
    })
}

/// The witness, kept in step with the store: `on_disk` is what the file
/// says and what it owes (its lock also orders flushes against
/// truncation), `appended` the last index appended, flushed or not.
struct WitnessKeeper {
    path: PathBuf,
    on_disk: tokio::sync::Mutex<OnDisk>,
    appended: Mutex<u64>,
}

/// How often, at most, a flush rewrites the witness. It may lag the store
/// (it is never flushed on its own way up), so this lag costs nothing a
/// crash did not already allow.
const WITNESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// What the witness file says, and the log index a flush has covered since
/// that it has not yet been raised to (`owed`).
struct OnDisk {
    witness: Witness,
    owed: Option<u64>,
}

impl WitnessKeeper {
    fn appended(&self) -> u64 {
        *self.appended.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_appended(&self, index: u64) {
        *self.appended.lock().unwrap_or_else(|p| p.into_inner()) = index;
    }

    /// Raises the witness's log index to what it owes, if anything.
    fn pay(&self, on_disk: &mut OnDisk) {
        if let Some(owed) = on_disk.owed.take() {
            let vote_term = on_disk.witness.vote_term;
            self.raise(on_disk, Witness { last_index: owed, vote_term });
        }
    }

    /// Moves the witness up to `next` (never down), without a flush.
    fn raise(&self, on_disk: &mut OnDisk, next: Witness) {
        let written = on_disk.witness;
        let raised = Witness {
            last_index: written.last_index.max(next.last_index),
            vote_term: written.vote_term.max(next.vote_term),
        };
        if raised == written {
            return;
        }
        match raised.write(&self.path, false) {
            Ok(()) => on_disk.witness = raised,
            Err(error) => tracing::warn!(path = %self.path.display(), %error, "cannot update the Raft witness"),
        }
    }
}

/// Completes append callbacks once their entries are on disk, one flush for
/// every callback that is waiting when the flush starts, then raises the
/// witness to what that flush covered: at once if it was last written
/// [`WITNESS_INTERVAL`] ago or more, else when that interval has passed.
/// (Rewriting it after every flush made a file per write, and the next
/// flush waited for it.)
async fn flush_in_groups(
    db: sled::Db,
    witness: Arc<WitnessKeeper>,
    mut pending: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>,
    timers: Timers,
) {
    let mut written_at: Option<tokio::time::Instant> = None;
    let mut owing = false;
    loop {
        let due = written_at.map(|at| at + WITNESS_INTERVAL);
        let first = match due {
            Some(due) if owing => tokio::select! {
                next = pending.recv() => next,
                () = tokio::time::sleep_until(due) => {
                    witness.pay(&mut *witness.on_disk.lock().await);
                    written_at = Some(tokio::time::Instant::now());
                    owing = false;
                    continue;
                }
            },
            _ => pending.recv().await,
        };
        let Some(first) = first else { break };
        let mut group = vec![first];
        while let Ok(next) = pending.try_recv() {
            group.push(next);
        }
        let mut on_disk = witness.on_disk.lock().await;
        // Read before the flush: everything appended by now is covered by it.
        let covered = witness.appended();
        let flushing = db.clone();
        let started = Instant::now();
        let flushed = match tokio::task::spawn_blocking(move || flushing.flush()).await {
            Ok(result) => result,
            Err(join) => Err(sled::Error::Io(std::io::Error::other(join.to_string()))),
        };
        timers.since(Stage::LogFlush, started);
        if let Err(error) = &flushed {
            tracing::error!(%error, "flushing the Raft log failed");
        }
        for callback in group {
            let result = flushed.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
            callback.log_io_completed(result);
        }
        if flushed.is_ok() {
            on_disk.owed = Some(on_disk.owed.unwrap_or(0).max(covered));
            if written_at.is_none_or(|at| at.elapsed() >= WITNESS_INTERVAL) {
                witness.pay(&mut on_disk);
                written_at = Some(tokio::time::Instant::now());
            }
            owing = on_disk.owed.is_some();
        }
    }
    // Every handle on the log is gone: record what was flushed.
    witness.pay(&mut *witness.on_disk.lock().await);
}

/// The Raft log. Cloning shares the same underlying trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
    witness: Arc<WitnessKeeper>,
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

/// A stored log entry: checked, then decoded.
fn open_entry(key: &[u8], bytes: &[u8]) -> Result<Entry<TypeConfig>, StorageError<NodeId>> {
    let payload = unseal(bytes).map_err(|damage| {
        let index = <[u8; 8]>::try_from(key).map(u64::from_be_bytes).unwrap_or_default();
        tracing::error!(index, %damage, "a Raft log entry is damaged");
        read_io(damage)
    })?;
    codec::decode(payload).map_err(read_io)
}

impl LogStore {
    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<NodeId>> {
        match self.meta.get(key).map_err(read_io)? {
            Some(bytes) => Ok(Some(codec::decode(unseal(&bytes).map_err(read_io)?).map_err(read_io)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError<NodeId>> {
        self.meta.insert(key, seal(&codec::encode(value))).map_err(write_io)?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match self.log.last().map_err(read_io)? {
            Some((key, bytes)) => Ok(Some(open_entry(&key, &bytes)?.log_id)),
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
            let (key, bytes) = item.map_err(read_io)?;
            entries.push(open_entry(&key, &bytes)?);
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
        let mut on_disk = self.witness.on_disk.lock().await;
        let last_index = on_disk.witness.last_index;
        self.witness.raise(&mut on_disk, Witness { last_index, vote_term: vote.leader_id.term });
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
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id.index);
            batch.insert(&index_key(entry.log_id.index), seal(&codec::encode(&entry)));
        }
        if let Err(error) = self.log.apply_batch(batch) {
            callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
            return Err(write_io(error));
        }
        if let Some(last) = last {
            self.witness.set_appended(last);
        }
        if let Err(unsent) = self.flusher.send(callback) {
            let error = std::io::Error::other("the Raft log flusher has stopped");
            unsent.0.log_io_completed(Err(std::io::Error::other(error.to_string())));
            return Err(write_io(error));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // The witness goes down first, durably: a crash half-way leaves a
        // witness below the log, never above it.
        let mut on_disk = self.witness.on_disk.lock().await;
        let kept = log_id.index.saturating_sub(1);
        // A raise owed for entries this removes is owed no longer.
        on_disk.owed = on_disk.owed.map(|owed| owed.min(kept));
        if on_disk.witness.last_index > kept {
            let lowered = Witness { last_index: kept, vote_term: on_disk.witness.vote_term };
            lowered.write(&self.witness.path, true).map_err(write_io)?;
            on_disk.witness = lowered;
        }
        self.witness.set_appended(kept);
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
                    Some(bytes) => unseal(&bytes).ok().and_then(|payload| codec::decode(payload).ok()),
                    None => None,
                };
            if stored.is_some_and(|stored| stored.last_log_id > snapshot.meta.last_log_id) {
                tracing::debug!(snapshot = %snapshot.meta.snapshot_id, "not storing a snapshot older than the stored one");
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            batch.insert(SNAPSHOT_META, seal(&codec::encode(&snapshot.meta)));
            batch.insert(SNAPSHOT_DATA, seal(&snapshot.data));
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
                meta: codec::decode(unseal(&meta).map_err(|e| read(format!("the snapshot's metadata: {e}")))?)
                    .map_err(|e| read(e.to_string()))?,
                data: unseal(&data).map_err(|e| read(format!("the snapshot: {e}")))?.to_vec(),
            })),
            _ => Ok(None),
        }
    }
}
