//! `weft operator raft list-peers|remove-peer`, `weft operator join-token
//! create|list|delete` and `weft operator node list|revoke` (client agents'
//! enrollments).

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::{expect_success, json_body, ApiArgs};
use crate::output::{print_json, print_list, text, Format};

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Raft peer management.
    #[command(subcommand)]
    Raft(RaftCommand),
    /// One-time tokens new client agents join with (weft agent --join-token).
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// The client agents enrolled with a join token.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List the enrolled client agents' nodes.
    List(ListPeersArgs),
    /// Revoke a node's enrollment: its certificate is refused from its next call on.
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct RevokeArgs {
    /// The node's name.
    node: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Subcommand)]
pub enum JoinTokenCommand {
    /// Make a token and print it (only the token, on stdout: it is shown once).
    Create(CreateTokenArgs),
    /// List the live tokens: ID, description, expiry, uses left.
    List(ListPeersArgs),
    /// Delete a token: no agent may join with it any more.
    Delete(DeleteTokenArgs),
}

#[derive(Args)]
pub struct CreateTokenArgs {
    /// What the token is for (shown by list).
    #[arg(long, default_value = "")]
    description: String,
    /// How long it may be used, e.g. 1h, 30m (default 24h).
    #[arg(long)]
    ttl: Option<String>,
    /// How many agents may join with it (default 1).
    #[arg(long)]
    uses: Option<u32>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct DeleteTokenArgs {
    /// The token's ID (from list).
    id: String,
    #[command(flatten)]
    api: ApiArgs,
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
        match self {
            OperatorCommand::Raft(RaftCommand::ListPeers(args)) => list_peers(args).await,
            OperatorCommand::Raft(RaftCommand::RemovePeer(args)) => remove_peer(args).await,
            OperatorCommand::JoinToken(JoinTokenCommand::Create(args)) => create_token(args).await,
            OperatorCommand::JoinToken(JoinTokenCommand::List(args)) => list_tokens(args).await,
            OperatorCommand::JoinToken(JoinTokenCommand::Delete(args)) => delete_token(args).await,
            OperatorCommand::Node(NodeCommand::List(args)) => list_nodes(args).await,
            OperatorCommand::Node(NodeCommand::Revoke(args)) => revoke_node(args).await,
        }
    }
}

async fn list_peers(args: ListPeersArgs) -> anyhow::Result<ExitCode> {
    let response = args.api.client().get("/v1/operator/raft/configuration").await?;
    let body = json_body(&expect_success(response, "reading the Raft configuration")?)?;
    let header = ["Node", "ID", "Address", "State", "Voter", "RaftProtocol", "LastIndex"];
    print_list(args.api.format, &body, &body["Servers"], &header, |s| {
        vec![
            text(s, "Node"),
            text(s, "ID"),
            text(s, "Address"),
            if s["Leader"] == true { "leader".into() } else { "follower".into() },
            s["Voter"].as_bool().unwrap_or(false).to_string(),
            text(s, "ProtocolVersion"),
            s["LastIndex"].as_u64().map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        ]
    });
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

async fn create_token(args: CreateTokenArgs) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({"Description": args.description});
    if let Some(ttl) = &args.ttl {
        body["TTL"] = ttl.as_str().into();
    }
    if let Some(uses) = args.uses {
        body["Uses"] = uses.into();
    }
    let response = args.api.client().put("/v1/operator/join-token", body.to_string()).await?;
    let answer = json_body(&expect_success(response, "making the join token")?)?;
    if args.api.format == Format::Json {
        print_json(&answer);
    } else {
        println!("{}", answer["Token"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

async fn list_tokens(args: ListPeersArgs) -> anyhow::Result<ExitCode> {
    let response = args.api.client().get("/v1/operator/join-token").await?;
    let body = json_body(&expect_success(response, "listing the join tokens")?)?;
    print_list(args.api.format, &body, &body, &["ID", "Description", "ExpiresAt", "UsesLeft"], |t| {
        vec![text(t, "ID"), text(t, "Description"), text(t, "ExpiresAt"), t["UsesLeft"].to_string()]
    });
    Ok(ExitCode::SUCCESS)
}

async fn delete_token(args: DeleteTokenArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/operator/join-token/{}", weft_api::client::path_segment(&args.id));
    expect_success(args.api.client().delete(&path).await?, "deleting the join token")?;
    println!("Deleted join token {}", args.id);
    Ok(ExitCode::SUCCESS)
}

async fn list_nodes(args: ListPeersArgs) -> anyhow::Result<ExitCode> {
    let response = args.api.client().get("/v1/operator/enrollment").await?;
    let body = json_body(&expect_success(response, "listing the enrolled nodes")?)?;
    print_list(args.api.format, &body, &body, &["Node", "TokenID", "CreateIndex"], |n| {
        vec![text(n, "Node"), text(n, "TokenID"), n["CreateIndex"].to_string()]
    });
    Ok(ExitCode::SUCCESS)
}

async fn revoke_node(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/operator/enrollment/{}", weft_api::client::path_segment(&args.node));
    expect_success(args.api.client().delete(&path).await?, "revoking the node")?;
    println!("Revoked node {}: its certificate is refused from its next call", args.node);
    Ok(ExitCode::SUCCESS)
}
