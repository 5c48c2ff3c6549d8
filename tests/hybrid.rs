//! The hybrid mesh end to end: Weft servers, "VM" hosts and "pod" hosts,
//! each in a network namespace of its own, on three networks joined by a
//! router namespace, with addresses from 198.18.0.0/15 (reserved for
//! benchmarks, so never a real network). The VM agents run services from
//! config files (examples/hybrid/vm); the pod agents run in Kubernetes mode
//! (`weft agent --k8s`) with the environment the sidecar injector gives
//! them. The apps are examples/hybrid's counting (on a VM) and dashboard (in
//! pods).
//!
//! The VM and pod networks do not route to each other: the router refuses
//! to forward between them. Each has a mesh gateway host on its edge, with
//! one leg in its network and one on a fourth, "WAN" network
//! (198.18.3.0/24) that both can reach; calls between VMs and pods cross
//! through the destination network's gateway.
//!
//! Shown: a VM can reach no pod directly; before the gateways run, a VM
//! service cannot call a pod service; with them, a VM service calls a pod
//! service and the pod service calls a VM service, through their sidecars
//! and the gateways; DNS on each side resolves the other's services;
//! intentions decide; a registration on a VM becomes callable from a pod
//! (timed); a pod with transparent proxying (iptables, as the injected
//! weft-init sets it up) reaches a VM service at its own address; cutting the server network leaves existing routes working from
//! the agents' and sidecars' copies; losing one server of three leaves the
//! mesh working and writable.
//!
//! RPC is TLS everywhere, with no plaintext fallback: the servers present
//! certificates made with `weft tls` and refuse callers without one (but
//! for discovery and enrollment); every other agent, VM, pod or gateway
//! host, starts with nothing but a join token of its own, enrolls, and
//! calls with the certificate it got.
//!
//! Needs root and `ip netns` (iproute2), iptables, setpriv (util-linux),
//! curl, dig and python3; without them the test says why and passes, unless
//! `WEFT_CI` is set (`.ci/run`), where it fails instead.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::netns::{curl_in, dig_in, exec_in, spawn_in, weft_in, Network};
use support::{eventually, weft_bin, Process};

/// The hosts on each network.
const SERVERS: [&str; 3] = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];
const VMS: [&str; 2] = ["198.18.1.11", "198.18.1.12"];
const PODS: [&str; 2] = ["198.18.2.11", "198.18.2.12"];
/// A pod with transparent proxying.
const TRANSPARENT_POD: &str = "198.18.2.13";
/// The mesh gateway hosts: (network, address in it, address on the WAN).
const GATEWAYS: [(&str, &str, &str); 2] =
    [("vms", "198.18.1.21", "198.18.3.21"), ("pods", "198.18.2.21", "198.18.3.22")];
/// Where mesh gateways listen (Consul's default).
const GATEWAY_PORT: &str = "8443";

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hybrid").join(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_mesh_of_vms_and_pods_across_network_namespaces() {
    let tools = [("curl", "--version"), ("dig", "-v"), ("python3", "--version"), ("iptables", "--version")];
    if support::netns::skip("the hybrid test", &[tools.as_slice(), &[("setpriv", "--version")]].concat()) {
        return;
    }
    let dir = tempfile::Builder::new().prefix("weft-hybrid-").tempdir().unwrap();
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let mut net = Network::new("wft");
    net.router(&[
        ("br-srv", "198.18.0.1/24"),
        ("br-vm", "198.18.1.1/24"),
        ("br-pod", "198.18.2.1/24"),
        ("br-wan", "198.18.3.1/24"),
    ]);
    net.prohibit("br-vm", "198.18.2.0/24");
    net.prohibit("br-pod", "198.18.1.0/24");
    let servers: Vec<String> =
        SERVERS.iter().enumerate().map(|(i, ip)| net.host(&format!("s{}", i + 1), "br-srv", ip)).collect();
    let vms: Vec<String> =
        VMS.iter().enumerate().map(|(i, ip)| net.host(&format!("vm{}", i + 1), "br-vm", ip)).collect();
    let pods: Vec<String> =
        PODS.iter().enumerate().map(|(i, ip)| net.host(&format!("pod{}", i + 1), "br-pod", ip)).collect();
    let edges: Vec<String> = GATEWAYS
        .iter()
        .zip(["br-vm", "br-pod"])
        .map(|((network, lan, wan), bridge)| net.edge_host(&format!("gw-{network}"), bridge, lan, "br-wan", wan))
        .collect();
    let join: Vec<String> = SERVERS.iter().map(|ip| format!("{ip}:8300")).collect();
    let mut processes: Vec<Option<Process>> = Vec::new();

    // Three servers on their network, with certificates from an RPC CA.
    let tls_configs = support::netns::server_tls_configs(dir.path(), 3);
    for (i, (ns, ip)) in servers.iter().zip(SERVERS).enumerate() {
        let data = dir.path().join(format!("s{}", i + 1));
        let mut args = vec!["agent", "--server", "--bootstrap-expect", "3", "--bind", ip, "--node"];
        let name = format!("s{}", i + 1);
        args.push(&name);
        args.extend(["--data-dir", data.to_str().unwrap()]);
        for other in join.iter().filter(|j| !j.starts_with(ip)) {
            args.extend(["--retry-join", other]);
        }
        args.extend(["--config-file", tls_configs[i].to_str().unwrap()]);
        processes.push(Some(spawn_in(ns, weft_bin(), &args, &[], &log(&name))));
    }
    eventually("the servers to elect a leader", Duration::from_secs(60), || async {
        let (_, leader) = weft_in(&servers[0], &["operator", "raft", "list-peers"]);
        leader.contains("leader").then_some(())
    })
    .await;
    for (source, destination) in [("dashboard", "counting"), ("frontend", "dashboard")] {
        let (ok, out) = weft_in(&servers[0], &["intention", "create", "--allow", source, destination]);
        assert!(ok, "{out}");
    }
    // Every other agent's one-time join token, made on a server.
    let token = |name: &str| {
        let (ok, out) = weft_in(&servers[0], &["operator", "join-token", "create", "--description", name]);
        assert!(ok, "a join token for {name}: {out}");
        out.trim().to_owned()
    };

    // Two VMs: agents with services from config files; counting's app on vm1.
    let vm_config = |name: &str, services: &[&str]| {
        let config = dir.path().join(format!("{name}.d"));
        std::fs::create_dir_all(&config).unwrap();
        for service in services {
            std::fs::copy(example(&format!("vm/{service}.hcl")), config.join(format!("{service}.hcl"))).unwrap();
        }
        config
    };
    let vm_configs = [vm_config("vm1", &[]), vm_config("vm2", &["frontend"])];
    for (i, (ns, ip)) in vms.iter().zip(VMS).enumerate() {
        let name = format!("vm{}", i + 1);
        let data = dir.path().join(&name);
        let mut args = vec!["agent", "--node", &name, "--bind", ip, "--data-dir", data.to_str().unwrap()];
        args.extend(["--network", "vms", "--config-dir", vm_configs[i].to_str().unwrap()]);
        let token = token(&name);
        args.extend(["--join-token", &token]);
        processes.push(Some(spawn_in(ns, weft_bin(), &args, &[], &log(&name))));
    }
    let counting_app = example("counting.py");
    processes.push(Some(spawn_in(&vms[0], "python3", &[counting_app.to_str().unwrap()], &[], &log("counting"))));

    // Two pods: agents in Kubernetes mode, as the injector starts them, and the dashboard.
    let dashboard_app = example("dashboard.py");
    for (i, (ns, ip)) in pods.iter().zip(PODS).enumerate() {
        let name = format!("dashboard-7d9f-{i}");
        let data = dir.path().join(&name);
        let env = [
            ("WEFT_POD_NAME", name.as_str()),
            ("WEFT_POD_NAMESPACE", "shop"),
            ("WEFT_POD_IP", ip),
            ("WEFT_NODE_NAME", "k8s-node-1"),
            ("WEFT_SERVICE_NAME", "dashboard"),
            ("WEFT_SERVICE_PORT", "9002"),
            ("WEFT_SERVICE_UPSTREAMS", "counting:9191"),
        ];
        let mut args = vec!["agent", "--k8s", "--network", "pods", "--data-dir", data.to_str().unwrap()];
        let token = token(&name);
        args.extend(["--join-token", &token]);
        processes.push(Some(spawn_in(ns, weft_bin(), &args, &env, &log(&name))));
        processes.push(Some(spawn_in(
            ns,
            "python3",
            &[dashboard_app.to_str().unwrap()],
            &[],
            &log(&format!("app-{i}")),
        )));
    }
    for pod in &pods {
        eventually("the pod's sidecar to be ready (weft k8s ready)", Duration::from_secs(60), || async {
            let (ok, _) = exec_in(pod, weft_bin(), &["k8s", "ready", "--service", "dashboard"]);
            ok.then_some(())
        })
        .await;
    }

    // No route from the VMs to the pods: a pod's sidecar (listening) is out of reach.
    let connect = format!("import socket; socket.create_connection(('{}', 20000), 3)", PODS[0]);
    let direct =
        Command::new("ip").args(["netns", "exec", &vms[0], "python3", "-c", &connect]).output().expect("python3");
    let refused = String::from_utf8_lossy(&direct.stderr).lines().last().unwrap_or_default().to_owned();
    println!("vm1 -> pod1's sidecar, directly: {refused}");
    assert!(refused.contains("No route to host"), "{refused}");

    // A client agent answers for the servers over RPC (their HTTP APIs are on their own loopback).
    let (ok, peers) = weft_in(&vms[0], &["operator", "raft", "list-peers"]);
    assert!(ok && SERVERS.iter().all(|ip| peers.contains(ip)) && peers.contains("leader"), "{peers}");

    // No gateways yet: frontend (VM) sees the dashboard's pods in the catalog but cannot reach them.
    eventually("vm2 to see both dashboard pods", Duration::from_secs(60), || async {
        (dig_in(&vms[1], "dashboard.service.weft") == [PODS[0], PODS[1]]).then_some(())
    })
    .await;
    let dashboard_endpoints = || {
        let (ok, dump) = weft_in(&vms[1], &["proxy", "config-dump", "--sidecar-for", "frontend"]);
        let dump: serde_json::Value = serde_json::from_str(&dump).ok().filter(|_| ok)?;
        Some(dump["upstreams"][0]["endpoints"].as_array()?.clone())
    };
    let endpoints =
        eventually("frontend's sidecar to run", Duration::from_secs(60), || async { dashboard_endpoints() }).await;
    assert_eq!(endpoints, Vec::<serde_json::Value>::new(), "no reachable dashboard instance");
    assert_eq!(curl_in(&vms[1], "http://127.0.0.1:9192/").0, 0, "frontend cannot reach the dashboard");

    // A mesh gateway on the edge of each network, next to an agent of that network.
    let mut gateways = Vec::new();
    for (ns, (network, lan, wan)) in edges.iter().zip(GATEWAYS) {
        let name = format!("gw-{network}");
        let data = dir.path().join(&name);
        let mut args = vec!["agent", "--node", &name, "--bind", lan, "--network", network];
        args.extend(["--data-dir", data.to_str().unwrap()]);
        let token = token(&name);
        args.extend(["--join-token", &token]);
        gateways.push(spawn_in(ns, weft_bin(), &args, &[], &log(&name)));
        eventually("the gateway host's agent to answer", Duration::from_secs(60), || async {
            let (status, _) = curl_in(ns, "http://127.0.0.1:8500/v1/agent/self");
            (status == 200).then_some(())
        })
        .await;
        let wan = format!("{wan}:{GATEWAY_PORT}");
        let args = ["connect", "gateway", "--kind", "mesh", "--register", "--address", lan, "--port", GATEWAY_PORT];
        let args = [&args[..], &["--admin-bind", "127.0.0.1:19000"]].concat();
        gateways.push(spawn_in(
            ns,
            weft_bin(),
            &[&args[..], &["--wan-address", &wan]].concat(),
            &[],
            &log(&format!("{name}-proxy")),
        ));
    }

    let endpoints =
        eventually("frontend's sidecar to reach the pods through their gateway", Duration::from_secs(60), || async {
            dashboard_endpoints().filter(|e| e.len() == 2)
        })
        .await;
    let through = format!("{}:{GATEWAY_PORT}", GATEWAYS[1].2);
    assert!(endpoints.iter().all(|e| e["gateway"] == through.as_str()), "{endpoints:?}");

    for ns in &edges {
        eventually("the mesh gateway to be ready", Duration::from_secs(60), || async {
            (curl_in(ns, "http://127.0.0.1:19000/ready").0 == 200).then_some(())
        })
        .await;
    }
    // A registration on a VM, callable from a pod: timed.
    let registered = Instant::now();
    let (ok, out) = weft_in(&vms[0], &["services", "register", example("vm/counting.hcl").to_str().unwrap()]);
    assert!(ok, "{out}");
    let answer = eventually("counting (VM) to answer the dashboard (pod)", Duration::from_secs(60), || async {
        let (status, body) = curl_in(&pods[0], "http://127.0.0.1:9191/");
        (status == 200).then_some(body)
    })
    .await;
    let callable = registered.elapsed();
    assert!(answer.contains("\"count\""), "{answer}");
    println!("registration on vm1 to callable from pod1: {callable:?}");

    // VM -> pod -> VM: frontend's upstream reaches the dashboard, which asks counting.
    let answer = eventually("frontend (VM) to reach the dashboard (pod)", Duration::from_secs(60), || async {
        let (status, body) = curl_in(&vms[1], "http://127.0.0.1:9192/");
        (status == 200).then_some(body)
    })
    .await;
    assert!(answer.starts_with("dashboard: count="), "{answer}");
    let calls = |n: usize| (0..n).filter(|_| curl_in(&vms[1], "http://127.0.0.1:9192/").0 == 200).count();
    let steady = calls(20);
    println!("VM -> pod -> VM calls: {steady}/20 succeeded");
    assert_eq!(steady, 20);

    // DNS on each side resolves the other's services.
    assert_eq!(dig_in(&pods[0], "counting.service.weft"), [VMS[0]]);
    assert_eq!(dig_in(&vms[1], "dashboard.service.weft"), [PODS[0], PODS[1]]);

    // A pod with transparent proxying: weft-init's rules, then the agent (as root here, the
    // proxy's uid, so its own traffic is not redirected). Its app (uid 1000) calls counting at
    // the address DNS gives, a VM's, which no pod can route to: the redirect hands the
    // connection to the sidecar, and the mesh (through the VMs' gateway) carries it.
    let tp = net.host("pod3", "br-pod", TRANSPARENT_POD);
    let (ok, out) = exec_in(&tp, weft_bin(), &["k8s", "redirect-traffic", "--proxy-uid", "0"]);
    assert!(ok, "redirect-traffic: {out}");
    let (ok, out) = exec_in(&tp, weft_bin(), &["k8s", "redirect-traffic", "--proxy-uid", "0"]);
    assert!(ok, "redirect-traffic twice: {out}");
    let (_, rules) = exec_in(&tp, "iptables", &["-t", "nat", "-S"]);
    assert_eq!(rules.matches("-j WEFT_OUTPUT").count(), 1, "one jump after two runs: {rules}");
    let data = dir.path().join("tp-client-0");
    let env = [
        ("WEFT_POD_NAME", "tp-client-0"),
        ("WEFT_POD_NAMESPACE", "shop"),
        ("WEFT_POD_IP", TRANSPARENT_POD),
        ("WEFT_NODE_NAME", "k8s-node-1"),
        ("WEFT_SERVICE_NAME", "tp-client"),
        ("WEFT_SERVICE_UPSTREAMS", ""),
        ("WEFT_TRANSPARENT_PROXY", "true"),
    ];
    let mut args = vec!["agent", "--k8s", "--network", "pods", "--data-dir", data.to_str().unwrap()];
    let tp_token = token("tp-client-0");
    args.extend(["--join-token", &tp_token]);
    let _transparent_agent = spawn_in(&tp, weft_bin(), &args, &env, &log("tp-client-0"));
    let (ok, out) = weft_in(&servers[0], &["intention", "create", "--allow", "tp-client", "counting"]);
    assert!(ok, "{out}");
    eventually("the transparent pod's sidecar to be ready", Duration::from_secs(60), || async {
        exec_in(&tp, weft_bin(), &["k8s", "ready", "--service", "tp-client"]).0.then_some(())
    })
    .await;
    let counting = format!("http://{}:9003/", dig_in(&tp, "counting.service.weft")[0]);
    let app_get = |url: &str| {
        let args =
            ["--reuid=1000", "--regid=1000", "--clear-groups", "curl", "-s", "-m", "5", "-w", "\n%{http_code}", url];
        let (_, out) = exec_in(&tp, "setpriv", &args);
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse::<u16>().unwrap_or(0), body.to_owned())
    };
    let (_, body) =
        eventually("the pod's app to reach counting at its VM address", Duration::from_secs(60), || async {
            Some(app_get(&counting)).filter(|(status, _)| *status == 200)
        })
        .await;
    assert!(body.contains("\"count\""), "{body}");
    let transparent_calls = (0..10).filter(|_| app_get(&counting).0 == 200).count();
    println!("transparent pod -> {counting} (a VM, no route): {transparent_calls}/10 calls answered");
    assert_eq!(transparent_calls, 10);
    assert_eq!(curl_in(&tp, &counting).0, 0, "the proxy's own uid is not redirected, and has no route to a VM");
    // Redirected traffic is judged like any other: counting's sidecar refuses it once denied.
    let (ok, out) = weft_in(&servers[0], &["intention", "create", "--deny", "--replace", "tp-client", "counting"]);
    assert!(ok, "{out}");
    eventually("the deny to stop the transparent pod's calls", Duration::from_secs(30), || async {
        (app_get(&counting).0 != 200).then_some(())
    })
    .await;

    // Intentions decide: without dashboard -> counting, the dashboard cannot count.
    let (ok, out) = weft_in(&servers[0], &["intention", "create", "--deny", "--replace", "dashboard", "counting"]);
    assert!(ok, "{out}");
    let denied = eventually("the deny to reach the pods' sidecars", Duration::from_secs(30), || async {
        let (status, body) = curl_in(&vms[1], "http://127.0.0.1:9192/");
        (status == 503).then_some(body)
    })
    .await;
    assert!(denied.contains("counting unreachable"), "{denied}");
    let (ok, out) = weft_in(&servers[0], &["intention", "create", "--allow", "--replace", "dashboard", "counting"]);
    assert!(ok, "{out}");
    eventually("the allow to come back", Duration::from_secs(30), || async {
        (curl_in(&vms[1], "http://127.0.0.1:9192/").0 == 200).then_some(())
    })
    .await;

    // The servers' network cut: routes keep working from the copies the agents and sidecars hold.
    net.bridge("br-srv", false);
    let cut = calls(20);
    println!("with the server network down: {cut}/20 calls succeeded");
    net.bridge("br-srv", true);
    assert_eq!(cut, 20, "existing routes work without the servers");

    // One server of three killed: the mesh works and still takes writes.
    processes[2] = None;
    let after = calls(10);
    println!("with one server killed: {after}/10 calls succeeded");
    assert_eq!(after, 10);
    let (ok, out) = weft_in(&servers[0], &["intention", "create", "--allow", "frontend", "counting"]);
    assert!(ok, "a write with two of three servers: {out}");

    // The pods' gateway gone: the VMs cannot reach the pods at all.
    gateways.truncate(2);
    let (status, body) =
        eventually("frontend's calls to fail without the pods' gateway", Duration::from_secs(30), || async {
            Some(curl_in(&vms[1], "http://127.0.0.1:9192/")).filter(|(status, _)| *status != 200)
        })
        .await;
    // The dashboard is a tcp service: frontend's sidecar closes the connection (curl: status 0).
    println!("without the pods' gateway, frontend -> dashboard: status {status} {}", body.trim());
    drop(gateways);
    drop(processes);
}
