//! `weft maint`: maintenance mode on the local agent, like `consul maint`:
//! `-enable [-reason R] [-service ID]`, `-disable [-service ID]`, or, with
//! neither, what is in maintenance now.

use std::process::ExitCode;

use clap::Args;

use weft_api::client::{path_segment, query_value};

use super::{expect_success, json_body, ApiArgs};

#[derive(Args, Debug)]
pub struct MaintArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Enable maintenance mode.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Disable maintenance mode.
    #[arg(long)]
    disable: bool,
    /// Why (shown in the check's notes); with --enable.
    #[arg(long, requires = "enable")]
    reason: Option<String>,
    /// A service's ID: that service, not the whole node.
    #[arg(long)]
    service: Option<String>,
}

impl MaintArgs {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self.api.client();
        if !self.enable && !self.disable {
            return self.list().await;
        }
        let mut query = format!("?enable={}", self.enable);
        if let Some(reason) = &self.reason {
            query.push_str(&format!("&reason={}", query_value(reason)));
        }
        let path = match &self.service {
            Some(id) => format!("/v1/agent/service/maintenance/{}{query}", path_segment(id)),
            None => format!("/v1/agent/maintenance{query}"),
        };
        expect_success(client.put(&path, Vec::new()).await?, "changing maintenance mode")?;
        let what = if self.enable { "entered" } else { "left" };
        match &self.service {
            Some(id) => println!("Service {what} maintenance mode: {id}"),
            None => println!("Node {what} maintenance mode"),
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Prints the node's and the services' maintenance, as `consul maint` does.
    async fn list(&self) -> anyhow::Result<ExitCode> {
        let checks = json_body(&expect_success(self.api.client().get("/v1/agent/checks").await?, "listing checks")?)?;
        let mut checks: Vec<&serde_json::Value> =
            checks.as_object().map(|c| c.values().filter(|c| c["Type"] == "maintenance").collect()).unwrap_or_default();
        checks.sort_by_key(|c| c["CheckID"].as_str().unwrap_or_default().to_owned());
        for check in checks {
            let reason = check["Notes"].as_str().unwrap_or_default();
            match check["ServiceID"].as_str().filter(|id| !id.is_empty()) {
                None => {
                    println!("Node:\n  Name:   {}\n  Reason: {reason}\n", check["Node"].as_str().unwrap_or_default())
                }
                Some(id) => println!("Service:\n  ID:     {id}\n  Reason: {reason}\n"),
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
