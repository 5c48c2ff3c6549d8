//! This agent's RPC TLS, from its configuration: the material its `tls`
//! block names (or, on a client agent, the CA its join token or its pod's
//! environment carries), loaded into what the server and the link to the
//! servers dial and serve with.

use std::path::Path;
use std::sync::Arc;

use weft_server::ServerRpcTls;
use weft_tls::config::roots_from_pem;
use weft_tls::{AgentRoots, ClientTls, Identity, RpcTlsSettings, ServerTls};

use crate::config::{AgentConfig, RpcTlsConfig};

/// Why the TLS material is unusable.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct RpcTlsError(String);

fn read(path: &Path) -> Result<String, RpcTlsError> {
    std::fs::read_to_string(path).map_err(|e| RpcTlsError(format!("cannot read {}: {e}", path.display())))
}

/// The CA (PEM) servers' certificates chain to, and the settings loaded.
fn settings(config: &AgentConfig, tls: &RpcTlsConfig) -> Result<(String, RpcTlsSettings), RpcTlsError> {
    let (ca_pem, ca_source) = match (&tls.ca_file, &tls.ca_pem) {
        (Some(path), _) => (read(path)?, path.display().to_string()),
        (None, Some(pem)) => (pem.clone(), "the join token or the pod's environment".to_owned()),
        (None, None) => return Err(RpcTlsError("no ca_file".into())),
    };
    let ca = roots_from_pem(&ca_pem, &ca_source).map_err(|e| RpcTlsError(e.to_string()))?;
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(
            Identity::from_pem(&read(cert)?, &read(key)?, &cert.display().to_string())
                .map_err(|e| RpcTlsError(e.to_string()))?,
        ),
        _ => None,
    };
    let settings = RpcTlsSettings {
        ca,
        identity,
        verify_incoming: tls.verify_incoming,
        verify_outgoing: tls.verify_outgoing,
        verify_server_hostname: tls.verify_server_hostname,
        datacenter: config.datacenter.clone(),
        domain: config.domain.clone(),
    };
    Ok((ca_pem, settings))
}

/// A server's RPC TLS, if configured.
pub fn for_server(config: &AgentConfig) -> Result<Option<ServerRpcTls>, RpcTlsError> {
    let Some(tls) = &config.rpc_tls else { return Ok(None) };
    let (ca_pem, settings) = settings(config, tls)?;
    let agent_roots = AgentRoots::default();
    let serve = ServerTls::new(&settings, agent_roots.clone()).map_err(|e| RpcTlsError(e.to_string()))?;
    let dial = match settings.verify_outgoing {
        true => Some(ClientTls::new(&settings).map_err(|e| RpcTlsError(e.to_string()))?),
        false => None,
    };
    Ok(Some(ServerRpcTls { serve, dial, agent_roots, ca_pem }))
}

/// What a client agent dials the servers with, if it dials over TLS (it
/// presents its own certificate once it has enrolled).
pub fn for_client(config: &AgentConfig) -> Result<Option<Arc<ClientTls>>, RpcTlsError> {
    let Some(tls) = config.rpc_tls.as_ref().filter(|tls| tls.verify_outgoing) else { return Ok(None) };
    let (_, settings) = settings(config, tls)?;
    ClientTls::new(&settings).map(Some).map_err(|e| RpcTlsError(e.to_string()))
}
