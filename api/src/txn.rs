//! Transactions (`PUT /v1/txn`): KV operations applied together, in one
//! Raft entry, all or none. The verbs and their failure messages are
//! Consul's (`agent/consul/state/txn.go`), so clients that read `Errors`
//! see what they would from Consul.
//!
//! `lock`, `unlock` and `check-session` work with sessions
//! (`crate::session`) as `?acquire=` and `?release=` do.

use serde::{Deserialize, Serialize};

use crate::kv::{KvEntry, MAX_VALUE_BYTES};

/// The most operations one transaction may hold (Consul's `maxTxnOps`).
pub const MAX_TXN_OPS: usize = 128;
/// The largest request body `PUT /v1/txn` reads (Consul's `txn_max_req_len`).
pub const MAX_TXN_BODY_BYTES: usize = 512 * 1024;

/// A KV operation's verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvVerb {
    Set,
    Cas,
    Lock,
    Unlock,
    Get,
    GetOrEmpty,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteTree,
    DeleteCas,
}

impl KvVerb {
    pub const ALL: [KvVerb; 13] = [
        KvVerb::Set,
        KvVerb::Cas,
        KvVerb::Lock,
        KvVerb::Unlock,
        KvVerb::Get,
        KvVerb::GetOrEmpty,
        KvVerb::GetTree,
        KvVerb::CheckIndex,
        KvVerb::CheckSession,
        KvVerb::CheckNotExists,
        KvVerb::Delete,
        KvVerb::DeleteTree,
        KvVerb::DeleteCas,
    ];

    /// Consul's name for it (`get-tree`).
    pub fn as_str(self) -> &'static str {
        match self {
            KvVerb::Set => "set",
            KvVerb::Cas => "cas",
            KvVerb::Lock => "lock",
            KvVerb::Unlock => "unlock",
            KvVerb::Get => "get",
            KvVerb::GetOrEmpty => "get-or-empty",
            KvVerb::GetTree => "get-tree",
            KvVerb::CheckIndex => "check-index",
            KvVerb::CheckSession => "check-session",
            KvVerb::CheckNotExists => "check-not-exists",
            KvVerb::Delete => "delete",
            KvVerb::DeleteTree => "delete-tree",
            KvVerb::DeleteCas => "delete-cas",
        }
    }

    pub fn parse(name: &str) -> Option<KvVerb> {
        KvVerb::ALL.into_iter().find(|verb| verb.as_str() == name)
    }

    /// Whether it may change the table (a transaction without one is a read).
    pub fn writes(self) -> bool {
        matches!(
            self,
            KvVerb::Set
                | KvVerb::Cas
                | KvVerb::Lock
                | KvVerb::Unlock
                | KvVerb::Delete
                | KvVerb::DeleteTree
                | KvVerb::DeleteCas
        )
    }
}

/// One KV operation; which fields count depends on the verb.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvOp {
    pub verb: KvVerb,
    pub key: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub flags: u64,
    /// The ModifyIndex `cas`, `check-index` and `delete-cas` compare with.
    pub index: u64,
    pub session: String,
}

/// Why one operation failed (the transaction then changed nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    /// Its position in the request.
    pub op_index: u32,
    pub what: String,
}

/// What a transaction did: `errors` empty, it was applied and `results`
/// holds what its operations return (an entry for each written or checked
/// key, without its value; the value too for `get`, `get-or-empty` and
/// each key `get-tree` found; nothing for a delete). Otherwise nothing was
/// applied and `errors` says why, per operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    pub results: Vec<KvEntry>,
    pub errors: Vec<TxnError>,
}

/// Why a transaction was refused before it was run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnRefusal {
    #[error("Transaction contains too many operations ({0} > {MAX_TXN_OPS})")]
    TooManyOperations(usize),
    #[error("Value for key {key:?} is too large ({size} > {MAX_VALUE_BYTES} bytes)")]
    ValueTooLarge { key: String, size: usize },
}

/// What a transaction must satisfy before it is run (the HTTP API asks it,
/// and the servers again before proposing). An empty key is not refused
/// here: it fails its operation.
pub fn validate(ops: &[KvOp]) -> Result<(), TxnRefusal> {
    if ops.len() > MAX_TXN_OPS {
        return Err(TxnRefusal::TooManyOperations(ops.len()));
    }
    match ops.iter().find(|op| op.value.len() > MAX_VALUE_BYTES) {
        Some(op) => Err(TxnRefusal::ValueTooLarge { key: op.key.clone(), size: op.value.len() }),
        None => Ok(()),
    }
}

/// Whether any operation may write (else the transaction is a read, served
/// without Raft).
pub fn writes(ops: &[KvOp]) -> bool {
    ops.iter().any(|op| op.verb.writes())
}
