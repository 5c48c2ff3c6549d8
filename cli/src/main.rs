//! `weft`: one binary for the agent, the server, the dev mode and the
//! operator commands, in the habits of the `consul` CLI.
//!
//! `main` only parses, dispatches and turns errors into exit codes:
//! 0 success, 1 a failed operation, 2 bad usage (clap), 64 invalid config;
//! `intention check` also exits 2 for a denied connection, as Consul's does.
#![forbid(unsafe_code)]

mod commands;
mod output;
mod systemd;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Weft: a service mesh for VMs and Kubernetes, in the style of Consul.
#[derive(Parser)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an agent (with --server, a server of the replicated state).
    Agent(commands::agent::AgentArgs),
    /// Run a single-node server and agent with embedded defaults, for trying Weft out.
    Dev(commands::agent::DevArgs),
    /// Read and write the key/value store.
    #[command(subcommand)]
    Kv(commands::kv::KvCommand),
    /// List what the catalog holds.
    #[command(subcommand)]
    Catalog(commands::catalog::CatalogCommand),
    /// Operate the cluster (Raft peers).
    #[command(subcommand)]
    Operator(commands::operator::OperatorCommand),
    /// Save or restore the whole replicated state.
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCommand),
    /// List the agents in the cluster: address, status, server or client.
    Members(commands::members::MembersArgs),
    /// Make the local agent leave the cluster gracefully and stop.
    Leave(commands::members::AgentControlArgs),
    /// Make the local agent re-read its config files' services and checks.
    Reload(commands::members::AgentControlArgs),
    /// Run a command while holding a lock on a KV prefix (a session and PREFIX/.lock), like consul lock.
    Lock(commands::lock::LockArgs),
    /// Put the local node or one of its services in maintenance mode, take it out, or list it.
    Maint(commands::maint::MaintArgs),
    /// The service mesh: the mesh CA and the sidecar proxy.
    #[command(subcommand)]
    Connect(commands::connect::ConnectCommand),
    /// Look inside a running sidecar proxy.
    #[command(subcommand)]
    Proxy(commands::proxy::ProxyCommand),
    /// Register or deregister services with the local agent.
    #[command(subcommand)]
    Services(commands::services::ServicesCommand),
    /// Manage intentions: which services may connect to which (check exits 2 when denied).
    #[command(subcommand)]
    Intention(commands::intention::IntentionCommand),
    /// Explain where traffic goes and why (routes, splits, subsets, endpoints, intentions).
    #[command(subcommand)]
    Troubleshoot(commands::troubleshoot::TroubleshootCommand),
    /// Write, read, list and delete central config entries (service-defaults, service-router, mesh, ...).
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Weft on Kubernetes: the sidecar-injection webhook and the sidecar's readiness.
    #[command(subcommand)]
    K8s(commands::k8s::K8sCommand),
    /// Check config files or directories the way the agent would read them, without starting it.
    Validate(commands::validate::ValidateArgs),
    /// ACLs: bootstrap, policies, roles, tokens and the agent's tokens.
    #[command(subcommand)]
    Acl(commands::acl::AclCommand),
    /// Exchange a JWT for an ACL token through an auth method.
    Login(commands::login::LoginArgs),
    /// Delete the token a login made.
    Logout(commands::login::LogoutArgs),
    /// Make the RPC CA and server certificates (files in the working directory, named as Consul's).
    #[command(subcommand)]
    Tls(commands::tls::TlsCommand),
}

fn main() -> ExitCode {
    // `weft config` and `weft tls` also take Consul's single-dash long flags (`-kind web`).
    let command = commands::agent::hide_unused_dev_flags(Cli::command());
    let matches = command.get_matches_from(commands::consul_style_args(std::env::args_os()));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let threads = match &cli.command {
        Command::Connect(command) => command.proxy_threads(),
        _ => None,
    };
    if threads.is_some() {
        // Before any thread starts or library loads: the mappings a proxy
        // may release once it serves.
        weft_proxy::resident::remember_startup_mappings();
    }
    let runtime = match async_runtime(threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Long-running commands give back what bursts freed; short ones are
    // gone before the first tick.
    runtime.spawn(async {
        let mut every = tokio::time::interval(weft_proxy::resident::GIVE_BACK_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            weft_proxy::resident::give_back_free_heap();
        }
    });
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent(args) => commands::agent::run_agent(args).await,
            Command::Dev(args) => commands::agent::run_dev(args).await,
            Command::Kv(command) => command.run().await,
            Command::Catalog(command) => command.run().await,
            Command::Operator(command) => command.run().await,
            Command::Snapshot(command) => command.run().await,
            Command::Members(args) => args.run().await,
            Command::Leave(args) => args.leave().await,
            Command::Reload(args) => args.reload().await,
            Command::Maint(args) => args.run().await,
            Command::Lock(args) => args.run().await,
            Command::Services(command) => command.run().await,
            Command::Connect(command) => command.run().await,
            Command::Proxy(command) => command.run().await,
            Command::Intention(command) => command.run().await,
            Command::Config(command) => command.run().await,
            Command::Troubleshoot(command) => command.run().await,
            Command::K8s(command) => command.run().await,
            Command::Validate(args) => Ok(args.run()),
            Command::Tls(command) => command.run(),
            Command::Acl(command) => command.run().await,
            Command::Login(args) => args.run().await,
            Command::Logout(args) => args.run().await,
        }
    });
    // A blocking task still running (a storage flush stuck on a full disk,
    // a read of stdin) must not keep the process from exiting.
    runtime.shutdown_timeout(BLOCKING_TASKS_GRACE);
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long, once a command is done, the process waits for blocking tasks
/// still running before it exits without them.
const BLOCKING_TASKS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The tokio runtime. A proxy (`threads` given) runs on a current-thread
/// runtime, plus that many connection workers when it has more than one
/// thread (`weft_proxy::workers`); everything else on one worker per core.
fn async_runtime(threads: Option<std::num::NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        Some(threads) => {
            if threads.get() > 1 {
                weft_proxy::workers::start(threads)?;
            }
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
}
