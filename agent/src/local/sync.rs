//! Anti-entropy: makes the catalog's record of this node (the node itself,
//! its services, its checks) match [`LocalState`].
//!
//! One mechanism for both of Consul's cases: a sync runs at once after every
//! local change, and on a timer to repair drift (a snapshot restore on the
//! servers, a registration deleted behind the agent's back). Each sync
//! compares the local state with this agent's copy of the catalog and writes
//! only the differences, as one batch.
//!
//! The liveness check (`serfHealth`) belongs to the leader, not to the agent:
//! sync never touches it.
//!
//! Like Consul's `check_update_interval`, a check whose only change is its
//! output is held back: a status change syncs at once (output included), an
//! output-only change at most once per interval, so a check whose output
//! varies with every run does not cost a Raft write per run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use weft_api::ids::CheckId;

use weft_api::catalog::{Check, Deregistration, Node, Registration, Service, SERVER_SERVICE};
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::Indexes;
use weft_server::liveness::LIVENESS_CHECK_ID;
use weft_server::store::Tables;

use super::LocalState;
use crate::backend::Backend;

/// After a failed sync, the next try comes this soon.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often anti-entropy runs without a local change, and how long an
/// output-only check change may wait.
#[derive(Clone, Copy, Debug)]
pub struct SyncIntervals {
    pub anti_entropy: Duration,
    /// Consul's `check_update_interval`; zero syncs every output change at once.
    pub check_update: Duration,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    local: Arc<LocalState>,
    backend: Backend,
    node: Node,
    intervals: SyncIntervals,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut changes = local.watch();
    let mut deferred = DeferredOutputs::new(intervals.check_update);
    let mut next_full = Instant::now();
    loop {
        let wake = deferred.next_due().map_or(next_full, |due| due.min(next_full));
        tokio::select! {
            _ = &mut shutdown => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        changes.borrow_and_update();
        next_full = Instant::now()
            + match sync_once(&local, &backend, &node, &mut deferred).await {
                Ok(()) => intervals.anti_entropy,
                Err(error) => {
                    tracing::warn!(%error, "anti-entropy sync failed; retrying");
                    RETRY_AFTER
                }
            };
    }
}

/// Checks whose only change is their output, and when each may sync.
#[derive(Debug)]
pub struct DeferredOutputs {
    interval: Duration,
    due: HashMap<CheckId, Instant>,
}

impl DeferredOutputs {
    pub fn new(interval: Duration) -> Self {
        Self { interval, due: HashMap::new() }
    }

    /// The earliest moment a held-back output is due.
    fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Whether `check`, whose only difference from the catalog is its
    /// output, syncs now; if not, it is held back until one interval after
    /// the change was first seen.
    fn output_may_sync(&mut self, check: &CheckId, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        let due = *self.due.entry(check.clone()).or_insert(now + self.interval);
        if now < due {
            return false;
        }
        self.due.remove(check);
        true
    }

    /// A check in step with the catalog (or synced for another reason)
    /// waits for nothing.
    fn settled(&mut self, check: &CheckId) {
        self.due.remove(check);
    }
}

/// One comparison and, if anything differs, one batched write.
pub async fn sync_once(
    local: &LocalState,
    backend: &Backend,
    node: &Node,
    deferred: &mut DeferredOutputs,
) -> Result<(), String> {
    let commands = differences(&backend.store().read(), local, node, deferred, Instant::now());
    if commands.is_empty() {
        return Ok(());
    }
    tracing::debug!(changes = commands.len(), "syncing this node's registrations to the catalog");
    let applied = backend.write(Command::Batch(commands)).await.map_err(|e| e.to_string())?;
    if let CommandOutcome::Batch(outcomes) = applied.outcome {
        for outcome in outcomes {
            if let CommandOutcome::Rejected(reason) = outcome {
                return Err(format!("the catalog refused a registration: {reason}"));
            }
        }
    }
    Ok(())
}

/// The commands that make the catalog's record of `node` match `local`
/// (output-only check changes held back by `deferred`).
fn differences(
    tables: &Tables,
    local: &LocalState,
    node: &Node,
    deferred: &mut DeferredOutputs,
    now: Instant,
) -> Vec<Command> {
    let catalog = tables.catalog();
    let mut commands = Vec::new();
    let registration = |service: Option<Service>, checks: Vec<Check>, skip_node_update: bool| {
        Command::Register(Box::new(Registration { node: node.clone(), skip_node_update, service, checks }))
    };
    let node_matches = catalog.node(&node.name).is_some_and(|n| same_node(n, node));
    if !node_matches {
        commands.push(registration(None, Vec::new(), false));
    }
    let registered = catalog.node_services(&node.name).map(|n| n.services).unwrap_or_default();
    let services = local.services();
    for service in &services {
        if !registered.iter().any(|r| same_service(r, service)) {
            commands.push(registration(Some(service.clone()), Vec::new(), true));
        }
    }
    let registered_checks = catalog.node_checks(&node.name);
    let local_checks = local.checks();
    let stale_checks = stale_checks(&registered_checks, &local_checks, deferred, now);
    if !stale_checks.is_empty() {
        commands.push(registration(None, stale_checks, true));
    }
    // The servers' own service is the leader's to keep, as in Consul.
    let theirs = |r: &Service| r.id.as_str() == SERVER_SERVICE;
    for extra in registered.iter().filter(|r| !theirs(r) && !services.iter().any(|s| s.id == r.id)) {
        commands.push(Command::Deregister(Deregistration {
            node: node.name.clone(),
            service_id: Some(extra.id.clone()),
            check_id: None,
        }));
    }
    for extra in registered_checks.iter().filter(|r| {
        r.id.as_str() != LIVENESS_CHECK_ID
            && !local_checks.iter().any(|c| c.id == r.id)
            // Checks of a service being deregistered go with it.
            && (r.service_id.is_empty() || services.iter().any(|s| s.id == r.service_id))
    }) {
        commands.push(Command::Deregister(Deregistration {
            node: node.name.clone(),
            service_id: None,
            check_id: Some(extra.id.clone()),
        }));
    }
    commands
}

fn same_node(registered: &Node, wanted: &Node) -> bool {
    Node { indexes: Indexes::default(), ..registered.clone() } == *wanted
}

fn same_service(registered: &Service, wanted: &Service) -> bool {
    Service { indexes: Indexes::default(), ..registered.clone() } == *wanted
}

/// The local checks the catalog does not have as they are, except those
/// whose only difference is an output `deferred` holds back.
fn stale_checks(registered: &[Check], local: &[Check], deferred: &mut DeferredOutputs, now: Instant) -> Vec<Check> {
    deferred.due.retain(|id, _| local.iter().any(|c| &c.id == id));
    let mut stale = Vec::new();
    for check in local {
        let current = registered.iter().find(|r| r.id == check.id);
        match current {
            Some(current) if same_check(current, check) => deferred.settled(&check.id),
            Some(current) if same_check_but_output(current, check) => {
                if deferred.output_may_sync(&check.id, now) {
                    stale.push(check.clone());
                }
            }
            _ => {
                deferred.settled(&check.id);
                stale.push(check.clone());
            }
        }
    }
    stale
}

fn same_check(registered: &Check, wanted: &Check) -> bool {
    Check { indexes: Indexes::default(), ..registered.clone() } == *wanted
}

fn same_check_but_output(registered: &Check, wanted: &Check) -> bool {
    same_check(&Check { output: wanted.output.clone(), ..registered.clone() }, wanted)
}

#[cfg(test)]
mod tests {
    use weft_api::catalog::HealthStatus;

    use super::*;

    fn check(status: HealthStatus, output: &str) -> Check {
        Check { id: CheckId::new("c"), status, output: output.into(), ..Check::default() }
    }

    #[test]
    fn output_only_changes_wait_one_interval_and_status_changes_do_not() {
        let interval = Duration::from_secs(300);
        let mut deferred = DeferredOutputs::new(interval);
        let start = Instant::now();
        let registered = [check(HealthStatus::Passing, "took 3ms")];

        let output_only = [check(HealthStatus::Passing, "took 4ms")];
        assert!(stale_checks(&registered, &output_only, &mut deferred, start).is_empty());
        assert_eq!(deferred.next_due(), Some(start + interval));
        let later = start + interval / 2;
        assert!(stale_checks(&registered, &output_only, &mut deferred, later).is_empty(), "still held back");
        assert_eq!(stale_checks(&registered, &output_only, &mut deferred, start + interval).len(), 1, "due");
        assert_eq!(deferred.next_due(), None);

        // A status change goes at once, output and all, and clears what was held back.
        stale_checks(&registered, &output_only, &mut deferred, start);
        let failing = [check(HealthStatus::Critical, "connection refused")];
        assert_eq!(stale_checks(&registered, &failing, &mut deferred, start).len(), 1);
        assert_eq!(deferred.next_due(), None);

        // With no interval, every output change goes at once.
        let mut eager = DeferredOutputs::new(Duration::ZERO);
        assert_eq!(stale_checks(&registered, &output_only, &mut eager, start).len(), 1);
        // A check not in the catalog yet goes at once.
        assert_eq!(stale_checks(&[], &output_only, &mut deferred, start).len(), 1);
    }
}
