//! `weft connect ca ...`: the mesh CA as operators see it; `weft connect
//! proxy`: a sidecar (the gateway is in `gateway.rs`).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{expect_success, json_body, ApiArgs, ProxyThreadsArgs};
use crate::output::{print_json, print_table, Format};

#[derive(Subcommand)]
pub enum ConnectCommand {
    /// The mesh CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Run a sidecar proxy (the agent starts these itself for services
    /// registered with `connect { sidecar_service {} }`).
    Proxy(ProxyArgs),
    /// Run a gateway: `--kind ingress` serves HTTP on the edge into mesh
    /// services, as its ingress-gateway entry says.
    Gateway(super::gateway::GatewayArgs),
}

#[derive(Args)]
pub struct ProxyArgs {
    /// The ID of the service this sidecar fronts (its sidecar registration
    /// on the agent says the rest).
    #[arg(long, required_unless_present = "service", conflicts_with = "service")]
    sidecar_for: Option<String>,
    /// Stand-alone: the service to proxy for (registered on the agent,
    /// without a sidecar registration), like Consul's built-in proxy.
    #[arg(long, requires_all = ["service_addr", "listen"])]
    service: Option<String>,
    /// Stand-alone: where the application listens.
    #[arg(long, value_name = "ADDR")]
    service_addr: Option<std::net::SocketAddr>,
    /// Stand-alone: the public mutual-TLS listener.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Stand-alone: an upstream, `NAME:PORT` (on 127.0.0.1) or
    /// `NAME:ADDRESS:PORT`; repeatable.
    #[arg(long, value_name = "NAME:PORT")]
    upstream: Vec<String>,
    /// Where to serve /metrics, /config and /ready (loopback only by default).
    #[arg(long, value_name = "ADDR")]
    admin_bind: Option<std::net::SocketAddr>,
    /// Exit when the parent process (the agent that started this sidecar) dies.
    #[arg(long, hide = true)]
    exit_with_parent: bool,
    #[command(flatten)]
    threads: ProxyThreadsArgs,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// List the trusted roots (the active one signs new leaves).
    Roots(CaArgs),
    /// Show the CA configuration.
    GetConfig(CaArgs),
    /// Apply a CA configuration (Consul's JSON); this makes a new root,
    /// cross-signed by the active one (a rotation).
    SetConfig(SetConfigArgs),
    /// Rotate the root: a new one, cross-signed by the active one, signs
    /// new leaves; the old one stays trusted until its leaves expire.
    Rotate(CaArgs),
}

#[derive(Args)]
pub struct SetConfigArgs {
    /// A JSON file with the configuration (`{"Provider": "consul", "Config": {...}}`).
    #[arg(long)]
    config_file: std::path::PathBuf,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct CaArgs {
    #[command(flatten)]
    api: ApiArgs,
}

impl ConnectCommand {
    /// The threads a proxy carries traffic on (see `ProxyThreadsArgs`), or
    /// `None` for the commands that are not proxies.
    pub fn proxy_threads(&self) -> Option<std::num::NonZeroUsize> {
        match self {
            ConnectCommand::Proxy(args) => Some(args.threads.threads.unwrap_or(super::DEFAULT_SIDECAR_THREADS)),
            ConnectCommand::Gateway(args) => Some(
                args.threads
                    .threads
                    .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)),
            ),
            ConnectCommand::Ca(_) => None,
        }
    }

    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let command = match self {
            ConnectCommand::Ca(command) => command,
            ConnectCommand::Proxy(args) => return run_proxy(args).await,
            ConnectCommand::Gateway(args) => return super::gateway::run(args).await,
        };
        match command {
            CaCommand::Roots(args) => {
                let response = args.api.client().get("/v1/connect/ca/roots").await?;
                let body = json_body(&expect_success(response, "reading the CA roots")?)?;
                if args.api.format == Format::Json {
                    print_json(&body);
                    return Ok(ExitCode::SUCCESS);
                }
                println!("Trust domain: {}", body["TrustDomain"].as_str().unwrap_or_default());
                let rows: Vec<Vec<String>> = body["Roots"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|root| {
                        vec![
                            root["ID"].as_str().unwrap_or_default().to_owned(),
                            root["Name"].as_str().unwrap_or_default().to_owned(),
                            if root["Active"] == true { "active" } else { "" }.to_owned(),
                            root["NotAfter"].as_str().unwrap_or_default().to_owned(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "Name", "State", "Expires"], &rows);
            }
            CaCommand::GetConfig(args) => {
                let response = args.api.client().get("/v1/connect/ca/configuration").await?;
                print_json(&json_body(&expect_success(response, "reading the CA configuration")?)?);
            }
            CaCommand::SetConfig(args) => {
                let body = std::fs::read(&args.config_file)
                    .with_context(|| format!("cannot read {}", args.config_file.display()))?;
                let response = args.api.client().put("/v1/connect/ca/configuration", body).await?;
                let answer = json_body(&expect_success(response, "setting the CA configuration")?)?;
                println!("Configuration updated! New active root: {}", answer["ActiveRootID"].as_str().unwrap_or(""));
            }
            CaCommand::Rotate(args) => {
                let response = args.api.client().put("/v1/connect/ca/configuration", "{}").await?;
                let answer = json_body(&expect_success(response, "rotating the CA root")?)?;
                println!("Root rotated. New active root: {}", answer["ActiveRootID"].as_str().unwrap_or(""));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    super::agent::init_logging("info");
    if args.exit_with_parent {
        exit_with_parent()?;
    }
    use weft_proxy::sidecar::SnapshotSource;
    let source = match (args.sidecar_for, args.service, args.service_addr, args.listen) {
        (Some(parent_id), _, _, _) => SnapshotSource::SidecarFor { parent_id },
        (None, Some(service), Some(service_addr), Some(listen)) => {
            SnapshotSource::Standalone { service, service_addr, listen, upstreams: args.upstream }
        }
        _ => anyhow::bail!("give --sidecar-for, or --service with --service-addr and --listen"),
    };
    match weft_proxy::sidecar::run(args.api.client(), source, args.admin_bind, super::agent::shutdown_signal()).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error @ weft_proxy::sidecar::SidecarError::PublicPortInUse { .. }) => {
            tracing::error!(%error, "exiting; the agent picks another port for this sidecar unless its port was set");
            Ok(ExitCode::from(weft_api::proxy::EXIT_PUBLIC_PORT_IN_USE))
        }
        Err(error) => Err(error.into()),
    }
}

/// Has the kernel end this process when its parent dies, so a sidecar
/// never outlives a `kill -9` of its agent (whose restart would find the
/// sidecar's ports taken).
fn exit_with_parent() -> anyhow::Result<()> {
    use rustix::process::{getppid, set_parent_process_death_signal, Signal};
    set_parent_process_death_signal(Some(Signal::TERM))?;
    // The parent may have died before the signal was armed.
    if getppid().is_none_or(|parent| parent.as_raw_nonzero().get() == 1) {
        anyhow::bail!("the agent that started this sidecar is gone");
    }
    Ok(())
}
