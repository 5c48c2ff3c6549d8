//! `weft services register|deregister`: the agent's own services, from a
//! definition file (HCL or JSON, Consul's shape) or from flags.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{expect_success, ApiArgs};

#[derive(Subcommand)]
pub enum ServicesCommand {
    /// Register a service with the local agent.
    Register(RegisterArgs),
    /// Deregister a service from the local agent.
    Deregister(DeregisterArgs),
}

#[derive(Args)]
pub struct RegisterArgs {
    /// A file with `service { ... }` (HCL) or `{"Service": {...}}` / a bare definition (JSON).
    file: Option<PathBuf>,
    /// The service's name (instead of a file).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    address: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Metadata as key=value (repeatable).
    #[arg(long = "meta")]
    meta: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct DeregisterArgs {
    /// The service ID (or a definition file naming it).
    id: String,
    #[command(flatten)]
    api: ApiArgs,
}

impl ServicesCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            ServicesCommand::Register(args) => {
                let definitions = match &args.file {
                    Some(path) => read_definitions(path)?,
                    None => vec![definition_from_flags(&args)?],
                };
                for definition in definitions {
                    let name = definition.get("name").or_else(|| definition.get("Name")).cloned().unwrap_or_default();
                    let body = serde_json::to_vec(&definition)?;
                    let response = args.api.client().put("/v1/agent/service/register", body).await?;
                    expect_success(response, "registering the service")?;
                    println!("Registered service: {}", name.as_str().unwrap_or_default());
                }
            }
            ServicesCommand::Deregister(args) => {
                let path = format!("/v1/agent/service/deregister/{}", weft_api::client::path_segment(&args.id));
                expect_success(args.api.client().put(&path, Vec::new()).await?, "deregistering the service")?;
                println!("Deregistered service: {}", args.id);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn definition_from_flags(args: &RegisterArgs) -> anyhow::Result<Value> {
    let Some(name) = &args.name else { bail!("give a definition file or --name") };
    let mut meta = serde_json::Map::new();
    for pair in &args.meta {
        let (key, value) = pair.split_once('=').with_context(|| format!("--meta {pair:?}: expected key=value"))?;
        meta.insert(key.to_owned(), json!(value));
    }
    Ok(json!({
        "Name": name,
        "ID": args.id.clone().unwrap_or_else(|| name.clone()),
        "Port": args.port.unwrap_or(0),
        "Address": args.address.clone().unwrap_or_default(),
        "Tags": args.tags,
        "Meta": meta,
    }))
}

/// The service definitions in a file: HCL `service { ... }` blocks, or JSON
/// with a `service`/`services` key, or a bare definition.
fn read_definitions(path: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = if path.extension().and_then(|e| e.to_str()) == Some("json") {
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?
    } else {
        hcl::from_str(&text).with_context(|| format!("{}: invalid HCL", path.display()))?
    };
    let find = |key: &str| value.as_object().and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)));
    let definitions = match (find("service"), find("services")) {
        (Some((_, Value::Array(items))), _) | (None, Some((_, Value::Array(items)))) => items.clone(),
        (Some((_, one)), _) => vec![one.clone()],
        _ => vec![value.clone()],
    };
    if definitions.is_empty() {
        bail!("{}: no service definition found", path.display());
    }
    Ok(definitions)
}
