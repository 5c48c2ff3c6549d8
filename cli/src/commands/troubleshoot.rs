//! `weft troubleshoot route`: which route, split, subset and endpoints a
//! request from one service to another would take, and which intention
//! would allow or deny it, as the destination's config entries and the
//! intentions stand now (`GET /v1/agent/troubleshoot/route`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;
use weft_api::client::path_segment;

use super::{expect_success, json_body, ApiArgs};
use crate::output::{print_json, Format};

#[derive(Subcommand)]
pub enum TroubleshootCommand {
    /// Explain where a request would go and whether it would be allowed.
    Route(RouteArgs),
}

#[derive(Args)]
pub struct RouteArgs {
    /// The calling service.
    #[arg(long)]
    source: String,
    /// The service called (the upstream).
    #[arg(long)]
    destination: String,
    #[arg(long, default_value = "GET")]
    method: String,
    /// The path, with its query string if any.
    #[arg(long, default_value = "/")]
    path: String,
    /// A request header, `Name=Value` or `Name:Value`; repeatable.
    #[arg(long)]
    header: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

impl TroubleshootCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let TroubleshootCommand::Route(args) = self;
        let mut path = format!(
            "/v1/agent/troubleshoot/route?source={}&destination={}&method={}&path={}",
            path_segment(&args.source),
            path_segment(&args.destination),
            path_segment(&args.method),
            path_segment(&args.path)
        );
        for header in &args.header {
            let header = header.replacen('=', ":", 1);
            path.push_str(&format!("&header={}", path_segment(&header)));
        }
        let answer = json_body(&expect_success(args.api.client().get(&path).await?, "troubleshooting the route")?)?;
        if args.api.format == Format::Json {
            print_json(&answer);
            return Ok(ExitCode::SUCCESS);
        }
        print_explanation(&answer);
        Ok(ExitCode::SUCCESS)
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn print_explanation(answer: &Value) {
    let request = &answer["Request"];
    println!(
        "{} {} from {} to {} ({})",
        text(&request["Method"]),
        text(&request["Path"]),
        text(&answer["Source"]),
        text(&answer["Destination"]),
        text(&answer["Protocol"])
    );
    let route = &answer["Route"];
    println!("Route:     #{} {}", text(&route["Index"]), text(&route["Origin"]));
    if !route["RequestTimeoutMs"].is_null() {
        println!("Timeout:   {} ms", text(&route["RequestTimeoutMs"]));
    }
    if route["Retries"].as_u64().unwrap_or(0) > 0 {
        println!("Retries:   {}", text(&route["Retries"]));
    }
    if !route["PrefixRewrite"].is_null() {
        println!("Rewrite:   prefix to {}", text(&route["PrefixRewrite"]));
    }
    if !route["Fault"].is_null() {
        println!("Fault:     {}", route["Fault"]);
    }
    for split in answer["Splits"].as_array().into_iter().flatten() {
        let endpoints: Vec<String> = split["Endpoints"].as_array().into_iter().flatten().map(text).collect();
        println!(
            "Split:     {}% to {} -> {}",
            split["Weight"].as_f64().map(|w| w.to_string()).unwrap_or_else(|| text(&split["Weight"])),
            text(&split["Target"]),
            if endpoints.is_empty() { "no healthy endpoint".to_owned() } else { endpoints.join(", ") }
        );
        let failover: Vec<String> = split["Failover"].as_array().into_iter().flatten().map(text).collect();
        if !failover.is_empty() {
            println!("           failover: {}", failover.join(", "));
        }
    }
    let intention = &answer["Intention"];
    println!(
        "Intention: {} ({}): {}",
        if intention["Allowed"] == true { "allowed" } else { "DENIED" },
        text(&intention["Layer"]),
        text(&intention["Reason"])
    );
}
