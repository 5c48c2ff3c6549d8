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

use std::sync::Arc;
use std::time::Duration;

use weft_api::catalog::{Check, Deregistration, Node, Registration, Service};
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::Indexes;
use weft_server::liveness::LIVENESS_CHECK_ID;
use weft_server::store::Tables;

use super::LocalState;
use crate::backend::Backend;

/// After a failed sync, the next try comes this soon.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs until `shutdown` resolves.
pub async fn run(
    local: Arc<LocalState>,
    backend: Backend,
    node: Node,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut changes = local.watch();
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        changes.borrow_and_update();
        wait = match sync_once(&local, &backend, &node).await {
            Ok(()) => interval,
            Err(error) => {
                tracing::warn!(%error, "anti-entropy sync failed; retrying");
                RETRY_AFTER
            }
        };
    }
}

/// One comparison and, if anything differs, one batched write.
pub async fn sync_once(local: &LocalState, backend: &Backend, node: &Node) -> Result<(), String> {
    let commands = differences(&backend.store().read(), local, node);
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

/// The commands that make the catalog's record of `node` match `local`.
fn differences(tables: &Tables, local: &LocalState, node: &Node) -> Vec<Command> {
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
    let stale_checks: Vec<Check> =
        local_checks.iter().filter(|check| !registered_checks.iter().any(|r| same_check(r, check))).cloned().collect();
    if !stale_checks.is_empty() {
        commands.push(registration(None, stale_checks, true));
    }
    for extra in registered.iter().filter(|r| !services.iter().any(|s| s.id == r.id)) {
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

fn same_check(registered: &Check, wanted: &Check) -> bool {
    Check { indexes: Indexes::default(), ..registered.clone() } == *wanted
}
