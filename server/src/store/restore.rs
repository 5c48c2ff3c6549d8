//! A snapshot restore sent in parts (`RestoreBegin`, `RestoreChunk`s,
//! `RestoreFinish`): one log entry per megabyte rather than one entry the
//! size of the snapshot, which could never replicate. The parts received
//! are state like any other, kept in Raft snapshots, so a server that
//! catches up by snapshot in the middle of a restore applies the rest as
//! every other server does. Only servers hold it (it carries the CA's
//! keys); client agents start over from a full copy once it is applied.

use serde::{Deserialize, Serialize};
use weft_api::command::{CommandOutcome, MAX_RESTORE_BYTES};

/// A restore under way: what was announced and what has arrived.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestore {
    pub id: String,
    pub total: u64,
    /// SHA-256 of the whole snapshot, hex.
    pub sha256: String,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

fn rejected(reason: impl Into<String>) -> CommandOutcome {
    CommandOutcome::Rejected(reason.into())
}

/// Starts a restore, abandoning any under way.
pub(super) fn begin(pending: &mut Option<PendingRestore>, id: &str, total: u64, sha256: &str) -> CommandOutcome {
    if total > MAX_RESTORE_BYTES {
        return rejected(format!("a snapshot of {total} bytes is over the {MAX_RESTORE_BYTES}-byte limit"));
    }
    *pending = Some(PendingRestore { id: id.to_owned(), total, sha256: sha256.to_owned(), bytes: Vec::new() });
    CommandOutcome::Done
}

/// Adds the next part.
pub(super) fn chunk(pending: &mut Option<PendingRestore>, id: &str, offset: u64, bytes: &[u8]) -> CommandOutcome {
    let Some(restore) = pending.as_mut().filter(|r| r.id == id) else {
        return rejected(format!("no restore {id} is under way (another began since?)"));
    };
    if offset != restore.bytes.len() as u64 {
        return rejected(format!("restore {id}: part at {offset}, expected one at {}", restore.bytes.len()));
    }
    if offset + bytes.len() as u64 > restore.total {
        return rejected(format!("restore {id}: parts add up to more than the {} bytes announced", restore.total));
    }
    restore.bytes.extend_from_slice(bytes);
    CommandOutcome::Done
}

/// Ends a restore: the whole snapshot, if it is all there and is what was
/// announced. The restore is over either way.
pub(super) fn finish(pending: &mut Option<PendingRestore>, id: &str) -> Result<Vec<u8>, CommandOutcome> {
    let Some(restore) = pending.take_if(|r| r.id == id) else {
        return Err(rejected(format!("no restore {id} is under way (another began since?)")));
    };
    if restore.bytes.len() as u64 != restore.total {
        return Err(rejected(format!("restore {id}: {} of {} bytes arrived", restore.bytes.len(), restore.total)));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &restore.bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    if hex != restore.sha256 {
        return Err(rejected(format!("restore {id}: the bytes do not match the SHA-256 announced")));
    }
    Ok(restore.bytes)
}
