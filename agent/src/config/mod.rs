//! Agent configuration: Consul-shaped HCL or JSON files, then flags on top,
//! validated once into an [`AgentConfig`] with every problem reported together.
//!
//! Precedence: built-in defaults < config files (in the order given; files in
//! a directory in name order) < flags. List settings (`retry_join`) from
//! several files add up, as in Consul.

mod acl;
mod file;
mod locate;
mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_api::ids::{is_plain_name, Datacenter, NetworkName, NodeName, NETWORK_META_KEY};
use weft_api::join::JoinToken;
use weft_server::RaftTuning;

use crate::decode::decode_value;
use crate::local::definition::{CheckDefinition, ServiceDefinition};

pub use acl::{AclConfig, AclLogin, AclTokens};
pub use file::{AclFile, AclLoginFile, ConfigFile, DnsConfigFile, PerformanceFile, SoaConfigFile};
pub use tls::RpcTlsConfig;

/// The validated configuration an agent runs with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: NodeName,
    pub datacenter: Datacenter,
    pub data_dir: PathBuf,
    pub server: bool,
    pub bootstrap_expect: Option<usize>,
    pub retry_join: Vec<String>,
    /// Server RPC (Raft and cluster gRPC).
    pub rpc_addr: SocketAddr,
    /// Consul-compatible HTTP API.
    pub http_addr: SocketAddr,
    /// DNS interface.
    pub dns_addr: SocketAddr,
    pub domain: String,
    pub dns: DnsSettings,
    pub raft: RaftTuning,
    /// `weft dev`: a throw-away single server.
    pub dev_mode: bool,
    /// The IP registered as this node's address.
    pub advertise_ip: IpAddr,
    /// Includes `weft-network` when the node is in a named network.
    pub node_meta: BTreeMap<String, String>,
    /// The network this node is in (`network`, or node meta `weft-network`).
    pub network: NetworkName,
    /// Client agents: the join token to redeem on first start.
    pub join_token: Option<JoinToken>,
    /// TLS on server RPC; `None`: plaintext, on this host only.
    pub rpc_tls: Option<RpcTlsConfig>,
    /// Connections one address may hold to this server's RPC port.
    pub rpc_max_conns_per_client: usize,
    /// Connections one address may hold to the HTTP API; 0: no limit.
    pub http_max_conns_per_client: usize,
    /// Connections the HTTP API holds in all; 0: no cap.
    pub http_max_conns: usize,
    /// HTTP writes a second, and the burst above that (`limits { rpc_rate
    /// rpc_max_burst }`); `None`: no limit.
    pub write_rate: Option<(f64, f64)>,
    /// ACLs (`acl { ... }`; `weft dev --acl`).
    pub acl: AclConfig,
    pub enable_script_checks: bool,
    /// Services and node-level checks defined in config files.
    pub services: Vec<ServiceDefinition>,
    pub checks: Vec<CheckDefinition>,
    pub liveness_timeout: Duration,
    pub anti_entropy_interval: Duration,
    /// How long an output-only check change may wait to be synced (Consul's
    /// `check_update_interval`; zero: at once).
    pub check_update_interval: Duration,
    /// Where the configuration came from, re-read on reload.
    pub sources: ConfigSources,
    /// The program that runs sidecar proxies (`weft` itself, set by the
    /// binary); `None` runs none.
    pub proxy_program: Option<PathBuf>,
    /// How long the leaves a server signs are valid (`connect { ca_config {
    /// leaf_cert_ttl } }`; only servers' settings take effect).
    pub leaf_cert_ttl: Duration,
    /// Ports given to sidecars that do not ask for one.
    pub sidecar_ports: std::ops::RangeInclusive<u16>,
}

/// How the DNS interface answers.
#[derive(Clone, Debug, Default)]
pub struct DnsSettings {
    /// Answered like the main domain (Consul's `alt_domain`).
    pub alt_domain: Option<String>,
    /// Upstreams for names outside the domains; none means REFUSED.
    pub recursors: Vec<SocketAddr>,
    pub recursor_timeout: Duration,
    /// Leave out instances with a warning check too.
    pub only_passing: bool,
    pub node_ttl: Duration,
    /// Per service name; a key ending in `*` is a prefix (`"*"`: every service).
    pub service_ttl: BTreeMap<String, Duration>,
    pub soa: SoaTimers,
}

/// The SOA's timers, in seconds (Consul's `dns_config { soa { ... } }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoaTimers {
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// The negative-caching TTL: the SOA record's own TTL and its minimum.
    pub min_ttl: u32,
}

impl Default for SoaTimers {
    /// Consul's defaults.
    fn default() -> Self {
        SoaTimers { refresh: 3600, retry: 600, expire: 86400, min_ttl: 0 }
    }
}

/// The config files and directories an agent was started with.
#[derive(Clone, Debug, Default)]
pub struct ConfigSources {
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

impl ConfigSources {
    /// Re-reads the service and check definitions (for a reload).
    pub fn read_definitions(&self, node: &NodeName, script_checks: bool) -> Result<Definitions, ConfigErrors> {
        let file = read_sources(&self.files, &self.dirs)?;
        let mut problems = Vec::new();
        let definitions = definitions(&file, node, script_checks, &mut problems);
        if problems.is_empty() {
            Ok(definitions)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

/// Services and node-level checks from config files.
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    pub services: Vec<ServiceDefinition>,
    pub checks: Vec<CheckDefinition>,
}

/// Decodes and validates the definitions in `file`, adding a problem per bad one.
fn definitions(
    file: &ConfigFile,
    node: &NodeName,
    script_checks: bool,
    problems: &mut Vec<ConfigProblem>,
) -> Definitions {
    let mut out = Definitions::default();
    // `file:line: service #2: ...`, where the file is known.
    let problem = |origins: &[String], what: &str, n: usize, error: String| {
        let place = origins.get(n).map(|origin| format!("{origin}: ")).unwrap_or_default();
        ConfigProblem(format!("{place}{what} #{}: {error}", n + 1))
    };
    for (n, value) in file.service_definitions().into_iter().enumerate() {
        match decode_value::<ServiceDefinition>(value) {
            Ok(definition) => match definition.validate(node, script_checks) {
                Ok(_) => out.services.push(definition),
                Err(e) => problems.push(problem(&file.origins.services, "service", n, e.to_string())),
            },
            Err(e) => problems.push(problem(&file.origins.services, "service", n, e)),
        }
    }
    for (n, value) in file.check_definitions().into_iter().enumerate() {
        match decode_value::<CheckDefinition>(value) {
            Ok(definition) => match definition.validate(node, script_checks, "") {
                Ok(_) => out.checks.push(definition),
                Err(e) => problems.push(problem(&file.origins.checks, "check", n, e.to_string())),
            },
            Err(e) => problems.push(problem(&file.origins.checks, "check", n, e)),
        }
    }
    out
}

/// One configuration problem, phrased so the user can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigProblem(pub String);

/// Every problem found in one pass over the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

/// Consul's default sidecar port range.
const DEFAULT_SIDECAR_PORTS: (u16, u16) = (21000, 21255);
/// The leaf TTLs Weft accepts (Consul's maximum; a lower minimum than
/// Consul's 1h, for trying renewals out).
const MIN_LEAF_TTL: Duration = Duration::from_secs(60);
const MAX_LEAF_TTL: Duration = Duration::from_secs(8760 * 3600);

/// Consul's default `check_update_interval`.
const DEFAULT_CHECK_UPDATE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Default ports, as Consul's shifted by nothing: HTTP 8500, DNS 8600, server RPC 8300.
pub const DEFAULT_HTTP_PORT: u16 = 8500;
pub const DEFAULT_DNS_PORT: u16 = 8600;
pub const DEFAULT_RPC_PORT: u16 = 8300;
/// Consul's default `limits { rpc_max_conns_per_client }`.
pub const DEFAULT_RPC_MAX_CONNS_PER_CLIENT: usize = 100;
/// Consul's default `limits { rpc_max_burst }`.
const DEFAULT_RPC_MAX_BURST: usize = 1000;
/// Consul's default `limits { http_max_conns_per_client }`.
pub const DEFAULT_HTTP_MAX_CONNS_PER_CLIENT: usize = 200;

/// `limits { http_max_conns }` when unset: three quarters of the open-files
/// limit (at least 64), so that connections alone cannot use up the
/// descriptors the agent needs for Raft, its data and its sidecars.
fn default_http_max_conns() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let soft = soft.and_then(|n| usize::try_from(n).ok()).unwrap_or(usize::MAX / 4);
    (soft / 4 * 3).max(64)
}

/// Reads config files and directories into one [`ConfigFile`], in order.
pub fn read_sources(files: &[PathBuf], dirs: &[PathBuf]) -> Result<ConfigFile, ConfigErrors> {
    let mut merged = ConfigFile::default();
    let mut problems = Vec::new();
    let mut paths: Vec<PathBuf> = files.to_vec();
    for dir in dirs {
        match list_config_dir(dir) {
            Ok(mut entries) => paths.append(&mut entries),
            Err(problem) => problems.push(problem),
        }
    }
    for path in paths {
        match ConfigFile::read(&path) {
            Ok(file) => merged.merge(file),
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() {
        Ok(merged)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// `*.hcl` and `*.json` files in `dir`, in name order.
fn list_config_dir(dir: &Path) -> Result<Vec<PathBuf>, ConfigProblem> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| ConfigProblem(format!("cannot read config dir {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("hcl" | "json")))
        .collect();
    paths.sort();
    Ok(paths)
}

impl ConfigFile {
    /// Validates the merged settings into an [`AgentConfig`].
    pub fn validate(self) -> Result<AgentConfig, ConfigErrors> {
        let mut problems = Vec::new();
        let mut problem = |text: String| problems.push(ConfigProblem(text));
        let dev_mode = self.dev_mode.unwrap_or(false);
        let server = self.server.unwrap_or(false);

        let node_name = self.node_name.clone().unwrap_or_else(default_node_name);
        if node_name.is_empty()
            || !node_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            problem(format!(
                "node_name {node_name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
            ));
        }
        let token_datacenter = self.join_token.as_deref().and_then(|t| JoinToken::decode(t).ok()).map(|t| t.datacenter);
        let datacenter = self.datacenter.clone().or(token_datacenter).unwrap_or_else(|| "dc1".into());
        if !is_plain_name(&datacenter) {
            problem(format!("datacenter {datacenter:?} must be non-empty and use only letters, digits, '-' and '_'"));
        }
        let network = NetworkName::new(self.network.clone().unwrap_or_default());
        let mut node_meta = self.node_meta.clone().unwrap_or_default();
        if !network.is_empty() {
            if let Some(meta) = node_meta.insert(NETWORK_META_KEY.to_owned(), network.to_string()) {
                if meta != network.as_str() {
                    problem(format!(
                        "network {network:?} and node_meta {NETWORK_META_KEY} = {meta:?} disagree; give one of them"
                    ));
                }
            }
        }
        if let Some(meta) = node_meta.get(NETWORK_META_KEY) {
            if !is_plain_name(meta) {
                problem(format!("network {meta:?} must be non-empty and use only letters, digits, '-' and '_'"));
            }
        }
        let data_dir = match &self.data_dir {
            Some(dir) if !dir.as_os_str().is_empty() => dir.clone(),
            _ => {
                problem("data_dir is required (--data-dir DIR); it holds the Raft log and the node's identity".into());
                PathBuf::new()
            }
        };
        let join_token = match self.join_token.as_deref().filter(|t| !t.trim().is_empty()) {
            None => None,
            Some(_) if server => {
                problem(
                    "join_token is for client agents; servers present certificates from the RPC CA (tls { ... })"
                        .into(),
                );
                None
            }
            Some(text) => JoinToken::decode(text).map_err(|e| problem(e.to_string())).ok(),
        };
        if self.rpc_key.is_some() {
            problem(
                "rpc_key was removed: servers now prove who they are with certificates (weft tls ca create; weft tls cert create -server; a tls { ... } block) and client agents with certificates they enroll for with a join token; remove rpc_key".into(),
            );
        }
        let mut retry_join: Vec<String> = self
            .retry_join
            .iter()
            .filter_map(|text| join_address(text).map_err(|e| problem(format!("retry_join {text:?}: {e}"))).ok())
            .collect();
        if let Some(token) = &join_token {
            if retry_join.is_empty() {
                retry_join = token.servers.clone();
            }
            if self.datacenter.as_ref().is_some_and(|dc| *dc != token.datacenter) {
                problem(format!("the join token is for datacenter {:?}, not {datacenter:?}", token.datacenter));
            }
        }
        if !server && retry_join.is_empty() {
            problem(
                "a client agent (no --server) needs the servers to join: give --retry-join <server rpc addr> or --join-token".into(),
            );
        }
        if !server && self.bootstrap_expect.is_some() {
            problem("bootstrap_expect is for servers only: add --server, or drop --bootstrap-expect".into());
        }
        let bootstrap_expect = self.bootstrap_expect;
        if let Some(expect) = bootstrap_expect {
            if expect == 0 {
                problem("bootstrap_expect must be at least 1".into());
            }
            if expect == 2 || expect == 4 {
                tracing::warn!(
                    expect,
                    "an even number of servers tolerates no more failures than one fewer; use 3 or 5"
                );
            }
        }
        let client_ip = self.client_addr.clone().unwrap_or_else(|| "127.0.0.1".into());
        let bind_ip = self.bind_addr.clone().unwrap_or_else(|| "127.0.0.1".into());
        let ports = self.ports.clone().unwrap_or_default();
        let addresses = self.addresses.clone().unwrap_or_default();
        let mut address = |name: &str, explicit: &Option<String>, ip: &str, port: Option<u16>, default_port: u16| {
            let text =
                explicit.clone().unwrap_or_else(|| weft_api::addr::join_host_port(ip, port.unwrap_or(default_port)));
            match text.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    problem(format!("{name} {text:?} is not an IP:port address (e.g. 127.0.0.1:{default_port})"));
                    SocketAddr::from(([127, 0, 0, 1], default_port))
                }
            }
        };
        let rpc_addr = address("rpc_addr", &self.rpc_addr, &bind_ip, ports.server, DEFAULT_RPC_PORT);
        let http_addr = address(
            "http_addr",
            &self.http_addr,
            addresses.http.as_deref().unwrap_or(&client_ip),
            ports.http,
            DEFAULT_HTTP_PORT,
        );
        let dns_addr = address(
            "dns_addr",
            &self.dns_addr,
            addresses.dns.as_deref().unwrap_or(&client_ip),
            ports.dns,
            DEFAULT_DNS_PORT,
        );
        let multiplier = self.performance.as_ref().and_then(|p| p.raft_multiplier);
        if multiplier.is_some_and(|m| !(1..=10).contains(&m)) {
            problem("performance.raft_multiplier must be between 1 and 10".into());
        }
        let mut raft = RaftTuning::with_multiplier(multiplier.unwrap_or(RaftTuning::DEFAULT_MULTIPLIER));
        if let Some(threshold) = self.raft_snapshot_threshold {
            if threshold == 0 {
                problem("raft_snapshot_threshold must be at least 1".into());
            }
            raft.snapshot_threshold = threshold;
        }
        if let Some(trailing) = self.raft_trailing_logs {
            raft.trailing_logs = trailing;
        }
        let domain = self.domain.clone().unwrap_or_else(|| "weft".into()).trim_matches('.').to_owned();
        if domain.is_empty() {
            problem("domain must not be empty".into());
        }
        let ends = tls::RpcEnds {
            server,
            dev_mode,
            rpc_addr,
            servers: &retry_join,
            join_token: join_token.as_ref(),
            server_ca_pem: self.server_ca_pem.as_deref(),
        };
        let rpc_tls = tls::rpc_tls(self.tls.as_ref(), ends, &mut problem);
        let rpc_max_conns_per_client =
            self.limits.as_ref().and_then(|l| l.rpc_max_conns_per_client).unwrap_or(DEFAULT_RPC_MAX_CONNS_PER_CLIENT);
        if rpc_max_conns_per_client == 0 {
            problem("limits.rpc_max_conns_per_client must be at least 1".into());
        }
        let http_max_conns_per_client =
            self.limits.as_ref().and_then(|l| l.http_max_conns_per_client).unwrap_or(DEFAULT_HTTP_MAX_CONNS_PER_CLIENT);
        let http_max_conns = self.limits.as_ref().and_then(|l| l.http_max_conns).unwrap_or_else(default_http_max_conns);
        let write_rate = self.limits.as_ref().and_then(|l| {
            let rate = l.rpc_rate?.0;
            let burst = l.rpc_max_burst.unwrap_or(DEFAULT_RPC_MAX_BURST);
            if !(rate.is_finite() && rate > 0.0) || burst == 0 {
                problem(format!(
                    "limits.rpc_rate must be a positive number and rpc_max_burst at least 1, not {rate} and {burst}"
                ));
            }
            Some((rate, burst as f64))
        });
        let acl = acl::acl_config(self.acl.as_ref(), &mut problem);
        let dns = self.dns_settings(&mut problem);
        let advertise_ip = match self.advertise_addr.as_deref() {
            Some(text) => text.parse::<IpAddr>().unwrap_or_else(|_| {
                problem(format!("advertise_addr {text:?} is not an IP address"));
                rpc_addr.ip()
            }),
            // Bound to all interfaces: advertise loopback rather than 0.0.0.0, unless told.
            None if rpc_addr.ip().is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            None => rpc_addr.ip(),
        };
        let mut duration_setting = |name: &str, value: &Option<String>, default: Duration| match value {
            None => default,
            Some(text) => match weft_api::duration::parse(text) {
                Ok(d) if d >= Duration::from_secs(1) => d,
                Ok(_) => {
                    problem(format!("{name} must be at least 1s"));
                    default
                }
                Err(e) => {
                    problem(format!("{name}: {e}"));
                    default
                }
            },
        };
        let liveness_timeout = duration_setting(
            "liveness_timeout",
            &self.liveness_timeout,
            weft_server::liveness::DEFAULT_LIVENESS_TIMEOUT,
        );
        let anti_entropy_interval =
            duration_setting("anti_entropy_interval", &self.anti_entropy_interval, Duration::from_secs(5));
        let check_update_interval = match self.check_update_interval.as_deref() {
            None => DEFAULT_CHECK_UPDATE_INTERVAL,
            Some(text) => weft_api::duration::parse(text).unwrap_or_else(|e| {
                problems.push(ConfigProblem(format!("check_update_interval: {e}")));
                DEFAULT_CHECK_UPDATE_INTERVAL
            }),
        };
        let connect = self.connect.clone().unwrap_or_default();
        if connect.enabled == Some(false) {
            problems.push(ConfigProblem(
                "connect { enabled = false }: Weft's mesh cannot be turned off; leave the setting out".into(),
            ));
        }
        let leaf_cert_ttl = match connect.ca_config.and_then(|c| c.leaf_cert_ttl) {
            None => weft_server::ca::DEFAULT_LEAF_TTL,
            Some(text) => match weft_api::duration::parse(&text) {
                Ok(ttl) if (MIN_LEAF_TTL..=MAX_LEAF_TTL).contains(&ttl) => ttl,
                Ok(_) => {
                    problems.push(ConfigProblem(format!(
                        "connect.ca_config.leaf_cert_ttl {text:?} must be between 1m and 8760h"
                    )));
                    weft_server::ca::DEFAULT_LEAF_TTL
                }
                Err(e) => {
                    problems.push(ConfigProblem(format!("connect.ca_config.leaf_cert_ttl: {e}")));
                    weft_server::ca::DEFAULT_LEAF_TTL
                }
            },
        };
        let ports = self.ports.clone().unwrap_or_default();
        let sidecar_ports = ports.sidecar_min_port.unwrap_or(DEFAULT_SIDECAR_PORTS.0)
            ..=ports.sidecar_max_port.unwrap_or(DEFAULT_SIDECAR_PORTS.1);
        if sidecar_ports.is_empty() {
            problems.push(ConfigProblem(format!(
                "ports.sidecar_min_port ({}) is above ports.sidecar_max_port ({})",
                sidecar_ports.start(),
                sidecar_ports.end()
            )));
        }
        let enable_script_checks = self.enable_script_checks.unwrap_or(false);
        let definitions = definitions(&self, &NodeName::new(&node_name), enable_script_checks, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(AgentConfig {
            advertise_ip,
            network: node_meta.get(NETWORK_META_KEY).map(NetworkName::new).unwrap_or_default(),
            node_meta,
            enable_script_checks,
            services: definitions.services,
            checks: definitions.checks,
            liveness_timeout,
            anti_entropy_interval,
            check_update_interval,
            leaf_cert_ttl,
            sidecar_ports,
            sources: ConfigSources::default(),
            proxy_program: None,
            node_name: NodeName::new(node_name),
            datacenter: Datacenter::new(datacenter),
            data_dir,
            server,
            bootstrap_expect,
            retry_join,
            join_token,
            rpc_tls,
            rpc_max_conns_per_client,
            http_max_conns_per_client,
            http_max_conns,
            write_rate,
            acl,
            rpc_addr,
            http_addr,
            dns_addr,
            domain,
            dns,
            raft,
            dev_mode,
        })
    }
}

impl ConfigFile {
    fn dns_settings(&self, problem: &mut impl FnMut(String)) -> DnsSettings {
        let dns_config = self.dns_config.clone().unwrap_or_default();
        let mut duration = |name: &str, text: &str| match weft_api::duration::parse(text) {
            Ok(d) => d,
            Err(e) => {
                problem(format!("dns_config.{name}: {e}"));
                Duration::ZERO
            }
        };
        let node_ttl = dns_config.node_ttl.as_deref().map(|t| duration("node_ttl", t)).unwrap_or_default();
        let recursor_timeout = dns_config
            .recursor_timeout
            .as_deref()
            .map(|t| duration("recursor_timeout", t))
            .unwrap_or(Duration::from_secs(2));
        let service_ttl = dns_config
            .service_ttl
            .unwrap_or_default()
            .into_iter()
            .map(|(service, ttl)| {
                let ttl = duration(&format!("service_ttl.{service}"), &ttl);
                (service, ttl)
            })
            .collect();
        let mut recursors = Vec::new();
        for text in &self.recursors {
            let parsed =
                text.parse::<SocketAddr>().or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
            match parsed {
                Ok(addr) => recursors.push(addr),
                Err(_) => problem(format!("recursor {text:?} is not an IP or IP:port")),
            }
        }
        let alt_domain = self.alt_domain.as_deref().map(|d| d.trim_matches('.').to_owned()).filter(|d| !d.is_empty());
        DnsSettings {
            alt_domain,
            recursors,
            recursor_timeout,
            only_passing: dns_config.only_passing.unwrap_or(false),
            node_ttl,
            service_ttl,
            soa: dns_config.soa.map(SoaConfigFile::timers).unwrap_or_default(),
        }
    }
}

/// A server's RPC port when a `retry_join` address gives none.
const DEFAULT_SERVER_PORT: u16 = 8300;

/// A `retry_join` address as the agent dials it: `IP:port`, `[IPv6]:port`
/// or `name:port` (a DNS name, resolved on every attempt); without a port,
/// the servers' default (8300). Anything else is refused at load, not
/// found out by a join that never succeeds.
fn join_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.contains("{{") {
        return Err("go-sockaddr templates are not supported; give an address or a DNS name".into());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err("the port must be a number from 1 to 65535".into());
        }
        return Ok(addr.to_string());
    }
    if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_SERVER_PORT).to_string());
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => {
            let port =
                port.parse::<u16>().ok().filter(|p| *p > 0).ok_or("the port must be a number from 1 to 65535")?;
            (host, port)
        }
        None => (text, DEFAULT_SERVER_PORT),
    };
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err("expected IP:port, [IPv6]:port or a DNS name (with an optional :port)".into());
    }
    Ok(format!("{host}:{port}"))
}

/// Consul's default node name: the host name.
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weft".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_file() -> ConfigFile {
        ConfigFile {
            server: Some(true),
            data_dir: Some("/tmp/x".into()),
            node_name: Some("s1".into()),
            ..ConfigFile::default()
        }
    }

    #[test]
    fn retry_join_addresses_are_checked_at_load_and_get_the_default_port() {
        assert_eq!(join_address("10.0.0.1").unwrap(), "10.0.0.1:8300");
        assert_eq!(join_address("10.0.0.1:8311").unwrap(), "10.0.0.1:8311");
        assert_eq!(join_address("::1").unwrap(), "[::1]:8300");
        assert_eq!(join_address("[::1]:9000").unwrap(), "[::1]:9000");
        let pod = "weft-server-0.weft-server.default.svc:8300";
        assert_eq!(join_address(pod).unwrap(), pod);
        assert_eq!(join_address("servers.example").unwrap(), "servers.example:8300");
        for bad in ["", "10.0.0.1:0", "10.0.0.1:99999", "a b", "host:port", "-bad.example", "{{ GetPrivateIP }}"] {
            assert!(join_address(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(join_address("http://10.0.0.1:8300").is_err());
    }

    #[test]
    fn defaults_listen_on_loopback_only() {
        let config = server_file().validate().unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8500");
        assert_eq!(config.dns_addr.to_string(), "127.0.0.1:8600");
        assert_eq!(config.rpc_addr.to_string(), "127.0.0.1:8300");
        assert_eq!(config.datacenter.as_str(), "dc1");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let file =
            ConfigFile { http_addr: Some("nonsense".into()), bootstrap_expect: Some(0), ..ConfigFile::default() };
        let errors = file.validate().unwrap_err();
        assert!(errors.0.len() >= 4, "{errors}");
        let text = errors.to_string();
        assert!(text.contains("data_dir is required"), "{text}");
        assert!(text.contains("http_addr \"nonsense\""), "{text}");
    }

    #[test]
    fn a_join_token_names_the_servers_the_datacenter_and_the_ca() {
        let token = JoinToken {
            servers: vec!["10.0.0.1:8300".into()],
            datacenter: "eu".into(),
            secret: "s".into(),
            ca_pem: Some("CA".into()),
        };
        let client = ConfigFile { server: Some(false), join_token: Some(token.encode()), ..server_file() };
        let config = client.clone().validate().unwrap();
        assert_eq!((config.retry_join, config.datacenter.as_str()), (vec!["10.0.0.1:8300".to_owned()], "eu"));
        let tls = config.rpc_tls.unwrap();
        assert!(tls.ca_file.is_none() && tls.ca_pem.as_deref() == Some("CA"));
        assert!(tls.verify_outgoing && tls.verify_server_hostname);
        let elsewhere = ConfigFile { datacenter: Some("us".into()), ..client.clone() };
        assert!(elsewhere.validate().unwrap_err().to_string().contains("datacenter \"eu\""));
        let junk = ConfigFile { join_token: Some("hello".into()), ..client.clone() };
        assert!(junk.validate().unwrap_err().to_string().contains("not a Weft join token"));
        let token_on_server = ConfigFile { join_token: Some(token.encode()), ..server_file() };
        assert!(token_on_server.validate().unwrap_err().to_string().contains("join_token is for client agents"));
        let plaintext = JoinToken { ca_pem: None, ..token };
        let client = ConfigFile { server: Some(false), join_token: Some(plaintext.encode()), ..server_file() };
        assert!(client
            .validate()
            .unwrap_err()
            .to_string()
            .contains("10.0.0.1:8300 would leave this host in plaintext"));
    }

    #[test]
    fn rpc_leaves_the_host_only_over_tls() {
        let exposed = ConfigFile { bind_addr: Some("10.0.0.5".into()), ..server_file() };
        let error = exposed.clone().validate().unwrap_err().to_string();
        assert!(error.contains("server RPC on 10.0.0.5:8300 would leave this host in plaintext"), "{error}");
        let dev = ConfigFile { dev_mode: Some(true), ..exposed.clone() };
        assert!(dev.validate().is_ok(), "weft dev is a throw-away single server");
        let half = file::TlsFile {
            defaults: Some(file::TlsSettingsFile { ca_file: Some("ca.pem".into()), ..Default::default() }),
            internal_rpc: None,
        };
        let error = ConfigFile { tls: Some(half.clone()), ..exposed.clone() }.validate().unwrap_err().to_string();
        assert!(error.contains("a server needs cert_file") && error.contains("key_file"), "{error}");
        let full = file::TlsFile {
            defaults: Some(file::TlsSettingsFile {
                ca_file: Some("ca.pem".into()),
                cert_file: Some("s.pem".into()),
                key_file: Some("s-key.pem".into()),
                verify_incoming: Some(true),
                ..Default::default()
            }),
            internal_rpc: Some(file::TlsSettingsFile { verify_incoming: Some(false), ..Default::default() }),
        };
        let tls = ConfigFile { tls: Some(full.clone()), ..exposed }.validate().unwrap().rpc_tls.unwrap();
        assert!(!tls.verify_incoming, "internal_rpc wins over defaults");
        assert!(tls.verify_outgoing && tls.verify_server_hostname, "verified by default");
        let client = ConfigFile {
            server: Some(false),
            retry_join: vec!["10.0.0.1:8300".into()],
            tls: Some(full),
            ..server_file()
        };
        assert!(client.validate().unwrap_err().to_string().contains("cert_file and key_file are for servers"));
        let client = ConfigFile {
            server: Some(false),
            retry_join: vec!["10.0.0.1:8300".into()],
            tls: Some(half),
            ..server_file()
        };
        assert!(client.validate().is_ok());
    }

    #[test]
    fn check_update_interval_defaults_to_consuls_and_may_be_zero() {
        assert_eq!(server_file().validate().unwrap().check_update_interval, Duration::from_secs(300));
        let zero = ConfigFile { check_update_interval: Some("0s".into()), ..server_file() };
        assert_eq!(zero.validate().unwrap().check_update_interval, Duration::ZERO);
        let bad = ConfigFile { check_update_interval: Some("soon".into()), ..server_file() };
        assert!(bad.validate().unwrap_err().to_string().contains("check_update_interval"));
    }

    #[test]
    fn ports_block_moves_the_default_addresses() {
        let file = ConfigFile {
            ports: Some(file::Ports { http: Some(18500), server: Some(18300), ..Default::default() }),
            ..server_file()
        };
        let config = file.validate().unwrap();
        assert_eq!(config.http_addr.port(), 18500);
        assert_eq!(config.rpc_addr.port(), 18300);
    }
}
