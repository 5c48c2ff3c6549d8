//! One module per command group; each talks to the HTTP API through
//! [`ApiArgs`] or, for `agent` and `dev`, starts the processes.

pub mod acl;
pub mod agent;
pub mod catalog;
pub mod config;
pub mod connect;
pub mod gateway;
pub mod intention;
pub mod k8s;
pub mod kv;
pub mod lock;
pub mod login;
pub mod maint;
pub mod members;
pub mod operator;
pub mod proxy;
pub mod services;
pub mod snapshot;
pub mod tls;
pub mod troubleshoot;
pub mod validate;

use std::ffi::OsString;

use anyhow::{bail, Context};
use clap::Args;
use weft_api::client::{HttpClient, Response};

use crate::output::Format;

/// How client commands reach an agent.
#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// The agent's HTTP API address.
    #[arg(long, env = "WEFT_HTTP_ADDR", default_value = "127.0.0.1:8500")]
    pub http_addr: String,
    /// ACL token sent as X-Consul-Token.
    #[arg(long, env = "WEFT_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the ACL token (used when --token is not given).
    #[arg(long, env = "WEFT_HTTP_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Read from any server, even if it lags (`?stale`).
    #[arg(long)]
    pub stale: bool,
}

impl ApiArgs {
    pub fn client(&self) -> HttpClient {
        HttpClient::new(&self.http_addr, self.token())
    }

    /// The token given, or the one in the token file (trimmed); a file
    /// that cannot be read means no token, and the agent's default.
    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            let path = self.token_file.as_ref()?;
            match std::fs::read_to_string(path) {
                Ok(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
                Err(error) => {
                    eprintln!("Warning: cannot read the token file {}: {error}", path.display());
                    None
                }
            }
        })
    }

    /// `?stale` for reads when asked for.
    pub fn read_query(&self) -> &'static str {
        if self.stale {
            "stale"
        } else {
            ""
        }
    }
}

/// A sidecar's threads when neither --threads nor WEFT_PROXY_THREADS says.
pub const DEFAULT_SIDECAR_THREADS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(2).unwrap();

/// The threads a proxy (a sidecar or a gateway) carries traffic on.
#[derive(Args, Clone, Copy, Debug)]
pub struct ProxyThreadsArgs {
    /// Threads carrying connections (default: 2 for a sidecar, as Istio's
    /// sidecars; one per core for a gateway). Each connection stays on one
    /// thread for its life; with 1, everything runs on the main thread.
    #[arg(long, env = "WEFT_PROXY_THREADS", value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,
}

/// Fails with the agent's own message unless the response is a success.
pub fn expect_success(response: Response, what: &str) -> anyhow::Result<Response> {
    if response.is_success() {
        return Ok(response);
    }
    let text = response.text();
    let text = text.trim();
    if text.is_empty() {
        bail!("{what} failed: HTTP {}", response.status);
    }
    bail!("{what} failed: {text} (HTTP {})", response.status)
}

/// Parses a JSON response body.
pub fn json_body(response: &Response) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(&response.body).context("the agent sent a response that is not JSON")
}

/// Joins query parts into `?a&b=c` (or nothing).
pub fn query_string(parts: &[String]) -> String {
    let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Rewrites Consul's single-dash long flags (`-kind web`, `-dc=dc1`) as
/// clap's (`--kind web`), for the command groups whose Consul counterparts
/// take them (`weft config`, `weft tls`, `weft acl`); everything else, `-` (stdin) and
/// anything after `--` pass unchanged.
pub fn consul_style_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let flags = match args.get(1).and_then(|a| a.to_str()) {
        Some("config") => config::LONG_FLAGS,
        Some("tls") => tls::LONG_FLAGS,
        Some("acl") => acl::LONG_FLAGS,
        Some("login" | "logout") => login::LONG_FLAGS,
        _ => return args,
    };
    for arg in args.iter_mut().skip(2) {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        let Some(flag) = text.strip_prefix('-').filter(|f| !f.starts_with('-')) else { continue };
        let name = flag.split_once('=').map_or(flag, |(name, _)| name);
        if flags.contains(&name) {
            *arg = format!("-{text}").into();
        }
    }
    args
}
