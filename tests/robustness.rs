//! Linearizability under faults, in the manner of Jepsen and etcd's
//! robustness tests (issue 19): three servers, each in a network namespace
//! of its own with its data directory on a tmpfs; concurrent clients doing
//! KV put, get (`?consistent`), check-and-set and delete against all three;
//! a nemesis that kills, pauses, partitions (one server from the others,
//! a bridge, one way only), fills a disk and restarts servers. Every
//! operation is recorded with its start, its end and what it returned, and
//! the history is checked for linearizability, each key a register with
//! check-and-set (`weft_lincheck`, WGL with memoization).
//!
//! A check-and-set by `ModifyIndex` is a check-and-set by value here,
//! because every write writes a value never written before: the index a
//! client read with a value is current exactly when that value is.
//! A write that failed or timed out may or may not have happened, and the
//! checker treats it so. At the end every fault is healed and every key read
//! once more, so a lost write shows as a read that no order explains.
//!
//! CI runs a short seed (`WEFT_ROBUSTNESS_SECS`, default 40 s of load);
//! `bench/robustness.sh` runs a long one. It prints the operations, the
//! faults injected, the failovers (kill of the leader → the first write
//! acknowledged after it), and `linearizable: yes`.
//!
//! Needs root, iproute2, iptables and curl (see `support::netns`).

mod support;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::netns::{exec_in, must, spawn_in, Network};
use support::{weft_bin, Process};
use weft_api::client::HttpClient;
use weft_lincheck::{check, Event, Op, Outcome, Ret, Verdict};

const SERVERS: [&str; 3] = ["198.18.50.11", "198.18.50.12", "198.18.50.13"];
const KEYS: usize = 10;
const CLIENTS: u32 = 6;
/// How long a client waits for an answer before it counts the operation
/// as unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long each fault lasts, and the calm after it is healed.
const FAULT: Duration = Duration::from_secs(3);
const CALM: Duration = Duration::from_secs(2);
/// States the checker may explore per key before it gives up.
const CHECK_BUDGET: usize = 4_000_000;

fn key(n: usize) -> String {
    format!("jepsen/k{n:02}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    PauseLeader,
    IsolateLeader,
    Bridge,
    LeaderHearsNothing,
    DiskFull,
    KillOne,
    RestartAll,
}

const FAULTS: [Fault; 8] = [
    Fault::KillLeader,
    Fault::PauseLeader,
    Fault::IsolateLeader,
    Fault::Bridge,
    Fault::LeaderHearsNothing,
    Fault::DiskFull,
    Fault::KillOne,
    Fault::RestartAll,
];

/// The servers, their namespaces, data directories (each a tmpfs) and logs.
struct Servers {
    dir: tempfile::TempDir,
    net: Network,
    tls: Vec<PathBuf>,
    processes: Vec<Option<Process>>,
}

/// The test's panic message, printed again after the servers' logs: CI
/// shows the tail of a failed test's output.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

fn remember_failure() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        *FAILURE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(panic.to_string());
        report(panic);
    }));
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.processes.clear();
        if std::thread::panicking() || std::env::var_os("WEFT_TEST_LOGS").is_some() {
            for i in 0..3 {
                eprintln!("==> s{}:\n{}", i + 1, self.log(i));
            }
        }
        if let Some(failure) = FAILURE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            eprintln!("==> the test failed (the servers' logs are above): {failure}");
        }
        for i in 0..3 {
            let _ = Command::new("umount").arg("-l").arg(self.data_dir(i)).status();
        }
    }
}

impl Servers {
    fn ns(&self, i: usize) -> String {
        self.net.ns(&format!("s{}", i + 1))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{}", i + 1))
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("s{}.log", i + 1))).unwrap_or_default()
    }

    fn start(&mut self, i: usize) {
        let (name, data) = (format!("s{}", i + 1), self.data_dir(i));
        let ip = SERVERS[i];
        let mut args = vec!["agent", "--server", "--bootstrap-expect", "3", "--bind", ip, "--client", ip];
        args.extend(["--node", &name, "--data-dir", data.to_str().unwrap()]);
        args.extend(["--config-file", self.tls[i].to_str().unwrap()]);
        let peers: Vec<String> = SERVERS.iter().filter(|peer| **peer != ip).map(|p| format!("{p}:8300")).collect();
        for peer in &peers {
            args.extend(["--retry-join", peer]);
        }
        let log = self.dir.path().join(format!("{name}.log"));
        self.processes[i] = Some(spawn_in(&self.ns(i), weft_bin(), &args, &[], &log));
    }

    fn running(&mut self, i: usize) -> bool {
        self.processes[i].as_mut().is_some_and(|p| matches!(p.0.try_wait(), Ok(None)))
    }

    fn signal(&self, i: usize, signal: &str) {
        if let Some(process) = &self.processes[i] {
            let _ = Command::new("kill").args([signal, &process.0.id().to_string()]).status();
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.processes[i].take() {
            let _ = process.0.kill();
            let _ = process.0.wait();
        }
    }

    /// Starts every server that is not running.
    fn start_stopped(&mut self) {
        for i in 0..3 {
            if !self.running(i) {
                self.processes[i] = None;
                self.start(i);
            }
        }
    }

    /// The index of the server the others follow, asked through the router.
    fn leader(&self) -> Option<usize> {
        SERVERS.iter().find_map(|ip| {
            let leader = self.leader_seen_by(ip);
            SERVERS.iter().position(|s| !leader.is_empty() && leader.starts_with(&format!("{s}:")))
        })
    }

    /// What the server at `ip` answers on `/v1/status/leader`, asked through the router.
    fn leader_seen_by(&self, ip: &str) -> String {
        let url = format!("http://{ip}:8500/v1/status/leader");
        let (status, out) = exec_in(&self.net.ns("router"), "curl", &["-sS", "-m", "2", &url]);
        match status {
            true => out.trim().trim_matches('"').to_owned(),
            false => String::new(),
        }
    }

    /// Each server: running or not, and whom it names as leader (for a failure's message).
    fn views(&mut self) -> String {
        let running: Vec<bool> = (0..3).map(|i| self.running(i)).collect();
        let views = SERVERS.iter().zip(running).enumerate().map(|(i, (ip, running))| {
            format!(
                "s{} ({}) names {:?} as leader",
                i + 1,
                if running { "running" } else { "stopped" },
                self.leader_seen_by(ip)
            )
        });
        views.collect::<Vec<_>>().join("; ")
    }

    /// Drops packets from `from` at server `i` (and, with `both_ways`, to it).
    fn cut(&self, i: usize, from: usize, both_ways: bool) {
        let ns = self.ns(i);
        must("ip", &["netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", SERVERS[from], "-j", "DROP"]);
        if both_ways {
            must("ip", &["netns", "exec", &ns, "iptables", "-A", "OUTPUT", "-d", SERVERS[from], "-j", "DROP"]);
        }
    }

    fn heal(&self) {
        for i in 0..3 {
            for chain in ["INPUT", "OUTPUT"] {
                must("ip", &["netns", "exec", &self.ns(i), "iptables", "-F", chain]);
            }
        }
    }

    /// Fills server `i`'s tmpfs.
    fn fill_disk(&self, i: usize) -> PathBuf {
        let filler = self.data_dir(i).join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=1M"])
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

/// What one fault did, for the report.
struct Injected {
    fault: Fault,
    target: Option<usize>,
    at: Duration,
    /// For kills of the leader while the others were up: when the kill
    /// happened (the history's clock).
    leader_killed_at: Option<u64>,
    /// The servers found stopped when the fault was healed (a full disk
    /// stops one; kills stop theirs).
    stopped: Vec<usize>,
}

/// Runs one fault: inject, wait, heal; servers that stopped are started again.
async fn inject(servers: &mut Servers, fault: Fault, rng: &mut StdRng, clock: Instant) -> Injected {
    let leader = servers.leader();
    let target = match fault {
        Fault::KillOne | Fault::DiskFull => Some(rng.gen_range(0..3)),
        Fault::RestartAll | Fault::Bridge => None,
        _ => leader,
    };
    let at = clock.elapsed();
    let mut injected = Injected { fault, target, at, leader_killed_at: None, stopped: Vec::new() };
    let mut filler = None;
    match (fault, target) {
        (Fault::KillLeader | Fault::KillOne, Some(i)) => {
            // A failover is only timed with the two others up to elect.
            if leader == Some(i) && (0..3).all(|o| servers.running(o)) {
                injected.leader_killed_at = Some(clock.elapsed().as_nanos() as u64);
            }
            servers.kill(i);
        }
        (Fault::PauseLeader, Some(i)) => servers.signal(i, "-STOP"),
        (Fault::IsolateLeader, Some(i)) => {
            for other in (0..3).filter(|o| *o != i) {
                servers.cut(i, other, true);
                servers.cut(other, i, true);
            }
        }
        (Fault::LeaderHearsNothing, Some(i)) => {
            for other in (0..3).filter(|o| *o != i) {
                servers.cut(i, other, false);
            }
        }
        (Fault::Bridge, _) => {
            // 0 and 2 cannot reach each other; 1 reaches both.
            servers.cut(0, 2, true);
            servers.cut(2, 0, true);
        }
        (Fault::DiskFull, Some(i)) => filler = Some(servers.fill_disk(i)),
        (Fault::RestartAll, _) => {
            for i in 0..3 {
                servers.signal(i, "-TERM");
            }
        }
        _ => {}
    }
    tokio::time::sleep(FAULT).await;
    if let (Fault::DiskFull, Some(i)) = (fault, target) {
        // It stops at its next write to the full disk (tests/durability.rs
        // shows how); give it the time to get one.
        let deadline = Instant::now() + Duration::from_secs(10);
        while servers.running(i) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let (Fault::PauseLeader, Some(i)) = (fault, target) {
        servers.signal(i, "-CONT");
    }
    injected.stopped = (0..3).filter(|i| !servers.running(*i)).collect();
    servers.heal();
    if let Some(filler) = filler {
        let _ = std::fs::remove_file(filler);
    }
    servers.start_stopped();
    tokio::time::sleep(CALM).await;
    injected
}

/// One client's loop: random operations on random keys, against one server
/// and, after a failure, the next; every operation recorded.
async fn client(id: u32, clock: Instant, stop: Arc<AtomicBool>, values: Arc<AtomicU64>, seed: u64) -> Vec<Event> {
    // A seed replays the same choices.
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut server = id as usize % 3;
    let mut history = Vec::new();
    // What this client last read of each key: (value, ModifyIndex).
    let mut seen: BTreeMap<String, Option<(u64, u64)>> = BTreeMap::new();
    let now = || clock.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let http = HttpClient::new(&format!("{}:8500", SERVERS[server]), None).with_timeout(CLIENT_TIMEOUT);
        let key = key(rng.gen_range(0..KEYS));
        let value = values.fetch_add(1, Ordering::Relaxed);
        let invoked = now();
        let (op, outcome) = match rng.gen_range(0..10) {
            0..=3 => {
                let response = http.get(&format!("/v1/kv/{key}?consistent")).await;
                let read = match response {
                    Ok(r) if r.status == 404 => Some(None),
                    Ok(r) if r.status == 200 => read_entry(&r.body),
                    _ => None,
                };
                if let Some(read) = read {
                    seen.insert(key.clone(), read);
                }
                (Op::Get, read.map_or(Outcome::Unknown, |read| Outcome::Returned(Ret::Value(read.map(|(v, _)| v)))))
            }
            4..=6 => {
                let response = http.put(&format!("/v1/kv/{key}"), value.to_string()).await;
                (Op::Put(value), written(response, |ok| ok.then_some(Ret::Ok)))
            }
            7..=8 => {
                let (expected, index) = match seen.get(&key) {
                    Some(Some((v, index))) => (Some(*v), *index),
                    _ => (None, 0),
                };
                let response = http.put(&format!("/v1/kv/{key}?cas={index}"), value.to_string()).await;
                (Op::Cas { expected, new: value }, written(response, |ok| Some(Ret::Cas(ok))))
            }
            _ => {
                let response = http.delete(&format!("/v1/kv/{key}")).await;
                (Op::Delete, written(response, |ok| ok.then_some(Ret::Ok)))
            }
        };
        if outcome == Outcome::Unknown {
            server = (server + 1) % 3;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        history.push(Event { client: id, key, invoked, completed: now(), op, outcome });
    }
    history
}

/// The outcome of a write: `answer(true|false)` for a 200 whose body says
/// so, unknown for anything else (it may have been applied).
fn written(
    response: Result<weft_api::client::Response, weft_api::client::ClientError>,
    answer: impl Fn(bool) -> Option<Ret>,
) -> Outcome {
    match response {
        Ok(r) if r.status == 200 => match r.body.trim_ascii() {
            b"true" => answer(true),
            b"false" => answer(false),
            _ => None,
        }
        .map_or(Outcome::Unknown, Outcome::Returned),
        _ => Outcome::Unknown,
    }
}

/// The value (a number written by a client) and ModifyIndex of a KV read.
fn read_entry(body: &[u8]) -> Option<Option<(u64, u64)>> {
    use base64::Engine;
    let entries: serde_json::Value = serde_json::from_slice(body).ok()?;
    let entry = entries.as_array()?.first()?;
    let value = base64::engine::general_purpose::STANDARD.decode(entry["Value"].as_str()?).ok()?;
    let value: u64 = std::str::from_utf8(&value).ok()?.parse().ok()?;
    Some(Some((value, entry["ModifyIndex"].as_u64()?)))
}

/// Runs `work` on a thread of its own inside the network namespace `ns`
/// (sockets it opens are that namespace's), with a runtime of its own.
fn in_namespace<T, F>(ns: &str, work: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("the namespace");
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns into the router's namespace");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(work())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_histories_under_kills_pauses_partitions_and_full_disks_are_linearizable() {
    let tools = [("iptables", "--version"), ("curl", "--version")];
    if support::netns::skip("the robustness test", &tools) {
        return;
    }
    let seconds: u64 = std::env::var("WEFT_ROBUSTNESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let seed: u64 = std::env::var("WEFT_ROBUSTNESS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(19);
    remember_failure();
    let dir = tempfile::Builder::new().prefix("weft-robustness-").tempdir().unwrap();
    let mut net = Network::new("wrb");
    net.router(&[("br-srv", "198.18.50.1/24")]);
    for (i, ip) in SERVERS.iter().enumerate() {
        net.host(&format!("s{}", i + 1), "br-srv", ip);
    }
    let tls = support::netns::server_tls_configs(dir.path(), 3);
    let mut servers = Servers { dir, net, tls, processes: (0..3).map(|_| None).collect() };
    for i in 0..3 {
        std::fs::create_dir(servers.data_dir(i)).unwrap();
        let data = servers.data_dir(i);
        must("mount", &["-t", "tmpfs", "-o", "size=96m", "tmpfs", data.to_str().unwrap()]);
    }
    for i in 0..3 {
        servers.start(i);
    }
    support::eventually("the servers to elect a leader", Duration::from_secs(60), || async { servers.leader() }).await;

    // The clients, in the router's namespace (they reach every server; the
    // partitions are between servers).
    let clock = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let values = Arc::new(AtomicU64::new(1));
    let histories: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (stop, values) = (stop.clone(), values.clone());
            in_namespace(&servers.net.ns("router"), move || client(id, clock, stop, values, seed))
        })
        .collect();

    // The nemesis: every kind of fault in a seeded order, until the time is up.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut injected = Vec::new();
    let mut order = FAULTS.to_vec();
    while clock.elapsed() < Duration::from_secs(seconds) {
        if order.is_empty() {
            order = FAULTS.to_vec();
        }
        let fault = order.remove(rng.gen_range(0..order.len()));
        injected.push(inject(&mut servers, fault, &mut rng, clock).await);
    }
    stop.store(true, Ordering::Relaxed);
    let mut history: Vec<Event> = histories.into_iter().flat_map(|h| h.join().expect("a client")).collect();

    // Healed: every key read once more, from the leader, once it answers.
    servers.heal();
    servers.start_stopped();
    let healed = Instant::now();
    let leader = loop {
        if let Some(leader) = servers.leader() {
            break leader;
        }
        assert!(healed.elapsed() < Duration::from_secs(60), "no leader 60 s after the faults: {}", servers.views());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let final_reads = Arc::new(Mutex::new(Vec::new()));
    let reads = final_reads.clone();
    in_namespace(&servers.net.ns("router"), move || async move {
        let http = HttpClient::new(&format!("{}:8500", SERVERS[leader]), None).with_timeout(CLIENT_TIMEOUT);
        for n in 0..KEYS {
            let key = key(n);
            let mut read = Err(format!("{key}: not read"));
            for _ in 0..50 {
                let invoked = clock.elapsed().as_nanos() as u64;
                let response = http.get(&format!("/v1/kv/{key}?consistent")).await;
                let completed = clock.elapsed().as_nanos() as u64;
                let value = match &response {
                    Ok(r) if r.status == 404 => Some(None),
                    Ok(r) if r.status == 200 => read_entry(&r.body),
                    _ => None,
                };
                if let Some(value) = value {
                    let outcome = Outcome::Returned(Ret::Value(value.map(|(v, _)| v)));
                    read = Ok(Event { client: CLIENTS, key: key.clone(), invoked, completed, op: Op::Get, outcome });
                    break;
                }
                read = Err(match response {
                    Ok(r) => format!("{key}: {} {}", r.status, String::from_utf8_lossy(&r.body)),
                    Err(error) => format!("{key}: {error}"),
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            reads.lock().unwrap().push(read);
        }
    })
    .join()
    .expect("the final reads");
    let final_reads: Result<Vec<Event>, String> =
        std::mem::take(&mut *final_reads.lock().unwrap()).into_iter().collect();
    let final_reads =
        final_reads.unwrap_or_else(|unread| panic!("a key not read from s{} after the faults: {unread}", leader + 1));
    history.extend(final_reads);

    report(&history, &injected, clock);
    for i in 0..3 {
        assert!(!servers.log(i).contains("panicked"), "s{} panicked (its log is below)", i + 1);
    }
    let checking = Instant::now();
    let verdict = check(&history, CHECK_BUDGET);
    println!("checked in {:?}", checking.elapsed());
    assert!(matches!(verdict, Verdict::Linearizable), "{verdict:?}");
    println!("linearizable: yes");
}

/// Prints the operations by kind and outcome, the faults, and the failovers.
fn report(history: &[Event], injected: &[Injected], clock: Instant) {
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for event in history {
        let kind = match event.op {
            Op::Put(_) => "put",
            Op::Get => "get",
            Op::Cas { .. } => "cas",
            Op::Delete => "delete",
        };
        let outcome = match event.outcome {
            Outcome::Returned(Ret::Cas(false)) => "refused (cas)",
            Outcome::Returned(_) => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        };
        *counts.entry((kind, outcome)).or_default() += 1;
    }
    println!("operations: {} in {:?}", history.len(), clock.elapsed());
    for ((kind, outcome), count) in &counts {
        println!("  {kind:<6} {outcome:<14} {count}");
    }
    println!("faults injected: {}", injected.len());
    for fault in injected {
        let target = fault.target.map(|i| format!("s{}", i + 1)).unwrap_or_else(|| "-".into());
        let stopped: Vec<String> = fault.stopped.iter().map(|i| format!("s{}", i + 1)).collect();
        let stopped = if stopped.is_empty() { String::new() } else { format!(" (stopped: {})", stopped.join(", ")) };
        println!("  {:>6.1}s {:?} {target}{stopped}", fault.at.as_secs_f64(), fault.fault);
    }
    for killed_at in injected.iter().filter_map(|f| f.leader_killed_at) {
        let first_write = history
            .iter()
            .filter(|e| e.invoked >= killed_at && !matches!(e.op, Op::Get))
            .filter(|e| matches!(e.outcome, Outcome::Returned(_)))
            .map(|e| e.completed)
            .min();
        match first_write {
            Some(at) => println!(
                "failover: leader killed, first write acknowledged {:?} later",
                Duration::from_nanos(at - killed_at)
            ),
            None => println!("failover: leader killed, no write acknowledged after it"),
        }
    }
}
