//! The one `Command` enum every Raft write is, and what applying it returns.
//!
//! Commands are stored in the Raft log in a compact binary encoding that is
//! not self-describing, so their shape is a compatibility promise: existing
//! variants and their fields never change, and new variants are added only
//! at the end. A new field or a change of meaning gets a new variant.

use serde::{Deserialize, Serialize};

use crate::acl::{AclAuthMethod, AclBindingRule, AclPolicy, AclRole, AclToken};
use crate::catalog::{Deregistration, Node, Registration};
use crate::event::UserEvent;
use crate::ids::NodeName;
use crate::join::{AgentCaRecord, AgentCredentialRecord, JoinTokenRecord};
use crate::mesh::{CaState, ConfigEntry, Intention};

/// A write to the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets a key. With `cas`, only if the key's ModifyIndex equals it
    /// (`cas = 0`: only if the key does not exist).
    KvSet {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    },
    /// Deletes a key, or every key under a prefix. With `cas`, only if the
    /// key's ModifyIndex equals it.
    KvDelete {
        key: String,
        recurse: bool,
        cas: Option<u64>,
    },
    Register(Box<Registration>),
    Deregister(Deregistration),
    IntentionUpsert(Intention),
    IntentionDelete {
        id: String,
    },
    ConfigEntryUpsert(ConfigEntry),
    ConfigEntryDelete {
        kind: String,
        name: String,
    },
    CaSetState(CaState),
    /// Replaces the whole state with a snapshot made by `GET /v1/snapshot`.
    Restore {
        #[serde(with = "serde_bytes")]
        snapshot: Vec<u8>,
    },
    /// Several independent writes sent together as one log entry (the
    /// server's write batching); applied in order, each with its own outcome.
    /// May hold neither a batch nor a restore.
    Batch(Vec<Command>),
    /// A check-and-set on one config entry (`?cas=` on `PUT /v1/config` and
    /// `DELETE /v1/config/<kind>/<name>`): applied only if the entry's
    /// ModifyIndex equals `cas` (`cas = 0`: only if there is no such entry).
    /// `body: Some` writes the entry, `None` deletes it. The outcome is
    /// `Cas(bool)`, or `Rejected` for an entry that fails validation.
    /// Added because `ConfigEntryUpsert`/`ConfigEntryDelete` carry no `cas`
    /// and logged variants never change.
    ConfigEntryCas {
        kind: String,
        name: String,
        cas: u64,
        body: Option<String>,
    },
    /// A graceful leave: deregisters the node with everything on it (as
    /// `Deregister` of a whole node does) and records it as left, so
    /// `/v1/agent/members` shows it with status `left` until it registers
    /// again. Added because `Deregister` cannot say why a node went away.
    NodeLeave(Box<Node>),
    /// A join token made (`weft operator join-token create`); only its
    /// secret's hash is written.
    JoinTokenCreate(JoinTokenRecord),
    JoinTokenDelete {
        id: String,
    },
    /// An agent presented the token whose secret hashes to `secret_sha256`:
    /// if it is known, not expired at `now` (seconds since the Unix epoch,
    /// by the clock of the server that took the request; only servers may
    /// write this) and not used up, and the node has not joined before, one
    /// use is taken and `credential` recorded for its node.
    JoinTokenRedeem {
        secret_sha256: String,
        credential: AgentCredentialRecord,
        now: i64,
    },
    /// The servers' agent CA (auto-encrypt), made by the first leader.
    AgentCaSet(AgentCaRecord),
    /// Revokes `node`'s enrollment: every certificate issued under it is
    /// refused from then on, and the node must join again with a new token.
    AgentCredentialDelete {
        node: NodeName,
    },
    /// `PUT /v1/acl/bootstrap`: the first management token, once (refused
    /// after, naming the index it happened at), or again with that index
    /// (`reset_index`, Consul's `acl-bootstrap-reset` file).
    AclBootstrap {
        token: Box<AclToken>,
        reset_index: Option<crate::ids::RaftIndex>,
    },
    /// A token made or updated (its secret's hash never changes).
    AclTokenSet(Box<AclToken>),
    AclTokenDelete {
        accessor_id: String,
    },
    /// A policy made or updated, its rules already parsed.
    AclPolicySet(Box<AclPolicy>),
    AclPolicyDelete {
        id: String,
    },
    AclRoleSet(Box<AclRole>),
    AclRoleDelete {
        id: String,
    },
    /// An auth method made or updated, its config already validated.
    AclAuthMethodSet(Box<AclAuthMethod>),
    /// Deletes an auth method with its binding rules and the tokens its
    /// logins made.
    AclAuthMethodDelete {
        name: String,
    },
    /// A binding rule made or updated, its selector already checked.
    AclBindingRuleSet(Box<AclBindingRule>),
    AclBindingRuleDelete {
        id: String,
    },
    /// The start of a snapshot restore sent in parts (`PUT /v1/snapshot`):
    /// `total` bytes whose SHA-256 (hex) is `sha256` follow, in order, as
    /// [`Command::RestoreChunk`]s, and [`Command::RestoreFinish`] replaces
    /// the state with them. A new `RestoreBegin` abandons one under way.
    RestoreBegin {
        id: String,
        total: u64,
        sha256: String,
    },
    RestoreChunk {
        id: String,
        /// Where the bytes go: the length received so far.
        offset: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    RestoreFinish {
        id: String,
    },
    /// Records (or replaces) a node's enrollment for an agent that proved
    /// it is that node with a JWT (`Cluster.RedeemLogin`).
    AgentCredentialSet(AgentCredentialRecord),
    /// Fires a user event (validated before it is proposed).
    FireEvent(UserEvent),
    /// A write the leader checked against the rules that tie intentions and
    /// config entries together (a router needs an HTTP-like protocol, a
    /// pair has one intention, chains end) as those tables stood at
    /// `mesh_index` (the last index that changed either). Applied as it is
    /// if neither table has changed since, else not at all
    /// ([`CommandOutcome::Outdated`]: the leader checks it again). So
    /// `apply` decides with one comparison, whatever the build: no body is
    /// parsed and no rule evaluated in it. Holds a `ConfigEntryUpsert`, a
    /// `ConfigEntryCas` that writes, or an `IntentionUpsert`; only a leader
    /// makes one (`check_proposal` refuses it from anyone). Added because
    /// those variants were checked in `apply`, and logged variants never change.
    Checked {
        mesh_index: crate::ids::RaftIndex,
        command: Box<Command>,
    },
    /// `PUT /v1/txn` with a write: the KV operations in order, all applied
    /// or none ([`crate::txn`]); the outcome is [`CommandOutcome::Txn`].
    Txn(Vec<crate::txn::KvOp>),
    /// `PUT /v1/session/create` ([`crate::session`], validated before it
    /// is proposed): refused if its node is not registered or a check it
    /// is bound to is missing or critical.
    SessionCreate(crate::session::Session),
    /// Ends a session (`/v1/session/destroy`, or a TTL the leader saw run
    /// out): the keys it holds are released or deleted, per its behavior.
    SessionDestroy {
        id: String,
    },
    /// `PUT /v1/session/renew`: changes no state (`Cas(false)`: no such
    /// session); each server notes when it applied it, and the leader ends
    /// a session with a TTL not renewed within twice that TTL.
    SessionRenew {
        id: String,
    },
    /// `PUT /v1/kv/<key>?acquire=<session>`: sets the key and locks it for
    /// `session`, unless another session holds it (`Cas(false)`). With
    /// `cas`, only at that ModifyIndex. The leader refuses a key still in
    /// its lock delay before proposing.
    KvAcquire {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        flags: u64,
        session: String,
        cas: Option<u64>,
    },
    /// `PUT /v1/kv/<key>?release=<session>`: sets the key and unlocks it,
    /// if `session` holds it (else `Cas(false)`).
    KvRelease {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        flags: u64,
        session: String,
        cas: Option<u64>,
    },
}

/// The largest snapshot a restore may carry.
pub const MAX_RESTORE_BYTES: u64 = 1 << 30;
/// The most one [`Command::RestoreChunk`] carries: well under what one
/// Raft replication RPC moves in a heartbeat interval.
pub const RESTORE_CHUNK_BYTES: usize = 1 << 20;

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::KvSet { .. } => "kv-set",
            Command::KvDelete { .. } => "kv-delete",
            Command::Register(_) => "register",
            Command::Deregister(_) => "deregister",
            Command::IntentionUpsert(_) => "intention-upsert",
            Command::IntentionDelete { .. } => "intention-delete",
            Command::ConfigEntryUpsert(_) => "config-entry-upsert",
            Command::ConfigEntryDelete { .. } => "config-entry-delete",
            Command::CaSetState(_) => "ca-set-state",
            Command::Restore { .. } => "restore",
            Command::Batch(_) => "batch",
            Command::ConfigEntryCas { .. } => "config-entry-cas",
            Command::NodeLeave(_) => "node-leave",
            Command::JoinTokenCreate(_) => "join-token-create",
            Command::JoinTokenDelete { .. } => "join-token-delete",
            Command::JoinTokenRedeem { .. } => "join-token-redeem",
            Command::AgentCaSet(_) => "agent-ca-set",
            Command::AgentCredentialDelete { .. } => "agent-credential-delete",
            Command::AclBootstrap { .. } => "acl-bootstrap",
            Command::AclTokenSet(_) => "acl-token-set",
            Command::AclTokenDelete { .. } => "acl-token-delete",
            Command::AclPolicySet(_) => "acl-policy-set",
            Command::AclPolicyDelete { .. } => "acl-policy-delete",
            Command::AclRoleSet(_) => "acl-role-set",
            Command::AclRoleDelete { .. } => "acl-role-delete",
            Command::AclAuthMethodSet(_) => "acl-auth-method-set",
            Command::AclAuthMethodDelete { .. } => "acl-auth-method-delete",
            Command::AclBindingRuleSet(_) => "acl-binding-rule-set",
            Command::AclBindingRuleDelete { .. } => "acl-binding-rule-delete",
            Command::RestoreBegin { .. } => "restore-begin",
            Command::RestoreChunk { .. } => "restore-chunk",
            Command::RestoreFinish { .. } => "restore-finish",
            Command::AgentCredentialSet(_) => "agent-credential-set",
            Command::FireEvent(_) => "fire-event",
            Command::Checked { command, .. } => command.kind(),
            Command::Txn(_) => "txn",
            Command::SessionCreate(_) => "session-create",
            Command::SessionDestroy { .. } => "session-destroy",
            Command::SessionRenew { .. } => "session-renew",
            Command::KvAcquire { .. } => "kv-acquire",
            Command::KvRelease { .. } => "kv-release",
        }
    }
}

/// What applying a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    /// Applied.
    #[default]
    Done,
    /// A check-and-set: whether it took effect.
    Cas(bool),
    /// Not applied, and why (the state is unchanged).
    Rejected(String),
    /// The outcomes of a [`Command::Batch`], in order.
    Batch(Vec<CommandOutcome>),
    /// A [`Command::Checked`] whose tables changed after it was checked:
    /// nothing was applied, and the leader checks it again.
    Outdated,
    /// What a [`Command::Txn`] did.
    Txn(crate::txn::TxnOutcome),
}
