//! How a new client agent gets in: join tokens, enrollments, and the
//! agent CA that signs agents' certificates (Consul's auto-encrypt).
//!
//! A join token (made on a server, shown once) names the servers, the
//! datacenter and the CA their certificates chain to. The agent makes a
//! secret of its own and redeems the token for it ([`redeem`]: the
//! servers record the secret's hash as the node's **enrollment**), then
//! sends a CSR with the secret ([`enroll`]) and gets a certificate for its
//! node, signed by the agent CA, naming the enrollment. That certificate is
//! its identity on every later call (see `rpc::authz`); it renews it the
//! same way before it expires. Revoking the enrollment
//! (`weft operator node revoke`) refuses every certificate issued under it.
//!
//! The agent CA is made by the first leader and replicated with the join
//! tables, which client agents are never sent. Secrets never enter the log:
//! tokens and enrollments are kept as SHA-256 hashes.

use std::time::Duration;

use rand::RngCore;
use tonic::transport::Channel;
use tonic::Status;
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::{Datacenter, NodeName};
use weft_api::join::{AgentCaRecord, AgentCredentialRecord, JoinToken, JoinTokenRecord};
use weft_api::proto::cluster::cluster_client::ClusterClient;
use weft_api::proto::cluster::{EnrollRequest, EnrollResponse, RedeemJoinTokenRequest, RedeemLoginRequest};
use weft_tls::issue::Authority;
use weft_tls::{AgentName, AgentRoots, RpcConnector};

use crate::ca::unix_now;
use crate::rpc::Channels;
use crate::store::{Redemption, Table};
use crate::{Server, ServerError};

/// How long the agent CA is valid.
const AGENT_CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A new random secret: 32 bytes, URL-safe base64.
pub fn new_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of `secret`, hex: what is replicated in its place.
pub fn secret_hash(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        hex.push(HEX[usize::from(byte >> 4)] as char);
        hex.push(HEX[usize::from(byte & 0xf)] as char);
    }
    hex
}

/// What a new join token is for.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub description: String,
    pub ttl: Duration,
    pub uses: u32,
}

/// Makes a join token naming `servers` (their RPC addresses),
/// `datacenter` and `ca_pem` (what the servers' certificates chain to): its
/// record, to be written through Raft (`Command::JoinTokenCreate`), and the
/// token itself, to be shown once.
pub fn new_token(
    servers: Vec<String>,
    datacenter: &Datacenter,
    ca_pem: Option<String>,
    request: TokenRequest,
) -> (JoinTokenRecord, JoinToken) {
    let secret = new_secret();
    let hash = secret_hash(&secret);
    let record = JoinTokenRecord {
        id: hash[..12].to_owned(),
        secret_sha256: hash,
        description: request.description,
        expires_at: unix_now().saturating_add(i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX)),
        uses_left: request.uses.max(1),
        indexes: Default::default(),
    };
    (record, JoinToken { servers, datacenter: datacenter.to_string(), secret, ca_pem })
}

/// Redeems a join token for `node`: records the hash of the credential
/// secret the agent made, if the token is good. Asking again with the same
/// hash (an answer lost on the way) succeeds without taking another use.
pub(crate) async fn redeem(server: &Server, request: RedeemJoinTokenRequest) -> Result<(), Status> {
    let node = NodeName::new(request.node);
    let hash = request.credential_sha256;
    if node.is_empty() || request.secret.is_empty() || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(Status::invalid_argument(
            "redeeming a join token needs the token's secret, the node's name and its credential's SHA-256",
        ));
    }
    let refused = |reason: String| {
        tracing::warn!(%node, %reason, "a join token was refused");
        Status::permission_denied(format!("the join token was refused: {reason}"))
    };
    let credential = AgentCredentialRecord { node: node.clone(), secret_sha256: hash, ..Default::default() };
    // Checked here first, so a wrong or stale token costs no log entry;
    // the log's own check (in order) is the one that counts.
    let (token_sha256, now) = (secret_hash(&request.secret), unix_now());
    let checked = server.store().read().join().redeemable(&token_sha256, &credential, now);
    match checked {
        Err(reason) => return Err(refused(reason)),
        Ok(Redemption::AlreadyIn) => return Ok(()),
        Ok(Redemption::LetIn) => {}
    }
    let command = Command::JoinTokenRedeem { secret_sha256: token_sha256, credential, now };
    match server.write(command).await.map_err(crate::server::error_to_status)?.outcome {
        CommandOutcome::Done => {
            tracing::info!(%node, "an agent joined with a join token");
            Ok(())
        }
        CommandOutcome::Rejected(reason) => Err(refused(reason)),
        other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// Records `node`'s enrollment for an agent that proves with a JWT that it
/// is that node: the auth method's binding rules must give the JWT a node
/// identity for exactly `node` (a pod's agent, with its service-account
/// token, where no join token could be handed out). The enrollment is
/// replaced if the node had one (the JWT proves the node, as a join token
/// does not).
pub(crate) async fn redeem_login(server: &Server, request: RedeemLoginRequest) -> Result<(), Status> {
    let node = NodeName::new(request.node);
    let hash = request.credential_sha256;
    if node.is_empty() || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument("enrolling by login needs the node's name and its credential's SHA-256"));
    }
    let refused = |reason: String| {
        tracing::warn!(%node, %reason, "an enrollment by login was refused");
        Status::permission_denied(format!("the login was refused: {reason}"))
    };
    let authenticated = crate::login::authenticate(server, &request.auth_method, &request.bearer_token, unix_now());
    let (method, bindings) = authenticated.await.map_err(|error| match error {
        // Not made yet (a Helm chart's job makes it after the pods start),
        // or its keys not fetched yet: worth asking again.
        weft_acl::login::LoginError::MethodNotFound(_) | weft_acl::login::LoginError::KeysUnavailable(_) => {
            Status::unavailable(error.to_string())
        }
        error => refused(error.to_string()),
    })?;
    if !bindings.nodes.iter().any(|bound| bound == node.as_str()) {
        return Err(refused(format!(
            "the binding rules of auth method {:?} give this JWT no node identity for {:?}",
            method.name,
            node.as_str()
        )));
    }
    if server.store().read().join().credential(&node).is_some_and(|c| c.secret_sha256 == hash) {
        return Ok(());
    }
    let credential = AgentCredentialRecord {
        node: node.clone(),
        secret_sha256: hash,
        token_id: format!("login:{}", method.name),
        ..Default::default()
    };
    let applied =
        server.write(Command::AgentCredentialSet(credential)).await.map_err(crate::server::error_to_status)?;
    match applied.outcome {
        CommandOutcome::Done => {
            tracing::info!(%node, method = %method.name, "an agent enrolled by login");
            Ok(())
        }
        CommandOutcome::Rejected(reason) => Err(refused(reason)),
        other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// Signs a client agent's certificate (see the module docs) for the node
/// whose enrollment `request.secret` proves, valid as long as a leaf (as
/// Consul's auto-encrypt certificates, signed by its Connect CA, are).
pub(crate) fn enroll(server: &Server, request: EnrollRequest) -> Result<EnrollResponse, Status> {
    let node = NodeName::new(request.node);
    let (ca, enrollment) = {
        let tables = server.store().read();
        let join = tables.join();
        let enrollment = join
            .credential(&node)
            .filter(|c| !request.secret.is_empty() && c.secret_sha256 == secret_hash(&request.secret))
            .map(|c| c.enrollment_id().to_owned());
        (join.agent_ca().cloned(), enrollment)
    };
    let Some(enrollment) = enrollment else {
        tracing::warn!(%node, "an enrollment was refused: unknown node or wrong secret");
        return Err(Status::permission_denied(format!(
            "node {:?} is not enrolled with that secret (revoked, or never joined): join with a new token",
            node.as_str()
        )));
    };
    let ca = ca.ok_or_else(|| Status::unavailable("the agent CA is not made yet; retry in a moment"))?;
    if !server.inner.sign_limiter.take() {
        return Err(Status::resource_exhausted("too many certificate requests; retry in a second"));
    }
    let name = AgentName { datacenter: server.datacenter().clone(), node: node.clone(), enrollment };
    let authority = Authority { cert_pem: ca.cert_pem, key_pem: ca.key_pem };
    let cert_pem = authority
        .sign_agent(&request.csr_pem, &name, &server.inner.domain, server.inner.leaf_ttl)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    tracing::info!(%node, "signed an agent certificate");
    Ok(EnrollResponse { cert_pem, not_after: unix_now().saturating_add(server.inner.leaf_ttl.as_secs() as i64) })
}

/// On the leader: makes the agent CA if there is none yet.
pub(crate) async fn ensure_agent_ca(server: &Server) {
    if server.store().read().join().agent_ca().is_some() {
        return;
    }
    let authority = match Authority::create(&format!("Weft agent CA ({})", server.datacenter()), AGENT_CA_TTL) {
        Ok(authority) => authority,
        Err(error) => return tracing::error!(%error, "could not make the agent CA"),
    };
    let record = AgentCaRecord { cert_pem: authority.cert_pem, key_pem: authority.key_pem };
    match server.write_local(&Command::AgentCaSet(record)).await.map(|applied| applied.outcome) {
        Ok(CommandOutcome::Done) => tracing::info!("agent CA initialized"),
        Ok(_) => {} // Another leader made it first.
        Err(error) => tracing::warn!(%error, "could not store the agent CA; will retry"),
    }
}

/// Keeps `roots` (what this server's TLS trusts for agents) equal to the
/// replicated agent CA, until the store closes.
pub(crate) async fn follow_agent_ca(server: Server, roots: AgentRoots) {
    let store = server.store().clone();
    let mut seen = weft_api::ids::RaftIndex::ZERO;
    while !store.is_closed() {
        let read = store
            .blocking_read(&[Table::Join], seen, Duration::from_secs(300), |tables| {
                (tables.join().agent_ca().map(|ca| ca.cert_pem.clone()), tables.index(Table::Join))
            })
            .await;
        seen = read.index;
        if let Some(pem) = read.value {
            if let Err(error) = roots.set(&pem) {
                tracing::error!(%error, "the agent CA cannot be trusted");
            }
        }
    }
}

/// A client agent's first call: has the servers record the hash of
/// `secret`, the agent's own, as `node`'s enrollment for the join token,
/// asking each server in turn. Returns the server that took it (it has the
/// enrollment applied, so it can sign at once).
pub async fn redeem_join_token(
    token: &JoinToken,
    node: &NodeName,
    secret: &str,
    connector: &RpcConnector,
) -> Result<String, ServerError> {
    let request = RedeemJoinTokenRequest {
        secret: token.secret.clone(),
        node: node.to_string(),
        credential_sha256: secret_hash(secret),
    };
    first_to_take(&token.servers, connector, |mut client| {
        let request = request.clone();
        async move { client.redeem_join_token(request).await.map(drop) }
    })
    .await
}

/// A pod's agent's first call (see [`redeem_login`]): has the servers
/// record the hash of `secret` as `node`'s enrollment, proving the node
/// with `bearer` through `method`, asking each of `servers` in turn.
/// Returns the server that took it.
pub async fn redeem_login_remotely(
    servers: &[String],
    (method, bearer): (&str, &str),
    node: &NodeName,
    secret: &str,
    connector: &RpcConnector,
) -> Result<String, ServerError> {
    let request = RedeemLoginRequest {
        auth_method: method.to_owned(),
        bearer_token: bearer.to_owned(),
        node: node.to_string(),
        credential_sha256: secret_hash(secret),
    };
    first_to_take(servers, connector, |mut client| {
        let request = request.clone();
        async move { client.redeem_login(request).await.map(drop) }
    })
    .await
}

/// Asks each of `servers` in turn with `call` until one takes it: that
/// server. A refusal (`PermissionDenied`) is final, as every server checks
/// the same thing; anything else moves on to the next.
async fn first_to_take<F, Fut>(servers: &[String], connector: &RpcConnector, mut call: F) -> Result<String, ServerError>
where
    F: FnMut(ClusterClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let channels = Channels::new(connector.clone());
    let mut last = ServerError::NoLeader;
    for server in servers {
        let Ok(client) = channels.cluster_client(server) else { continue };
        match call(client).await {
            Ok(()) => return Ok(server.clone()),
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                return Err(ServerError::Unauthenticated(status.message().to_owned()))
            }
            Err(status) => last = ServerError::LeaderUnreachable(format!("{server}: {}", status.message())),
        }
    }
    Err(last)
}

/// Asks the servers in turn, `servers[0]` first (the one that took the
/// agent's redemption has applied it), for a certificate for `node` from
/// `csr_pem`, proving its enrollment with `secret`: the certificate (PEM).
/// A refusal counts only once every server has refused: a server behind
/// the log may not know a new enrollment yet.
pub async fn request_agent_certificate(
    servers: &[String],
    node: &NodeName,
    secret: &str,
    csr_pem: &str,
    connector: &RpcConnector,
) -> Result<String, ServerError> {
    let channels = Channels::new(connector.clone());
    let (mut refusals, mut last) = (0, ServerError::NoLeader);
    for server in servers {
        let Ok(mut client) = channels.cluster_client(server) else { continue };
        let request = EnrollRequest { node: node.to_string(), secret: secret.to_owned(), csr_pem: csr_pem.to_owned() };
        match client.enroll(request).await {
            Ok(reply) => return Ok(reply.into_inner().cert_pem),
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                refusals += 1;
                last = ServerError::Unauthenticated(status.message().to_owned());
            }
            Err(status) => last = ServerError::LeaderUnreachable(format!("{server}: {}", status.message())),
        }
    }
    match last {
        ServerError::Unauthenticated(_) if refusals < servers.len() => Err(ServerError::LeaderUnreachable(format!(
            "{refusals} of {} servers refused; asking again",
            servers.len()
        ))),
        last => Err(last),
    }
}
