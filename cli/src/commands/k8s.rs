//! Weft on Kubernetes: `weft k8s webhook` (the sidecar injector the Helm
//! chart deploys; its decisions live in `weft-k8s`), `weft k8s ready` (the
//! injected sidecar's startup probe) and what `weft agent --k8s` reads from
//! the pod's environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;

use serde_json::json;
use weft_agent::config::{AclFile, AclLoginFile, ConfigFile};
use weft_k8s::pod_env::PodEnv;
use weft_k8s::sidecar::INBOUND_PORT;
use weft_k8s::{InjectConfig, WebhookConfig, WebhookError};

use super::agent::{init_logging, shutdown_signal};

/// Exit code for settings the webhook cannot run with (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Subcommand)]
pub enum K8sCommand {
    /// Serve the mutating admission webhook that injects the Weft agent and
    /// proxy into annotated pods (`POST /mutate`, `GET /health`, HTTPS).
    Webhook(WebhookArgs),
    /// Exit 0 once this pod's sidecar is registered and passing (the
    /// injected container's startup probe); 1 until then.
    Ready(ReadyArgs),
    /// Redirect this network namespace's TCP through the sidecar with iptables
    /// (transparent proxying; the injected weft-init container runs it as root).
    RedirectTraffic(RedirectArgs),
}

#[derive(Args)]
pub struct RedirectArgs {
    /// The proxy's uid: its own connections are not redirected.
    #[arg(long, default_value_t = weft_k8s::sidecar::PROXY_UID)]
    proxy_uid: u32,
    /// The proxy's inbound (mTLS) listener port.
    #[arg(long, default_value_t = weft_k8s::sidecar::INBOUND_PORT)]
    inbound_port: u16,
    /// The proxy's outbound listener port for redirected connections.
    #[arg(long, default_value_t = weft_k8s::sidecar::OUTBOUND_PORT)]
    outbound_port: u16,
    /// An inbound port that reaches the application directly, e.g. a probe's (repeatable).
    #[arg(long = "exclude-inbound-port")]
    exclude_inbound_ports: Vec<u16>,
    /// An outbound port left alone (repeatable).
    #[arg(long = "exclude-outbound-port")]
    exclude_outbound_ports: Vec<u16>,
    /// An outbound destination CIDR left alone (repeatable).
    #[arg(long = "exclude-outbound-cidr")]
    exclude_outbound_cidrs: Vec<String>,
    /// The iptables program.
    #[arg(long, default_value = "iptables")]
    iptables: String,
}

#[derive(Args)]
pub struct ReadyArgs {
    /// The service whose sidecar must be passing (default: $WEFT_SERVICE_NAME).
    #[arg(long, env = "WEFT_SERVICE_NAME")]
    service: String,
    #[command(flatten)]
    api: super::ApiArgs,
}

#[derive(Args)]
pub struct WebhookArgs {
    /// Where to listen (the chart's Service forwards 443 here).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The serving certificate (PEM, leaf first) for `<service>.<namespace>.svc`.
    #[arg(long)]
    tls_cert_file: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    tls_key_file: PathBuf,
    /// The image with the `weft` binary, for the injected containers.
    #[arg(long)]
    agent_image: String,
    /// HOST:PORT of the servers' RPC port, for the injected agent's --retry-join.
    #[arg(long)]
    server_addr: String,
    /// Redirect injected pods' traffic through their proxy (iptables), unless
    /// a pod's `weft.io/transparent-proxy` annotation says otherwise.
    #[arg(long)]
    transparent_proxy: bool,
    /// Inject every pod sent here unless annotated `weft.io/connect-inject: "false"`.
    #[arg(long)]
    inject_by_default: bool,
    /// The network of this cluster's pods, for the injected agent's --network
    /// (sidecars elsewhere reach them through this network's mesh gateways).
    #[arg(long, default_value = "")]
    network: String,
    /// The CA the servers' RPC certificates chain to (PEM), given to injected
    /// agents (WEFT_SERVER_CA_PEM) so they verify the servers.
    #[arg(long)]
    server_ca_file: Option<PathBuf>,
    /// With ACLs on: the auth method injected agents log in with, using
    /// their pod's service-account token (audience `weft`).
    #[arg(long)]
    acl_auth_method: Option<String>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long, default_value = "info")]
    log_level: String,
}

impl K8sCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            K8sCommand::Webhook(args) => webhook(args).await,
            K8sCommand::Ready(args) => ready(args).await,
            K8sCommand::RedirectTraffic(args) => redirect_traffic(args),
        }
    }
}

async fn webhook(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args.log_level);
    let server_ca_pem = match &args.server_ca_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(pem) => Some(pem),
            Err(error) => {
                eprintln!("Error: cannot read --server-ca-file {}: {error}", path.display());
                return Ok(ExitCode::from(64));
            }
        },
        None => None,
    };
    let config = WebhookConfig {
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        inject: InjectConfig {
            agent_image: args.agent_image,
            server_addr: args.server_addr,
            transparent_proxy: args.transparent_proxy,
            inject_by_default: args.inject_by_default,
            network: args.network.into(),
            server_ca_pem,
            acl_auth_method: args.acl_auth_method,
        },
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen for the webhook on {} (choose another with --listen)", args.listen))?;
    tracing::info!(listen = %args.listen, "sidecar-injection webhook serving");
    match weft_k8s::run(config, listener, shutdown_signal()).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error @ (WebhookError::Config(_) | WebhookError::Tls(_))) => {
            // Settings or certificate files it cannot start with: say which, exit 64.
            eprintln!("Error: {error}");
            Ok(ExitCode::from(EXIT_BAD_CONFIG))
        }
    }
}

/// Whether the service's sidecar is registered on the local agent and every
/// one of its checks passes.
async fn ready(args: ReadyArgs) -> anyhow::Result<ExitCode> {
    let response = args.api.client().get("/v1/agent/checks").await?;
    let checks = super::json_body(&super::expect_success(response, "reading the agent's checks")?)?;
    let sidecar = format!("{}-sidecar-proxy", args.service);
    let statuses: Vec<&str> = checks
        .as_object()
        .into_iter()
        .flat_map(|checks| checks.values())
        .filter(|check| check["ServiceName"] == sidecar.as_str())
        .filter_map(|check| check["Status"].as_str())
        .collect();
    if !statuses.is_empty() && statuses.iter().all(|status| *status == "passing") {
        println!("{sidecar} is passing");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{sidecar} is not ready yet (checks: {statuses:?})");
    Ok(ExitCode::FAILURE)
}

/// `weft agent --k8s`: the node and the service (with its sidecar on the
/// injector's inbound port and its upstreams) from the pod's environment.
pub fn agent_overlay() -> Result<ConfigFile, Vec<String>> {
    let pod = PodEnv::read(|name| std::env::var(name).ok())?;
    let meta = BTreeMap::from([
        ("k8s-pod".to_owned(), pod.pod_name.clone()),
        ("k8s-namespace".to_owned(), pod.namespace.clone()),
        ("k8s-node".to_owned(), pod.node_name.clone()),
    ]);
    let upstreams: Vec<serde_json::Value> = pod
        .upstreams
        .iter()
        .map(|u| json!({"destination_name": u.service.as_str(), "local_bind_port": u.local_port}))
        .collect();
    let service = json!({
        "name": pod.service.as_str(),
        "port": pod.service_port.unwrap_or(0),
        "meta": {"k8s-namespace": pod.namespace, "k8s-pod": pod.pod_name},
        "connect": {"sidecar_service": {"port": INBOUND_PORT, "proxy": {
            "upstreams": upstreams,
            "mode": if pod.transparent_proxy { "transparent" } else { "direct" },
        }}},
    });
    // The login's token says which pod made it.
    let login_meta = BTreeMap::from([("pod".to_owned(), format!("{}/{}", pod.namespace, pod.pod_name))]);
    Ok(ConfigFile {
        node_name: Some(pod.pod_name),
        advertise_addr: Some(pod.pod_ip.to_string()),
        node_meta: Some(meta),
        services: vec![service],
        server_ca_pem: pod.server_ca_pem,
        acl: pod.acl_login.map(|(auth_method, bearer_token_file)| AclFile {
            enabled: Some(true),
            default_policy: Some("deny".into()),
            login: Some(AclLoginFile {
                auth_method: Some(auth_method),
                bearer_token_file: Some(bearer_token_file),
                meta: login_meta,
            }),
            ..AclFile::default()
        }),
        ..ConfigFile::default()
    })
}

/// Installs the transparent-proxying rules (see `weft_k8s::redirect`):
/// our chains made (or emptied) and filled, then the jumps into them added
/// unless they are there.
fn redirect_traffic(args: RedirectArgs) -> anyhow::Result<ExitCode> {
    use weft_k8s::redirect::{jump, Redirect, Rule, INBOUND_CHAIN, JUMPS, OUTPUT_CHAIN};
    let redirect = Redirect {
        proxy_uid: args.proxy_uid,
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        exclude_inbound_ports: args.exclude_inbound_ports,
        exclude_outbound_ports: args.exclude_outbound_ports,
        exclude_outbound_cidrs: args.exclude_outbound_cidrs,
    };
    let run = |rule: &Rule| {
        std::process::Command::new(&args.iptables)
            .args(["-w", "5"])
            .args(&rule.0)
            .output()
            .with_context(|| format!("cannot run {} (is iptables installed?)", args.iptables))
    };
    let must = |rule: &Rule| -> anyhow::Result<()> {
        let output = run(rule)?;
        anyhow::ensure!(output.status.success(), "{rule}: {}", String::from_utf8_lossy(&output.stderr).trim());
        println!("{rule}");
        Ok(())
    };
    for chain in [OUTPUT_CHAIN, INBOUND_CHAIN] {
        let create = Rule(["-t", "nat", "-N", chain].map(str::to_owned).to_vec());
        if !run(&create)?.status.success() {
            must(&Rule(["-t", "nat", "-F", chain].map(str::to_owned).to_vec()))?;
        }
    }
    for rule in redirect.chain_rules() {
        must(&rule)?;
    }
    for pair in JUMPS {
        if !run(&jump("-C", pair))?.status.success() {
            must(&jump("-A", pair))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
