//! The end-to-end harness: real `weft` processes on loopback ports, driven
//! through the HTTP API and the CLI, the way a user runs them.
//!
//! Reads like the scenario: `Cluster::servers(3).await`, `cluster.leader()`,
//! `cluster.kill(i)`, `cluster.start_server(i)`. Waits are assertions with
//! patience (`eventually`), never bare sleeps. Set `WEFT_TEST_PATIENCE` (a
//! multiplier, default 1) on slow machines.
//!
//! Multi-server tests in one binary run one at a time (a process-wide lock),
//! so two clusters never compete for the two cores and flap elections.
//!
//! Clusters run RPC over TLS, as they would anywhere but on one host: the
//! harness makes an RPC CA and each server's certificate with `weft tls`,
//! and each client agent enrolls with a join token made by `weft operator
//! join-token create` on the first server. `Cluster::plaintext(n)` starts
//! servers without TLS (which only loopback allows).
#![allow(dead_code)]

pub mod http;
pub mod netns;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_api::client::{kv_path, HttpClient};

/// The `weft` binary under test.
pub fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

/// The patience multiplier for waits.
pub fn patience() -> u32 {
    std::env::var("WEFT_TEST_PATIENCE").ok().and_then(|p| p.parse().ok()).unwrap_or(1).max(1)
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `limit` (× patience).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit * patience();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {:?} waiting for {what}", limit * patience());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A process's resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The initial management token of clusters made by [`Cluster::with_acl`].
pub const MANAGEMENT_TOKEN: &str = "5fa3c5a2-13c1-4a43-9d0c-6c1d3a1b2f00";

/// A free loopback port (bound, then released for the child to take), never
/// one this test process has handed out before.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<std::sync::Mutex<std::collections::HashSet<u16>>> = OnceLock::new();
    let mut handed_out = HANDED_OUT.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port =
            TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().expect("local addr").port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

fn cluster_lock() -> &'static tokio::sync::Mutex<()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
}

/// One agent's identity and addresses (a server or a client agent); survives restarts.
pub struct AgentSpec {
    pub server: bool,
    pub name: String,
    pub rpc_addr: String,
    pub http_addr: String,
    pub dns_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub extra_args: Vec<String>,
}

/// A set of `weft agent --server` processes on loopback, and client agents
/// joined to them.
pub struct Cluster {
    pub specs: Vec<AgentSpec>,
    children: Vec<Option<Child>>,
    bootstrap_expect: usize,
    dir: tempfile::TempDir,
    /// Where the RPC CA and the servers' certificates are; `None`: plaintext.
    pub tls_dir: Option<PathBuf>,
    /// The management token every harness request carries (a cluster with
    /// ACLs: [`Cluster::with_acl`]).
    pub token: Option<String>,
    /// The `acl` config file every agent gets, in a cluster with ACLs.
    acl_config: Option<String>,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts `n` servers that bootstrap together, and waits for a leader.
    pub async fn servers(n: usize) -> Cluster {
        Self::servers_with(n, &[]).await
    }

    /// Like [`Cluster::servers`], with extra flags for every server.
    pub async fn servers_with(n: usize, extra_args: &[&str]) -> Cluster {
        Self::start(n, extra_args, true).await
    }

    /// `n` servers without TLS on RPC, as only loopback allows.
    pub async fn plaintext(n: usize) -> Cluster {
        Self::start(n, &[], false).await
    }

    /// `n` servers with ACLs on, denying by default; every agent (client
    /// agents too) gets the same `acl` block, and the harness's own requests
    /// carry the initial management token, [`MANAGEMENT_TOKEN`].
    pub async fn with_acl(n: usize) -> Cluster {
        let config = std::env::temp_dir().join(format!("weft-acl-{}.hcl", std::process::id()));
        let hcl = format!(
            "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  enable_token_persistence = true\n  tokens {{\n    initial_management = {MANAGEMENT_TOKEN:?}\n  }}\n}}\n"
        );
        // Tests of one binary share the file, and another test's agents may
        // be reading it: replace it whole (a rename), never truncate it.
        static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = config.with_extension(format!("hcl.{write}.tmp"));
        std::fs::write(&temp, hcl).expect("write the ACL config");
        std::fs::rename(&temp, &config).expect("put the ACL config in place");
        Self::start(n, &["--config-file", config.to_str().expect("a UTF-8 path")], true).await
    }

    async fn start(n: usize, extra_args: &[&str], tls: bool) -> Cluster {
        let acl_config = extra_args.iter().find(|a| a.contains("weft-acl-")).map(|a| a.to_string());
        let serial = cluster_lock().lock().await;
        let dir = tempfile::Builder::new().prefix("weft-e2e-").tempdir().expect("temp dir");
        let tls_dir = tls.then(|| {
            let tls_dir = dir.path().join("tls");
            std::fs::create_dir(&tls_dir).expect("tls dir");
            let domain = domain_in(extra_args);
            weft_in(&tls_dir, &["tls", "ca", "create", "-domain", &domain]);
            tls_dir
        });
        let token = acl_config.as_ref().map(|_| MANAGEMENT_TOKEN.to_owned());
        let mut cluster = Cluster {
            specs: Vec::new(),
            children: Vec::new(),
            bootstrap_expect: n,
            dir,
            tls_dir,
            token,
            acl_config,
            _serial: serial,
        };
        for _ in 0..n {
            cluster.add_spec(extra_args);
        }
        for i in 0..n {
            cluster.start_server(i);
        }
        cluster.wait_for_leader().await;
        cluster.wait_alive(&cluster.specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>()).await;
        cluster
    }

    /// Waits until server 0 sees every node in `names` registered and alive
    /// (its `serfHealth` check passing), so tests start from a settled catalog.
    pub async fn wait_alive(&self, names: &[String]) {
        eventually("agents registered and alive", Duration::from_secs(30), || async {
            let response = self.client(0).get("/v1/health/state/passing?stale").await.ok()?;
            let checks: Value = serde_json::from_slice(&response.body).ok()?;
            let alive: Vec<&str> = checks
                .as_array()?
                .iter()
                .filter(|c| c["CheckID"] == "serfHealth")
                .filter_map(|c| c["Node"].as_str())
                .collect();
            names.iter().all(|n| alive.contains(&n.as_str())).then_some(())
        })
        .await
    }

    fn add_spec(&mut self, extra_args: &[&str]) -> usize {
        let name = format!("s{}", self.specs.iter().filter(|s| s.server).count() + 1);
        self.add_named_spec(true, name, extra_args)
    }

    fn add_named_spec(&mut self, server: bool, name: String, extra_args: &[&str]) -> usize {
        let i = self.specs.len();
        let mut extra_args: Vec<&str> = extra_args.to_vec();
        let tls_config = self.dir.path().join(format!("{name}-tls.hcl"));
        if let (true, Some(tls_dir)) = (server, &self.tls_dir) {
            let domain = domain_in(&extra_args);
            let (_, out) = weft_in(tls_dir, &["tls", "cert", "create", "-server", "-domain", &domain]);
            let file = |suffix: &str| {
                out.lines()
                    .filter_map(|line| line.strip_prefix("==> Saved "))
                    .find(|path| path.ends_with(suffix) && (suffix == "-key.pem" || !path.ends_with("-key.pem")))
                    .expect("weft tls cert create names its files")
                    .to_owned()
            };
            let ca = tls_dir.join(format!("{domain}-agent-ca.pem"));
            let hcl = format!(
                "tls {{\n  defaults {{\n    ca_file = {:?}\n    cert_file = {:?}\n    key_file = {:?}\n  }}\n}}\n",
                ca.display().to_string(),
                file(".pem"),
                file("-key.pem")
            );
            std::fs::write(&tls_config, hcl).expect("write the TLS config");
        }
        let token;
        if let (false, Some(_)) = (server, &self.tls_dir) {
            let (code, out, err) = weft(&[
                "operator",
                "join-token",
                "create",
                "--description",
                &name,
                "--http-addr",
                &self.specs[0].http_addr,
                "--token",
                self.token.as_deref().unwrap_or_default(),
            ]);
            assert_eq!(code, 0, "a join token for {name}: {err}");
            token = out.trim().to_owned();
            extra_args.extend(["--join-token", token.as_str()]);
        }
        let tls_config = tls_config.display().to_string();
        let acl_config = self.acl_config.clone();
        // First, so a test's own config files (read later) win.
        if let (false, Some(acl_config)) = (server, &acl_config) {
            extra_args.splice(0..0, ["--config-file", acl_config.as_str()]);
        }
        if server && self.tls_dir.is_some() {
            extra_args.extend(["--config-file", tls_config.as_str()]);
        }
        self.specs.push(AgentSpec {
            server,
            rpc_addr: format!("127.0.0.1:{}", free_port()),
            http_addr: format!("127.0.0.1:{}", free_port()),
            dns_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(&name),
            log_path: self.dir.path().join(format!("{name}.log")),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            name,
        });
        self.children.push(None);
        i
    }

    /// Starts (or restarts) agent `i` (server or client) with its original flags.
    pub fn start_server(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "agent {i} is already running");
        let spec = &self.specs[i];
        let mut command = Command::new(weft_bin());
        command.args(["agent", "--node", &spec.name]).arg("--data-dir").arg(&spec.data_dir).args([
            "--http-addr",
            &spec.http_addr,
            "--dns-addr",
            &spec.dns_addr,
        ]);
        if spec.server {
            command.args(["--server", "--rpc-addr", &spec.rpc_addr]);
        }
        if spec.server && i < self.bootstrap_expect {
            command.args(["--bootstrap-expect", &self.bootstrap_expect.to_string()]);
        }
        for (j, other) in self.specs.iter().enumerate() {
            if j != i && other.server {
                command.args(["--retry-join", &other.rpc_addr]);
            }
        }
        command.args(&spec.extra_args);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log_path).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn weft");
        self.children[i] = Some(child);
    }

    /// Starts a client agent named `name` joined to the servers (enrolled
    /// with a join token of its own, in a cluster with TLS); returns its index.
    pub fn add_client(&mut self, name: &str, extra_args: &[&str]) -> usize {
        let i = self.add_named_spec(false, name.to_owned(), extra_args);
        self.start_server(i);
        i
    }

    /// Starts a client agent that knows the servers (and their CA) but has
    /// no join token, so no certificate of its own (unless `extra_args`
    /// give it another way to enroll).
    pub fn add_client_without_token(&mut self, name: &str, extra_args: &[&str]) -> usize {
        let tls_dir = self.tls_dir.clone().expect("a cluster with TLS");
        let config = self.dir.path().join(format!("{name}-ca.hcl"));
        let ca = tls_dir.join("weft-agent-ca.pem").display().to_string();
        std::fs::write(&config, format!("tls {{\n  defaults {{\n    ca_file = {ca:?}\n  }}\n}}\n")).unwrap();
        let tls_dir = self.tls_dir.take();
        let mut args = vec!["--config-file", config.to_str().unwrap()];
        args.extend_from_slice(extra_args);
        let i = self.add_named_spec(false, name.to_owned(), &args);
        self.tls_dir = tls_dir;
        self.start_server(i);
        i
    }

    /// Waits until agent `i` answers its HTTP API.
    pub async fn wait_ready(&self, i: usize) {
        eventually(&format!("{} to answer HTTP", self.specs[i].name), Duration::from_secs(30), || async {
            let response = self.client(i).with_timeout(Duration::from_secs(2)).get("/v1/agent/self").await.ok()?;
            (response.status == 200).then_some(())
        })
        .await
    }

    /// Adds a server that joins the running cluster (no bootstrap), with extra flags.
    pub fn add_server(&mut self, extra_args: &[&str]) -> usize {
        let i = self.add_server_stopped(extra_args);
        self.start_server(i);
        i
    }

    /// Like [`Cluster::add_server`], without starting it (`start_server`).
    pub fn add_server_stopped(&mut self, extra_args: &[&str]) -> usize {
        self.add_spec(extra_args)
    }

    /// Agent `i`'s process ID.
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("agent is running").id()
    }

    /// `kill -9` server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM server `i` and wait for it to exit. Returns whether it exited
    /// by itself within 30 s × patience (else it is killed).
    pub fn stop(&mut self, i: usize) -> bool {
        if self.children[i].is_none() {
            return true;
        }
        self.signal(i, "TERM");
        self.wait_exited(i)
    }

    /// Waits for agent `i` to exit by itself (after a leave), up to 30 s ×
    /// patience; returns whether it did (else it is killed).
    pub fn wait_exited(&mut self, i: usize) -> bool {
        let Some(mut child) = self.children[i].take() else { return true };
        let deadline = Instant::now() + Duration::from_secs(30) * patience();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Sends `signal` (such as `HUP`) to agent `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let child = self.children[i].as_ref().expect("agent is running");
        let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} agent {i}");
    }

    /// Whether agent `i` has exited by itself (it is then no longer running).
    pub fn has_exited(&mut self, i: usize) -> bool {
        let exited = self.children[i].as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
        if exited {
            self.children[i] = None;
        }
        exited
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// A client of agent `i`'s HTTP API (with the management token, in a
    /// cluster with ACLs).
    pub fn client(&self, i: usize) -> HttpClient {
        HttpClient::new(&self.specs[i].http_addr, self.token.clone()).with_timeout(Duration::from_secs(30))
    }

    /// The leader's RPC address as server `i` sees it (None if unknown or unreachable).
    pub async fn leader_seen_by(&self, i: usize) -> Option<String> {
        let response = self.client(i).with_timeout(Duration::from_secs(2)).get("/v1/status/leader").await.ok()?;
        let leader: String = serde_json::from_slice(&response.body).ok()?;
        (!leader.is_empty()).then_some(leader)
    }

    /// Waits until every running server agrees on one leader; returns its index.
    pub async fn wait_for_leader(&self) -> usize {
        eventually("all running servers to agree on a leader", Duration::from_secs(30), || async {
            let mut seen = None;
            for i in (0..self.len()).filter(|i| self.is_running(*i) && self.specs[*i].server) {
                let leader = self.leader_seen_by(i).await?;
                if seen.get_or_insert(leader.clone()) != &leader {
                    return None;
                }
            }
            let leader = seen?;
            self.specs.iter().position(|s| s.rpc_addr == leader).filter(|i| self.is_running(*i))
        })
        .await
    }

    /// A running server that is not the leader.
    pub async fn follower(&self) -> usize {
        let leader = self.wait_for_leader().await;
        (0..self.len())
            .find(|i| *i != leader && self.is_running(*i) && self.specs[*i].server)
            .expect("a running follower")
    }

    /// Server `i`'s `Stats.raft` figure (`/v1/agent/self`), as a number.
    pub async fn raft_stat(&self, i: usize, name: &str) -> Option<u64> {
        let response = self.client(i).get("/v1/agent/self").await.ok()?;
        let body: Value = serde_json::from_slice(&response.body).ok()?;
        body["Stats"]["raft"][name].as_str()?.parse().ok()
    }

    /// Voter names in the Raft configuration as server `i` sees it.
    pub async fn voters_seen_by(&self, i: usize) -> Option<Vec<String>> {
        let response = self.client(i).get("/v1/operator/raft/configuration?stale").await.ok()?;
        let body: Value = serde_json::from_slice(&response.body).ok()?;
        let mut names: Vec<String> = body["Servers"]
            .as_array()?
            .iter()
            .filter(|s| s["Voter"] == true)
            .filter_map(|s| s["Node"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Some(names)
    }

    /// The log of server `i` so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.specs[i].log_path).unwrap_or_default()
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.specs[i].data_dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for (i, spec) in self.specs.iter().enumerate() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- last lines of {} ----", spec.name);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Writes `key` = `value` through server `client`; true when acknowledged.
/// Registers `body` with agent `agent`'s API; it must be accepted.
pub async fn register(cluster: &Cluster, agent: usize, body: Value) {
    let response = cluster.client(agent).put("/v1/agent/service/register", body.to_string()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

pub async fn put(client: &HttpClient, key: &str, value: &str) -> bool {
    match client.put(&kv_path(key), value.as_bytes().to_vec()).await {
        Ok(response) => response.status == 200 && response.body == b"true",
        Err(_) => false,
    }
}

/// Keys under `prefix` on one server, read locally (`?stale`).
pub async fn stale_keys(client: &HttpClient, prefix: &str) -> Option<Vec<String>> {
    let response = client.get(&format!("{}?keys&stale", kv_path(prefix))).await.ok()?;
    match response.status {
        404 => Some(Vec::new()),
        200 => serde_json::from_slice(&response.body).ok(),
        _ => None,
    }
}

/// Runs the `weft` CLI and returns (exit code, stdout, stderr).
/// `weft proxy config-dump` of `service`'s sidecar, parsed.
pub fn config_dump(http: &str, service: &str) -> Option<Value> {
    let (code, out, _) = weft(&["proxy", "config-dump", "--sidecar-for", service, "--http-addr", http]);
    (code == 0).then(|| serde_json::from_str(&out).ok()).flatten()
}

/// The sum of the samples of `metric` in the Prometheus text of `service`'s
/// sidecar whose labels contain `labels`.
pub async fn metric(http: &str, service: &str, metric: &str, labels: &str) -> Option<f64> {
    let admin = config_dump(http, service)?["admin"].as_str()?.to_owned();
    metric_at(&admin, metric, labels).await
}

/// The same from the proxy or gateway whose admin port is `admin`.
pub async fn metric_at(admin: &str, metric: &str, labels: &str) -> Option<f64> {
    let response = weft_api::client::HttpClient::new(admin, None).get("/metrics").await.ok()?;
    Some(
        response
            .text()
            .lines()
            .filter(|line| line.starts_with(metric) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// A child process (a gateway, an agent in a namespace), killed when dropped.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dig` is a real client; CI installs it (dnsutils), so there it is required.
pub fn dig_available() -> bool {
    let found = Command::new("dig").arg("-v").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("WEFT_CI").is_none(),
            "dig is required in CI (apt-get install dnsutils)"
        );
        eprintln!("skipping: `dig` is not installed (apt-get install dnsutils)");
    }
    found
}

pub fn dig(dns_addr: &str, args: &[&str]) -> String {
    let (ip, port) = dns_addr.rsplit_once(':').unwrap();
    let output = Command::new("dig")
        .args([&format!("@{ip}"), "-p", port, "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `--domain` among `args`, else `weft`.
fn domain_in(args: &[&str]) -> String {
    args.iter().position(|a| *a == "--domain").and_then(|i| args.get(i + 1)).unwrap_or(&"weft").to_string()
}

/// Runs the `weft` CLI in `dir`; it must succeed. Returns (exit code, stdout).
pub fn weft_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(weft_bin()).args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run weft");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "weft {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), stdout)
}

impl Cluster {
    /// The RPC CA (PEM) the servers' certificates chain to.
    pub fn ca_pem(&self) -> String {
        let tls_dir = self.tls_dir.as_ref().expect("a cluster with TLS");
        std::fs::read_to_string(tls_dir.join("weft-agent-ca.pem")).expect("the CA file")
    }

    /// A raw gRPC client of server `i`'s RPC: over TLS verified against the
    /// cluster's CA (plaintext in a plaintext cluster), presenting
    /// `identity` (certificate and key, PEM) if given.
    pub fn rpc_client(
        &self,
        i: usize,
        identity: Option<(&str, &str)>,
    ) -> weft_api::proto::cluster::cluster_client::ClusterClient<tonic::transport::Channel> {
        let tls = self.tls_dir.as_ref().map(|_| cluster_client_tls(self, identity));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.specs[i].rpc_addr))
            .unwrap()
            .connect_with_connector_lazy(weft_tls::RpcConnector::new(tls));
        weft_api::proto::cluster::cluster_client::ClusterClient::new(channel)
    }
}

/// How a client dials `cluster`'s servers: TLS verified against its CA
/// (and `server.dc1.weft`), presenting `identity` (certificate and key, PEM).
pub fn cluster_client_tls(cluster: &Cluster, identity: Option<(&str, &str)>) -> std::sync::Arc<weft_tls::ClientTls> {
    let settings = weft_tls::RpcTlsSettings {
        ca: weft_tls::config::roots_from_pem(&cluster.ca_pem(), "the CA").unwrap(),
        identity: identity.map(|(cert, key)| weft_tls::Identity::from_pem(cert, key, "test").unwrap()),
        verify_incoming: true,
        verify_outgoing: true,
        verify_server_hostname: true,
        datacenter: "dc1".into(),
        domain: "weft".into(),
    };
    weft_tls::ClientTls::new(&settings).unwrap()
}

pub fn weft(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(weft_bin()).args(args).stdin(Stdio::null()).output().expect("run weft");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A blocking query on `path` through `follower` that a KV write to
/// `leader` must not wake, and a `PUT write_path` of `write_body` to the
/// leader must, well before its 20 s wait. Returns the woken answer, whose
/// index has moved past the one it blocked on.
pub async fn blocking_read_wakes_only_on_its_write(
    follower: &HttpClient,
    leader: &HttpClient,
    path: &str,
    write_path: &str,
    write_body: &str,
) -> weft_api::client::Response {
    let index = follower.get(path).await.unwrap().consul_index().unwrap();
    let waiter = {
        let (follower, path) = (follower.clone(), format!("{path}?index={index}&wait=5m"));
        tokio::spawn(async move {
            let response = follower.get(&path).await.unwrap();
            (Instant::now(), response)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(leader.put("/v1/kv/unrelated", "x").await.unwrap().text(), "true");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiter.is_finished(), "a KV write must not wake {path}");

    let write_sent = Instant::now();
    assert_eq!(leader.put(write_path, write_body.to_owned()).await.unwrap().text(), "true");
    let (returned_at, response) = waiter.await.unwrap();
    let woke_after = returned_at.saturating_duration_since(write_sent);
    println!("the blocking read of {path} returned {woke_after:?} after the write was sent");
    // Returning at all (long before its 5 minutes) shows the write woke it.
    assert!(response.consul_index().unwrap() > index);
    response
}
