//! Runs a `weft connect proxy --sidecar-for <service>` process for every
//! sidecar registered on this agent: started when the sidecar appears,
//! restarted with backoff when it exits, stopped when the sidecar is
//! deregistered or the agent stops. The proxies' logs go to the agent's
//! standard error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::task::JoinHandle;
use weft_api::ids::ServiceId;

use crate::local::LocalState;

/// A proxy that ran this long before exiting is restarted at once.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps one proxy process per sidecar until `stop` resolves.
pub async fn supervise(
    local: Arc<LocalState>,
    program: PathBuf,
    agent_http: SocketAddr,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut changes = local.watch();
    let mut running: HashMap<ServiceId, JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: HashMap<ServiceId, ServiceId> = local.sidecars().into_iter().collect();
        running.retain(|sidecar, task| {
            let keep = wanted.contains_key(sidecar);
            if !keep {
                tracing::info!(%sidecar, "stopping the sidecar proxy");
                task.abort();
            }
            keep
        });
        for (sidecar, parent) in wanted {
            running.entry(sidecar.clone()).or_insert_with(|| {
                tracing::info!(%sidecar, "starting the sidecar proxy");
                tokio::spawn(keep_running(program.clone(), parent, agent_http))
            });
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = changes.changed() => {}
        }
    }
    // Aborting a task drops its child, which kills the process.
    for (_, task) in running {
        task.abort();
    }
}

/// Runs the proxy for `parent`, again and again, with backoff.
async fn keep_running(program: PathBuf, parent: ServiceId, agent_http: SocketAddr) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        let child = Command::new(&program)
            .args(["connect", "proxy", "--sidecar-for", parent.as_str(), "--http-addr", &agent_http.to_string()])
            .arg("--exit-with-parent")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(mut child) => match child.wait().await {
                Ok(status) => tracing::warn!(service = %parent, %status, "sidecar proxy exited; restarting"),
                Err(error) => tracing::warn!(service = %parent, %error, "lost the sidecar proxy; restarting"),
            },
            Err(error) => tracing::error!(program = %program.display(), %error, "cannot start the sidecar proxy"),
        }
        if started.elapsed() > HEALTHY_RUN {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
