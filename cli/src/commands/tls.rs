//! `weft tls ca create` and `weft tls cert create -server`: the RPC CA and
//! server certificates, as files in the working directory, named and
//! flagged as Consul's `consul tls` commands (`-dc`, `-domain`,
//! `-additional-dnsname`, one dash or two). Client agents need no
//! certificate file: they enroll with a join token (auto-encrypt).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use weft_tls::files::{ca_paths, create_ca, create_server_cert, ServerCertRequest};

/// The long flags Consul's `consul tls` takes with one dash.
pub const LONG_FLAGS: &[&str] = &[
    "domain",
    "days",
    "dc",
    "server",
    "client",
    "ca",
    "key",
    "additional-dnsname",
    "additional-ipaddress",
    "common-name",
];

#[derive(Subcommand)]
pub enum TlsCommand {
    /// The certificate authority that signs servers' certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Certificates signed by that authority.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Make a CA: <domain>-agent-ca.pem and <domain>-agent-ca-key.pem (keep the key offline).
    Create(CaCreateArgs),
}

#[derive(Subcommand)]
pub enum CertCommand {
    /// Make a server certificate: <dc>-server-<domain>-<n>.pem and its -key.pem.
    Create(CertCreateArgs),
}

#[derive(Args)]
pub struct CaCreateArgs {
    /// The DNS domain the cluster uses.
    #[arg(long, default_value = "weft")]
    domain: String,
    /// How many days the CA is valid.
    #[arg(long, default_value_t = 1825)]
    days: u64,
}

#[derive(Args)]
pub struct CertCreateArgs {
    /// A server certificate (names server.<dc>.<domain>). Client agents get theirs by enrolling.
    #[arg(long)]
    server: bool,
    /// Consul's operator-made client certificates: refused (see the error).
    #[arg(long)]
    client: bool,
    /// The datacenter the server is in.
    #[arg(long, default_value = "dc1")]
    dc: String,
    #[arg(long, default_value = "weft")]
    domain: String,
    /// The CA's certificate (default <domain>-agent-ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The CA's key (default <domain>-agent-ca-key.pem).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Another DNS name the certificate carries (repeatable).
    #[arg(long = "additional-dnsname")]
    dns_names: Vec<String>,
    /// An IP address the certificate carries (repeatable).
    #[arg(long = "additional-ipaddress")]
    ips: Vec<IpAddr>,
    /// How many days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    days: u64,
}

fn days(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(24 * 3600))
}

impl TlsCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let here = std::env::current_dir().context("the working directory")?;
        match self {
            TlsCommand::Ca(CaCommand::Create(args)) => {
                let (cert, key) = create_ca(&here, &args.domain, days(args.days))?;
                println!("==> Saved {}", cert.display());
                println!("==> Saved {}", key.display());
            }
            TlsCommand::Cert(CertCommand::Create(args)) => {
                if args.client {
                    bail!(
                        "Weft makes no client certificates from the operator CA: a client agent gets its own, \
                         naming its node, when it enrolls with a join token (weft operator join-token create), \
                         and the servers hold it to that node; a shared client certificate could act as any node"
                    );
                }
                if !args.server {
                    bail!("say -server: client agents get their certificates by enrolling with a join token (weft operator join-token create)");
                }
                let (default_cert, default_key) = ca_paths(&here, &args.domain);
                let request = ServerCertRequest {
                    datacenter: args.dc,
                    domain: args.domain,
                    dns_names: args.dns_names,
                    ips: args.ips,
                    ttl: days(args.days),
                };
                let (ca, ca_key) = (args.ca.unwrap_or(default_cert), args.key.unwrap_or(default_key));
                let (cert, key) = create_server_cert(&here, &ca, &ca_key, &request)?;
                println!("==> Using {} and {}", ca.display(), ca_key.display());
                println!("==> Saved {}", cert.display());
                println!("==> Saved {}", key.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
