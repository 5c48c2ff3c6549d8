//! Agent liveness: every agent sends a heartbeat (`Cluster.Heartbeat`, about
//! once a second); the leader keeps when it last heard from each node and
//! turns the node's `serfHealth` check critical when the heartbeats stop for
//! longer than the liveness timeout, and passing again when they resume.
//!
//! This plays the part of Consul's Serf failure detector. It lives on the
//! leader only (a new leader starts with an empty table and waits one whole
//! timeout before judging anyone), and it decides by the clock, so its
//! decisions are written as ordinary catalog registrations: the state
//! machine never reads a clock.
//!
//! The leader also keeps the servers' own `consul` service
//! ([`SERVER_SERVICE`]): registered on a server's node with its first
//! heartbeat as a member, deregistered once it is no longer one.
//!
//! The bound: an agent that dies is marked critical within the timeout plus
//! one [`check_period`] after its last heartbeat reached the leader, plus the
//! Raft write that records it: 8 s + 1 s by default, within 10 s. After a
//! leader change, the new leader's clock starts when it takes over: the
//! bound is the election plus the same 9 s (plus the write).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use weft_api::catalog::{Check, Deregistration, HealthStatus, Node, Registration, Service, SERVER_SERVICE};
use weft_api::command::Command;
use weft_api::ids::{CheckId, Indexes, NodeName, ServiceId, ServiceName};

use crate::server::Server;

/// The node-level check that says whether a node's agent is alive
/// (Consul's name, which tools look for).
pub const LIVENESS_CHECK_ID: &str = "serfHealth";
const LIVENESS_CHECK_NAME: &str = "Serf Health Status";
const ALIVE_OUTPUT: &str = "Agent alive and reachable";
const DEAD_OUTPUT: &str = "Agent not live or unreachable";

/// How often an agent sends a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The liveness timeout unless configured: with its [`check_period`] it
/// keeps the detection bound within 10 s.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(8);

/// How often the leader looks for silent agents, for a given timeout.
pub fn check_period(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// The leader's record of heartbeats.
pub(crate) struct Liveness {
    last_heard: Mutex<HashMap<NodeName, Instant>>,
    timeout: Duration,
}

impl Liveness {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self { last_heard: Mutex::new(HashMap::new()), timeout }
    }

    fn heard(&self, node: &NodeName) {
        self.table().insert(node.clone(), Instant::now());
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<NodeName, Instant>> {
        self.last_heard.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `serfHealth` check for `node` in `status`.
fn liveness_check(node: &NodeName, status: HealthStatus) -> Check {
    Check {
        node: node.clone(),
        id: CheckId::new(LIVENESS_CHECK_ID),
        name: LIVENESS_CHECK_NAME.to_owned(),
        status,
        output: if status == HealthStatus::Passing { ALIVE_OUTPUT } else { DEAD_OUTPUT }.to_owned(),
        ..Check::default()
    }
}

/// The `consul` service of `node` if it is a server in the Raft
/// configuration: Consul's ID, name and meta, the server's RPC port.
fn server_service(server: &Server, node: &NodeName) -> Option<Service> {
    let (member, voter) = server.member_named(node.as_str())?;
    let port = member.rpc_addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or_default();
    let meta = [
        ("non_voter", (!voter).to_string()),
        ("raft_version", "3".to_owned()),
        ("read_replica", "false".to_owned()),
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
    ];
    Some(Service {
        node: node.clone(),
        id: ServiceId::new(SERVER_SERVICE),
        name: ServiceName::new(SERVER_SERVICE),
        port,
        meta: meta.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ..Service::default()
    })
}

/// On the leader: records a heartbeat from `node` and, if the catalog does
/// not show it alive, registers it (node included, if missing) with a
/// passing liveness check; a server's node also gets its `consul` service.
pub(crate) async fn heartbeat(server: &Server, node: Node) -> Result<(), crate::ServerError> {
    let liveness = &server.inner.liveness;
    liveness.heard(&node.name);
    let wanted = server_service(server, &node.name);
    let (registered, alive, listed) = {
        let tables = server.store().read();
        let catalog = tables.catalog();
        let check = catalog.checks().find(|c| c.node == node.name && c.id.as_str() == LIVENESS_CHECK_ID);
        let services = catalog.node_services(&node.name).map(|n| n.services).unwrap_or_default();
        let listed = wanted.as_ref().is_none_or(|wanted| {
            services.iter().any(|s| Service { indexes: Indexes::default(), ..s.clone() } == *wanted)
        });
        (catalog.node(&node.name).is_some(), check.is_some_and(|c| c.status == HealthStatus::Passing), listed)
    };
    if registered && alive && listed {
        return Ok(());
    }
    let checks = if alive {
        Vec::new()
    } else {
        tracing::info!(node = %node.name, "agent is alive");
        vec![liveness_check(&node.name, HealthStatus::Passing)]
    };
    let service = wanted.filter(|_| !listed);
    let registration = Registration { node, skip_node_update: registered, service, checks };
    server.write_local(&Command::Register(Box::new(registration))).await.map(|_| ())
}

/// On the leader: deregisters the `consul` service of nodes that are no
/// longer servers (removed from the Raft configuration).
async fn drop_former_servers(server: &Server) {
    let former: Vec<Command> = {
        let tables = server.store().read();
        tables
            .catalog()
            .service_instances(&ServiceName::new(SERVER_SERVICE))
            .into_iter()
            .map(|instance| instance.service)
            .filter(|s| s.id.as_str() == SERVER_SERVICE && server.member_named(s.node.as_str()).is_none())
            .map(|s| Command::Deregister(Deregistration { node: s.node, service_id: Some(s.id), check_id: None }))
            .collect()
    };
    if former.is_empty() {
        return;
    }
    tracing::info!(count = former.len(), "deregistering the consul service of former servers");
    if let Err(error) = server.write_local(&Command::Batch(former)).await {
        tracing::warn!(%error, "could not deregister former servers' consul service; will retry");
    }
}

/// Runs on every server for its lifetime; acts only while it leads.
pub(crate) async fn watch_heartbeats(server: Server) {
    let liveness = &server.inner.liveness;
    let period = check_period(liveness.timeout);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<(u64, Instant)> = None;
    loop {
        ticker.tick().await;
        if server.store().is_closed() {
            return;
        }
        let Some(term) = server.leading_term() else {
            leading_since = None;
            continue;
        };
        let since = match leading_since {
            Some((t, since)) if t == term => since,
            _ => {
                // Heartbeats went to the old leader: give every agent one timeout to find us.
                liveness.table().clear();
                leading_since = Some((term, Instant::now()));
                continue;
            }
        };
        drop_former_servers(&server).await;
        if since.elapsed() < liveness.timeout {
            continue;
        }
        let dead = silent_nodes(&server);
        if dead.is_empty() {
            continue;
        }
        tracing::warn!(nodes = ?dead, timeout = ?liveness.timeout, "agents stopped sending heartbeats; marking them critical");
        let commands = dead
            .iter()
            .map(|node| {
                Command::Register(Box::new(Registration {
                    node: Node { name: node.clone(), ..Node::default() },
                    skip_node_update: true,
                    service: None,
                    checks: vec![liveness_check(node, HealthStatus::Critical)],
                }))
            })
            .collect();
        if let Err(error) = server.write_local(&Command::Batch(commands)).await {
            tracing::warn!(%error, "could not mark silent agents critical; will retry");
        }
    }
}

/// Nodes the catalog shows alive whose heartbeats stopped over a timeout ago.
fn silent_nodes(server: &Server) -> Vec<NodeName> {
    let liveness = &server.inner.liveness;
    let last_heard = liveness.table();
    let tables = server.store().read();
    tables
        .catalog()
        .checks()
        .filter(|c| c.id.as_str() == LIVENESS_CHECK_ID && c.status == HealthStatus::Passing)
        .filter(|c| last_heard.get(&c.node).is_none_or(|at| at.elapsed() > liveness.timeout))
        .map(|c| c.node.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_detection_bound_is_within_ten_seconds() {
        let bound = DEFAULT_LIVENESS_TIMEOUT + check_period(DEFAULT_LIVENESS_TIMEOUT);
        assert!(bound <= Duration::from_secs(10), "{bound:?}");
        assert!(DEFAULT_LIVENESS_TIMEOUT >= HEARTBEAT_INTERVAL * 4, "several missed heartbeats before a verdict");
    }
}
