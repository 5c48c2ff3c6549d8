//! `weft members`, `weft leave`, `weft reload`: the agent's cluster view and
//! its life cycle.

use std::process::ExitCode;

use clap::Args;

use super::{expect_success, json_body, ApiArgs};
use crate::output::{print_json, print_table, Format};

/// `weft members`.
#[derive(Args)]
pub struct MembersArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// `weft leave` and `weft reload`.
#[derive(Args)]
pub struct AgentControlArgs {
    #[command(flatten)]
    api: ApiArgs,
}

impl MembersArgs {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let response = expect_success(self.api.client().get("/v1/agent/members").await?, "listing members")?;
        let body = json_body(&response)?;
        if self.api.format == Format::Json {
            print_json(&body);
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = body
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let role = if m["Tags"]["role"] == "consul" { "server" } else { "client" };
                vec![
                    m["Name"].as_str().unwrap_or_default().to_owned(),
                    m["Addr"].as_str().unwrap_or_default().to_owned(),
                    m["StatusText"].as_str().unwrap_or_default().to_owned(),
                    role.to_owned(),
                    m["Tags"]["dc"].as_str().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        print_table(&["Node", "Address", "Status", "Type", "DC"], &rows);
        Ok(ExitCode::SUCCESS)
    }
}

impl AgentControlArgs {
    /// Asks the agent to leave gracefully and shut down.
    pub async fn leave(self) -> anyhow::Result<ExitCode> {
        expect_success(self.api.client().put("/v1/agent/leave", Vec::new()).await?, "leave")?;
        println!("Graceful leave complete");
        Ok(ExitCode::SUCCESS)
    }

    /// Asks the agent to re-read its config files' services and checks.
    pub async fn reload(self) -> anyhow::Result<ExitCode> {
        expect_success(self.api.client().put("/v1/agent/reload", Vec::new()).await?, "reload")?;
        println!("Configuration reload triggered");
        Ok(ExitCode::SUCCESS)
    }
}
