//! `weft proxy config-dump`: what a running sidecar is using now, read from
//! its admin port (like `istioctl proxy-config` or Envoy's `/config_dump`).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use weft_api::catalog::sidecar_id;
use weft_api::client::{path_segment, HttpClient};
use weft_api::ids::ServiceId;

use super::{expect_success, json_body, ApiArgs};
use crate::output::print_json;

#[derive(Subcommand)]
pub enum ProxyCommand {
    /// Print a sidecar's live configuration: listeners, endpoints,
    /// intentions, certificate serial and expiry (never its private key).
    ConfigDump(ConfigDumpArgs),
}

#[derive(Args)]
pub struct ConfigDumpArgs {
    /// The ID of the service whose sidecar to ask (the agent says where its
    /// admin port is).
    #[arg(long, required_unless_present = "admin_addr")]
    sidecar_for: Option<String>,
    /// Ask the sidecar at this admin address directly.
    #[arg(long, value_name = "ADDR", conflicts_with = "sidecar_for")]
    admin_addr: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

impl ProxyCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let ProxyCommand::ConfigDump(args) = self;
        let admin = match (args.admin_addr, args.sidecar_for) {
            (Some(admin), _) => admin,
            (None, Some(parent)) => {
                let sidecar = sidecar_id(&ServiceId::new(parent.as_str()));
                let path = format!("/v1/agent/connect/proxy/{}", path_segment(sidecar.as_str()));
                let snapshot = json_body(&expect_success(
                    args.api.client().get(&path).await?,
                    &format!("finding the sidecar of {parent}"),
                )?)?;
                snapshot["admin"]
                    .as_str()
                    .with_context(|| {
                        format!(
                            "the agent does not know where {parent}'s sidecar serves its admin port (is it running?)"
                        )
                    })?
                    .to_owned()
            }
            (None, None) => unreachable!("clap requires one of them"),
        };
        let response = HttpClient::new(&admin, None)
            .get("/config")
            .await
            .with_context(|| format!("cannot reach the sidecar's admin port at {admin}"))?;
        print_json(&json_body(&expect_success(response, "reading the sidecar's configuration")?)?);
        Ok(ExitCode::SUCCESS)
    }
}
