//! `weft members`, `weft leave`, `weft reload`: the agent's cluster view and
//! its life cycle.

use std::process::ExitCode;

use clap::Args;

use super::{expect_success, json_body, ApiArgs};
use crate::output::{print_list, text};

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
        print_list(self.api.format, &body, &body, &["Node", "Address", "Status", "Type", "DC"], |m| {
            let role = if m["Tags"]["role"] == "consul" { "server" } else { "client" };
            vec![text(m, "Name"), text(m, "Addr"), text(m, "StatusText"), role.to_owned(), text(&m["Tags"], "dc")]
        });
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
