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
use weft_api::proxy::EXIT_PUBLIC_PORT_IN_USE;

use crate::local::{AdminPorts, LocalState};

/// A proxy that ran this long before exiting is restarted at once.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A loopback port free right now.
fn free_loopback_port() -> Option<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).ok()
}

/// Keeps one proxy process per sidecar until `stop` resolves.
pub async fn supervise(
    local: Arc<LocalState>,
    program: PathBuf,
    agent_http: SocketAddr,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let admin_ports = local.admin_ports().clone();
    admin_ports.set_supervised();
    let mut changes = local.watch();
    let mut running: HashMap<ServiceId, JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: HashMap<ServiceId, ServiceId> = local.sidecars().into_iter().collect();
        running.retain(|sidecar, task| {
            let keep = wanted.contains_key(sidecar);
            if !keep {
                tracing::info!(%sidecar, "stopping the sidecar proxy");
                task.abort();
                admin_ports.set(sidecar, None);
            }
            keep
        });
        for (sidecar, parent) in wanted {
            running.entry(sidecar.clone()).or_insert_with(|| {
                tracing::info!(%sidecar, "starting the sidecar proxy");
                let sidecar_run = SidecarRun { local: local.clone(), parent, sidecar: sidecar.clone() };
                tokio::spawn(keep_running(program.clone(), sidecar_run, agent_http, admin_ports.clone()))
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

/// Which sidecar a supervised proxy is, and where its parent's token is.
struct SidecarRun {
    local: Arc<LocalState>,
    parent: ServiceId,
    sidecar: ServiceId,
}

/// Runs the proxy for `run.parent`, again and again, with backoff. It asks
/// the agent with its service's ACL token (`WEFT_HTTP_TOKEN`), read anew at
/// each start.
async fn keep_running(program: PathBuf, run: SidecarRun, agent_http: SocketAddr, admin_ports: AdminPorts) {
    let SidecarRun { local, parent, sidecar } = run;
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        let admin = free_loopback_port();
        admin_ports.set(&sidecar, admin);
        let mut command = Command::new(&program);
        command
            .args(["connect", "proxy", "--sidecar-for", parent.as_str(), "--http-addr", &agent_http.to_string()])
            .arg("--exit-with-parent");
        match local.service_token(&parent) {
            Some(token) => command.env("WEFT_HTTP_TOKEN", token),
            None => command.env_remove("WEFT_HTTP_TOKEN"),
        };
        if let Some(admin) = admin {
            command.args(["--admin-bind", &admin.to_string()]);
        }
        let child = command.stdin(std::process::Stdio::null()).kill_on_drop(true).spawn();
        match child {
            Ok(mut child) => match child.wait().await {
                Ok(status) if status.code() == Some(i32::from(EXIT_PUBLIC_PORT_IN_USE)) => {
                    // Another process took the port between the pick and the bind.
                    match local.repick_sidecar_port(&parent) {
                        Some(port) => tracing::warn!(service = %parent, port, "sidecar port taken; moved the sidecar"),
                        None => {
                            tracing::warn!(service = %parent, "the sidecar's port (set in its registration) is taken")
                        }
                    }
                }
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
