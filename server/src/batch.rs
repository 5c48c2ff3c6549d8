//! Write batching: concurrent writes on one server travel to the leader, and
//! through Raft, as one log entry ([`Command::Batch`]).
//!
//! There is no timer. A batch leaves as soon as one of a few slots is free;
//! writes that arrive while every slot is busy wait and leave together in the
//! next batch. So a lone write goes alone and at once, and under load each
//! log entry, replication round and fsync carries many writes.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Semaphore};
use weft_api::command::{Command, CommandOutcome};

use crate::error::ServerError;
use crate::server::{Applied, Inner, Server};
use crate::telemetry::Stage;

/// Batches in flight at once from one server. Two, not more: with four,
/// 16 clients made nearly one log entry (a leader flush, an apply) per
/// write, and the leader's serial flushes became the bottleneck; with two,
/// bench/raft-kv.sh went from 1,208 to 1,552 writes/s at 16 clients and from
/// 2,658 to 3,803 at 64, a lone write unchanged.
const SLOTS: usize = 2;
/// Most writes in one batch.
const MAX_WRITES: usize = 1024;
/// A batch stops growing past this many bytes of values.
const MAX_BYTES: usize = 256 * 1024;

struct Pending {
    command: Command,
    queued: Instant,
    reply: oneshot::Sender<Result<Applied, ServerError>>,
}

/// The queue in front of [`Server::write_once`].
pub(crate) struct WriteBatcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl WriteBatcher {
    /// Starts the batching task. It holds the server weakly, so it ends
    /// with the server.
    pub(crate) fn start(server: Weak<Inner>) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(server, pending));
        Self { queue }
    }

    /// Commits `command`, batched with whatever else is waiting.
    pub(crate) async fn submit(&self, command: Command) -> Result<Applied, ServerError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { command, queued: Instant::now(), reply })
            .map_err(|_| ServerError::Fatal("server stopped".into()))?;
        answer.await.map_err(|_| ServerError::Fatal("server stopped".into()))?
    }
}

fn size_of(command: &Command) -> usize {
    match command {
        Command::KvSet { key, value, .. } => key.len() + value.len(),
        _ => 256,
    }
}

async fn run(server: Weak<Inner>, mut pending: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(SLOTS));
    while let Some(first) = pending.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = size_of(&first.command);
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES && bytes < MAX_BYTES {
            match pending.try_recv() {
                Ok(next) => {
                    bytes += size_of(&next.command);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = server.upgrade() else { return };
        for write in &batch {
            inner.timers.since(Stage::BatchQueue, write.queued);
        }
        let server = Server { inner };
        tokio::spawn(async move {
            send(&server, batch).await;
            drop(slot);
        });
    }
}

async fn send(server: &Server, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { command, reply, .. } = batch.pop().expect("one write");
        let _ = reply.send(server.write_once(&command).await);
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    match server.write_once(&Command::Batch(commands)).await {
        Ok(Applied { outcome: CommandOutcome::Batch(outcomes), index }) if outcomes.len() == count => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(Applied { outcome, index }));
            }
        }
        Ok(other) => {
            let error = ServerError::Fatal(format!("a batch of {count} writes came back as {:?}", other.outcome));
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
