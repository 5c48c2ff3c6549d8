//! `weft operator raft list-peers|remove-peer`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::{expect_success, json_body, ApiArgs};
use crate::output::{print_json, print_table, Format};

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Raft peer management.
    #[command(subcommand)]
    Raft(RaftCommand),
}

#[derive(Subcommand)]
pub enum RaftCommand {
    /// List the servers in the Raft configuration; the leader is marked.
    ListPeers(ListPeersArgs),
    /// Remove a server from the Raft configuration.
    RemovePeer(RemovePeerArgs),
}

#[derive(Args)]
pub struct ListPeersArgs {
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct RemovePeerArgs {
    /// The server's ID or name.
    #[arg(long, conflicts_with = "address")]
    id: Option<String>,
    /// The server's RPC address.
    #[arg(long)]
    address: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

impl OperatorCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let OperatorCommand::Raft(command) = self;
        match command {
            RaftCommand::ListPeers(args) => list_peers(args).await,
            RaftCommand::RemovePeer(args) => remove_peer(args).await,
        }
    }
}

async fn list_peers(args: ListPeersArgs) -> anyhow::Result<ExitCode> {
    let response = args.api.client().get("/v1/operator/raft/configuration").await?;
    let body = json_body(&expect_success(response, "reading the Raft configuration")?)?;
    if args.api.format == Format::Json {
        print_json(&body);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = body["Servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let text = |f: &str| s[f].as_str().unwrap_or_default().to_owned();
            vec![
                text("Node"),
                text("ID"),
                text("Address"),
                if s["Leader"] == true { "leader".into() } else { "follower".into() },
                s["Voter"].as_bool().unwrap_or(false).to_string(),
                text("ProtocolVersion"),
                s["LastIndex"].as_u64().map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["Node", "ID", "Address", "State", "Voter", "RaftProtocol", "LastIndex"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn remove_peer(args: RemovePeerArgs) -> anyhow::Result<ExitCode> {
    let query = match (&args.id, &args.address) {
        (Some(id), _) => format!("id={id}"),
        (None, Some(address)) => format!("address={address}"),
        (None, None) => bail!("say which server to remove: --id ID_OR_NAME or --address IP:PORT"),
    };
    let client = args.api.client();
    let response = client.delete(&format!("/v1/operator/raft/peer?{query}")).await?;
    expect_success(response, "removing the peer")?;
    println!("Removed peer {}", args.id.or(args.address).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
