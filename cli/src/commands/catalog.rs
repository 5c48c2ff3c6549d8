//! `weft catalog services|nodes`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{expect_success, json_body, query_string, ApiArgs};
use crate::output::{print_json, print_table, Format};

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// List services (with --tags, their tags too).
    Services(ServicesArgs),
    /// List nodes.
    Nodes(NodesArgs),
    /// List the known datacenters.
    Datacenters(NodesArgs),
}

#[derive(Args)]
pub struct ServicesArgs {
    #[arg(long)]
    tags: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct NodesArgs {
    #[command(flatten)]
    api: ApiArgs,
}

impl CatalogCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            CatalogCommand::Services(args) => {
                let path = format!("/v1/catalog/services{}", query_string(&[args.api.read_query().into()]));
                let response = expect_success(args.api.client().get(&path).await?, "listing services")?;
                let body = json_body(&response)?;
                if args.api.format == Format::Json {
                    print_json(&body);
                } else if let Some(services) = body.as_object() {
                    for (name, tags) in services {
                        let tags: Vec<&str> =
                            tags.as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
                        if args.tags && !tags.is_empty() {
                            println!("{name}  {}", tags.join(","));
                        } else {
                            println!("{name}");
                        }
                    }
                }
            }
            CatalogCommand::Datacenters(args) => {
                let response =
                    expect_success(args.api.client().get("/v1/catalog/datacenters").await?, "listing datacenters")?;
                let body = json_body(&response)?;
                if args.api.format == Format::Json {
                    print_json(&body);
                } else {
                    body.as_array().into_iter().flatten().filter_map(|dc| dc.as_str()).for_each(|dc| println!("{dc}"));
                }
            }
            CatalogCommand::Nodes(args) => {
                let path = format!("/v1/catalog/nodes{}", query_string(&[args.api.read_query().into()]));
                let response = expect_success(args.api.client().get(&path).await?, "listing nodes")?;
                let body = json_body(&response)?;
                if args.api.format == Format::Json {
                    print_json(&body);
                } else {
                    let rows: Vec<Vec<String>> = body
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|n| {
                            ["Node", "ID", "Address", "Datacenter"]
                                .iter()
                                .map(|f| n[*f].as_str().unwrap_or_default().to_owned())
                                .collect()
                        })
                        .collect();
                    print_table(&["Node", "ID", "Address", "DC"], &rows);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
