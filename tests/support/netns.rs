//! Multi-host topologies for end-to-end tests: each host a network
//! namespace of its own, attached by a veth to a bridge in one router
//! namespace that forwards between the networks. Addresses come from
//! 198.18.0.0/15 (reserved for benchmarks, so never a real network).
//!
//! Needs root and iproute2. A test that cannot build its topology says why
//! and passes, unless `WEFT_CI` is set (`.ci/run`), where it fails instead:
//! see [`skip`].

use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::{weft_bin, Process};

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

pub fn must(program: &str, args: &[&str]) {
    let output = run(program, args);
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn is_root() -> bool {
    run("id", &["-u"]).stdout.starts_with(b"0\n")
}

/// Why this machine cannot build a topology that also runs `tools` (each
/// given with an argument that makes it print its version), if it cannot.
pub fn missing_prerequisite(tools: &[(&str, &str)]) -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for (tool, arg) in [("ip", "-V")].iter().chain(tools) {
        if Command::new(tool).arg(arg).output().is_err() {
            return Some(format!("{tool} is not installed"));
        }
    }
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let probe =
        format!("weftprobe{}-{}", std::process::id(), PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    if !run("ip", &["netns", "add", &probe]).status.success() {
        return Some("`ip netns add` fails here (no network namespaces in this container?)".into());
    }
    run("ip", &["netns", "del", &probe]);
    None
}

/// True when the test named `what` cannot run here and should return: it
/// says why. In CI (`WEFT_CI`) a missing prerequisite fails the test.
pub fn skip(what: &str, tools: &[(&str, &str)]) -> bool {
    let Some(reason) = missing_prerequisite(tools) else { return false };
    assert!(std::env::var_os("WEFT_CI").is_none(), "{what} must run in CI: {reason}");
    eprintln!("skipping {what}: {reason}");
    true
}

/// The namespaces of one run; deleted when dropped (after the processes in
/// them, which are declared later and so dropped first), with the files
/// `ip netns exec` mounts over /etc for them.
pub struct Network {
    prefix: String,
    namespaces: Vec<String>,
}

impl Network {
    /// A network whose namespaces are named `<tag><pid>-<host>`.
    pub fn new(tag: &str) -> Network {
        Network { prefix: format!("{tag}{}", std::process::id()), namespaces: Vec::new() }
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// A host with nothing but its loopback interface (ports below 1024,
    /// such as DNS's 53, are its own).
    pub fn lone_host(&mut self, host: &str) -> String {
        self.add_namespace(host)
    }

    fn add_namespace(&mut self, host: &str) -> String {
        let ns = self.ns(host);
        must("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// The router, with one bridge per network (`(bridge, its address/24)`),
    /// forwarding between them.
    pub fn router(&mut self, bridges: &[(&str, &str)]) {
        let router = self.add_namespace("router");
        must("ip", &["netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (bridge, gateway) in bridges {
            must("ip", &["-n", &router, "link", "add", bridge, "type", "bridge"]);
            must("ip", &["-n", &router, "addr", "add", gateway, "dev", bridge]);
            must("ip", &["-n", &router, "link", "set", bridge, "up"]);
        }
    }

    /// The router refuses to forward from `bridge` to `network` (a CIDR).
    pub fn prohibit(&self, bridge: &str, network: &str) {
        must("ip", &["-n", &self.ns("router"), "rule", "add", "iif", bridge, "to", network, "prohibit"]);
    }

    /// A host on `bridge` at `ip`, routed through the router.
    pub fn host(&mut self, host: &str, bridge: &str, ip: &str) -> String {
        let ns = self.add_namespace(host);
        self.attach(&ns, host, "eth0", bridge, ip);
        must("ip", &["-n", &ns, "route", "add", "default", "via", &gateway_of(ip)]);
        ns
    }

    /// A host with a leg on `bridge` at `ip` and one on `wan_bridge` at
    /// `wan`, routed through the router from the WAN.
    pub fn edge_host(&mut self, host: &str, bridge: &str, ip: &str, wan_bridge: &str, wan: &str) -> String {
        let ns = self.add_namespace(host);
        self.attach(&ns, host, "eth0", bridge, ip);
        self.attach(&ns, &format!("{host}-w"), "eth1", wan_bridge, wan);
        must("ip", &["-n", &ns, "route", "add", "default", "via", &gateway_of(wan)]);
        ns
    }

    /// A veth from the router's `bridge` to `device` in `ns`, at `ip`/24.
    fn attach(&self, ns: &str, link: &str, device: &str, bridge: &str, ip: &str) {
        let router = self.ns("router");
        let veth = format!("v-{link}");
        must("ip", &["-n", &router, "link", "add", &veth, "type", "veth", "peer", "name", device, "netns", ns]);
        must("ip", &["-n", &router, "link", "set", &veth, "master", bridge, "up"]);
        must("ip", &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", device]);
        must("ip", &["-n", ns, "link", "set", device, "up"]);
    }

    /// Gives `host` (made by [`Network::host`]) a new address `ip`, on
    /// `bridge`: its old address is gone, as after a re-provisioning.
    pub fn renumber(&self, host: &str, bridge: &str, ip: &str) {
        let (ns, router) = (self.ns(host), self.ns("router"));
        must("ip", &["-n", &router, "link", "set", &format!("v-{host}"), "master", bridge]);
        must("ip", &["-n", &ns, "addr", "flush", "dev", "eth0"]);
        must("ip", &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        must("ip", &["-n", &ns, "route", "replace", "default", "via", &gateway_of(ip)]);
    }

    /// Takes the router's `bridge` down (`up` = false) or back up.
    pub fn bridge(&self, bridge: &str, up: bool) {
        must("ip", &["-n", &self.ns("router"), "link", "set", bridge, if up { "up" } else { "down" }]);
    }

    /// Makes `/etc/<file>` read `contents` in `host`'s namespace (`hosts`,
    /// `resolv.conf`), for programs `ip netns exec` starts there from now on
    /// and, once the file exists, for those already running: it is
    /// rewritten in place, because each has the file bind-mounted by inode.
    pub fn etc_file(&self, host: &str, file: &str, contents: &str) {
        let dir = Path::new("/etc/netns").join(self.ns(host));
        std::fs::create_dir_all(&dir).expect("/etc/netns");
        std::fs::write(dir.join(file), contents).expect("a file under /etc/netns");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
    }
}

/// The router's address on the /24 of `ip`.
fn gateway_of(ip: &str) -> String {
    format!("{}.1", ip.rsplit_once('.').expect("an IPv4 address").0)
}

/// Makes an RPC CA and `count` server certificates in `dir/tls` with `weft
/// tls`, and for each server a config file that has it present its
/// certificate (no address is in it: servers are checked by name).
pub fn server_tls_configs(dir: &Path, count: usize) -> Vec<std::path::PathBuf> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("a directory for the certificates");
    super::weft_in(&tls, &["tls", "ca", "create"]);
    let ca = tls.join("weft-agent-ca.pem").display().to_string();
    (0..count)
        .map(|i| {
            super::weft_in(&tls, &["tls", "cert", "create", "-server", "-dc", "dc1"]);
            let file = |suffix: &str| tls.join(format!("dc1-server-weft-{i}{suffix}")).display().to_string();
            let (cert, key) = (file(".pem"), file("-key.pem"));
            let hcl = format!(
                "tls {{\n  defaults {{\n    ca_file = {ca:?}\n    cert_file = {cert:?}\n    key_file = {key:?}\n  }}\n}}\n"
            );
            let config = dir.join(format!("server-{i}-tls.hcl"));
            std::fs::write(&config, hcl).expect("a server's TLS config");
            config
        })
        .collect()
}

/// Starts `program` in `ns`, its output to `log`.
pub fn spawn_in(ns: &str, program: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Process {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let child = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} in {ns}: {e}"));
    Process(child)
}

/// Runs `program` in `ns` and returns (success, stdout).
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("ip").args(["netns", "exec", ns, program]).args(args).output().expect("ip netns exec");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `weft <args>` against the agent in `ns`.
pub fn weft_in(ns: &str, args: &[&str]) -> (bool, String) {
    exec_in(ns, weft_bin(), args)
}

/// A GET from inside `ns`: (HTTP status, body); status 0 if nothing answered.
pub fn curl_in(ns: &str, url: &str) -> (u16, String) {
    let (_, out) = exec_in(ns, "curl", &["-s", "-m", "5", "-w", "\n%{http_code}", url]);
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The agent in `ns`'s DNS answer for `name` (`dig +short`), sorted.
pub fn dig_in(ns: &str, name: &str) -> Vec<String> {
    let (_, out) = exec_in(ns, "dig", &["@127.0.0.1", "-p", "8600", "+short", "+time=2", "+tries=1", name]);
    let mut lines: Vec<String> = out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    lines.sort();
    lines
}
