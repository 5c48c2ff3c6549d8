//! Runs one check: a probe on its interval (through the success/failure
//! debounce), or a TTL timer that turns the check critical when nobody
//! refreshes it. Results go into [`LocalState`]; anti-entropy takes them from
//! there. A runner also enforces `DeregisterCriticalServiceAfter`.
//!
//! A runner holds only a weak reference to the state and is aborted when its
//! check is removed or replaced, so it never outlives its check.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use weft_api::catalog::HealthStatus;
use weft_checks::{Debounce, Probe};

use super::definition::{CheckRunner, LocalCheck};
use super::LocalState;

/// The first probe runs within this long of the check's registration
/// (staggered, so a restart does not fire every check at once).
const FIRST_RUN_WITHIN: Duration = Duration::from_millis(500);
/// Until a check first passes, a failed probe is retried this soon, then
/// twice as late each time, up to its interval: a service registered just
/// before it starts listening (a sidecar, an app under systemd) turns
/// healthy within a second or two, not a whole interval later.
const FIRST_PASS_RETRY: Duration = Duration::from_secs(1);
/// How often an expired TTL check looks at `DeregisterCriticalServiceAfter`.
const EXPIRED_RECHECK: Duration = Duration::from_secs(1);

/// Starts the runner for `check`.
pub fn spawn(state: Weak<LocalState>, check: LocalCheck) -> AbortHandle {
    let task = match check.runner.clone() {
        CheckRunner::Probe { probe, interval, timeout } => {
            tokio::spawn(run_probe(state, check, probe, interval, timeout))
        }
        CheckRunner::Ttl { .. } => tokio::spawn(run_ttl(state, check)),
    };
    task.abort_handle()
}

async fn run_probe(state: Weak<LocalState>, check: LocalCheck, probe: Probe, interval: Duration, timeout: Duration) {
    let id = check.check.id.clone();
    let mut debounce = Debounce::new(
        check.success_before_passing,
        check.failures_before_warning,
        check.failures_before_critical,
        check.check.status,
    );
    let stagger = rand::thread_rng().gen_range(Duration::ZERO..=FIRST_RUN_WITHIN.min(interval));
    let mut next = Instant::now() + stagger;
    let mut retry = Some(FIRST_PASS_RETRY);
    loop {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        let result = weft_checks::run(&probe, timeout).await;
        let status = debounce.observe(result.status);
        next = started + interval;
        if status == HealthStatus::Passing {
            retry = None;
        } else if let Some(soon) = retry.filter(|soon| *soon < interval) {
            next = started + soon;
            retry = Some(soon * 2);
        }
        let Some(state) = state.upgrade() else { return };
        if state.update_check(&id, status, result.output).is_none() {
            return;
        }
        deregister_if_critical_too_long(&state, &check);
    }
}

async fn run_ttl(state: Weak<LocalState>, check: LocalCheck) {
    let id = check.check.id.clone();
    loop {
        let (deadline, refreshed) = {
            let Some(state) = state.upgrade() else { return };
            let Some(timer) = state.ttl_deadline(&id) else { return };
            timer
        };
        if deadline > Instant::now() {
            tokio::select! {
                _ = refreshed.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
            continue;
        }
        {
            let Some(state) = state.upgrade() else { return };
            state.update_check(&id, HealthStatus::Critical, "TTL expired".into());
            deregister_if_critical_too_long(&state, &check);
        }
        tokio::select! {
            _ = refreshed.notified() => {}
            _ = tokio::time::sleep(EXPIRED_RECHECK) => {}
        }
    }
}

/// `DeregisterCriticalServiceAfter`: removes the check's service once the
/// check has been critical for that long.
fn deregister_if_critical_too_long(state: &Arc<LocalState>, check: &LocalCheck) {
    let (Some(after), service) = (check.deregister_critical_service_after, &check.check.service_id) else { return };
    if service.is_empty() {
        return;
    }
    if state.critical_since(&check.check.id).is_some_and(|since| since.elapsed() >= after) {
        tracing::warn!(service = %service, check = %check.check.id, ?after, "check critical for too long; deregistering its service");
        state.remove_service(service);
    }
}
