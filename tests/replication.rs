//! Replication end to end: real `weft agent --server` processes on loopback
//! forming a Raft cluster, losing a leader, restarting, growing and shrinking.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use support::{eventually, put, stale_keys, weft, Cluster};

/// Waits until every running server holds exactly `expected` under `prefix`.
async fn assert_all_servers_hold(cluster: &Cluster, prefix: &str, expected: &BTreeSet<String>) {
    for i in (0..cluster.len()).filter(|i| cluster.is_running(*i)) {
        let client = cluster.client(i);
        let what = format!("server {} to hold all {} keys under {prefix}", cluster.specs[i].name, expected.len());
        eventually(&what, Duration::from_secs(30), || async {
            let keys: BTreeSet<String> = stale_keys(&client, prefix).await?.into_iter().collect();
            expected.is_subset(&keys).then_some(())
        })
        .await;
    }
}

/// A GET that must answer 200 with JSON.
async fn json_of(client: &weft_api::client::HttpClient, path: &str) -> serde_json::Value {
    let response = client.get(path).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(response.status, 200, "{path}: {}", String::from_utf8_lossy(&response.body));
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_elect_a_leader_and_replicate_writes_sent_through_a_follower() {
    let cluster = Cluster::servers(3).await;
    let follower = cluster.follower().await;
    let client = cluster.client(follower);

    let keys: Vec<String> = (0..1000).map(|n| format!("bulk/{n:04}")).collect();
    for chunk in keys.chunks(16) {
        let acks = join_all(chunk.iter().map(|key| put(&client, key, "v"))).await;
        assert!(acks.iter().all(|ack| *ack), "every write through the follower is acknowledged");
    }
    let expected: BTreeSet<String> = keys.into_iter().collect();
    assert_all_servers_hold(&cluster, "bulk/", &expected).await;

    // The Raft configuration, asked of a follower, comes from the leader: every last index is known.
    let configuration: serde_json::Value =
        serde_json::from_slice(&client.get("/v1/operator/raft/configuration").await.unwrap().body).unwrap();
    let servers = configuration["Servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    assert!(servers.iter().all(|s| s["LastIndex"].as_u64().is_some()), "{configuration}");
    assert_eq!(servers.iter().filter(|s| s["Leader"] == true).count(), 1);

    // Reads on a follower: default (leader-checked), consistent and stale all see the writes.
    for mode in ["", "?consistent", "?stale"] {
        let response = client.get(&format!("/v1/kv/bulk/0999{mode}")).await.unwrap();
        assert_eq!(response.status, 200, "read with {mode:?}");
        assert_eq!(response.header("x-consul-knownleader"), Some("true"));
        assert!(response.header("x-consul-lastcontact").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_during_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::servers(3).await;
    let old_leader = cluster.wait_for_leader().await;
    let clients: Vec<_> = (0..cluster.len()).map(|i| cluster.client(i).with_timeout(Duration::from_secs(15))).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (clients, stop, acked) = (clients.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                for n in 0..5_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let key = format!("load/w{w}-{n:05}");
                    // Any server will do; a dead one is skipped on the next try.
                    let client = &clients[(w + n) % clients.len()];
                    if put(client, &key, "v").await {
                        acked.lock().unwrap().insert(key);
                    }
                }
            })
        })
        .collect();

    eventually("some writes to be acknowledged", Duration::from_secs(10), || async {
        (acked.lock().unwrap().len() > 100).then_some(())
    })
    .await;
    cluster.kill(old_leader);
    let killed_at = Instant::now();
    let new_leader = cluster.wait_for_leader().await;
    let election = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    println!(
        "new leader {} elected {election:?} after kill -9 of {}",
        cluster.specs[new_leader].name, cluster.specs[old_leader].name
    );

    let before = acked.lock().unwrap().len();
    eventually("writes to be acknowledged by the new leader", Duration::from_secs(15), || async {
        (acked.lock().unwrap().len() > before + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    join_all(writers).await;

    let acked = acked.lock().unwrap().clone();
    println!("{} writes acknowledged in all", acked.len());
    assert_all_servers_hold(&cluster, "load/", &acked).await;

    // The killed server comes back and catches up with everything too.
    cluster.start_server(old_leader);
    assert_all_servers_hold(&cluster, "load/", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashing_and_restarting_every_server_keeps_all_state() {
    let mut cluster = Cluster::servers(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    let keys: BTreeSet<String> = (0..200).map(|n| format!("durable/{n:03}")).collect();
    for key in &keys {
        assert!(put(&client, key, "kept").await);
    }
    let registration = r#"{"Node": "vm1", "Address": "10.1.2.3", "Service": {"Service": "web", "Port": 8080}}"#;
    assert_eq!(client.put("/v1/catalog/register", registration).await.unwrap().status, 200);

    // kill -9: nothing gets a chance to flush on the way out.
    for i in 0..cluster.len() {
        cluster.kill(i);
    }
    for i in 0..cluster.len() {
        cluster.start_server(i);
    }
    cluster.wait_for_leader().await;
    assert_all_servers_hold(&cluster, "durable/", &keys).await;
    for i in 0..cluster.len() {
        let client = cluster.client(i);
        let what = format!("the catalog registration on {}", cluster.specs[i].name);
        let address = eventually(&what, Duration::from_secs(20), || async {
            let response = client.get("/v1/catalog/service/web").await.ok()?;
            let instances: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
            Some(instances[0]["Address"].clone())
        })
        .await;
        assert_eq!(address, "10.1.2.3", "catalog on {}", cluster.specs[i].name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_server_catches_up_by_snapshot_and_removing_it_updates_every_peer_list() {
    let compact = ["--raft-snapshot-threshold", "50", "--raft-trailing-logs", "10"];
    let mut cluster = Cluster::servers_with(3, &compact).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    let keys: BTreeSet<String> = (0..300).map(|n| format!("snap/{n:03}")).collect();
    for key in &keys {
        assert!(put(&client, key, "v").await);
    }
    let purged = eventually("the leader to compact its log", Duration::from_secs(20), || async {
        cluster.raft_stat(leader, "purged_index").await.filter(|p| *p > 0)
    })
    .await;
    println!("leader compacted its log up to index {purged}");

    let newcomer = cluster.add_server(&compact);
    let all_four: Vec<String> = (1..=4).map(|n| format!("s{n}")).collect();
    for i in 0..cluster.len() {
        eventually("every server to list s4 as a voter", Duration::from_secs(30), || async {
            (cluster.voters_seen_by(i).await? == all_four).then_some(())
        })
        .await;
    }
    assert_all_servers_hold(&cluster, "snap/", &keys).await;
    // Every server is the `consul` service, at its RPC port, kept by the leader.
    let consul_service = |cluster: &Cluster, at: usize| {
        let client = cluster.client(at);
        async move {
            let listed: serde_json::Value =
                serde_json::from_slice(&client.get("/v1/catalog/service/consul").await.ok()?.body).ok()?;
            let mut servers: Vec<String> = listed
                .as_array()?
                .iter()
                .map(|s| format!("{}:{}", s["Node"].as_str().unwrap_or("?"), s["ServicePort"]))
                .collect();
            servers.sort();
            Some(servers)
        }
    };
    let ports: Vec<String> = cluster.specs.iter().map(|s| s.rpc_addr.rsplit_once(':').unwrap().1.to_owned()).collect();
    let as_service = |n: usize| (0..n).map(|i| format!("s{}:{}", i + 1, ports[i])).collect::<Vec<_>>();
    eventually("all four servers to be the consul service", Duration::from_secs(20), || async {
        (consul_service(&cluster, leader).await? == as_service(4)).then_some(())
    })
    .await;
    let installed = cluster.raft_stat(newcomer, "last_snapshot_index").await.unwrap_or(0);
    assert!(installed > 0, "s4 holds a snapshot (installed from the leader): {installed}");
    // Operators see four nodes, and the four servers as instances of one
    // service that is not billable.
    let usage = json_of(&cluster.client(leader), "/v1/operator/usage").await;
    let usage = usage["Usage"].as_object().and_then(|by_dc| by_dc.values().next()).cloned().unwrap_or_default();
    assert_eq!((&usage["Nodes"], &usage["Services"], &usage["ServiceInstances"]), (&4.into(), &1.into(), &4.into()));
    assert_eq!(usage["BillableServiceInstances"], 0, "{usage}");
    // Autopilot: four healthy voters can lose one; with s4 stopped, none,
    // and the answer is a 429 naming s4 failed.
    let health = |cluster: &Cluster, at: usize| {
        let client = cluster.client(at);
        async move {
            let response = client.get("/v1/operator/autopilot/health").await.ok()?;
            Some((response.status, serde_json::from_slice::<serde_json::Value>(&response.body).ok()?))
        }
    };
    let (status, healthy) = eventually("autopilot to call all four healthy", Duration::from_secs(20), || async {
        health(&cluster, leader).await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(
        (status, &healthy["Healthy"], &healthy["FailureTolerance"]),
        (200, &true.into(), &1.into()),
        "{healthy}"
    );
    assert_eq!(healthy["Servers"].as_array().map(Vec::len), Some(4), "{healthy}");

    // The operator stops s4 and removes it; every remaining server drops it.
    cluster.kill(newcomer);
    let leader = cluster.wait_for_leader().await;
    let (_, unhealthy) = eventually("autopilot to see s4 fail", Duration::from_secs(30), || async {
        health(&cluster, leader).await.filter(|(status, _)| *status == 429)
    })
    .await;
    assert_eq!((&unhealthy["Healthy"], &unhealthy["FailureTolerance"]), (&false.into(), &0.into()), "{unhealthy}");
    let s4 = unhealthy["Servers"].as_array().and_then(|all| all.iter().find(|s| s["Name"] == "s4")).cloned();
    assert_eq!(s4.map(|s4| (s4["SerfStatus"].clone(), s4["Healthy"].clone())), Some(("failed".into(), false.into())));
    let (code, stdout, stderr) =
        weft(&["operator", "raft", "remove-peer", "--id", "s4", "--http-addr", &cluster.specs[leader].http_addr]);
    assert_eq!(code, 0, "remove-peer: {stdout}{stderr}");
    let three: Vec<String> = (1..=3).map(|n| format!("s{n}")).collect();
    for i in 0..3 {
        eventually("every server to drop s4", Duration::from_secs(20), || async {
            (cluster.voters_seen_by(i).await? == three).then_some(())
        })
        .await;
    }
    let (code, stdout, _) = weft(&["operator", "raft", "list-peers", "--http-addr", &cluster.specs[leader].http_addr]);
    assert_eq!(code, 0);
    assert!(stdout.contains("leader") && !stdout.contains("s4"), "{stdout}");
    eventually("s4 to stop being the consul service", Duration::from_secs(20), || async {
        (consul_service(&cluster, leader).await? == as_service(3)).then_some(())
    })
    .await;

    // s4 restarts with its old data, which still lists it as a voter: it
    // notices the cluster removed it and joins again.
    cluster.start_server(newcomer);
    for i in 0..cluster.len() {
        eventually("s4 to be a voter again", Duration::from_secs(30), || async {
            (cluster.voters_seen_by(i).await? == all_four).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_back_at_a_new_address_is_reached_there() {
    let mut cluster = Cluster::servers(3).await;
    let moved = cluster.follower().await;
    cluster.kill(moved);
    // Like a pod rescheduled with a new IP: same data dir, new addresses.
    let old = cluster.specs[moved].rpc_addr.clone();
    cluster.specs[moved].rpc_addr = format!("127.0.0.1:{}", support::free_port());
    cluster.specs[moved].http_addr = format!("127.0.0.1:{}", support::free_port());
    cluster.start_server(moved);
    let new = cluster.specs[moved].rpc_addr.clone();
    let leader = cluster.wait_for_leader().await;
    eventually("the leader to list the moved server at its new address", Duration::from_secs(30), || async {
        let response = cluster.client(leader).get("/v1/operator/raft/configuration").await.ok()?;
        let configuration: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        let servers = configuration["Servers"].as_array()?;
        let addresses: Vec<&str> = servers.iter().filter_map(|s| s["Address"].as_str()).collect();
        (addresses.contains(&new.as_str()) && !addresses.contains(&old.as_str())).then_some(())
    })
    .await;
    // And it is reached there: a write through the leader arrives.
    assert!(put(&cluster.client(leader), "moved/after", "v").await);
    assert_all_servers_hold(&cluster, "moved/", &BTreeSet::from(["moved/after".to_owned()])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_larger_than_a_log_entry_restores_on_every_server_even_one_down_during_it() {
    // Snapshots every few entries, so the Raft snapshot a lagging server
    // catches up from may hold a restore half received.
    let compact = ["--raft-snapshot-threshold", "4", "--raft-trailing-logs", "2"];
    let mut cluster = Cluster::servers_with(3, &compact).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    // 24 values of 500 KiB: a 12 MiB snapshot, three times the old
    // one-entry limit.
    let value = |n: usize| format!("{n:04}").repeat(125 * 1024);
    for n in 0..24 {
        assert!(put(&client, &format!("big/{n:02}"), &value(n)).await);
    }
    let saved = client.get("/v1/snapshot").await.unwrap();
    assert_eq!(saved.status, 200);
    println!("snapshot: {} bytes", saved.body.len());
    assert!(saved.body.len() > 11 << 20, "well over the old 4 MiB one-entry limit");
    for n in 0..24 {
        assert_eq!(client.delete(&format!("/v1/kv/big/{n:02}")).await.unwrap().status, 200);
    }
    assert!(put(&client, "after/snapshot", "gone once restored").await);

    // A follower goes down while the parts arrive, and comes back after.
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let restore = {
        let client = client.clone().with_timeout(Duration::from_secs(120));
        let body = saved.body.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = client.put("/v1/snapshot", body).await.unwrap();
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(follower);
    let (restored, took) = restore.await.unwrap();
    assert_eq!(restored.status, 200, "{}", restored.text());
    println!("restored {} bytes in {took:?}, a follower killed 300 ms in", saved.body.len());
    cluster.start_server(follower);

    for i in [0, 1, 2, vm1] {
        let agent = cluster.client(i);
        let name = cluster.specs[i].name.clone();
        eventually(&format!("{name} to hold the restored state"), Duration::from_secs(60), || async {
            let gone = agent.get("/v1/kv/after/snapshot?stale").await.ok()?.status == 404;
            let last = agent.get("/v1/kv/big/23?stale&raw").await.ok()?;
            (gone && last.status == 200).then_some(())
        })
        .await;
        for n in [0, 11, 23] {
            let got = agent.get(&format!("/v1/kv/big/{n:02}?stale&raw")).await.unwrap();
            assert!(got.body == value(n).as_bytes(), "{name}: big/{n:02} restored byte for byte");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_quorum_stops_saying_it_leads() {
    let cluster = Cluster::servers(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader).with_timeout(Duration::from_secs(30));
    assert!(put(&client, "before", "v").await);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Both followers paused: the leader hears from no quorum.
    for i in &followers {
        cluster.signal(*i, "STOP");
    }
    let paused = Instant::now();
    eventually("the cut-off leader to say it knows no leader", Duration::from_secs(10), || async {
        let response = client.get("/v1/status/leader").await.ok()?;
        (response.text() == "\"\"").then_some(())
    })
    .await;
    let admitted = paused.elapsed();
    let read = client.get("/v1/kv/before?stale").await.unwrap();
    assert_eq!(read.header("x-consul-knownleader"), Some("false"), "{:?}", read.headers);
    // A write to it is refused as retryable, not taken.
    let started = Instant::now();
    let refused = client.put("/v1/kv/during", "x").await.unwrap();
    let refused_after = started.elapsed();
    assert_eq!(refused.status, 500, "{}", refused.text());
    assert!(refused.text().contains("No cluster leader"), "{}", refused.text());
    for i in &followers {
        cluster.signal(*i, "CONT");
    }
    let leader = cluster.wait_for_leader().await;
    assert!(put(&cluster.client(leader), "after", "v").await);
    assert_eq!(
        cluster.client(leader).get("/v1/kv/during").await.unwrap().status,
        404,
        "the refused write was not applied"
    );
    println!("cut off: said it knows no leader after {admitted:?}; a write was refused after {refused_after:?}");
}

/// Writes 200 keys, stops every server, gives each the RPC address
/// `moved(i, old addresses)` (and a new HTTP port), starts them (`first`
/// alone for 2 s before the others, if given), and checks that they elect
/// a leader, list every server at its new address, and keep every write.
/// Returns the time from the start to the first acknowledged write.
async fn servers_come_back_moved(moved: impl Fn(usize, &[String]) -> String, first: Option<usize>) -> Duration {
    let mut cluster = Cluster::servers(3).await;
    let leader = cluster.wait_for_leader().await;
    let keys: BTreeSet<String> = (0..200).map(|n| format!("moved-all/{n:03}")).collect();
    let client = cluster.client(leader);
    for chunk in keys.iter().collect::<Vec<_>>().chunks(16) {
        let acks = join_all(chunk.iter().map(|key| put(&client, key, "v"))).await;
        assert!(acks.iter().all(|ack| *ack));
    }
    for i in 0..3 {
        assert!(cluster.stop(i));
    }
    let old: Vec<String> = cluster.specs.iter().map(|s| s.rpc_addr.clone()).collect();
    for i in 0..3 {
        cluster.specs[i].rpc_addr = moved(i, &old);
        cluster.specs[i].http_addr = format!("127.0.0.1:{}", support::free_port());
    }
    let started = Instant::now();
    if let Some(first) = first {
        cluster.start_server(first);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for i in (0..3).filter(|i| Some(*i) != first) {
        cluster.start_server(i);
    }
    let leader = cluster.wait_for_leader().await;
    eventually("a write acknowledged at the new addresses", Duration::from_secs(30), || async {
        put(&cluster.client(leader), "moved-all/after", "v").await.then_some(())
    })
    .await;
    let recovered = started.elapsed();
    eventually("the membership to list every server at its new address", Duration::from_secs(30), || async {
        let response = cluster.client(leader).get("/v1/operator/raft/configuration").await.ok()?;
        let configuration: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        let servers = configuration["Servers"].as_array()?;
        let listed = servers.iter().all(|s| {
            cluster.specs.iter().any(|spec| {
                Some(spec.name.as_str()) == s["Node"].as_str() && Some(spec.rpc_addr.as_str()) == s["Address"].as_str()
            })
        });
        (servers.len() == 3 && listed).then_some(())
    })
    .await;
    let mut expected = keys;
    expected.insert("moved-all/after".to_owned());
    assert_all_servers_hold(&cluster, "moved-all/", &expected).await;
    for i in 0..3 {
        assert!(!cluster.log(i).contains("panicked"), "{}", cluster.log(i));
    }
    recovered
}

/// Every server comes back at the address another one had (pods
/// rescheduled, IPs reused): no membership address reaches the server it
/// names, and every old address answers as someone else. The servers find
/// each other by their announced addresses, refuse Raft RPCs meant for
/// another server, elect a leader, and keep every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_server_back_at_another_s_address_elects_a_leader_and_keeps_every_write() {
    let recovered = servers_come_back_moved(|i, old| old[(i + 1) % 3].clone(), None).await;
    println!("all servers moved: first write acknowledged {recovered:?} after they started");
}

/// Two of three servers at new addresses, one at its old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_back_at_new_addresses_and_one_at_its_old_one_keep_every_write() {
    let moved = |i: usize, old: &[String]| match i {
        2 => old[2].clone(),
        _ => format!("127.0.0.1:{}", support::free_port()),
    };
    let recovered = servers_come_back_moved(moved, None).await;
    println!("two servers moved: first write acknowledged {recovered:?} after they started");
}

/// One server moved while the others were down: it starts first, alone,
/// then the others come back at their old addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_moved_while_the_others_were_down_is_found_when_they_return() {
    let moved = |i: usize, old: &[String]| match i {
        0 => format!("127.0.0.1:{}", support::free_port()),
        _ => old[i].clone(),
    };
    let recovered = servers_come_back_moved(moved, Some(0)).await;
    println!("one server moved while the others were down: first write acknowledged {recovered:?} after it started");
}

/// A Raft RPC sent to an address that now belongs to another server (the
/// one it was meant for moved away) is refused by the server there, not
/// taken as its own: with a real server certificate, a vote addressed to
/// another Raft ID gets `FailedPrecondition` naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_rpc_meant_for_another_server_is_refused() {
    let cluster = Cluster::servers(1).await;
    let configuration: serde_json::Value =
        serde_json::from_slice(&cluster.client(0).get("/v1/operator/raft/configuration").await.unwrap().body).unwrap();
    let id: u64 = configuration["Servers"][0]["ID"].as_str().unwrap().parse().unwrap();
    let tls_dir = cluster.tls_dir.clone().expect("a cluster with TLS");
    let read = |file: &str| std::fs::read_to_string(tls_dir.join(file)).unwrap();
    let (cert, key) = (read("dc1-server-weft-0.pem"), read("dc1-server-weft-0-key.pem"));
    let tls = support::cluster_client_tls(&cluster, Some((&cert, &key)));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.specs[0].rpc_addr))
        .unwrap()
        .connect_with_connector_lazy(weft_tls::RpcConnector::new(Some(tls)));
    let mut raft = weft_api::proto::raft::raft_client::RaftClient::new(channel);
    let other = id ^ 1;
    let mut request = tonic::Request::new(weft_api::proto::raft::RaftPayload { data: vec![0; 8] });
    request.metadata_mut().insert("x-weft-raft-target", other.into());
    let refused = raft.vote(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&format!("not server {other}")), "{}", refused.message());
    println!("a vote meant for server {other}, sent to server {id}: {}", refused.message());
}
