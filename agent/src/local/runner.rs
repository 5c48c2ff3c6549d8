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
use weft_api::client::HttpClient;
use weft_api::ids::ServiceId;
use weft_api::proxy::ProxyReady;
use weft_checks::{Debounce, Probe, ProbeResult};

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

/// Starts the runner for `check`; a maintenance check has none.
pub fn spawn(state: Weak<LocalState>, check: LocalCheck) -> Option<AbortHandle> {
    let task = match check.runner.clone() {
        CheckRunner::Probe { probe, interval, timeout } => tokio::spawn(run_probe(state, check, interval, move || {
            let probe = probe.clone();
            async move { weft_checks::run(&probe, timeout).await }
        })),
        CheckRunner::Sidecar { sidecar, address, port, interval, timeout } => {
            let (weak, probe) = (state.clone(), Arc::new(SidecarProbe { sidecar, address, port, timeout }));
            tokio::spawn(run_probe(state, check, interval, move || probe_sidecar(weak.clone(), probe.clone())))
        }
        CheckRunner::Ttl { .. } => tokio::spawn(run_ttl(state, check)),
        CheckRunner::Maintenance => return None,
    };
    Some(task.abort_handle())
}

/// What a sidecar's listening check asks: see [`CheckRunner::Sidecar`].
struct SidecarProbe {
    sidecar: ServiceId,
    address: String,
    port: u16,
    timeout: Duration,
}

/// Runs a sidecar's listening check once. Where this agent does not run
/// its sidecars (it could not find its own program), nothing reports an
/// admin port and a TCP connect is all there is to try.
async fn probe_sidecar(state: Weak<LocalState>, probe: Arc<SidecarProbe>) -> ProbeResult {
    let SidecarProbe { sidecar, address, port, timeout } = &*probe;
    let (port, timeout) = (*port, *timeout);
    let critical = |output: String| ProbeResult { status: HealthStatus::Critical, output };
    let tcp = Probe::Tcp { address: format!("{address}:{port}") };
    let Some(admin_ports) = state.upgrade().map(|s| s.admin_ports().clone()) else {
        return critical("the agent is stopping".into());
    };
    if !admin_ports.supervised() {
        return weft_checks::run(&tcp, timeout).await;
    }
    let Some(admin) = admin_ports.get(sidecar) else {
        return critical(format!("the sidecar proxy {sidecar} is not running"));
    };
    let answer = HttpClient::new(&admin.to_string(), None).with_timeout(timeout).get("/ready").await;
    let ready = match answer {
        Err(error) => {
            return critical(format!("the sidecar proxy {sidecar} does not answer on its admin port: {error}"))
        }
        Ok(answer) if answer.status != 200 => {
            return critical(format!("the sidecar proxy {sidecar} is not ready: {}", answer.text().trim()));
        }
        Ok(answer) => serde_json::from_slice::<ProxyReady>(&answer.body),
    };
    match ready {
        Ok(ready) if ready.proxy_id == sidecar.as_str() && ready.public_listener.map(|a| a.port()) == Some(port) => {
            weft_checks::run(&tcp, timeout).await
        }
        Ok(ready) => critical(format!(
            "the sidecar proxy {sidecar} does not listen on port {port}: {admin} answers for {} listening on {}",
            ready.proxy_id,
            ready.public_listener.map_or("nothing".into(), |a| a.to_string())
        )),
        Err(error) => critical(format!("{admin} is not the sidecar proxy {sidecar}'s admin port: {error}")),
    }
}

/// Runs `probe` every `interval` (sooner until it first passes), through
/// the check's debounce, into the state.
async fn run_probe<F, Fut>(state: Weak<LocalState>, check: LocalCheck, interval: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ProbeResult>,
{
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
        let result = probe().await;
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
