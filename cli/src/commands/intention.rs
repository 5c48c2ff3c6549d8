//! `weft intention create|get|delete|list|match|check`: service-to-service
//! authorization rules, in the habits of `consul intention`. SRC and DST are
//! service names or `*` (any service). `check` exits 0 when the connection
//! is allowed and 2 when it is denied, so scripts can branch on it.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};
use weft_api::client::query_value;

use super::{expect_success, json_body, query_string, ApiArgs};
use crate::output::{print_json, print_table, Format};

/// `check`'s exit code for a denied connection.
const DENIED: u8 = 2;

#[derive(Subcommand)]
pub enum IntentionCommand {
    /// Create an intention from SRC to DST (allow unless --deny); an existing one is an error without --replace.
    Create(CreateArgs),
    /// Show the intention from SRC to DST.
    Get(PairArgs),
    /// Delete the intention from SRC to DST (nothing to delete is not an error).
    Delete(PairArgs),
    /// List every intention, in evaluation order.
    List(ListArgs),
    /// List the intentions that apply to a source or to a destination, in evaluation order.
    Match(MatchArgs),
    /// Whether SRC may connect to DST: prints Allowed (exit 0) or Denied (exit 2).
    Check(PairArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Allow the connection (the default).
    #[arg(long, conflicts_with = "deny")]
    allow: bool,
    /// Deny the connection.
    #[arg(long)]
    deny: bool,
    /// Replace the pair's intention if there is one (keeping its ID).
    #[arg(long)]
    replace: bool,
    /// A description kept with the intention.
    #[arg(long)]
    description: Option<String>,
    /// Metadata as key=value; may be repeated.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// The source service, or `*` for any.
    #[arg(value_name = "SRC")]
    source: String,
    /// The destination service, or `*` for any.
    #[arg(value_name = "DST")]
    destination: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct PairArgs {
    /// The source service, or `*`.
    #[arg(value_name = "SRC")]
    source: String,
    /// The destination service, or `*`.
    #[arg(value_name = "DST")]
    destination: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
#[command(group(ArgGroup::new("side").required(true).args(["source", "destination"])))]
pub struct MatchArgs {
    /// The intentions a connection from this service is checked against.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// The intentions a connection to this service is checked against.
    #[arg(long, value_name = "NAME")]
    destination: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

impl IntentionCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            IntentionCommand::Create(args) => create(args).await,
            IntentionCommand::Get(args) => get(args).await,
            IntentionCommand::Delete(args) => delete(args).await,
            IntentionCommand::List(args) => list(args).await,
            IntentionCommand::Match(args) => matches(args).await,
            IntentionCommand::Check(args) => check(args).await,
        }
    }
}

/// `?source=..&destination=..` plus `extra` (e.g. `stale`).
fn pair_query(source: &str, destination: &str, extra: &str) -> String {
    query_string(&[
        format!("source={}", query_value(source)),
        format!("destination={}", query_value(destination)),
        extra.to_owned(),
    ])
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let action = if args.deny { "deny" } else { "allow" };
    let description = args.description.unwrap_or_default();
    let meta: serde_json::Map<String, Value> = args.meta.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let client = args.api.client();
    let response = if args.replace {
        let body = json!({"Action": action, "Description": description, "Meta": meta});
        let path = format!("/v1/connect/intentions/exact{}", pair_query(&args.source, &args.destination, ""));
        client.put(&path, body.to_string()).await?
    } else {
        let body = json!({
            "SourceName": args.source, "DestinationName": args.destination,
            "Action": action, "Description": description, "Meta": meta,
        });
        client.post("/v1/connect/intentions", body.to_string()).await?
    };
    if response.status == 409 {
        bail!("{} (use --replace to replace it)", response.text().trim());
    }
    let response = expect_success(response, "creating the intention")?;
    if args.api.format == Format::Json {
        print_json(&json_body(&response)?);
    } else {
        println!("Created: {} => {} ({action})", args.source, args.destination);
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(args: PairArgs) -> anyhow::Result<ExitCode> {
    let path =
        format!("/v1/connect/intentions/exact{}", pair_query(&args.source, &args.destination, args.api.read_query()));
    let response = expect_success(args.api.client().get(&path).await?, "reading the intention")?;
    let intention = json_body(&response)?;
    if args.api.format == Format::Json {
        print_json(&intention);
        return Ok(ExitCode::SUCCESS);
    }
    let text = |field: &str| match &intention[field] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let field = |label: &str, name: &str| (format!("{label}:"), text(name));
    let mut rows = vec![
        field("Source", "SourceName"),
        field("Destination", "DestinationName"),
        field("Action", "Action"),
        field("ID", "ID"),
        field("Precedence", "Precedence"),
        field("Description", "Description"),
    ];
    for (key, value) in intention["Meta"].as_object().into_iter().flatten() {
        rows.push((format!("Meta[{key}]:"), value.as_str().unwrap_or_default().to_owned()));
    }
    rows.extend([field("Create Index", "CreateIndex"), field("Modify Index", "ModifyIndex")]);
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in rows {
        println!("{}", format!("{label:<width$}  {value}").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: PairArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/connect/intentions/exact{}", pair_query(&args.source, &args.destination, ""));
    let response = expect_success(args.api.client().delete(&path).await?, "deleting the intention")?;
    if args.api.format == Format::Json {
        print_json(&json_body(&response)?);
    } else {
        println!("Intention deleted.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Intentions as a table: Consul's `intention list` columns.
fn print_intentions(intentions: &[Value]) {
    let rows: Vec<Vec<String>> = intentions
        .iter()
        .map(|i| {
            vec![
                i["ID"].as_str().unwrap_or_default().to_owned(),
                i["SourceName"].as_str().unwrap_or_default().to_owned(),
                i["Action"].as_str().unwrap_or_default().to_owned(),
                i["DestinationName"].as_str().unwrap_or_default().to_owned(),
                i["Precedence"].to_string(),
            ]
        })
        .collect();
    print_table(&["ID", "Source", "Action", "Destination", "Precedence"], &rows);
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/connect/intentions{}", query_string(&[args.api.read_query().to_owned()]));
    let response = expect_success(args.api.client().get(&path).await?, "listing intentions")?;
    let body = json_body(&response)?;
    if args.api.format == Format::Json {
        print_json(&body);
    } else {
        print_intentions(body.as_array().map(Vec::as_slice).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

async fn matches(args: MatchArgs) -> anyhow::Result<ExitCode> {
    let (by, name) = match (&args.source, &args.destination) {
        (Some(name), None) => ("source", name),
        (None, Some(name)) => ("destination", name),
        _ => bail!("give one of --source NAME or --destination NAME"),
    };
    let query =
        query_string(&[format!("by={by}"), format!("name={}", query_value(name)), args.api.read_query().to_owned()]);
    let path = format!("/v1/connect/intentions/match{query}");
    let response = expect_success(args.api.client().get(&path).await?, "matching intentions")?;
    let body = json_body(&response)?;
    if args.api.format == Format::Json {
        print_json(&body);
    } else {
        let found =
            body[name.as_str()].as_array().ok_or_else(|| anyhow!("the agent's answer has no list for {name}"))?;
        print_intentions(found);
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(args: PairArgs) -> anyhow::Result<ExitCode> {
    let path =
        format!("/v1/connect/intentions/check{}", pair_query(&args.source, &args.destination, args.api.read_query()));
    let response = expect_success(args.api.client().get(&path).await?, "checking the intentions")?;
    let body = json_body(&response)?;
    let allowed = body["Allowed"].as_bool().ok_or_else(|| anyhow!("the agent's answer has no Allowed field"))?;
    if args.api.format == Format::Json {
        print_json(&body);
    } else {
        println!("{}", if allowed { "Allowed" } else { "Denied" });
    }
    Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::from(DENIED) })
}
