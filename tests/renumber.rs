//! Every server comes back at a new address, on real interfaces (issue 22):
//! three servers and two client agents, each host a network namespace of its
//! own, on networks joined by a router namespace. The test writes 1,000
//! keys, stops every server, renumbers their interfaces (two get new
//! addresses on the same network, the third moves to another network
//! altogether), and starts them again with their data directories. A
//! leader must be elected within 10 s, every key must be on every server,
//! and the client agents, which were never restarted, must find the
//! servers again by the names they were given and answer DNS with
//! services registered after the move.
//!
//! Two ways the servers are found, one test each:
//! - by address: the servers retry-join each other's new IP addresses (as
//!   an operator re-provisioning VMs writes them); the client agents follow
//!   names from their hosts' `/etc/hosts`, which provisioning rewrites.
//! - by name, as the Helm chart does it: servers and clients retry-join
//!   `s1.weft.test` .. `s3.weft.test`, served by dnsmasq (a real resolver,
//!   in the router), whose records change between the stop and the start;
//!   no configuration carries an IP address but the server's own `--bind`.
//!
//! Each prints its recovery time: from the servers' start to the first
//! acknowledged write, and from the stop, which includes the renumbering.
//!
//! Needs root, iproute2, curl, dig, dnsmasq and python3 (see
//! `support::netns`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::netns::{curl_in, dig_in, exec_in, spawn_in, weft_in, Network};
use support::{eventually, weft_bin, Process};

/// The servers' first addresses, on the servers' network.
const OLD: [&str; 3] = ["198.18.40.11", "198.18.40.12", "198.18.40.13"];
/// Where they come back: two elsewhere on the same network, the third on
/// another network.
const NEW: [(&str, &str); 3] = [("br-srv", "198.18.40.21"), ("br-srv", "198.18.40.22"), ("br-new", "198.18.41.23")];
/// The client agents' hosts.
const CLIENTS: [&str; 2] = ["198.18.42.11", "198.18.42.12"];
/// The router's address where dnsmasq answers (the by-name test).
const RESOLVER: &str = "198.18.42.1";
const KEYS: usize = 1_000;

/// How the servers and the client agents are told where the servers are.
#[derive(Clone, Copy, PartialEq)]
enum Found {
    ByAddress,
    ByName,
}

fn server_name(i: usize) -> String {
    format!("s{}.weft.test", i + 1)
}

/// `/etc/hosts` lines (or dnsmasq host records) naming the servers at `ips`.
fn hosts(ips: &[&str]) -> String {
    ips.iter().enumerate().map(|(i, ip)| format!("{ip} {}\n", server_name(i))).collect()
}

struct Scenario {
    dir: tempfile::TempDir,
    net: Network,
    servers: Vec<String>,
    clients: Vec<String>,
    resolver: Option<Process>,
    /// Each server's TLS config file.
    tls: Vec<std::path::PathBuf>,
    processes: Vec<Option<Process>>,
}

impl Drop for Scenario {
    /// A failed run (or any, with `WEFT_TEST_LOGS` set) prints the logs of
    /// every process.
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("WEFT_TEST_LOGS").is_some() {
            self.processes.clear();
            self.resolver = None;
            for name in ["s1", "s2", "s3", "c1", "c2", "dnsmasq"] {
                eprintln!("==> {}:\n{}", self.log(name).display(), self.read_log(name));
            }
        }
    }
}

impl Scenario {
    fn log(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts (or restarts) dnsmasq with the servers at `ips`.
    fn resolve_servers_at(&mut self, ips: &[&str]) {
        self.resolver = None;
        let mut args = vec!["--no-daemon".to_owned(), "--no-resolv".into(), "--no-hosts".into()];
        args.extend(["--bind-interfaces".into(), format!("--listen-address={RESOLVER}"), "--user=root".into()]);
        args.extend(["--local-ttl=0".into(), "--pid-file=".into()]);
        args.extend(ips.iter().enumerate().map(|(i, ip)| format!("--host-record={},{ip}", server_name(i))));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let router = self.net.ns("router");
        let log = self.log("dnsmasq");
        self.resolver = Some(spawn_in(&router, "dnsmasq", &args, &[], &log));
    }

    /// Starts server `i` bound to `ip`, joining the others where `peers` says.
    fn start_server(&mut self, i: usize, ip: &str, peers: &[String]) {
        let name = format!("s{}", i + 1);
        let data = self.dir.path().join(&name);
        let config = &self.tls[i];
        let mut args = vec!["agent", "--server", "--bootstrap-expect", "3", "--bind", ip, "--node", &name];
        args.extend(["--data-dir", data.to_str().unwrap(), "--config-file", config.to_str().unwrap()]);
        for (_, peer) in peers.iter().enumerate().filter(|(j, _)| *j != i) {
            args.extend(["--retry-join", peer]);
        }
        let process = spawn_in(&self.servers[i], weft_bin(), &args, &[], &self.log(&name));
        self.processes[i] = Some(process);
    }

    /// Stops server `i` as systemd would (SIGTERM, then waits for it).
    fn stop_server(&mut self, i: usize) {
        let Some(mut process) = self.processes[i].take() else { return };
        let pid = process.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server s{} did not stop within 10 s: {}", i + 1, self.read_log(&format!("s{}", i + 1)));
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }

    /// The leader's address as server `i` sees it (`weft operator raft list-peers`).
    fn leader_seen_by(&self, i: usize) -> Option<String> {
        let (_, peers) = weft_in(&self.servers[i], &["operator", "raft", "list-peers"]);
        let line = peers.lines().find(|line| line.contains("leader"))?;
        line.split_whitespace().nth(2).map(str::to_owned)
    }

    /// Writes `count` keys under `prefix` through the agent in `ns`, in one
    /// process; returns how many were acknowledged.
    fn write_keys(&self, ns: &str, prefix: &str, count: usize) -> usize {
        let script = format!(
            "import http.client\n\
             c = http.client.HTTPConnection('127.0.0.1', 8500, timeout=10)\n\
             ok = 0\n\
             for n in range({count}):\n\
             \x20   c.request('PUT', '/v1/kv/{prefix}%04d' % n, body=b'v%d' % n)\n\
             \x20   r = c.getresponse()\n\
             \x20   ok += r.read().strip() == b'true'\n\
             print(ok)\n"
        );
        let (_, out) = exec_in(ns, "python3", &["-c", &script]);
        out.trim().parse().unwrap_or(0)
    }

    /// How many keys under `prefix` the agent in `ns` holds (a stale read:
    /// its own copy).
    fn keys_held(&self, ns: &str, prefix: &str) -> Option<usize> {
        let (status, body) = curl_in(ns, &format!("http://127.0.0.1:8500/v1/kv/{prefix}?keys&stale"));
        (status == 200).then_some(())?;
        serde_json::from_str::<Vec<String>>(&body).ok().map(|keys| keys.len())
    }

    fn put(&self, ns: &str, key: &str) -> bool {
        let (_, out) = exec_in(ns, "curl", &["-s", "-m", "5", "-X", "PUT", "--data", "v", &kv(key)]);
        out.trim() == "true"
    }

    /// Registers `service` on the client agent in `ns` (at `ip`).
    fn register(&self, ns: &str, service: &str, ip: &str) {
        let body = format!(r#"{{"Name": "{service}", "Address": "{ip}", "Port": 8080}}"#);
        let url = "http://127.0.0.1:8500/v1/agent/service/register";
        let (ok, out) = exec_in(ns, "curl", &["-sf", "-m", "5", "-X", "PUT", "--data", &body, url]);
        assert!(ok, "register {service}: {out}");
    }
}

fn kv(key: &str) -> String {
    format!("http://127.0.0.1:8500/v1/kv/{key}")
}

async fn servers_renumbered(found: Found) {
    if support::netns::skip("the renumbered-servers test", &TOOLS) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::Builder::new().prefix("weft-renumber-").tempdir().unwrap();
    let tag = if found == Found::ByName { "wrn" } else { "wra" };
    let mut net = Network::new(tag);
    net.router(&[("br-srv", "198.18.40.1/24"), ("br-new", "198.18.41.1/24"), ("br-cli", "198.18.42.1/24")]);
    let servers: Vec<String> =
        OLD.iter().enumerate().map(|(i, ip)| net.host(&format!("s{}", i + 1), "br-srv", ip)).collect();
    let clients: Vec<String> =
        CLIENTS.iter().enumerate().map(|(i, ip)| net.host(&format!("c{}", i + 1), "br-cli", ip)).collect();
    let mut scenario = Scenario {
        dir,
        net,
        servers,
        clients,
        resolver: None,
        tls: Vec::new(),
        processes: (0..5).map(|_| None).collect(),
    };
    let names: Vec<String> = (0..3).map(|i| format!("{}:8300", server_name(i))).collect();
    let addresses = |ips: &[&str]| ips.iter().map(|ip| format!("{ip}:8300")).collect::<Vec<_>>();
    match found {
        Found::ByName => {
            scenario.resolve_servers_at(&OLD);
            for host in ["s1", "s2", "s3", "c1", "c2"] {
                scenario.net.etc_file(host, "resolv.conf", &format!("nameserver {RESOLVER}\noptions timeout:1\n"));
                scenario.net.etc_file(host, "hosts", "127.0.0.1 localhost\n");
            }
        }
        Found::ByAddress => {
            for host in ["c1", "c2"] {
                scenario.net.etc_file(host, "hosts", &format!("127.0.0.1 localhost\n{}", hosts(&OLD)));
            }
        }
    }

    // Three servers with certificates from an RPC CA (no IP address in them).
    scenario.tls = support::netns::server_tls_configs(scenario.dir.path(), 3);
    let peers = if found == Found::ByName { names.clone() } else { addresses(&OLD) };
    for (i, ip) in OLD.iter().enumerate() {
        scenario.start_server(i, ip, &peers);
    }
    eventually("the servers to elect a leader", Duration::from_secs(60), || async {
        (0..3).find_map(|i| scenario.leader_seen_by(i))
    })
    .await;

    // Two client agents, each with a join token, following the servers by name.
    for (i, ip) in CLIENTS.iter().enumerate() {
        let name = format!("c{}", i + 1);
        let (ok, token) = weft_in(&scenario.servers[0], &["operator", "join-token", "create", "--description", &name]);
        assert!(ok, "a join token for {name}: {token}");
        let data = scenario.dir.path().join(&name);
        let mut args = vec!["agent", "--node", &name, "--bind", ip, "--data-dir", data.to_str().unwrap()];
        let token = token.trim().to_owned();
        args.extend(["--join-token", &token]);
        for server in &names {
            args.extend(["--retry-join", server]);
        }
        let process = spawn_in(&scenario.clients[i], weft_bin(), &args, &[], &scenario.log(&name));
        scenario.processes[3 + i] = Some(process);
    }
    scenario.register(&scenario.clients[0], "before-move", CLIENTS[0]);
    eventually("the other client agent to answer DNS for a service", Duration::from_secs(30), || async {
        (dig_in(&scenario.clients[1], "before-move.service.weft") == [CLIENTS[0]]).then_some(())
    })
    .await;

    let acknowledged = scenario.write_keys(&scenario.clients[0], "renumber/", KEYS);
    assert_eq!(acknowledged, KEYS, "every write acknowledged before the move");

    // Stop every server; renumber their hosts; tell the resolvers; start them.
    let stopped = Instant::now();
    for i in 0..3 {
        scenario.stop_server(i);
    }
    for (i, (bridge, ip)) in NEW.iter().enumerate() {
        scenario.net.renumber(&format!("s{}", i + 1), bridge, ip);
    }
    let new_ips: Vec<&str> = NEW.iter().map(|(_, ip)| *ip).collect();
    match found {
        Found::ByName => scenario.resolve_servers_at(&new_ips),
        Found::ByAddress => {
            for host in ["c1", "c2"] {
                scenario.net.etc_file(host, "hosts", &format!("127.0.0.1 localhost\n{}", hosts(&new_ips)));
            }
        }
    }
    let peers = if found == Found::ByName { names.clone() } else { addresses(&new_ips) };
    let started = Instant::now();
    for (i, ip) in new_ips.iter().enumerate() {
        scenario.start_server(i, ip, &peers);
    }
    let leader = eventually("a leader at the new addresses", Duration::from_secs(30), || async {
        (0..3).find_map(|i| scenario.leader_seen_by(i).filter(|leader| new_ips.iter().any(|ip| leader.contains(ip))))
    })
    .await;
    let elected = started.elapsed();
    assert!(elected < Duration::from_secs(10), "a leader ({leader}) only after {elected:?}");
    eventually("a write acknowledged by the moved servers", Duration::from_secs(30), || async {
        scenario.put(&scenario.servers[0], "renumber/after").then_some(())
    })
    .await;
    let (recovered, since_stop) = (started.elapsed(), stopped.elapsed());
    println!(
        "{} found again: leader {elected:?} and first acknowledged write {recovered:?} after they started \
         ({since_stop:?} after the stop, renumbering included)",
        if found == Found::ByName { "servers renumbered and renamed in dnsmasq" } else { "servers renumbered" },
    );

    // Every key on every server, and the membership at the new addresses.
    for i in 0..3 {
        eventually(&format!("every key on s{}", i + 1), Duration::from_secs(30), || async {
            (scenario.keys_held(&scenario.servers[i], "renumber/") == Some(KEYS + 1)).then_some(())
        })
        .await;
    }
    eventually("the membership to list every server at its new address", Duration::from_secs(30), || async {
        let (_, listed) = weft_in(&scenario.servers[0], &["operator", "raft", "list-peers"]);
        new_ips.iter().all(|ip| listed.contains(&format!("{ip}:8300"))).then_some(())
    })
    .await;

    // The client agents follow the servers again: a write through each is
    // acknowledged, and a service registered on one after the move is in
    // the other's DNS.
    for (i, client) in scenario.clients.iter().enumerate() {
        eventually(&format!("a write through client agent c{}", i + 1), Duration::from_secs(30), || async {
            scenario.put(client, &format!("renumber/from-c{}", i + 1)).then_some(())
        })
        .await;
    }
    scenario.register(&scenario.clients[0], "after-move", CLIENTS[0]);
    eventually(
        "the other client agent to answer DNS for a service registered after the move",
        Duration::from_secs(30),
        || async { (dig_in(&scenario.clients[1], "after-move.service.weft") == [CLIENTS[0]]).then_some(()) },
    )
    .await;
    assert_eq!(dig_in(&scenario.clients[1], "before-move.service.weft"), [CLIENTS[0]]);
    for i in 0..3 {
        let log = scenario.read_log(&format!("s{}", i + 1));
        assert!(!log.contains("panicked"), "s{}: {log}", i + 1);
    }
}

/// One network-namespace scenario at a time: two at once on two cores would
/// compete for them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TOOLS: [(&str, &str); 4] =
    [("curl", "--version"), ("dig", "-v"), ("python3", "--version"), ("dnsmasq", "--version")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_renumbered_elect_a_leader_keep_every_key_and_client_agents_follow() {
    servers_renumbered(Found::ByAddress).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_found_by_dns_names_whose_records_change_recover_by_themselves() {
    servers_renumbered(Found::ByName).await;
}
