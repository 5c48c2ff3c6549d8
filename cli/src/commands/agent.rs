//! `weft agent` and `weft dev`: build the configuration, bind the listeners,
//! run until SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use weft_agent::config::{read_sources, AgentConfig, ConfigFile, ConfigSources};
use weft_agent::{Agent, Listeners};

/// Exit code for a configuration the agent cannot run with (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

/// Flags shared by `agent` and `dev`: each overrides the same setting in config files.
#[derive(Args, Debug, Default)]
pub struct AgentArgs {
    /// Run as a server: replicate state with the other servers.
    #[arg(long)]
    server: bool,
    /// This node's name (default: the host name).
    #[arg(long = "node", alias = "node-name")]
    node_name: Option<String>,
    /// Where this agent keeps its state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The datacenter this agent belongs to (default dc1).
    #[arg(long)]
    datacenter: Option<String>,
    /// Bootstrap a new cluster once this many servers have found each other.
    #[arg(long)]
    bootstrap_expect: Option<usize>,
    /// RPC address of another server to join (repeatable).
    #[arg(long = "retry-join")]
    retry_join: Vec<String>,
    /// Server RPC listen address (IP:port).
    #[arg(long)]
    rpc_addr: Option<String>,
    /// HTTP API listen address (IP:port).
    #[arg(long)]
    http_addr: Option<String>,
    /// DNS listen address (IP:port).
    #[arg(long)]
    dns_addr: Option<String>,
    /// IP for the server RPC listener (with the default port 8300).
    #[arg(long = "bind")]
    bind_addr: Option<String>,
    /// IP for the HTTP and DNS listeners (with default ports 8500, 8600).
    #[arg(long = "client")]
    client_addr: Option<String>,
    /// DNS domain (default weft; `consul` makes Weft a drop-in).
    #[arg(long)]
    domain: Option<String>,
    /// A second DNS domain answered like --domain.
    #[arg(long)]
    alt_domain: Option<String>,
    /// Upstream DNS server for names outside the domain, IP or IP:port (repeatable).
    #[arg(long = "recursor")]
    recursors: Vec<String>,
    /// Snapshot and compact the Raft log after this many entries.
    #[arg(long)]
    raft_snapshot_threshold: Option<u64>,
    /// Log entries kept after a snapshot, for followers that lag a little.
    #[arg(long)]
    raft_trailing_logs: Option<u64>,
    /// Scales the Raft timings, 1 to 10 (Consul's performance.raft_multiplier):
    /// at 1, heartbeats every 50 ms and an election timeout of 150-200 ms.
    #[arg(long)]
    raft_multiplier: Option<u32>,
    /// A config file, HCL or JSON (repeatable; later files win).
    #[arg(long = "config-file")]
    config_files: Vec<PathBuf>,
    /// A directory of *.hcl and *.json config files, read in name order (repeatable).
    #[arg(long = "config-dir")]
    config_dirs: Vec<PathBuf>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long)]
    log_level: Option<String>,
    /// The IP other hosts reach this node at (default: the bind IP).
    #[arg(long = "advertise")]
    advertise_addr: Option<String>,
    /// Node metadata as key:value (repeatable).
    #[arg(long = "node-meta", value_parser = parse_meta)]
    node_meta: Vec<(String, String)>,
    /// Client agents: a join token (weft operator join-token create): the servers to join, their
    /// CA, and a one-time secret with which this agent enrolls for its certificate.
    #[arg(long, env = "WEFT_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// The network this node is in (node meta weft-network): sidecars reach
    /// other networks through their mesh gateways (default: one network).
    #[arg(long)]
    network: Option<String>,
    /// Allow script checks (`args`); off by default.
    #[arg(long)]
    enable_script_checks: bool,
    /// How long an agent may miss heartbeats before its node turns critical (servers; default 8s,
    /// so a dead agent is critical within 10s).
    #[arg(long)]
    liveness_timeout: Option<String>,
    /// How often anti-entropy re-checks this node's registrations (default 5s).
    #[arg(long)]
    anti_entropy_interval: Option<String>,
    /// How long a check whose only change is its output may wait to be synced (default 5m).
    #[arg(long)]
    check_update_interval: Option<String>,
    /// Run as the agent injected into a Kubernetes pod: node and service from
    /// the environment the sidecar injector sets (WEFT_POD_NAME, WEFT_POD_IP,
    /// WEFT_SERVICE_NAME, ...).
    #[arg(long)]
    k8s: bool,
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once(':').ok_or_else(|| format!("{text:?}: expected key:value"))?;
    Ok((key.to_owned(), value.to_owned()))
}

impl AgentArgs {
    fn overrides(&self) -> ConfigFile {
        ConfigFile {
            node_name: self.node_name.clone(),
            datacenter: self.datacenter.clone(),
            data_dir: self.data_dir.clone(),
            server: self.server.then_some(true),
            bootstrap_expect: self.bootstrap_expect,
            retry_join: self.retry_join.clone(),
            bind_addr: self.bind_addr.clone(),
            client_addr: self.client_addr.clone(),
            rpc_addr: self.rpc_addr.clone(),
            http_addr: self.http_addr.clone(),
            dns_addr: self.dns_addr.clone(),
            domain: self.domain.clone(),
            alt_domain: self.alt_domain.clone(),
            recursors: self.recursors.clone(),
            raft_snapshot_threshold: self.raft_snapshot_threshold,
            raft_trailing_logs: self.raft_trailing_logs,
            performance: self.raft_multiplier.map(|m| weft_agent::config::PerformanceFile { raft_multiplier: Some(m) }),
            log_level: self.log_level.clone(),
            advertise_addr: self.advertise_addr.clone(),
            node_meta: (!self.node_meta.is_empty()).then(|| self.node_meta.iter().cloned().collect()),
            network: self.network.clone(),
            join_token: self.join_token.clone(),
            enable_script_checks: self.enable_script_checks.then_some(true),
            liveness_timeout: self.liveness_timeout.clone(),
            anti_entropy_interval: self.anti_entropy_interval.clone(),
            check_update_interval: self.check_update_interval.clone(),
            ..ConfigFile::default()
        }
    }
}

/// `weft agent`'s flags that `weft dev` has no use for (it is a lone
/// server with nothing to join): still accepted, not listed by `weft dev
/// --help`.
const UNUSED_BY_DEV: [&str; 5] = ["server", "bootstrap_expect", "retry_join", "join_token", "k8s"];

/// `cli` with [`UNUSED_BY_DEV`] hidden from `weft dev --help`.
pub fn hide_unused_dev_flags(cli: clap::Command) -> clap::Command {
    cli.mut_subcommand("dev", |dev| UNUSED_BY_DEV.iter().fold(dev, |dev, id| dev.mut_arg(*id, |arg| arg.hide(true))))
}

/// `weft dev`: the same flags, with dev defaults.
#[derive(Args, Debug, Default)]
pub struct DevArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Turn ACLs on, denying by default (make the first management token
    /// with `weft acl bootstrap`).
    #[arg(long)]
    acl: bool,
}

/// `base`, then the config files and directories (`extra_files` and
/// `extra_dirs` first: `weft validate`'s paths), then the pod's environment
/// with `--k8s`, then the flags: what `weft agent` runs with and `weft
/// validate` checks. The error lists every problem found.
pub(crate) fn merged_config(
    args: &AgentArgs,
    base: ConfigFile,
    (extra_files, extra_dirs): (&[PathBuf], &[PathBuf]),
) -> Result<ConfigFile, String> {
    let mut merged = base;
    let files: Vec<PathBuf> = extra_files.iter().chain(&args.config_files).cloned().collect();
    let dirs: Vec<PathBuf> = extra_dirs.iter().chain(&args.config_dirs).cloned().collect();
    merged.merge(read_sources(&files, &dirs).map_err(|errors| errors.to_string())?);
    if args.k8s {
        let pod = super::k8s::agent_overlay()
            .map_err(|problems| format!("--k8s needs the pod's environment:\n  {}", problems.join("\n  ")))?;
        merged.merge(pod);
    }
    merged.merge(args.overrides());
    Ok(merged)
}

/// Merges files and flags into a validated config, or exits 64 with every problem listed.
fn build_config(args: &AgentArgs, base: ConfigFile) -> Result<AgentConfig, ExitCode> {
    let merged = merged_config(args, base, (&[], &[])).map_err(|errors| {
        eprintln!("Error: {errors}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })?;
    init_logging(merged.log_level.as_deref().unwrap_or("info"));
    let mut config = merged.validate().map_err(|errors| {
        eprintln!("Error: {errors}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })?;
    config.sources = ConfigSources { files: args.config_files.clone(), dirs: args.config_dirs.clone() };
    // Sidecar proxies are this same binary (`weft connect proxy`).
    config.proxy_program = std::env::current_exe().ok();
    Ok(config)
}

pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            // hickory logs every DNS-over-TCP connection at INFO.
            format!("{level},openraft=warn,sled=warn,h2=warn,tower=warn,hickory_server=warn"),
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colored_logs(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .try_init();
}

/// Colours only for a terminal (not journald or a file), and never with
/// `NO_COLOR` set to anything but the empty string (no-color.org).
fn colored_logs(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

pub async fn run_agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = match build_config(&args, ConfigFile::default()) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    serve(config, |_| {}).await
}

pub async fn run_dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    // Keep the temporary data dir alive for the whole run; it is removed on exit.
    let temp_dir = match &args.agent.data_dir {
        Some(_) => None,
        None => {
            Some(tempfile::Builder::new().prefix("weft-dev-").tempdir().context("cannot create a temporary data dir")?)
        }
    };
    let defaults = ConfigFile {
        node_name: Some("dev".into()),
        server: Some(true),
        bootstrap_expect: Some(1),
        data_dir: temp_dir.as_ref().map(|d| d.path().to_path_buf()),
        dev_mode: Some(true),
        acl: args.acl.then(|| weft_agent::config::AclFile {
            enabled: Some(true),
            default_policy: Some("deny".into()),
            ..Default::default()
        }),
        ..ConfigFile::default()
    };
    let config = match build_config(&args.agent, defaults) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let temporary = temp_dir.is_some();
    serve(config, |config| print_dev_banner(config, temporary)).await
}

fn print_dev_banner(config: &AgentConfig, temporary: bool) {
    let http = config.http_addr;
    let dns = config.dns_addr;
    let (dns_ip, dns_port, domain) = (dns.ip(), dns.port(), &config.domain);
    let data = if temporary { " (temporary: removed on exit)" } else { "" };
    eprintln!(
        "==> Weft dev agent: a single server and agent, state in {}{data}

    HTTP API: http://{http}   (Consul-compatible)
    DNS: {dns}   (e.g. dig @{dns_ip} -p {dns_port} web.service.{domain})
    Server RPC: {}
    Datacenter: {}   Node: {}
    Intentions: traffic that no intention matches is ALLOWED in dev mode
                (a new cluster denies it; `weft intention create --deny '*' '*'` to match that)

    Try:
      weft kv put --http-addr {http} greeting hello
      weft kv get --http-addr {http} greeting
      curl -s http://{http}/v1/kv/greeting?raw
      curl -s http://{http}/v1/status/leader
      weft catalog nodes --http-addr {http}
      weft operator raft list-peers --http-addr {http}

    Stop with Ctrl-C.
",
        config.data_dir.display(),
        config.rpc_addr,
        config.datacenter,
        config.node_name,
    );
}

async fn bind(what: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen for {what} on {addr} (is another agent running there? choose another with --{what}-addr)"
        )
    })
}

/// Binds every listener (a taken port fails here, before `ready` runs),
/// calls `ready`, and runs the agent until SIGINT/SIGTERM.
async fn serve(config: AgentConfig, ready: impl FnOnce(&AgentConfig)) -> anyhow::Result<ExitCode> {
    let rpc = match config.server {
        true => Some(bind("rpc", config.rpc_addr).await?),
        false => None,
    };
    let listeners = Listeners {
        rpc,
        http: bind("http", config.http_addr).await?,
        dns_udp: tokio::net::UdpSocket::bind(config.dns_addr).await.with_context(|| {
            format!("cannot listen for DNS (UDP) on {} (choose another with --dns-addr)", config.dns_addr)
        })?,
        dns_tcp: bind("dns", config.dns_addr).await?,
    };
    ready(&config);
    let agent = Agent::new(config).with_lifecycle(SystemdNotify);
    tokio::spawn(reload_on_sighup(agent.reload_trigger()));
    agent.run(listeners, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Passes the agent's lifecycle on to systemd (`Type=notify` units).
struct SystemdNotify;

impl weft_agent::Lifecycle for SystemdNotify {
    fn serving(&mut self) {
        crate::systemd::notify("READY=1");
    }
    fn stopping(&mut self) {
        crate::systemd::notify("STOPPING=1");
    }
}

/// SIGHUP re-reads the config files' services and checks, as in Consul.
async fn reload_on_sighup(trigger: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
    while hangups.recv().await.is_some() {
        trigger.notify_one();
    }
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colored_logs(true, None));
        assert!(colored_logs(true, Some("".into())));
        assert!(!colored_logs(true, Some("1".into())));
        assert!(!colored_logs(false, None));
    }
}
