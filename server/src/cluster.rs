//! Discovery, bootstrap and join: how a new server finds its cluster.
//!
//! Rules that keep exactly one cluster:
//! - A server that already has Raft state never bootstraps again. If the
//!   cluster's leader no longer lists it as a voter (it was removed while it
//!   was down), it joins again instead of trusting its stale configuration.
//! - A member that comes back at a new address (a Kubernetes pod's new IP)
//!   joins again with it; the leader replaces its address in the membership.
//! - If any reachable server already belongs to a cluster, join it.
//! - Otherwise, once `bootstrap_expect` servers (this one included) know each
//!   other, only the one with the lowest Raft ID initializes, with all of
//!   them as voters; the others wait to hear from it.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_api::proto::cluster::{InfoRequest, JoinRequest, ServerInfo};

use crate::raft::ServerNode;
use crate::server::Server;

const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until this server is a voter in a cluster.
pub async fn join_or_bootstrap(server: Server, bootstrap_expect: Option<usize>, retry_join: Vec<String>) {
    let mut announced_wait = false;
    loop {
        match step(&server, bootstrap_expect, &retry_join).await {
            Ok(Progress::Member) => return,
            Ok(Progress::Waiting(reason)) => {
                if !announced_wait {
                    tracing::info!("{reason}");
                    announced_wait = true;
                } else {
                    tracing::debug!("{reason}");
                }
            }
            Err(reason) => tracing::warn!("cluster join: {reason}"),
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

enum Progress {
    Member,
    Waiting(String),
}

async fn step(server: &Server, bootstrap_expect: Option<usize>, retry_join: &[String]) -> Result<Progress, String> {
    let raft = &server.inner.raft;
    let peers = discover(server, retry_join).await;
    if raft.is_initialized().await.map_err(|e| e.to_string())? {
        let configuration = server.raft_configuration();
        if let Some(me) = configuration.servers.iter().find(|s| s.id == server.id() && s.voter) {
            // A server that comes back at another address (a pod's new IP)
            // must tell the cluster, or its peers keep dialling the old one.
            let node = &server.inner.node;
            let moved = me.rpc_addr != node.rpc_addr || me.http_addr != node.http_addr;
            // Check our own view against a server that knows the leader.
            return match peers.iter().find(|p| p.leader_id != 0) {
                None if !peers.is_empty() => Ok(Progress::Waiting("waiting for the cluster to elect a leader".into())),
                // Moved while the others were down: keep looking for them,
                // or the membership would name the old address for good.
                None if moved => {
                    Ok(Progress::Waiting("this server's address changed; waiting for a peer to tell".into()))
                }
                Some(peer) if !peer.voter_ids.contains(&server.inner.id) => {
                    tracing::warn!(via = %peer.rpc_addr, "this server was removed from the cluster; joining again");
                    join(server, peer).await?;
                    Ok(Progress::Waiting("joined again; waiting to become a voter".into()))
                }
                Some(peer) if moved => {
                    tracing::info!(was = %me.rpc_addr, now = %node.rpc_addr, "this server's address changed; telling the cluster");
                    join(server, peer).await?;
                    Ok(Progress::Waiting("address change sent; waiting for it to apply".into()))
                }
                _ => Ok(Progress::Member),
            };
        }
    }
    if let Some(member) = peers.iter().find(|p| p.initialized) {
        join(server, member).await?;
        tracing::info!(via = %member.rpc_addr, "joined the cluster");
        return Ok(Progress::Waiting("joined; waiting to become a voter".into()));
    }
    let Some(expect) = bootstrap_expect else {
        return Ok(Progress::Waiting(format!(
            "waiting for a cluster to join at {retry_join:?} (no --bootstrap-expect given, so this server will not start one)"
        )));
    };
    let mut known: BTreeMap<u64, ServerNode> = peers
        .into_iter()
        .map(|p| (p.id, ServerNode { name: p.name, rpc_addr: p.rpc_addr, http_addr: p.http_addr }))
        .collect();
    known.insert(server.inner.id, server.inner.node.clone());
    if known.len() < expect {
        return Ok(Progress::Waiting(format!(
            "waiting for {expect} servers to bootstrap; {} known so far",
            known.len()
        )));
    }
    let lowest = *known.keys().next().expect("known holds this server");
    if lowest != server.inner.id {
        return Ok(Progress::Waiting(format!("{} servers known; server {lowest} will bootstrap", known.len())));
    }
    tracing::info!(servers = ?known.values().map(|n| &n.name).collect::<Vec<_>>(), "bootstrapping a new cluster");
    raft.initialize(known).await.map_err(|e| format!("bootstrap failed: {e}"))?;
    Ok(Progress::Waiting("bootstrapped; waiting for a leader".into()))
}

/// Asks every retry-join address who it is; unreachable ones are skipped.
async fn discover(server: &Server, retry_join: &[String]) -> Vec<ServerInfo> {
    let mut found: Vec<ServerInfo> = Vec::new();
    for addr in retry_join.iter().filter(|a| **a != server.inner.node.rpc_addr) {
        let Ok(mut client) = server.cluster_client(addr) else {
            continue;
        };
        let mut request = tonic::Request::new(InfoRequest {});
        request.set_timeout(Duration::from_secs(2));
        match client.info(request).await {
            Ok(info) => {
                let info = info.into_inner();
                if info.id != server.inner.id {
                    server.inner.peer_addresses.learn(info.id, &info.rpc_addr);
                }
                if info.id != server.inner.id && !found.iter().any(|f| f.id == info.id) {
                    found.push(info);
                }
            }
            Err(status) => tracing::debug!(addr, %status, "retry-join address not answering yet"),
        }
    }
    found
}

async fn join(server: &Server, member: &ServerInfo) -> Result<(), String> {
    let mut client = server.cluster_client(&member.rpc_addr).map_err(|e| e.to_string())?;
    let node = &server.inner.node;
    let mut request = tonic::Request::new(JoinRequest {
        id: server.inner.id,
        name: node.name.clone(),
        rpc_addr: node.rpc_addr.clone(),
        http_addr: node.http_addr.clone(),
    });
    request.set_timeout(Duration::from_secs(60));
    client
        .join(request)
        .await
        .map_err(|status| format!("join via {} refused: {}", member.rpc_addr, status.message()))?;
    Ok(())
}
