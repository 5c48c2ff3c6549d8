//! The leader's side of sessions (`weft_api::session`): it ends a session
//! whose TTL ran out (a `SessionDestroy` through Raft, so every server ends
//! it at the same index), and refuses to acquire a key still in the lock
//! delay an ended session started. Both depend on time, which `apply`
//! never reads: each server's state store notes, by its own clock, when it
//! applied each renewal and each release (`StateStore::session_renewed_at`,
//! `StateStore::lock_delay_left`), and only the leader acts on them.

use std::time::{Duration, Instant};

use weft_api::command::{Command, CommandOutcome};
use weft_api::session::TTL_MULTIPLIER;
use weft_api::txn::{KvVerb, TxnError, TxnOutcome};

use crate::server::Server;

/// How often the leader looks for sessions whose TTL ran out.
const EXPIRY_PERIOD: Duration = Duration::from_secs(1);

/// Ends sessions whose TTL ran out, while this server leads.
pub(crate) async fn expire_when_leading(server: Server) {
    let mut ticker = tokio::time::interval(EXPIRY_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let store = server.store();
        if store.is_closed() {
            return;
        }
        if !server.is_leader() {
            continue;
        }
        let now = Instant::now();
        let expired: Vec<String> = store
            .read()
            .sessions()
            .iter()
            .filter(|session| {
                session.ttl().is_some_and(|ttl| {
                    now.duration_since(store.session_renewed_at(&session.id, now)) > ttl * TTL_MULTIPLIER
                })
            })
            .map(|session| session.id.clone())
            .collect();
        for id in expired {
            tracing::info!(session = %id, "a session's TTL ran out; ending it");
            if let Err(error) = server.write_local(&Command::SessionDestroy { id: id.clone() }).await {
                tracing::warn!(session = %id, %error, "could not end a session whose TTL ran out; will try again");
            }
        }
    }
}

/// Whether `command` acquires a lock: it travels alone to the leader (never
/// in a batch), which checks the lock delay first.
pub(crate) fn acquires(command: &Command) -> bool {
    match command {
        Command::KvAcquire { .. } => true,
        Command::Txn(ops) => ops.iter().any(|op| op.verb == KvVerb::Lock),
        _ => false,
    }
}

/// What the leader answers, without proposing, to an acquire of a key in
/// its lock delay (Consul's answer: not acquired). `None`: propose it.
pub(crate) fn refuse_in_lock_delay(server: &Server, command: &Command) -> Option<CommandOutcome> {
    let store = server.store();
    match command {
        Command::KvAcquire { key, .. } => store.lock_delay_left(key).map(|_| CommandOutcome::Cas(false)),
        Command::Txn(ops) => {
            let errors: Vec<TxnError> = ops
                .iter()
                .enumerate()
                .filter(|(_, op)| op.verb == KvVerb::Lock)
                .filter_map(|(i, op)| {
                    let left = store.lock_delay_left(&op.key)?;
                    let what = format!("failed to lock key {:?}, it is in its lock delay for {left:?} more", op.key);
                    Some(TxnError { op_index: i as u32, what })
                })
                .collect();
            (!errors.is_empty()).then(|| CommandOutcome::Txn(TxnOutcome { results: Vec::new(), errors }))
        }
        _ => None,
    }
}
