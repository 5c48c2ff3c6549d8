//! `weft connect gateway --kind ingress|mesh`: runs an ingress or a mesh
//! gateway (and, with `--register`, registers it with the local agent first
//! and deregisters it on the way out, like `consul connect envoy
//! -gateway=ingress|mesh -register`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::json;
use weft_api::client::path_segment;
use weft_proxy::sidecar::SnapshotSource;

use super::{expect_success, ApiArgs};

/// Exit code for settings the gateway cannot run with (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GatewayKind {
    /// HTTP listeners on the edge into mesh services (an `ingress-gateway` entry).
    Ingress,
    /// The way into this agent's network from the others: relays mTLS to the
    /// sidecar each connection names, without terminating it.
    Mesh,
}

/// Where a mesh gateway listens for its own network when no --port is given (Consul's).
const DEFAULT_MESH_GATEWAY_PORT: u16 = 8443;

#[derive(Args)]
pub struct GatewayArgs {
    /// Which gateway.
    #[arg(long, value_enum)]
    kind: GatewayKind,
    /// The gateway's service name: its identity in the mesh (intentions name
    /// it as the source) and the name of its ingress-gateway entry (a mesh
    /// gateway's default: mesh-gateway).
    #[arg(long)]
    service: Option<String>,
    /// Its service ID on the agent (default: the service name).
    #[arg(long)]
    id: Option<String>,
    /// The IP the listeners bind and DNS answers `<service>.ingress` with (a
    /// mesh gateway: its address in its own network).
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// A mesh gateway's port on --address (default 8443).
    #[arg(long)]
    port: Option<u16>,
    /// A mesh gateway's address for other networks (IP:port), if it differs
    /// from --address: sidecars elsewhere connect here.
    #[arg(long, value_name = "IP:PORT")]
    wan_address: Option<SocketAddr>,
    /// Register the gateway with the local agent first (and deregister it on exit).
    #[arg(long)]
    register: bool,
    /// The certificate (PEM, leaf first) TLS listeners present to clients.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM). It stays on this host.
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Where to serve /metrics, /config and /ready.
    #[arg(long, value_name = "ADDR")]
    admin_bind: Option<SocketAddr>,
    #[command(flatten)]
    pub(super) threads: super::ProxyThreadsArgs,
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    super::agent::init_logging("info");
    let service = match (args.kind, &args.service) {
        (_, Some(service)) => service.clone(),
        (GatewayKind::Mesh, None) => "mesh-gateway".to_owned(),
        (GatewayKind::Ingress, None) => {
            eprintln!("Error: an ingress gateway needs --service NAME (the name of its ingress-gateway entry)");
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    let edge_tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
            };
            match weft_proxy::tls::edge_server_config(&read(cert)?, &read(key)?) {
                Ok(config) => Some(config),
                Err(error) => {
                    eprintln!("Error: the edge certificate cannot be used: {error}");
                    return Ok(ExitCode::from(EXIT_BAD_CONFIG));
                }
            }
        }
        _ => None,
    };
    let id = args.id.clone().unwrap_or_else(|| service.clone());
    let client = args.api.client();
    if args.register {
        let response = client.put("/v1/agent/service/register", registration(&args, &id, &service).to_string()).await?;
        expect_success(response, "registering the gateway")?;
        tracing::info!(%id, %service, "gateway registered");
    }
    let source = match args.kind {
        GatewayKind::Ingress => SnapshotSource::IngressGateway { id: id.clone(), address: args.address, edge_tls },
        GatewayKind::Mesh => SnapshotSource::MeshGateway { id: id.clone(), address: args.address },
    };
    let served =
        weft_proxy::sidecar::run(client.clone(), source, args.admin_bind, super::agent::shutdown_signal()).await;
    if args.register {
        let path = format!("/v1/agent/service/deregister/{}", path_segment(&id));
        if let Err(error) = client.put(&path, "").await {
            tracing::warn!(%error, "cannot deregister the gateway");
        }
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The gateway's catalog registration (Consul's shape).
fn registration(args: &GatewayArgs, id: &str, service: &str) -> serde_json::Value {
    let address = args.address.to_string();
    match args.kind {
        GatewayKind::Ingress => {
            json!({"ID": id, "Name": service, "Kind": "ingress-gateway", "Address": address, "Port": 0})
        }
        GatewayKind::Mesh => {
            let port = args.port.unwrap_or(DEFAULT_MESH_GATEWAY_PORT);
            let wan = args.wan_address.unwrap_or(SocketAddr::new(args.address, port));
            json!({"ID": id, "Name": service, "Kind": "mesh-gateway", "Address": address, "Port": port,
            "TaggedAddresses": {
                "lan": {"Address": address, "Port": port},
                "wan": {"Address": wan.ip().to_string(), "Port": wan.port()},
            }})
        }
    }
}
