//! `weft kv get|put|delete`, with Consul's messages and exit codes
//! (a missing key or a failed check-and-set exits 1).

use std::io::Read;
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::Engine;
use clap::{Args, Subcommand};
use weft_api::client::kv_path;

use super::{expect_success, json_body, query_string, ApiArgs};
use crate::output::{print_json, print_table, Format};

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print a key's value (or, with --recurse, every key under a prefix).
    Get(GetArgs),
    /// Write a value: `weft kv put KEY VALUE`, `- ` for stdin, `@file` for a file.
    Put(PutArgs),
    /// Delete a key (or, with --recurse, every key under a prefix).
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct GetArgs {
    key: String,
    /// Every key under KEY, as `key:value` lines.
    #[arg(long)]
    recurse: bool,
    /// Only list key names under KEY.
    #[arg(long)]
    keys: bool,
    /// With --keys, fold names at this separator.
    #[arg(long)]
    separator: Option<String>,
    /// Show every field, not just the value.
    #[arg(long)]
    detailed: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct PutArgs {
    key: String,
    /// The value; `-` reads stdin, `@path` reads a file; empty if omitted.
    value: Option<String>,
    /// Write only if the key's ModifyIndex equals --modify-index (0: only if absent).
    #[arg(long)]
    cas: bool,
    #[arg(long, requires = "cas")]
    modify_index: Option<u64>,
    /// An opaque number stored with the key.
    #[arg(long)]
    flags: Option<u64>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct DeleteArgs {
    key: String,
    #[arg(long)]
    recurse: bool,
    /// Delete only if the key's ModifyIndex equals --modify-index.
    #[arg(long, conflicts_with = "recurse")]
    cas: bool,
    #[arg(long, requires = "cas")]
    modify_index: Option<u64>,
    #[command(flatten)]
    api: ApiArgs,
}

impl KvCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            KvCommand::Get(args) => get(args).await,
            KvCommand::Put(args) => put(args).await,
            KvCommand::Delete(args) => delete(args).await,
        }
    }
}

fn decode_value(entry: &serde_json::Value) -> Vec<u8> {
    entry["Value"].as_str().and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok()).unwrap_or_default()
}

async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client();
    let mut query = vec![args.api.read_query().to_owned()];
    if args.keys {
        query.push("keys".into());
        if let Some(separator) = &args.separator {
            query.push(format!("separator={separator}"));
        }
    } else if args.recurse {
        query.push("recurse".into());
    }
    let response = client.get(&format!("{}{}", kv_path(&args.key), query_string(&query))).await?;
    if response.status == 404 {
        eprintln!("Error! No key exists at: {}", args.key);
        return Ok(ExitCode::FAILURE);
    }
    let response = expect_success(response, "reading the key")?;
    let body = json_body(&response)?;
    if args.api.format == Format::Json {
        print_json(&body);
        return Ok(ExitCode::SUCCESS);
    }
    let entries = body.as_array().cloned().unwrap_or_default();
    if args.keys {
        for key in entries {
            println!("{}", key.as_str().unwrap_or_default());
        }
    } else if args.detailed {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e["Key"].as_str().unwrap_or_default().to_owned(),
                    e["CreateIndex"].to_string(),
                    e["ModifyIndex"].to_string(),
                    e["Flags"].to_string(),
                    String::from_utf8_lossy(&decode_value(e)).into_owned(),
                ]
            })
            .collect();
        print_table(&["Key", "CreateIndex", "ModifyIndex", "Flags", "Value"], &rows);
    } else if args.recurse {
        for entry in entries {
            println!(
                "{}:{}",
                entry["Key"].as_str().unwrap_or_default(),
                String::from_utf8_lossy(&decode_value(&entry))
            );
        }
    } else if let Some(entry) = entries.first() {
        use std::io::Write;
        let mut stdout = std::io::stdout();
        stdout.write_all(&decode_value(entry))?;
        stdout.write_all(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn read_value(value: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match value {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut buffer = Vec::new();
            std::io::stdin().read_to_end(&mut buffer).context("cannot read the value from stdin")?;
            Ok(buffer)
        }
        Some(text) => match text.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| format!("cannot read the value from {path}")),
            None => Ok(text.as_bytes().to_vec()),
        },
    }
}

async fn put(args: PutArgs) -> anyhow::Result<ExitCode> {
    let value = read_value(args.value.as_deref())?;
    let mut query = Vec::new();
    if let Some(flags) = args.flags {
        query.push(format!("flags={flags}"));
    }
    if args.cas {
        let Some(index) = args.modify_index else {
            bail!("--cas needs --modify-index N (0: write only if the key does not exist)")
        };
        query.push(format!("cas={index}"));
    }
    let client = args.api.client();
    let response = client.put(&format!("{}{}", kv_path(&args.key), query_string(&query)), value).await?;
    let response = expect_success(response, "writing the key")?;
    if json_body(&response)? == serde_json::Value::Bool(true) {
        println!("Success! Data written to: {}", args.key);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("Error! Did not write to {}: CAS failed", args.key);
        Ok(ExitCode::FAILURE)
    }
}

async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let mut query = Vec::new();
    if args.recurse {
        query.push("recurse".to_owned());
    }
    if args.cas {
        let Some(index) = args.modify_index else { bail!("--cas needs --modify-index N") };
        query.push(format!("cas={index}"));
    }
    let client = args.api.client();
    let response = client.delete(&format!("{}{}", kv_path(&args.key), query_string(&query))).await?;
    let response = expect_success(response, "deleting the key")?;
    if json_body(&response)? == serde_json::Value::Bool(true) {
        println!("Success! Deleted key: {}", args.key);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("Error! Did not delete key {}: CAS failed", args.key);
        Ok(ExitCode::FAILURE)
    }
}
