//! A client agent's RPC credential (see `weft_server::join`): a secret made
//! here and kept in its data directory, recorded by the servers (as a hash)
//! once, when it redeems the join token it was started with. A restarted
//! agent uses the stored credential; the token, used up, is not needed
//! again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_api::ids::NodeName;
use weft_api::join::{JoinToken, RpcCredential};
use weft_server::ServerError;

use crate::config::AgentConfig;

/// The file in the data directory that holds the credential.
const CREDENTIAL_FILE: &str = "agent-credential.json";
/// While no server can take the token, it is offered again after this
/// long, twice as long each time, up to [`REDEEM_RETRY_MAX`].
const REDEEM_RETRY: Duration = Duration::from_secs(1);
const REDEEM_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read or write the agent credential {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("the agent credential {path} is for node {found:?}, not {node:?}: remove it and join with a new token")]
    OtherNode { path: PathBuf, found: NodeName, node: NodeName },
    #[error("the servers refused the join token: {0}")]
    Refused(String),
}

#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    node: NodeName,
    secret: String,
    /// Made here but not yet confirmed by the servers: offered again, with
    /// the same secret, on the next start (asking twice is harmless).
    #[serde(default)]
    pending: bool,
}

impl Stored {
    fn credential(&self) -> RpcCredential {
        RpcCredential::Agent { node: self.node.clone(), secret: self.secret.clone() }
    }
}

/// The credential this client agent presents: the stored one, once the
/// servers have it; else one made here and recorded by redeeming its join
/// token (retrying while no server answers); else none.
pub async fn credential(config: &AgentConfig) -> Result<Option<RpcCredential>, CredentialError> {
    let path = config.data_dir.join(CREDENTIAL_FILE);
    let stored = read(&path)?;
    if let Some(stored) = &stored {
        if stored.node != config.node_name {
            return Err(CredentialError::OtherNode {
                path,
                found: stored.node.clone(),
                node: config.node_name.clone(),
            });
        }
    }
    let token = match (&stored, &config.join_token) {
        (Some(stored), _) if !stored.pending => return Ok(Some(stored.credential())),
        (stored, None) => return Ok(stored.as_ref().map(Stored::credential)),
        (_, Some(token)) => token,
    };
    // The secret is made (and kept) before the servers are asked, so an
    // answer lost on the way is asked for again with the same one.
    let mut stored = stored.unwrap_or_else(|| Stored {
        node: config.node_name.clone(),
        secret: weft_server::join::new_secret(),
        pending: true,
    });
    write(&path, &stored)?;
    redeem(token, &stored.credential()).await?;
    stored.pending = false;
    write(&path, &stored)?;
    tracing::info!(node = %config.node_name, "joined with the join token; the credential is kept in the data directory");
    Ok(Some(stored.credential()))
}

async fn redeem(token: &JoinToken, credential: &RpcCredential) -> Result<(), CredentialError> {
    let mut retry = REDEEM_RETRY;
    loop {
        match weft_server::join::redeem_join_token(token, credential).await {
            Ok(()) => return Ok(()),
            Err(ServerError::Unauthenticated(reason)) => return Err(CredentialError::Refused(reason)),
            Err(error) => {
                tracing::warn!(%error, servers = ?token.servers, ?retry, "cannot redeem the join token yet; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(REDEEM_RETRY_MAX);
            }
        }
    }
}

fn read(path: &Path) -> Result<Option<Stored>, CredentialError> {
    let file = |source| CredentialError::File { path: path.to_owned(), source };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| file(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(file(error)),
    }
}

/// Writes the credential readable by this user only, atomically.
fn write(path: &Path, stored: &Stored) -> Result<(), CredentialError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = |source| CredentialError::File { path: path.to_owned(), source };
    let temporary = path.with_extension("tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(file)?;
    out.write_all(&serde_json::to_vec(stored).unwrap_or_default()).map_err(file)?;
    out.sync_all().map_err(file)?;
    std::fs::rename(&temporary, path).map_err(file)
}

/// A new random key for the servers' `rpc_key` (`weft keygen`).
pub fn new_rpc_key() -> String {
    weft_server::join::new_secret()
}
