//! The `tls` block, validated: TLS on server RPC, and the rule that RPC
//! leaves the host only over TLS.
//!
//! Once TLS is configured, Weft verifies everything by default
//! (`verify_incoming`, `verify_outgoing`, `verify_server_hostname`), where
//! Consul defaults to none of them. A client agent started with a join
//! token that names the servers' CA needs no `tls` block at all.

use std::net::SocketAddr;
use std::path::PathBuf;

use weft_api::join::JoinToken;

use super::file::{TlsFile, TlsSettingsFile};

/// TLS on server RPC, as validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcTlsConfig {
    /// The CA servers' certificates chain to, as a file ...
    pub ca_file: Option<PathBuf>,
    /// ... or inline, on a client agent: from its join token, or from an
    /// injected pod's environment.
    pub ca_pem: Option<String>,
    /// A server's certificate and key.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub verify_server_hostname: bool,
}

/// Where RPC goes: this agent's own listener (servers) and the servers it
/// dials.
pub(super) struct RpcEnds<'a> {
    pub server: bool,
    pub dev_mode: bool,
    pub rpc_addr: SocketAddr,
    pub servers: &'a [String],
    pub join_token: Option<&'a JoinToken>,
    /// A CA given inline (see [`RpcTlsConfig::ca_pem`]), not by a token.
    pub server_ca_pem: Option<&'a str>,
}

/// `internal_rpc` settings over `defaults`.
fn merged(file: &TlsFile) -> TlsSettingsFile {
    let defaults = file.defaults.clone().unwrap_or_default();
    let rpc = file.internal_rpc.clone().unwrap_or_default();
    TlsSettingsFile {
        ca_file: rpc.ca_file.or(defaults.ca_file),
        cert_file: rpc.cert_file.or(defaults.cert_file),
        key_file: rpc.key_file.or(defaults.key_file),
        verify_incoming: rpc.verify_incoming.or(defaults.verify_incoming),
        verify_outgoing: rpc.verify_outgoing.or(defaults.verify_outgoing),
        verify_server_hostname: rpc.verify_server_hostname.or(defaults.verify_server_hostname),
    }
}

/// Whether `addr` (`IP:port` or `host:port`) is on this host.
fn is_loopback(addr: &str) -> bool {
    match addr.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => addr.rsplit_once(':').is_some_and(|(host, _)| host == "localhost"),
    }
}

/// The validated TLS settings (`None`: plaintext), adding a problem for
/// each thing wrong.
pub(super) fn rpc_tls(
    file: Option<&TlsFile>,
    ends: RpcEnds<'_>,
    problem: &mut impl FnMut(String),
) -> Option<RpcTlsConfig> {
    let inline_ca = match ends.server {
        true => None,
        false => ends.server_ca_pem.map(str::to_owned).or_else(|| ends.join_token.and_then(|t| t.ca_pem.clone())),
    };
    let tls = match file.map(merged) {
        Some(settings) => Some(settings),
        None if inline_ca.is_some() => Some(TlsSettingsFile::default()),
        None => None,
    };
    let Some(tls) = tls else {
        plaintext_stays_on_this_host(&ends, problem);
        return None;
    };
    let config = RpcTlsConfig {
        verify_incoming: tls.verify_incoming.unwrap_or(true),
        verify_outgoing: tls.verify_outgoing.unwrap_or(true),
        verify_server_hostname: tls.verify_server_hostname.unwrap_or(true),
        ca_file: tls.ca_file,
        ca_pem: inline_ca,
        cert_file: tls.cert_file,
        key_file: tls.key_file,
    };
    if ends.server {
        for (name, value) in
            [("ca_file", &config.ca_file), ("cert_file", &config.cert_file), ("key_file", &config.key_file)]
        {
            if value.is_none() {
                problem(format!(
                    "tls: a server needs {name} (make the CA with `weft tls ca create` and this server's certificate with `weft tls cert create -server`)"
                ));
            }
        }
    } else {
        if config.ca_file.is_none() && config.ca_pem.is_none() {
            problem("tls: a client agent needs ca_file (the CA that signs the servers' certificates), or a join token that carries it".into());
        }
        if config.cert_file.is_some() || config.key_file.is_some() {
            problem("tls: cert_file and key_file are for servers; a client agent gets its certificate by enrolling with a join token (--join-token)".into());
        }
    }
    if !config.verify_outgoing {
        plaintext_stays_on_this_host(&RpcEnds { server: false, ..ends }, problem);
    }
    Some(config)
}

/// RPC without TLS is refused where it would leave the host.
fn plaintext_stays_on_this_host(ends: &RpcEnds<'_>, problem: &mut impl FnMut(String)) {
    if ends.dev_mode {
        return;
    }
    let how = "create certificates with `weft tls ca create` and `weft tls cert create -server`, and give them in a tls { defaults { ca_file cert_file key_file } } block";
    if ends.server && !ends.rpc_addr.ip().is_loopback() {
        problem(format!("server RPC on {} would leave this host in plaintext: {how}", ends.rpc_addr));
    }
    if let Some(remote) = ends.servers.iter().find(|addr| !is_loopback(addr)) {
        problem(format!(
            "RPC to the server at {remote} would leave this host in plaintext: {how} (client agents: a ca_file, or a join token from servers with TLS)"
        ));
    }
}
