//! Who may call a server's RPC, and how a new agent gets in.
//!
//! A server started with an RPC key (`rpc_key`) serves only callers that
//! present a credential ([`RpcCredential`]): other servers the key, client
//! agents the secret they were issued for their node when they redeemed a
//! join token. Without a key every caller is served, as before (`weft dev`,
//! a trusted network). [`RpcAuthLayer`] is the one place every RPC passes.
//!
//! Secrets never enter the log: tokens and credentials are kept as SHA-256
//! hashes, a token's secret is shown once to whoever made it, and a
//! credential's secret only to the agent that redeemed the token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::RngCore;
use tonic::codegen::http;
use tonic::Status;
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::{Datacenter, NodeName};
use weft_api::join::{AgentCredentialRecord, JoinToken, JoinTokenRecord, RpcCredential, CREDENTIAL_METADATA};
use weft_api::proto::cluster::RedeemJoinTokenRequest;

use crate::ca::unix_now;
use crate::rpc::Channels;
use crate::store::Redemption;
use crate::store::StateStore;
use crate::{Server, ServerError};

/// A new random secret: 32 bytes, URL-safe base64.
pub fn new_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of `secret`, hex: what is replicated in its place.
pub fn secret_hash(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a new join token is for.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub description: String,
    pub ttl: Duration,
    pub uses: u32,
}

/// Makes a join token naming `servers` (their RPC addresses) and
/// `datacenter`: its record, to be written through Raft
/// (`Command::JoinTokenCreate`), and the token itself, to be shown once.
pub fn new_token(servers: Vec<String>, datacenter: &Datacenter, request: TokenRequest) -> (JoinTokenRecord, JoinToken) {
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
    (record, JoinToken { servers, datacenter: datacenter.to_string(), secret })
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

/// A client agent's first call: has the servers record `credential` (the
/// agent's own secret; only its hash is sent) for the join token, asking
/// each server in turn.
pub async fn redeem_join_token(token: &JoinToken, credential: &RpcCredential) -> Result<(), ServerError> {
    let RpcCredential::Agent { node, secret } = credential else {
        return Err(ServerError::Unauthenticated("a join token is for client agents".into()));
    };
    let channels = Channels::default();
    let mut last = ServerError::NoLeader;
    for server in &token.servers {
        let Ok(mut client) = channels.cluster_client(server) else { continue };
        let request = RedeemJoinTokenRequest {
            secret: token.secret.clone(),
            node: node.to_string(),
            credential_sha256: secret_hash(secret),
        };
        match client.redeem_join_token(request).await {
            Ok(_) => return Ok(()),
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                return Err(ServerError::Unauthenticated(status.message().to_owned()))
            }
            Err(status) => last = ServerError::LeaderUnreachable(format!("{server}: {}", status.message())),
        }
    }
    Err(last)
}

/// Who made an RPC, as [`RpcPolicy`] found: in each request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The cluster has no RPC key: callers are not told apart.
    Anyone,
    /// A server (it has the key).
    Server,
    /// A client agent, by the node its credential is for.
    Agent(NodeName),
    /// A call open to all (`Info`, `RedeemJoinToken`) made without a credential.
    Unauthenticated,
}

impl Caller {
    /// Whether the caller may write `command`: client agents write their
    /// catalog and KV through `Apply`, but not the CA, a whole-state
    /// restore, or join tokens (those have their own, checked, paths).
    pub fn may_write(&self, command: &Command) -> bool {
        match (self, command) {
            (Caller::Anyone | Caller::Server, _) => true,
            (Caller::Unauthenticated, _) => false,
            (Caller::Agent(_), Command::Batch(commands)) => commands.iter().all(|c| self.may_write(c)),
            (Caller::Agent(_), Command::CaSetState(_) | Command::Restore { .. }) => false,
            (
                Caller::Agent(_),
                Command::JoinTokenCreate(_) | Command::JoinTokenDelete { .. } | Command::JoinTokenRedeem { .. },
            ) => false,
            (Caller::Agent(_), _) => true,
        }
    }
}

/// Which calls need which credential.
pub struct RpcPolicy {
    /// SHA-256 of the RPC key; `None`: every caller is served.
    key_sha256: Option<String>,
    store: Arc<StateStore>,
}

/// RPCs a caller may make before it has a credential: discovery, and
/// redeeming a join token.
const OPEN_METHODS: [&str; 2] = ["/weft.cluster.v1.Cluster/Info", "/weft.cluster.v1.Cluster/RedeemJoinToken"];
/// RPCs only servers make: Raft, and joining the voters.
const SERVER_PREFIXES: [&str; 2] = ["/weft.raft.v1.Raft/", "/weft.cluster.v1.Cluster/Join"];

impl RpcPolicy {
    pub fn new(key: Option<&str>, store: Arc<StateStore>) -> RpcPolicy {
        RpcPolicy { key_sha256: key.map(secret_hash), store }
    }

    /// Who the caller of `path` presenting `header` is, if it may go on.
    pub fn check(&self, path: &str, header: Option<&str>) -> Result<Caller, Status> {
        let Some(key_sha256) = &self.key_sha256 else { return Ok(Caller::Anyone) };
        let open = OPEN_METHODS.contains(&path);
        let refused = |why: &str| {
            tracing::info!(%path, why, "RPC refused");
            Err(Status::unauthenticated(format!(
                "{why}: this cluster requires credentials (servers: the same rpc_key; client agents: weft agent --join-token)"
            )))
        };
        match header.and_then(RpcCredential::parse) {
            Some(RpcCredential::Server { key }) if secret_hash(&key) == *key_sha256 => Ok(Caller::Server),
            _ if open => Ok(Caller::Unauthenticated),
            Some(RpcCredential::Server { .. }) => refused("wrong RPC key"),
            Some(RpcCredential::Agent { .. }) if SERVER_PREFIXES.iter().any(|p| path.starts_with(p)) => {
                refused("a client agent may not make server calls")
            }
            Some(RpcCredential::Agent { node, secret }) => {
                if self.store.read().join().is_credential(&node, &secret_hash(&secret)) {
                    Ok(Caller::Agent(node))
                } else {
                    refused("unknown agent credential")
                }
            }
            None => refused("no credential"),
        }
    }
}

/// The tower layer that puts [`RpcPolicy`] in front of every gRPC service.
#[derive(Clone)]
pub struct RpcAuthLayer(pub Arc<RpcPolicy>);

impl<S> tower::Layer<S> for RpcAuthLayer {
    type Service = RpcAuth<S>;

    fn layer(&self, inner: S) -> RpcAuth<S> {
        RpcAuth { inner, policy: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct RpcAuth<S> {
    inner: S,
    policy: Arc<RpcPolicy>,
}

impl<S, B> tower::Service<http::Request<B>> for RpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let header = request.headers().get(CREDENTIAL_METADATA).and_then(|v| v.to_str().ok());
        match self.policy.check(request.uri().path(), header) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_api::ids::RaftIndex;

    use super::*;

    #[test]
    fn servers_need_the_key_agents_their_credential_and_only_discovery_is_open() {
        let store = StateStore::new();
        let credential =
            AgentCredentialRecord { node: "vm1".into(), secret_sha256: secret_hash("s1"), ..Default::default() };
        let token = JoinTokenRecord {
            id: "t".into(),
            secret_sha256: "h".into(),
            expires_at: i64::MAX,
            uses_left: 1,
            ..Default::default()
        };
        store.apply(RaftIndex(1), &Command::JoinTokenCreate(token));
        store.apply(RaftIndex(2), &Command::JoinTokenRedeem { secret_sha256: "h".into(), credential, now: 0 });
        let open = RpcPolicy::new(None, store.clone());
        assert!(open.check("/weft.raft.v1.Raft/AppendEntries", None).is_ok());

        let policy = RpcPolicy::new(Some("key"), store);
        let server = RpcCredential::Server { key: "key".into() }.header_value();
        let agent = RpcCredential::Agent { node: "vm1".into(), secret: "s1".into() }.header_value();
        let impostor = RpcCredential::Agent { node: "vm2".into(), secret: "s1".into() }.header_value();
        let apply = "/weft.cluster.v1.Cluster/Apply";
        assert!(policy.check("/weft.cluster.v1.Cluster/Info", None).is_ok());
        assert!(policy.check("/weft.cluster.v1.Cluster/RedeemJoinToken", None).is_ok());
        assert!(policy.check(apply, Some(&server)).is_ok() && policy.check(apply, Some(&agent)).is_ok());
        assert_eq!(policy.check(apply, None).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(policy.check(apply, Some(&impostor)).is_err());
        assert!(policy.check(apply, Some("Weft-Server nope")).is_err());
        assert!(policy.check("/weft.raft.v1.Raft/Vote", Some(&server)).is_ok());
        assert!(policy.check("/weft.raft.v1.Raft/Vote", Some(&agent)).is_err());
        assert!(policy.check("/weft.cluster.v1.Cluster/Join", Some(&agent)).is_err());
    }

    #[test]
    fn client_agents_may_not_write_the_ca_a_restore_or_join_tables() {
        let agent = Caller::Agent("vm1".into());
        let kv = Command::KvSet { key: "k".into(), value: Vec::new(), flags: 0, cas: None };
        let redeem = Command::JoinTokenRedeem {
            secret_sha256: "h".into(),
            credential: AgentCredentialRecord::default(),
            now: 0,
        };
        assert!(agent.may_write(&kv) && Caller::Server.may_write(&redeem) && Caller::Anyone.may_write(&redeem));
        for refused in
            [redeem.clone(), Command::Restore { snapshot: Vec::new() }, Command::Batch(vec![kv.clone(), redeem])]
        {
            assert!(!agent.may_write(&refused), "{}", refused.kind());
        }
        assert!(!Caller::Unauthenticated.may_write(&kv));
    }
}
