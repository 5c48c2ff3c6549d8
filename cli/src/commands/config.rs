//! `weft config write|read|list|delete`: central config entries
//! (`service-defaults`, `proxy-defaults`, `service-router`, the `mesh`
//! entry, ...), in the habits of `consul config`. `write` takes a file (or
//! `-` for stdin) in HCL or JSON with the entry's fields at the top level:
//! `Kind = "service-defaults"`, `Name = "web"`, `Protocol = "http"`. The
//! agent checks the entry and says what is wrong with it. Flags may be
//! written Consul's way with one dash (`-kind web`) as well as with two.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;
use weft_api::client::{path_segment, query_value};

use super::{expect_success, json_body, query_string, ApiArgs};
use crate::output::{print_json, Format};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Create or replace a config entry from a file: HCL or JSON, `-` for stdin.
    Write(WriteArgs),
    /// Print a config entry as JSON.
    Read(EntryArgs),
    /// List the names of the config entries of a kind.
    List(ListArgs),
    /// Delete a config entry (nothing to delete is not an error).
    Delete(DeleteArgs),
}

/// `--cas --modify-index N`: write or delete only if the entry's ModifyIndex is N.
#[derive(Args)]
pub struct CasArgs {
    /// Only if the entry's ModifyIndex equals --modify-index (0: write only if it does not exist).
    #[arg(long)]
    cas: bool,
    /// The ModifyIndex --cas expects (see `weft config read`).
    #[arg(long, requires = "cas", value_name = "INDEX")]
    modify_index: Option<u64>,
}

impl CasArgs {
    /// `cas=N` for the query, if asked for.
    fn query(&self) -> anyhow::Result<String> {
        match (self.cas, self.modify_index) {
            (false, _) => Ok(String::new()),
            (true, Some(index)) => Ok(format!("cas={index}")),
            (true, None) => bail!("--cas needs --modify-index N (0: write only if the entry does not exist)"),
        }
    }

    /// Why a check-and-set write (or delete) did nothing.
    fn missed(&self, write: bool) -> String {
        match self.modify_index.unwrap_or_default() {
            0 if write => "it exists already; --modify-index 0 writes only a new entry".into(),
            index => format!("it does not exist, or its ModifyIndex is not {index}"),
        }
    }
}

#[derive(Args)]
pub struct WriteArgs {
    /// The entry, in HCL or JSON (`.json`, or text starting with `{`); `-` reads stdin.
    #[arg(value_name = "FILE")]
    file: String,
    #[command(flatten)]
    cas: CasArgs,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct EntryArgs {
    /// The entry's kind (service-defaults, proxy-defaults, service-router, mesh, ...).
    #[arg(long)]
    kind: String,
    /// The entry's name (`global` for proxy-defaults, `mesh` for mesh).
    #[arg(long)]
    name: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// The kind to list.
    #[arg(long)]
    kind: String,
    /// Keep only the entries this filter expression selects (Consul's `?filter=`).
    #[arg(long)]
    filter: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    entry: EntryArgs,
    #[command(flatten)]
    cas: CasArgs,
}

impl ConfigCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            ConfigCommand::Write(args) => write(args).await,
            ConfigCommand::Read(args) => read(args).await,
            ConfigCommand::List(args) => list(args).await,
            ConfigCommand::Delete(args) => delete(args).await,
        }
    }
}

/// The long flags of `weft config`, which Consul's CLI writes with one dash.
pub const LONG_FLAGS: &[&str] =
    &["kind", "name", "cas", "modify-index", "filter", "http-addr", "token", "format", "stale"];

/// HCL 1 (Consul's) lets an object literal hold blocks (`{ Match { HTTP {
/// ... } } }`, as in Consul's service-router examples); HCL 2 wants
/// `Match = { ... }`. Rewrites each line that is only `Name {` that way.
fn hcl1_blocks_as_attributes(text: &str) -> String {
    let is_identifier = |name: &str| {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let lines = text.lines().map(|line| match line.trim_end().strip_suffix('{') {
        Some(head) if is_identifier(head.trim()) => format!("{} = {{", head.trim_end()),
        _ => line.to_owned(),
    });
    lines.collect::<Vec<_>>().join("\n")
}

/// An entry from HCL or JSON text: an object with the entry's fields at the
/// top level. `source` names it in errors.
fn parse_entry(text: &str, source: &str, json: bool) -> anyhow::Result<Value> {
    let value: Value = if json || text.trim_start().starts_with('{') {
        serde_json::from_str(text).with_context(|| format!("{source}: invalid JSON"))?
    } else {
        match hcl::from_str(text) {
            Ok(value) => value,
            // Not HCL 2: perhaps HCL 1's blocks in objects; else the first error.
            Err(error) => hcl::from_str(&hcl1_blocks_as_attributes(text))
                .map_err(|_| error)
                .with_context(|| format!("{source}: invalid HCL"))?,
        }
    };
    if !value.is_object() {
        bail!("{source}: a config entry is an object with Kind, Name and its fields at the top level");
    }
    Ok(value)
}

fn read_entry(file: &str) -> anyhow::Result<Value> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the entry from stdin")?;
        return parse_entry(&text, "stdin", false);
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    parse_entry(&text, file, file.ends_with(".json"))
}

/// A top-level string field, its name matched in any case (`Kind`, `kind`).
fn top_level(entry: &Value, name: &str) -> String {
    let found = entry.as_object().and_then(|o| o.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)));
    found.and_then(|(_, value)| value.as_str()).unwrap_or_default().to_owned()
}

async fn write(args: WriteArgs) -> anyhow::Result<ExitCode> {
    let entry = read_entry(&args.file)?;
    let what = format!("{}/{}", top_level(&entry, "Kind"), top_level(&entry, "Name"));
    let path = format!("/v1/config{}", query_string(&[args.cas.query()?]));
    let response = args.api.client().put(&path, entry.to_string()).await?;
    let response = expect_success(response, &format!("writing config entry {what}"))?;
    if json_body(&response)? != Value::Bool(true) {
        bail!("Config entry not updated: {what} ({})", args.cas.missed(true));
    }
    println!("Config entry written: {what}");
    Ok(ExitCode::SUCCESS)
}

fn entry_path(kind: &str, name: &str) -> String {
    format!("/v1/config/{}/{}", path_segment(kind), path_segment(name))
}

async fn read(args: EntryArgs) -> anyhow::Result<ExitCode> {
    let path = format!("{}{}", entry_path(&args.kind, &args.name), query_string(&[args.api.read_query().to_owned()]));
    let response = expect_success(args.api.client().get(&path).await?, "reading the config entry")?;
    print_json(&json_body(&response)?);
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let filter = args.filter.as_deref().map(|f| format!("filter={}", query_value(f))).unwrap_or_default();
    let query = query_string(&[filter, args.api.read_query().to_owned()]);
    let path = format!("/v1/config/{}{query}", path_segment(&args.kind));
    let response = expect_success(args.api.client().get(&path).await?, "listing config entries")?;
    let body = json_body(&response)?;
    if args.api.format == Format::Json {
        print_json(&body);
        return Ok(ExitCode::SUCCESS);
    }
    let entries = body.as_array().ok_or_else(|| anyhow!("the agent's answer is not a list"))?;
    for entry in entries {
        println!("{}", entry["Name"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let DeleteArgs { entry, cas } = args;
    let what = format!("{}/{}", entry.kind, entry.name);
    let path = format!("{}{}", entry_path(&entry.kind, &entry.name), query_string(&[cas.query()?]));
    let response = expect_success(entry.api.client().delete(&path).await?, &format!("deleting config entry {what}"))?;
    if json_body(&response)? != Value::Bool(true) {
        bail!("Config entry not deleted: {what} ({})", cas.missed(false));
    }
    println!("Config entry deleted: {what}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use serde_json::json;

    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        let rewritten = super::super::consul_style_args(list.iter().map(OsString::from));
        rewritten.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn consuls_single_dash_flags_become_long_flags_for_config_only() {
        assert_eq!(
            args(&["weft", "config", "read", "-kind", "mesh", "-name=mesh", "--http-addr", "x", "-stale"]),
            ["weft", "config", "read", "--kind", "mesh", "--name=mesh", "--http-addr", "x", "--stale"]
        );
        assert_eq!(
            args(&["weft", "config", "write", "-cas", "-modify-index", "0", "-", "-h"]),
            ["weft", "config", "write", "--cas", "--modify-index", "0", "-", "-h"]
        );
        assert_eq!(args(&["weft", "config", "write", "--", "-name"]), ["weft", "config", "write", "--", "-name"]);
        assert_eq!(args(&["weft", "kv", "get", "-name"]), ["weft", "kv", "get", "-name"]);
    }

    #[test]
    fn entries_parse_from_hcl_and_json() {
        let hcl = r#"
            Kind = "service-router"
            Name = "web"
            Routes = [
              {
                Match = { HTTP = { PathPrefix = "/admin" } }
                Destination = { Service = "admin" }
              },
            ]
        "#;
        let expected = json!({
            "Kind": "service-router", "Name": "web",
            "Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}}, "Destination": {"Service": "admin"}}],
        });
        assert_eq!(parse_entry(hcl, "router.hcl", false).unwrap(), expected);
        assert_eq!(parse_entry(&expected.to_string(), "router", false).unwrap(), expected);
        let blocks = "Kind = \"proxy-defaults\"\nName = \"global\"\nConfig {\n  protocol = \"http\"\n}\n";
        let parsed = parse_entry(blocks, "proxy.hcl", false).unwrap();
        assert_eq!(parsed["Config"], json!({"protocol": "http"}));
        assert_eq!(
            (top_level(&parsed, "kind"), top_level(&parsed, "NAME")),
            ("proxy-defaults".into(), "global".into())
        );

        // HCL 1's blocks inside objects, as Consul's docs write routers.
        let hcl1 = "Kind = \"service-router\"\nName = \"web\"\nRoutes = [\n  {\n    Match {\n      HTTP {\n        \
                    PathPrefix = \"/admin\"\n      }\n    }\n    Destination {\n      Service = \"admin\"\n    }\n  },\n]\n";
        assert_eq!(parse_entry(hcl1, "router.hcl", false).unwrap(), expected);

        let error = parse_entry("Kind = ", "bad.hcl", false).unwrap_err();
        assert!(format!("{error:#}").starts_with("bad.hcl: invalid HCL"), "{error:#}");
        let error = parse_entry("[1]", "bad.json", true).unwrap_err();
        assert!(error.to_string().contains("an object with Kind, Name"), "{error}");
    }
}
