//! `weft k8s webhook`: Weft on Kubernetes. The sidecar-injection webhook
//! the Helm chart deploys; the decisions live in `weft-k8s`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use weft_k8s::{InjectConfig, WebhookConfig, WebhookError};

use super::agent::{init_logging, shutdown_signal};

/// Exit code for settings the webhook cannot run with (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Subcommand)]
pub enum K8sCommand {
    /// Serve the mutating admission webhook that injects the Weft agent and
    /// proxy into annotated pods (`POST /mutate`, `GET /health`, HTTPS).
    Webhook(WebhookArgs),
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
    /// Log level: trace, debug, info, warn, error.
    #[arg(long, default_value = "info")]
    log_level: String,
}

impl K8sCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            K8sCommand::Webhook(args) => webhook(args).await,
        }
    }
}

async fn webhook(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args.log_level);
    let config = WebhookConfig {
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        inject: InjectConfig {
            agent_image: args.agent_image,
            server_addr: args.server_addr,
            transparent_proxy: args.transparent_proxy,
            inject_by_default: args.inject_by_default,
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
