//! How long each stage of a write takes on this server, for
//! `/v1/agent/metrics` and the write benchmark's per-stage breakdown.
//!
//! A write's time is spent in a few places, each on a different server:
//! waiting in the batcher, the forward to the leader, the leader's log flush
//! and its AppendEntries round trip to each follower (which includes the
//! follower's flush), the state machine's apply, and the wait for this
//! server to have applied it. Each place records into one [`Timer`] of a
//! fixed set ([`Stage`]); the names are Consul's where Consul has the same
//! measurement, so its dashboards read them.
//!
//! Timers are cumulative since the server started (Consul's in-memory sink
//! keeps only the last 10 s interval): a reader takes two snapshots and
//! subtracts. Recording is a short uncontended lock, never on a path that
//! waits for it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The measured stages of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `Server::write`, from the call to the answer (applied here).
    Write,
    /// In the batcher, from `submit` until its batch leaves.
    BatchQueue,
    /// A follower's forward of a batch to the leader (`Cluster.Apply`).
    Forward,
    /// On the leader: `client_write`, from the proposal until the leader
    /// applied it (Consul's commitTime stops at the commit).
    Commit,
    /// One flush of the Raft log to disk (leader and followers alike).
    LogFlush,
    /// On the leader: one AppendEntries round trip to a follower, the
    /// follower's flush included.
    AppendEntriesRpc,
    /// On a follower: answering one AppendEntries from the leader.
    AppendEntriesServe,
    /// Applying one log entry to the state store.
    FsmApply,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Write,
        Stage::BatchQueue,
        Stage::Forward,
        Stage::Commit,
        Stage::LogFlush,
        Stage::AppendEntriesRpc,
        Stage::AppendEntriesServe,
        Stage::FsmApply,
    ];

    /// The metric's name, without the `consul.` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Write => "rpc.write",
            Stage::BatchQueue => "rpc.write.queue",
            Stage::Forward => "rpc.write.forward",
            Stage::Commit => "raft.commitTime",
            Stage::LogFlush => "raft.log.flush",
            Stage::AppendEntriesRpc => "raft.replication.appendEntries.rpc",
            Stage::AppendEntriesServe => "raft.rpc.appendEntries",
            Stage::FsmApply => "raft.fsm.apply",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    count: u64,
    sum_ms: f64,
    sum_squares: f64,
    min_ms: f64,
    max_ms: f64,
}

/// One stage's running totals.
#[derive(Debug, Default)]
struct Timer(Mutex<Totals>);

impl Timer {
    fn record(&self, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let mut totals = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        totals.min_ms = if totals.count == 0 { ms } else { totals.min_ms.min(ms) };
        totals.max_ms = totals.max_ms.max(ms);
        totals.count += 1;
        totals.sum_ms += ms;
        totals.sum_squares += ms * ms;
    }

    fn totals(&self) -> Totals {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A stage's totals, in milliseconds: what Consul's `/v1/agent/metrics`
/// lists as a sample (the HTTP API gives it Consul's shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
}

/// Every stage's timer. Cheap to clone; clones share the timers.
#[derive(Clone, Debug, Default)]
pub struct Timers(Arc<[Timer; Stage::ALL.len()]>);

impl Timers {
    /// Adds one measurement of `stage`.
    pub fn record(&self, stage: Stage, took: Duration) {
        self.0[stage as usize].record(took);
    }

    /// Adds the time since `started` to `stage`.
    pub fn since(&self, stage: Stage, started: Instant) {
        self.record(stage, started.elapsed());
    }

    /// Every stage measured at least once, named with `prefix`.
    pub fn samples(&self, prefix: &str) -> Vec<Sample> {
        Stage::ALL
            .iter()
            .filter_map(|&stage| {
                let t = self.0[stage as usize].totals();
                (t.count > 0).then(|| {
                    let mean = t.sum_ms / t.count as f64;
                    let variance = (t.sum_squares / t.count as f64 - mean * mean).max(0.0);
                    Sample {
                        name: format!("{prefix}.{}", stage.name()),
                        count: t.count,
                        sum: t.sum_ms,
                        min: t.min_ms,
                        max: t.max_ms,
                        mean,
                        stddev: variance.sqrt(),
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_sum_each_stage_and_skip_unmeasured_ones() {
        let timers = Timers::default();
        timers.record(Stage::LogFlush, Duration::from_millis(1));
        timers.record(Stage::LogFlush, Duration::from_millis(3));
        let samples = timers.samples("consul");
        assert_eq!(samples.len(), 1);
        let flush = &samples[0];
        assert_eq!(flush.name, "consul.raft.log.flush");
        assert_eq!((flush.count, flush.sum, flush.min, flush.max, flush.mean), (2, 4.0, 1.0, 3.0, 2.0));
        assert!((flush.stddev - 1.0).abs() < 1e-9);
    }
}
