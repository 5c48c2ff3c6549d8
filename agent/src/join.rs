//! A client agent's enrollment and certificate (see `weft_server::join`).
//!
//! The agent makes a secret and keeps it in its data directory before it
//! redeems its join token, so an answer lost on the way is simply asked for
//! again; the servers record only the secret's hash. With the secret, it
//! asks for a certificate for its node from a CSR (its key is made here and
//! never leaves), keeps both in the data directory (0600), presents the
//! certificate on every RPC, and renews it two thirds of the way through its
//! validity. A restarted
//! agent uses what it kept; the token, used up, is not needed again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use weft_api::ids::NodeName;
use weft_server::remote::RemoteCluster;
use weft_server::ServerError;
use weft_tls::{ClientTls, Identity, RpcConnector};

use crate::config::AgentConfig;

/// The files in the data directory that hold the enrollment, and the
/// agent's certificate and key.
const CREDENTIAL_FILE: &str = "agent-credential.json";
const CERT_FILE: &str = "agent-cert.pem";
const KEY_FILE: &str = "agent-key.pem";
/// While no server answers, the agent asks again after this long, twice as
/// long each time, up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read or write {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("the agent credential {path} is for node {found:?}, not {node:?}: remove it and join with a new token")]
    OtherNode { path: PathBuf, found: NodeName, node: NodeName },
    #[error("the servers refused the join token: {0}")]
    Refused(String),
    #[error("the servers refused this agent's enrollment by login: {0}")]
    LoginRefused(String),
    #[error("the servers refused this agent's enrollment: {0}")]
    NotEnrolled(String),
    #[error("cannot make this agent's key or use its certificate: {0}")]
    Certificate(String),
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

/// This agent's enrollment: what it renews its certificate with.
pub struct Enrollment {
    node: NodeName,
    secret: String,
    dir: PathBuf,
    servers: Vec<String>,
    tls: Arc<ClientTls>,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Enrolls this client agent if it can (see the module docs) and has `tls`
/// present its certificate: the stored one until it is due for renewal,
/// else a new one. `None` when the agent has neither a stored
/// enrollment nor a join token: it then calls without a certificate.
pub async fn enroll(config: &AgentConfig, tls: &Arc<ClientTls>) -> Result<Option<Enrollment>, CredentialError> {
    let path = config.data_dir.join(CREDENTIAL_FILE);
    let stored = read_credential(&path)?;
    if let Some(stored) = &stored {
        if stored.node != config.node_name {
            return Err(CredentialError::OtherNode {
                path,
                found: stored.node.clone(),
                node: config.node_name.clone(),
            });
        }
    }
    let connector = RpcConnector::new(Some(tls.clone()));
    let mut servers = config.retry_join.clone();
    // Without a join token, an agent that logs in (`acl { login }`, a pod's)
    // enrolls with its JWT instead.
    let login = config.acl.login.as_ref().filter(|_| config.acl.enabled);
    let stored = match (stored, &config.join_token) {
        (Some(stored), _) if !stored.pending => stored,
        (None, None) if login.is_none() => return Ok(None),
        (Some(stored), None) if login.is_none() => stored,
        (stored, None) => {
            let login = login.expect("matched above");
            let bearer = std::fs::read_to_string(&login.bearer_token_file)
                .map_err(|source| CredentialError::File { path: login.bearer_token_file.clone(), source })?;
            let mut stored = stored.unwrap_or_else(|| Stored {
                node: config.node_name.clone(),
                secret: weft_server::join::new_secret(),
                pending: true,
            });
            write_private(&path, &serde_json::to_vec(&stored).unwrap_or_default())?;
            let method = (login.auth_method.as_str(), bearer.trim());
            let redeemed_by = patiently("enroll by login", || {
                weft_server::join::redeem_login_remotely(
                    &config.retry_join,
                    method,
                    &stored.node,
                    &stored.secret,
                    &connector,
                )
            })
            .await
            .map_err(CredentialError::LoginRefused)?;
            servers.retain(|server| *server != redeemed_by);
            servers.insert(0, redeemed_by);
            stored.pending = false;
            write_private(&path, &serde_json::to_vec(&stored).unwrap_or_default())?;
            tracing::info!(node = %config.node_name, method = %login.auth_method, "enrolled by login");
            stored
        }
        (stored, Some(token)) => {
            // The secret is made (and kept) before the servers are asked, so
            // an answer lost on the way is asked for again with the same one.
            let mut stored = stored.unwrap_or_else(|| Stored {
                node: config.node_name.clone(),
                secret: weft_server::join::new_secret(),
                pending: true,
            });
            write_private(&path, &serde_json::to_vec(&stored).unwrap_or_default())?;
            let redeemed_by = patiently("redeem the join token", || {
                weft_server::join::redeem_join_token(token, &stored.node, &stored.secret, &connector)
            })
            .await
            .map_err(CredentialError::Refused)?;
            // That server has applied the enrollment: ask it for the certificate first.
            servers.retain(|server| *server != redeemed_by);
            servers.insert(0, redeemed_by);
            stored.pending = false;
            write_private(&path, &serde_json::to_vec(&stored).unwrap_or_default())?;
            tracing::info!(node = %config.node_name, "joined with the join token; the enrollment is kept in the data directory");
            stored
        }
    };
    let enrollment = Enrollment {
        node: stored.node,
        secret: stored.secret,
        dir: config.data_dir.clone(),
        servers,
        tls: tls.clone(),
    };
    match enrollment.stored_certificate()? {
        Some((identity, renew_at)) if unix_now() < renew_at => {
            tls.set_identity(Some(identity)).map_err(|e| CredentialError::Certificate(e.to_string()))?
        }
        _ => enrollment.renew().await?,
    }
    Ok(Some(enrollment))
}

impl Enrollment {
    fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// The certificate kept in the data directory, and when to renew it:
    /// two thirds of the way through its validity (seconds since the Unix
    /// epoch; the validity starts a minute before it was signed).
    fn stored_certificate(&self) -> Result<Option<(Identity, i64)>, CredentialError> {
        let (Some(cert), Some(key)) = (read_text(&self.cert_path())?, read_text(&self.key_path())?) else {
            return Ok(None);
        };
        let Ok(identity) = Identity::from_pem(&cert, &key, "the agent's certificate") else { return Ok(None) };
        let (not_before, not_after) =
            identity.chain.first().and_then(|c| weft_tls::names::validity(c)).unwrap_or_default();
        Ok(Some((identity, not_before + (not_after - not_before) * 2 / 3)))
    }

    /// Gets a new certificate (a new key, a CSR, the servers' signature),
    /// keeps it, and presents it from now on.
    async fn renew(&self) -> Result<(), CredentialError> {
        let certificate = |e: weft_tls::issue::IssueError| CredentialError::Certificate(e.to_string());
        let (csr_pem, key_pem) = weft_tls::issue::new_csr().map_err(certificate)?;
        let connector = RpcConnector::new(Some(self.tls.clone()));
        let cert_pem = patiently("get this agent's certificate", || {
            weft_server::join::request_agent_certificate(&self.servers, &self.node, &self.secret, &csr_pem, &connector)
        })
        .await
        .map_err(CredentialError::NotEnrolled)?;
        let identity = Identity::from_pem(&cert_pem, &key_pem, "the servers' answer")
            .map_err(|e| CredentialError::Certificate(e.to_string()))?;
        // The key first: a certificate on disk always has its key.
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.cert_path(), cert_pem.as_bytes())?;
        self.tls.set_identity(Some(identity)).map_err(|e| CredentialError::Certificate(e.to_string()))?;
        tracing::info!(node = %self.node, "this agent has a new certificate");
        Ok(())
    }

    /// Renews the certificate when it is due, and has `remote` dial anew
    /// with it, until the task is dropped.
    pub async fn keep_renewed(self, remote: RemoteCluster) {
        loop {
            let renew_at = self.stored_certificate().ok().flatten().map(|(_, renew_at)| renew_at).unwrap_or(0);
            let wait = (renew_at - unix_now()).max(0) as u64;
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match self.renew().await {
                Ok(()) => remote.reconnect(),
                Err(error) => {
                    tracing::error!(%error, "could not renew this agent's certificate; will retry");
                    tokio::time::sleep(RETRY_MAX).await;
                }
            }
        }
    }
}

/// Runs `attempt` until it succeeds or is refused (the refusal's reason),
/// waiting longer between tries while no server answers.
async fn patiently<F, Fut>(what: &str, mut attempt: F) -> Result<String, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, ServerError>>,
{
    let mut retry = RETRY;
    loop {
        match attempt().await {
            Ok(answer) => return Ok(answer),
            Err(ServerError::Unauthenticated(reason)) => return Err(reason),
            Err(error) => {
                tracing::warn!(%error, ?retry, "cannot {what} yet; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

fn read_text(path: &Path) -> Result<Option<String>, CredentialError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialError::File { path: path.to_owned(), source }),
    }
}

fn read_credential(path: &Path) -> Result<Option<Stored>, CredentialError> {
    let Some(text) = read_text(path)? else { return Ok(None) };
    serde_json::from_str(&text).map(Some).map_err(|e| CredentialError::File {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Writes `bytes` readable by this user only, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CredentialError> {
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
    out.write_all(bytes).map_err(file)?;
    out.sync_all().map_err(file)?;
    std::fs::rename(&temporary, path).map_err(file)
}
