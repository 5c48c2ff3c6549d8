//! `weft login` and `weft logout` (Consul's), and `weft acl auth-method` and
//! `weft acl binding-rule`: workload login over the HTTP API. `login`
//! writes only the new token's SecretID to the sink file (0600), so a
//! sidecar or a script reads it with `-token-file`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{expect_success, json_body, ApiArgs};
use crate::output::{print_json, print_list, text, Format};

/// The long flags `weft login` and `weft logout` take with one dash.
pub const LONG_FLAGS: &[&str] =
    &["method", "bearer-token-file", "token-sink-file", "meta", "http-addr", "token", "token-file", "format"];

#[derive(Args)]
pub struct LoginArgs {
    /// The auth method to log in with.
    #[arg(long)]
    method: String,
    /// A file holding the JWT to present (a Kubernetes service-account
    /// token, a CI job's OIDC token).
    #[arg(long = "bearer-token-file")]
    bearer_token_file: PathBuf,
    /// Where to write the new token's SecretID (mode 0600).
    #[arg(long = "token-sink-file")]
    token_sink_file: PathBuf,
    /// KEY=VALUE shown in the token's description (repeatable).
    #[arg(long)]
    meta: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    api: ApiArgs,
}

impl LoginArgs {
    pub async fn run(self) -> anyhow::Result<std::process::ExitCode> {
        let bearer = std::fs::read_to_string(&self.bearer_token_file)
            .with_context(|| format!("reading the bearer token from {}", self.bearer_token_file.display()))?;
        let bearer = bearer.trim();
        if bearer.is_empty() {
            bail!("No bearer token found in {}", self.bearer_token_file.display());
        }
        let meta = self
            .meta
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) => Ok((key.to_owned(), Value::String(value.to_owned()))),
                None => bail!("-meta {pair:?}: give KEY=VALUE"),
            })
            .collect::<anyhow::Result<serde_json::Map<_, _>>>()?;
        let body = json!({"AuthMethod": self.method, "BearerToken": bearer, "Meta": meta});
        // A login presents the JWT, never a token.
        let client = weft_api::client::HttpClient::new(&self.api.http_addr, None);
        let token = json_body(&expect_success(client.post("/v1/acl/login", body.to_string()).await?, "logging in")?)?;
        let secret = text(&token, "SecretID");
        write_private(&self.token_sink_file, &secret)
            .with_context(|| format!("Error writing token to file sink {}", self.token_sink_file.display()))?;
        Ok(std::process::ExitCode::SUCCESS)
    }
}

impl LogoutArgs {
    pub async fn run(self) -> anyhow::Result<std::process::ExitCode> {
        if self.api.token().is_none() {
            bail!("give the token to log out: -token, -token-file, WEFT_HTTP_TOKEN or WEFT_HTTP_TOKEN_FILE");
        }
        expect_success(self.api.client().post("/v1/acl/logout", String::new()).await?, "destroying the token")?;
        Ok(std::process::ExitCode::SUCCESS)
    }
}

fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

// ----------------------------------------------------- auth methods -----

#[derive(Subcommand)]
pub enum AuthMethodCommand {
    Create(MethodArgs),
    Read(MethodName),
    Update(MethodArgs),
    Delete(MethodName),
    List(ListArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct MethodName {
    #[arg(long)]
    name: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct MethodArgs {
    #[arg(long)]
    name: String,
    /// `jwt`.
    #[arg(long = "type")]
    method_type: Option<String>,
    #[arg(long = "display-name")]
    display_name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// How long its logins' tokens live (`1h`).
    #[arg(long = "max-token-ttl")]
    max_token_ttl: Option<String>,
    /// `local` or `global`.
    #[arg(long = "token-locality")]
    token_locality: Option<String>,
    /// The method's config: JSON, @FILE, or - for stdin.
    #[arg(long)]
    config: Option<String>,
    /// Weft's flags for a jwt method's config (over -config's): where its
    /// keys come from (`JWKSURL`, and its CA as PEM or @FILE)...
    #[arg(long = "jwks-url")]
    jwks_url: Option<String>,
    #[arg(long = "jwks-ca-cert")]
    jwks_ca_cert: Option<String>,
    /// ...the issuer and audiences it must carry...
    #[arg(long = "bound-issuer")]
    bound_issuer: Option<String>,
    #[arg(long = "bound-audience")]
    bound_audiences: Vec<String>,
    /// ...and CLAIM=ATTRIBUTE claim mappings (a claim may be a JSON pointer).
    #[arg(long = "claim-mapping")]
    claim_mappings: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// Text given as is, as `@file`, or as `-` for stdin.
fn text_or_file(value: &str, what: &str) -> anyhow::Result<String> {
    match value {
        "-" => std::io::read_to_string(std::io::stdin()).with_context(|| format!("reading the {what} from stdin")),
        path if path.starts_with('@') => {
            std::fs::read_to_string(&path[1..]).with_context(|| format!("reading the {what} from {}", &path[1..]))
        }
        text => Ok(text.to_owned()),
    }
}

impl AuthMethodCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            AuthMethodCommand::Create(args) | AuthMethodCommand::Update(args) if args.name.is_empty() => {
                bail!("Missing required '-name' flag")
            }
            AuthMethodCommand::Create(args) => {
                let method_type = args.method_type.clone().context("Missing required '-type' flag")?;
                let body = method_body(&args, json!({"Name": args.name, "Type": method_type}))?;
                let response = args.api.client().put("/v1/acl/auth-method", body.to_string()).await?;
                print_method(args.api.format, &json_body(&expect_success(response, "creating the auth method")?)?);
            }
            AuthMethodCommand::Update(args) => {
                let path = format!("/v1/acl/auth-method/{}", weft_api::client::path_segment(&args.name));
                let client = args.api.client();
                let current = json_body(&expect_success(client.get(&path).await?, "reading the auth method")?)?;
                let body = method_body(&args, current)?;
                let response = client.put(&path, body.to_string()).await?;
                print_method(args.api.format, &json_body(&expect_success(response, "updating the auth method")?)?);
            }
            AuthMethodCommand::Read(args) => {
                let path = format!("/v1/acl/auth-method/{}", weft_api::client::path_segment(&args.name));
                let found =
                    json_body(&expect_success(args.api.client().get(&path).await?, "reading the auth method")?)?;
                print_method(args.api.format, &found);
            }
            AuthMethodCommand::Delete(args) => {
                let path = format!("/v1/acl/auth-method/{}", weft_api::client::path_segment(&args.name));
                expect_success(args.api.client().delete(&path).await?, "deleting the auth method")?;
                println!("Auth-method {:?} deleted successfully", args.name);
            }
            AuthMethodCommand::List(ListArgs { api }) => {
                let body = json_body(&expect_success(
                    api.client().get("/v1/acl/auth-methods").await?,
                    "listing auth methods",
                )?)?;
                print_list(api.format, &body, &body, &["Name", "Type", "Description"], |m| {
                    vec![text(m, "Name"), text(m, "Type"), text(m, "Description")]
                });
            }
        }
        Ok(())
    }
}

/// `base` with what `args` sets.
fn method_body(args: &MethodArgs, mut base: Value) -> anyhow::Result<Value> {
    let mut set = |field: &str, value: &Option<String>| {
        if let Some(value) = value {
            base[field] = value.as_str().into();
        }
    };
    set("DisplayName", &args.display_name);
    set("Description", &args.description);
    set("MaxTokenTTL", &args.max_token_ttl);
    set("TokenLocality", &args.token_locality);
    if let Some(config) = &args.config {
        let config = text_or_file(config, "config")?;
        base["Config"] = serde_json::from_str(&config).context("Error parsing JSON configuration")?;
    }
    if !base["Config"].is_object() {
        base["Config"] = json!({});
    }
    let config = &mut base["Config"];
    if let Some(url) = &args.jwks_url {
        config["JWKSURL"] = url.as_str().into();
    }
    if let Some(ca) = &args.jwks_ca_cert {
        config["JWKSCACert"] = text_or_file(ca, "JWKS CA certificate")?.into();
    }
    if let Some(issuer) = &args.bound_issuer {
        config["BoundIssuer"] = issuer.as_str().into();
    }
    if !args.bound_audiences.is_empty() {
        config["BoundAudiences"] = json!(args.bound_audiences);
    }
    for mapping in &args.claim_mappings {
        let (claim, attribute) =
            mapping.split_once('=').with_context(|| format!("-claim-mapping {mapping:?}: give CLAIM=ATTRIBUTE"))?;
        config["ClaimMappings"][claim] = attribute.into();
    }
    Ok(base)
}

fn print_method(format: Format, method: &Value) {
    if format == Format::Json {
        return print_json(method);
    }
    for field in ["Name", "Type", "DisplayName", "Description", "MaxTokenTTL", "TokenLocality"] {
        if let Some(value) = method[field].as_str() {
            println!("{:<15}{value}", format!("{field}:"));
        }
    }
    println!("Config:\n{}", serde_json::to_string_pretty(&method["Config"]).unwrap_or_default());
}

// ---------------------------------------------------- binding rules -----

#[derive(Subcommand)]
pub enum BindingRuleCommand {
    Create(RuleArgs),
    Read(RuleId),
    Update(RuleArgs),
    Delete(RuleId),
    List(RuleList),
}

#[derive(Args)]
pub struct RuleId {
    #[arg(long)]
    id: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct RuleList {
    /// Only the rules of this auth method.
    #[arg(long)]
    method: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct RuleArgs {
    /// Update: the rule's ID.
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    method: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Which logins it applies to, over `value.<attribute>` and
    /// `list.<attribute>` (empty: all).
    #[arg(long)]
    selector: Option<String>,
    /// `service`, `node`, `role` or `policy`.
    #[arg(long = "bind-type")]
    bind_type: Option<String>,
    /// What it binds; `${value.<attribute>}` is filled in at login.
    #[arg(long = "bind-name")]
    bind_name: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

impl BindingRuleCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            BindingRuleCommand::Create(args) => {
                let method = args.method.clone().context("Missing required '-method' flag")?;
                let bind_name = args.bind_name.clone().context("Missing required '-bind-name' flag")?;
                let body = json!({
                    "AuthMethod": method,
                    "Description": args.description.clone().unwrap_or_default(),
                    "Selector": args.selector.clone().unwrap_or_default(),
                    "BindType": args.bind_type.clone().unwrap_or_else(|| "service".into()),
                    "BindName": bind_name,
                });
                let response = args.api.client().put("/v1/acl/binding-rule", body.to_string()).await?;
                print_rule(args.api.format, &json_body(&expect_success(response, "creating the binding rule")?)?);
            }
            BindingRuleCommand::Update(args) => {
                let id = args.id.clone().context("Missing required '-id' flag")?;
                let path = format!("/v1/acl/binding-rule/{}", weft_api::client::path_segment(&id));
                let client = args.api.client();
                let mut rule = json_body(&expect_success(client.get(&path).await?, "reading the binding rule")?)?;
                for (field, value) in [
                    ("Description", &args.description),
                    ("Selector", &args.selector),
                    ("BindType", &args.bind_type),
                    ("BindName", &args.bind_name),
                ] {
                    if let Some(value) = value {
                        rule[field] = value.as_str().into();
                    }
                }
                let response = client.put(&path, rule.to_string()).await?;
                print_rule(args.api.format, &json_body(&expect_success(response, "updating the binding rule")?)?);
            }
            BindingRuleCommand::Read(args) => {
                let path = format!("/v1/acl/binding-rule/{}", weft_api::client::path_segment(&args.id));
                let found =
                    json_body(&expect_success(args.api.client().get(&path).await?, "reading the binding rule")?)?;
                print_rule(args.api.format, &found);
            }
            BindingRuleCommand::Delete(args) => {
                let path = format!("/v1/acl/binding-rule/{}", weft_api::client::path_segment(&args.id));
                expect_success(args.api.client().delete(&path).await?, "deleting the binding rule")?;
                println!("Binding rule {:?} deleted successfully", args.id);
            }
            BindingRuleCommand::List(args) => {
                let path = match &args.method {
                    Some(method) => {
                        format!("/v1/acl/binding-rules?authmethod={}", weft_api::client::path_segment(method))
                    }
                    None => "/v1/acl/binding-rules".to_owned(),
                };
                let body = json_body(&expect_success(args.api.client().get(&path).await?, "listing binding rules")?)?;
                print_list(
                    args.api.format,
                    &body,
                    &body,
                    &["ID", "AuthMethod", "BindType", "BindName", "Selector"],
                    |r| ["ID", "AuthMethod", "BindType", "BindName", "Selector"].iter().map(|f| text(r, f)).collect(),
                );
            }
        }
        Ok(())
    }
}

fn print_rule(format: Format, rule: &Value) {
    if format == Format::Json {
        return print_json(rule);
    }
    for field in ["ID", "AuthMethod", "Description", "BindType", "BindName", "Selector"] {
        println!("{:<14}{}", format!("{field}:"), text(rule, field));
    }
}
