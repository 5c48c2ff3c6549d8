//! `weft acl ...`: Consul's ACL commands (`bootstrap`, `policy`, `role`,
//! `token`, `set-agent-token`; `auth-method` and `binding-rule` are
//! [`super::login`]'s), with its flags (one dash or two: `-name`,
//! `-rules @file`, `-policy-name`, `-service-identity web:dc1`, ...), over
//! the HTTP API. Records print as `Field: value` lines, lists as tables,
//! `--format json` as the API's JSON.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{expect_success, json_body, ApiArgs};
use crate::output::{print_json, print_list, text, Format};

/// The long flags Consul's `consul acl` takes with one dash.
pub const LONG_FLAGS: &[&str] = &[
    "id",
    "name",
    "description",
    "rules",
    "valid-datacenter",
    "policy-id",
    "policy-name",
    "role-id",
    "role-name",
    "service-identity",
    "node-identity",
    "expires-ttl",
    "secret",
    "accessor",
    "self",
    "http-addr",
    "token",
    "format",
    "token-file",
    "type",
    "display-name",
    "max-token-ttl",
    "token-locality",
    "config",
    "method",
    "selector",
    "bind-type",
    "bind-name",
    "jwks-url",
    "jwks-ca-cert",
    "bound-issuer",
    "bound-audience",
    "claim-mapping",
];

#[derive(Subcommand)]
pub enum AclCommand {
    /// Make the first management token (once).
    Bootstrap(Api),
    /// Policies: rules in Consul's language.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Roles: policies and identities tokens take together.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Set the agent's `default` or `agent` token.
    SetAgentToken(SetAgentTokenArgs),
    /// Auth methods: how workloads log in with a JWT.
    #[command(subcommand)]
    AuthMethod(super::login::AuthMethodCommand),
    /// Binding rules: what a login's token gets.
    #[command(subcommand)]
    BindingRule(super::login::BindingRuleCommand),
}

#[derive(Args)]
pub struct Api {
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    Create(PolicyArgs),
    Read(Select),
    Update(PolicyArgs),
    Delete(Select),
    List(Api),
}

#[derive(Subcommand)]
pub enum RoleCommand {
    Create(RoleArgs),
    Read(Select),
    Update(RoleArgs),
    Delete(Select),
    List(Api),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    Create(TokenArgs),
    Read(TokenSelect),
    Update(TokenArgs),
    Delete(TokenSelect),
    Clone(TokenSelect),
    List(Api),
}

/// Which policy or role: by ID or by name.
#[derive(Args)]
pub struct Select {
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct TokenSelect {
    /// The token's AccessorID.
    #[arg(long)]
    id: Option<String>,
    /// The token the command runs with.
    #[arg(long = "self")]
    own: bool,
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct PolicyArgs {
    /// Update: the policy's ID.
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// The rules (HCL or JSON), or @FILE, or - for stdin.
    #[arg(long)]
    rules: Option<String>,
    /// A datacenter it applies in (repeatable; none: everywhere).
    #[arg(long = "valid-datacenter")]
    datacenters: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct Links {
    #[arg(long = "policy-id")]
    policy_ids: Vec<String>,
    #[arg(long = "policy-name")]
    policy_names: Vec<String>,
    /// SERVICE[:DC1,DC2] (repeatable).
    #[arg(long = "service-identity")]
    service_identities: Vec<String>,
    /// NODE:DC (repeatable).
    #[arg(long = "node-identity")]
    node_identities: Vec<String>,
}

#[derive(Args)]
pub struct RoleArgs {
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    links: Links,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct TokenArgs {
    /// Update: the token's AccessorID.
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    links: Links,
    #[arg(long = "role-id")]
    role_ids: Vec<String>,
    #[arg(long = "role-name")]
    role_names: Vec<String>,
    /// How long the token lives (`1h`).
    #[arg(long = "expires-ttl")]
    expires_ttl: Option<String>,
    /// Create: use this SecretID rather than a new one.
    #[arg(long)]
    secret: Option<String>,
    /// Create: use this AccessorID rather than a new one.
    #[arg(long)]
    accessor: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct SetAgentTokenArgs {
    /// `default` (requests without a token, and DNS) or `agent`.
    kind: String,
    /// The token's SecretID.
    secret: String,
    #[command(flatten)]
    api: ApiArgs,
}

impl AclCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            AclCommand::Bootstrap(Api { api }) => {
                let response = api.client().put("/v1/acl/bootstrap", "").await?;
                print_token(api.format, &json_body(&expect_success(response, "bootstrapping ACLs")?)?);
            }
            AclCommand::Policy(command) => command.run().await?,
            AclCommand::Role(command) => command.run().await?,
            AclCommand::Token(command) => command.run().await?,
            AclCommand::AuthMethod(command) => command.run().await?,
            AclCommand::BindingRule(command) => command.run().await?,
            AclCommand::SetAgentToken(args) => {
                let body = json!({"Token": args.secret}).to_string();
                let path = format!("/v1/agent/token/{}", weft_api::client::path_segment(&args.kind));
                expect_success(args.api.client().put(&path, body).await?, "setting the agent token")?;
                println!("ACL token {:?} set successfully", args.kind);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn links(links: &Links, body: &mut Value) -> anyhow::Result<()> {
    let policies: Vec<Value> = links
        .policy_ids
        .iter()
        .map(|id| json!({"ID": id}))
        .chain(links.policy_names.iter().map(|name| json!({"Name": name})))
        .collect();
    body["Policies"] = Value::Array(policies);
    let services: Vec<Value> = links
        .service_identities
        .iter()
        .map(|text| match text.split_once(':') {
            Some((service, dcs)) => json!({"ServiceName": service, "Datacenters": dcs.split(',').collect::<Vec<_>>()}),
            None => json!({"ServiceName": text}),
        })
        .collect();
    body["ServiceIdentities"] = Value::Array(services);
    let nodes = links
        .node_identities
        .iter()
        .map(|text| match text.split_once(':') {
            Some((node, dc)) => Ok(json!({"NodeName": node, "Datacenter": dc})),
            None => bail!("-node-identity {text:?}: give NODE:DATACENTER"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    body["NodeIdentities"] = Value::Array(nodes);
    Ok(())
}

/// Rules as given: text, `@file`, or `-` for stdin.
fn rules(rules: &str) -> anyhow::Result<String> {
    match rules {
        "-" => std::io::read_to_string(std::io::stdin()).context("reading the rules from stdin"),
        path if path.starts_with('@') => {
            std::fs::read_to_string(&path[1..]).with_context(|| format!("reading the rules from {}", &path[1..]))
        }
        text => Ok(text.to_owned()),
    }
}

/// `ID` of the policy or role `select` names (by name: looked up).
async fn id_of(kind: &str, select: &Select) -> anyhow::Result<String> {
    match (&select.id, &select.name) {
        (Some(id), _) => Ok(id.clone()),
        (None, Some(name)) => {
            let path = format!("/v1/acl/{kind}/name/{}", weft_api::client::path_segment(name));
            let found =
                json_body(&expect_success(select.api.client().get(&path).await?, &format!("reading {kind} {name}"))?)?;
            Ok(text(&found, "ID"))
        }
        (None, None) => bail!("say which {kind}: -id ID or -name NAME"),
    }
}

impl PolicyCommand {
    async fn run(self) -> anyhow::Result<()> {
        match self {
            PolicyCommand::Create(args) | PolicyCommand::Update(args) if args.id.is_none() && args.name.is_none() => {
                bail!("a policy needs -name (and -id to update)")
            }
            PolicyCommand::Create(args) => {
                let body = json!({
                    "Name": args.name, "Description": args.description.unwrap_or_default(),
                    "Rules": rules(args.rules.as_deref().unwrap_or(""))?, "Datacenters": args.datacenters,
                });
                let response = args.api.client().put("/v1/acl/policy", body.to_string()).await?;
                print_policy(args.api.format, &json_body(&expect_success(response, "creating the policy")?)?);
            }
            PolicyCommand::Update(args) => {
                let id = args.id.clone().context("-id is required to update a policy")?;
                let path = format!("/v1/acl/policy/{}", weft_api::client::path_segment(&id));
                let client = args.api.client();
                let mut current = json_body(&expect_success(client.get(&path).await?, "reading the policy")?)?;
                if let Some(name) = args.name {
                    current["Name"] = name.into();
                }
                if let Some(description) = args.description {
                    current["Description"] = description.into();
                }
                if let Some(text) = &args.rules {
                    current["Rules"] = rules(text)?.into();
                }
                if !args.datacenters.is_empty() {
                    current["Datacenters"] = json!(args.datacenters);
                }
                let response = client.put(&path, current.to_string()).await?;
                print_policy(args.api.format, &json_body(&expect_success(response, "updating the policy")?)?);
            }
            PolicyCommand::Read(select) => {
                let id = id_of("policy", &select).await?;
                let path = format!("/v1/acl/policy/{}", weft_api::client::path_segment(&id));
                let found = json_body(&expect_success(select.api.client().get(&path).await?, "reading the policy")?)?;
                print_policy(select.api.format, &found);
            }
            PolicyCommand::Delete(select) => {
                let id = id_of("policy", &select).await?;
                let path = format!("/v1/acl/policy/{}", weft_api::client::path_segment(&id));
                expect_success(select.api.client().delete(&path).await?, "deleting the policy")?;
                println!("Policy {id:?} deleted successfully");
            }
            PolicyCommand::List(Api { api }) => {
                let body =
                    json_body(&expect_success(api.client().get("/v1/acl/policies").await?, "listing policies")?)?;
                print_list(api.format, &body, &body, &["ID", "Name", "Description"], |p| {
                    vec![text(p, "ID"), text(p, "Name"), text(p, "Description")]
                });
            }
        }
        Ok(())
    }
}

impl RoleCommand {
    async fn run(self) -> anyhow::Result<()> {
        match self {
            RoleCommand::Create(args) => {
                let mut body = json!({"Name": args.name, "Description": args.description.unwrap_or_default()});
                links(&args.links, &mut body)?;
                let response = args.api.client().put("/v1/acl/role", body.to_string()).await?;
                print_role(args.api.format, &json_body(&expect_success(response, "creating the role")?)?);
            }
            RoleCommand::Update(args) => {
                let id = args.id.clone().context("-id is required to update a role")?;
                let path = format!("/v1/acl/role/{}", weft_api::client::path_segment(&id));
                let client = args.api.client();
                let current = json_body(&expect_success(client.get(&path).await?, "reading the role")?)?;
                let mut body = json!({
                    "Name": args.name.unwrap_or_else(|| text(&current, "Name")),
                    "Description": args.description.unwrap_or_else(|| text(&current, "Description")),
                });
                links(&args.links, &mut body)?;
                let response = client.put(&path, body.to_string()).await?;
                print_role(args.api.format, &json_body(&expect_success(response, "updating the role")?)?);
            }
            RoleCommand::Read(select) => {
                let id = id_of("role", &select).await?;
                let path = format!("/v1/acl/role/{}", weft_api::client::path_segment(&id));
                let found = json_body(&expect_success(select.api.client().get(&path).await?, "reading the role")?)?;
                print_role(select.api.format, &found);
            }
            RoleCommand::Delete(select) => {
                let id = id_of("role", &select).await?;
                let path = format!("/v1/acl/role/{}", weft_api::client::path_segment(&id));
                expect_success(select.api.client().delete(&path).await?, "deleting the role")?;
                println!("Role {id:?} deleted successfully");
            }
            RoleCommand::List(Api { api }) => {
                let body = json_body(&expect_success(api.client().get("/v1/acl/roles").await?, "listing roles")?)?;
                print_list(api.format, &body, &body, &["ID", "Name", "Description"], |r| {
                    vec![text(r, "ID"), text(r, "Name"), text(r, "Description")]
                });
            }
        }
        Ok(())
    }
}

fn token_path(select: &TokenSelect) -> anyhow::Result<String> {
    match (&select.id, select.own) {
        (_, true) => Ok("/v1/acl/token/self".to_owned()),
        (Some(id), false) => Ok(format!("/v1/acl/token/{}", weft_api::client::path_segment(id))),
        (None, false) => bail!("say which token: -id ACCESSOR_ID (or -self)"),
    }
}

impl TokenCommand {
    async fn run(self) -> anyhow::Result<()> {
        match self {
            TokenCommand::Create(args) => {
                let mut body = token_body(&args)?;
                if let Some(secret) = &args.secret {
                    body["SecretID"] = secret.as_str().into();
                }
                if let Some(accessor) = &args.accessor {
                    body["AccessorID"] = accessor.as_str().into();
                }
                let response = args.api.client().put("/v1/acl/token", body.to_string()).await?;
                print_token(args.api.format, &json_body(&expect_success(response, "creating the token")?)?);
            }
            TokenCommand::Update(args) => {
                let id = args.id.clone().context("-id is required to update a token")?;
                let path = format!("/v1/acl/token/{}", weft_api::client::path_segment(&id));
                let response = args.api.client().put(&path, token_body(&args)?.to_string()).await?;
                print_token(args.api.format, &json_body(&expect_success(response, "updating the token")?)?);
            }
            TokenCommand::Read(select) => {
                let found = json_body(&expect_success(
                    select.api.client().get(&token_path(&select)?).await?,
                    "reading the token",
                )?)?;
                print_token(select.api.format, &found);
            }
            TokenCommand::Delete(select) => {
                expect_success(select.api.client().delete(&token_path(&select)?).await?, "deleting the token")?;
                println!("Token {:?} deleted successfully", select.id.unwrap_or_default());
            }
            TokenCommand::Clone(select) => {
                let path = format!("{}/clone", token_path(&select)?);
                let body = json!({"Description": select.description}).to_string();
                let cloned =
                    json_body(&expect_success(select.api.client().put(&path, body).await?, "cloning the token")?)?;
                print_token(select.api.format, &cloned);
            }
            TokenCommand::List(Api { api }) => {
                let body = json_body(&expect_success(api.client().get("/v1/acl/tokens").await?, "listing tokens")?)?;
                print_list(api.format, &body, &body, &["AccessorID", "Description", "Policies"], |t| {
                    vec![text(t, "AccessorID"), text(t, "Description"), names(&t["Policies"])]
                });
            }
        }
        Ok(())
    }
}

fn token_body(args: &TokenArgs) -> anyhow::Result<Value> {
    let mut body = json!({"Description": args.description.clone().unwrap_or_default()});
    links(&args.links, &mut body)?;
    let roles: Vec<Value> = args
        .role_ids
        .iter()
        .map(|id| json!({"ID": id}))
        .chain(args.role_names.iter().map(|name| json!({"Name": name})))
        .collect();
    body["Roles"] = Value::Array(roles);
    if let Some(ttl) = &args.expires_ttl {
        body["ExpirationTTL"] = ttl.as_str().into();
    }
    Ok(body)
}

/// `Name`s of a list of links, comma-separated.
fn names(links: &Value) -> String {
    links.as_array().into_iter().flatten().map(|l| text(l, "Name")).collect::<Vec<_>>().join(",")
}

fn print_fields(format: Format, record: &Value, fields: &[(&str, &str)], lists: &[&str]) {
    if format == Format::Json {
        return print_json(record);
    }
    for (label, field) in fields {
        let value = match &record[*field] {
            Value::String(text) => text.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        println!("{:<17} {value}", format!("{label}:"));
    }
    for list in lists {
        let items = record[*list].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            continue;
        }
        println!("{list}:");
        for item in items {
            match (item.get("ID"), item.get("ServiceName"), item.get("NodeName")) {
                (Some(id), _, _) => println!("   {} - {}", id.as_str().unwrap_or_default(), text(&item, "Name")),
                (_, Some(service), _) => println!("   {}", service.as_str().unwrap_or_default()),
                (_, _, Some(node)) => {
                    println!("   {} ({})", node.as_str().unwrap_or_default(), text(&item, "Datacenter"))
                }
                _ => println!("   {item}"),
            }
        }
    }
}

fn print_token(format: Format, token: &Value) {
    let fields = [
        ("AccessorID", "AccessorID"),
        ("SecretID", "SecretID"),
        ("Description", "Description"),
        ("Local", "Local"),
        ("Create Time", "CreateTime"),
        ("Expiration Time", "ExpirationTime"),
    ];
    print_fields(format, token, &fields, &["Policies", "Roles", "ServiceIdentities", "NodeIdentities"]);
}

fn print_policy(format: Format, policy: &Value) {
    print_fields(format, policy, &[("ID", "ID"), ("Name", "Name"), ("Description", "Description")], &[]);
    if format == Format::Table {
        println!("Rules:\n{}", text(policy, "Rules"));
    }
}

fn print_role(format: Format, role: &Value) {
    let fields = [("ID", "ID"), ("Name", "Name"), ("Description", "Description")];
    print_fields(format, role, &fields, &["Policies", "ServiceIdentities", "NodeIdentities"]);
}
