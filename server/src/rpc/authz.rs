//! The one authorization point for RPC: who the caller is, which methods
//! each kind of caller may call, how much it may send, and, for the calls
//! whose rights depend on what they carry, what it may write or ask for.
//!
//! [`RpcAuthLayer`] runs in front of every gRPC service. It finds the
//! [`Caller`], refuses a method the caller may not call ([`METHODS`]: a
//! method missing from the table is refused), bounds the request body by
//! who is sending it, and leaves the `Caller` in the request for the
//! handlers whose rights depend on the message: `Apply`
//! ([`Caller::authorize_write`]), `SignLeaf` and `Heartbeat`
//! ([`Caller::node_for`]). Both refuse with `PermissionDenied` naming the
//! rule, and log it.
//!
//! Identity comes from the connection's verified certificate (see
//! `weft_tls`), never from a request's body: a server by its
//! `server.<dc>.<domain>` certificate from the operator's CA, a client
//! agent by the node and enrollment its agent-CA certificate names, for as
//! long as that enrollment is not revoked and the certificate has not
//! expired (checked on every request, not only at the handshake). A client
//! agent may write only its own node's catalog entries and checks, and KV.
//!
//! Where no TLS is configured (`weft dev`, loopback) or `verify_incoming`
//! is off (a cluster on its way to TLS), a caller without a certificate is
//! [`Caller::Anyone`], as every caller was before TLS.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::Status;
use weft_api::command::Command;
use weft_api::ids::NodeName;
use weft_tls::{PeerCert, RpcPeer};

use crate::liveness::LIVENESS_CHECK_ID as SERF_HEALTH;
use crate::rate::TokenBucket;
use crate::store::StateStore;

/// Who made an RPC, as [`RpcPolicy`] found: in each request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A caller without a certificate where none is required (see the
    /// module docs): callers are not told apart and may do anything.
    Anyone,
    /// Another server.
    Server,
    /// A client agent, by the node its certificate is for.
    Agent(NodeName),
    /// A caller that proved nothing: only [`Access::Open`] methods.
    Unauthenticated,
}

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a credential: discovery and redeeming a join token.
    Open,
    /// Client agents and servers; what an agent may do with the method may
    /// be narrowed further by what it sends (see the module docs).
    Agents,
    /// Servers only.
    Servers,
}

/// Every RPC method and who may call it. A method missing here is refused
/// to everyone but [`Caller::Anyone`]; a test checks that every method of
/// the `.proto` files is listed.
pub const METHODS: &[(&str, Access)] = &[
    ("/weft.cluster.v1.Cluster/Info", Access::Open),
    ("/weft.cluster.v1.Cluster/RedeemJoinToken", Access::Open),
    ("/weft.cluster.v1.Cluster/Enroll", Access::Open),
    // The JWT proves the node (its binding rules must name it).
    ("/weft.cluster.v1.Cluster/RedeemLogin", Access::Open),
    ("/weft.cluster.v1.Cluster/Join", Access::Servers),
    // What an agent may write: Caller::authorize_write.
    ("/weft.cluster.v1.Cluster/Apply", Access::Agents),
    ("/weft.cluster.v1.Cluster/ReadIndex", Access::Agents),
    ("/weft.cluster.v1.Cluster/RemovePeer", Access::Servers),
    ("/weft.cluster.v1.Cluster/Subscribe", Access::Agents),
    // For the caller's own node only: Caller::node_for.
    ("/weft.cluster.v1.Cluster/Heartbeat", Access::Agents),
    ("/weft.cluster.v1.Cluster/SignLeaf", Access::Agents),
    ("/weft.cluster.v1.Cluster/RotateCa", Access::Servers),
    ("/weft.cluster.v1.Cluster/RaftConfiguration", Access::Agents),
    // For the agent's HTTP callers: the JWT or the secret proves who may.
    ("/weft.cluster.v1.Cluster/Login", Access::Agents),
    ("/weft.cluster.v1.Cluster/Logout", Access::Agents),
    ("/weft.raft.v1.Raft/AppendEntries", Access::Servers),
    ("/weft.raft.v1.Raft/Vote", Access::Servers),
    ("/weft.raft.v1.Raft/InstallSnapshot", Access::Servers),
];

/// The most a caller that proved nothing may send in one request: enough
/// for a join token redemption, too little to cost memory.
pub const UNAUTHENTICATED_BODY_LIMIT: usize = 16 * 1024;
/// The most a client agent may send in one request (a registration, a KV
/// value of Consul's 512 KiB limit, a batch of them).
pub const AGENT_BODY_LIMIT: usize = 16 << 20;
/// The most any one gRPC message may be, servers' included (Raft appends
/// carry up to 64 entries; snapshots travel in chunks).
pub const MAX_MESSAGE: usize = 256 << 20;

fn access(path: &str) -> Option<Access> {
    METHODS.iter().find(|(method, _)| *method == path).map(|(_, access)| *access)
}

/// A refusal of a caller that is known (or proved nothing) but lacks the
/// right: logged once here, answered `PermissionDenied` naming the rule.
fn denied(caller: &Caller, rule: String) -> Status {
    tracing::warn!(?caller, %rule, "RPC refused");
    Status::permission_denied(rule)
}

impl Caller {
    /// Whether the caller may write `command` through `Apply` by who it is:
    /// servers (and anyone, in a cluster that authenticates no one)
    /// anything; a client agent its own node's catalog entries and checks
    /// (not the `serfHealth` check, which is the leader's), and, while ACLs
    /// are off, KV (locks and transactions too), sessions and user events. Anything else a client agent writes needs the ACL token
    /// of the caller it writes for (see `crate::acl`).
    pub fn authorize_write(&self, command: &Command, acl_enabled: bool) -> Result<(), Status> {
        let node = match self {
            Caller::Anyone | Caller::Server => return Ok(()),
            Caller::Unauthenticated => {
                return Err(denied(self, "writes need a credential".into()));
            }
            Caller::Agent(node) => node,
        };
        let own = |written: &NodeName, what: &str| {
            if written == node {
                Ok(())
            } else {
                Err(denied(
                    self,
                    format!(
                        "a client agent may write only its own node's {what}: agent {:?} wrote node {:?}",
                        node.as_str(),
                        written.as_str()
                    ),
                ))
            }
        };
        match command {
            Command::KvSet { .. }
            | Command::KvDelete { .. }
            | Command::KvAcquire { .. }
            | Command::KvRelease { .. }
            | Command::Txn(_)
            | Command::SessionCreate(_)
            | Command::SessionDestroy { .. }
            | Command::SessionRenew { .. }
            | Command::FireEvent(_)
                if !acl_enabled =>
            {
                Ok(())
            }
            Command::Register(registration) => {
                own(&registration.node.name, "catalog entries")?;
                if registration.checks.iter().any(|c| c.id.as_str() == SERF_HEALTH) {
                    return Err(denied(self, format!("the {SERF_HEALTH} check is written by the leader only")));
                }
                Ok(())
            }
            Command::Deregister(deregistration) => own(&deregistration.node, "catalog entries"),
            Command::NodeLeave(left) => own(&left.name, "catalog entries"),
            Command::Batch(commands) => commands.iter().try_for_each(|c| self.authorize_write(c, acl_enabled)),
            other => Err(denied(
                self,
                format!(
                    "a client agent may not write {} (only its own node's catalog entries and checks, KV and \
                     events); \
                     write it through a server",
                    other.kind()
                ),
            )),
        }
    }

    /// The node a request about `asked` (its heartbeat, a leaf for one of
    /// its services) is for: a client agent's own node, whatever it names
    /// (it may name only itself, or nothing); for servers, the one named.
    pub fn node_for(&self, asked: NodeName, what: &str) -> Result<NodeName, Status> {
        match self {
            Caller::Anyone | Caller::Server => Ok(asked),
            Caller::Agent(node) if asked.is_empty() || asked == *node => Ok(node.clone()),
            Caller::Agent(node) => Err(denied(
                self,
                format!(
                    "a client agent may ask for {what} only for its own node: agent {:?} asked for {:?}",
                    node.as_str(),
                    asked.as_str()
                ),
            )),
            Caller::Unauthenticated => Err(denied(self, format!("{what} needs a credential"))),
        }
    }

    /// The most this caller may send in one request.
    fn body_limit(&self) -> usize {
        match self {
            Caller::Unauthenticated => UNAUTHENTICATED_BODY_LIMIT,
            Caller::Agent(_) => AGENT_BODY_LIMIT,
            Caller::Anyone | Caller::Server => MAX_MESSAGE,
        }
    }
}

/// Calls per second, and the burst, that callers without a certificate
/// may make together (discovery, redeeming tokens, enrolling).
const UNAUTHENTICATED_RATE: f64 = 100.0;
const UNAUTHENTICATED_BURST: f64 = 200.0;

/// Who callers are and which calls they may make.
pub struct RpcPolicy {
    /// Whether callers must prove who they are with a certificate
    /// (`verify_incoming`); without, a caller without one is `Anyone`.
    require_certificates: bool,
    store: Arc<StateStore>,
    unauthenticated: TokenBucket,
}

impl RpcPolicy {
    pub fn new(require_certificates: bool, store: Arc<StateStore>) -> RpcPolicy {
        RpcPolicy {
            require_certificates,
            store,
            unauthenticated: TokenBucket::new(UNAUTHENTICATED_RATE, UNAUTHENTICATED_BURST),
        }
    }

    /// Who the caller on `peer` is, by its certificate, at `now` (seconds
    /// since the Unix epoch).
    pub fn caller(&self, peer: Option<&RpcPeer>, now: i64) -> Result<Caller, Status> {
        let current = |peer: &RpcPeer| peer.cert_not_after.is_none_or(|not_after| now <= not_after);
        let cert = peer.filter(|peer| current(peer)).and_then(|peer| peer.cert.as_ref());
        match cert {
            Some(PeerCert::Server) => Ok(Caller::Server),
            Some(PeerCert::Agent(agent)) => {
                if self.store.read().join().is_enrolled(&agent.node, &agent.enrollment) {
                    Ok(Caller::Agent(agent.node.clone()))
                } else {
                    tracing::warn!(node = %agent.node, "RPC refused: the certificate's enrollment is revoked or unknown");
                    Err(Status::unauthenticated(format!(
                        "node {:?}'s enrollment was revoked (or replaced): join again with a new token",
                        agent.node.as_str()
                    )))
                }
            }
            Some(PeerCert::Other) | None if self.require_certificates => Ok(Caller::Unauthenticated),
            Some(PeerCert::Other) | None => Ok(Caller::Anyone),
        }
    }

    /// Who the caller of `path` on `peer` is, if it may call it.
    pub fn check(&self, path: &str, peer: Option<&RpcPeer>, now: i64) -> Result<Caller, Status> {
        let caller = self.caller(peer, now)?;
        match (access(path), &caller) {
            (_, Caller::Anyone) => Ok(caller),
            (Some(Access::Open), Caller::Unauthenticated) if !self.unauthenticated.take() => {
                Err(Status::resource_exhausted("too many calls without a certificate; retry in a second"))
            }
            (Some(Access::Open), _) | (Some(Access::Agents | Access::Servers), Caller::Server) => Ok(caller),
            (Some(Access::Agents), Caller::Agent(_)) => Ok(caller),
            (_, Caller::Unauthenticated) => {
                tracing::info!(%path, peer = ?peer.map(|p| p.addr), "RPC refused: no certificate");
                Err(Status::unauthenticated(
                    "this server requires a certificate (servers: from the RPC CA; client agents: weft agent --join-token)",
                ))
            }
            (Some(Access::Servers), _) => Err(denied(&caller, format!("{path} is for servers only"))),
            (None, _) => Err(denied(&caller, format!("{path} is not a method this server serves"))),
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

impl<S> tower::Service<http::Request<tonic::body::Body>> for RpcAuth<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let peer = request.extensions().get::<RpcPeer>();
        match self.policy.check(request.uri().path(), peer, crate::ca::unix_now()) {
            Ok(caller) => {
                // Bounded while it is read: a body over the caller's limit
                // fails the call once that much has arrived, before it is
                // decoded or kept.
                let limit = caller.body_limit();
                let mut request = request.map(|body| tonic::body::Body::new(http_body_util::Limited::new(body, limit)));
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// The caller the layer left in `request`: every service runs behind it.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("the RPC authorization layer did not run"))
}

#[cfg(test)]
mod tests {
    use weft_api::catalog::{Check, Deregistration, Node, Registration};
    use weft_api::ids::{CheckId, RaftIndex};
    use weft_api::join::{AgentCredentialRecord, JoinTokenRecord};

    use super::*;

    #[test]
    fn every_method_of_the_protos_has_a_rule() {
        for (package, proto) in [
            ("weft.cluster.v1.Cluster", include_str!("../../../api/proto/cluster.proto")),
            ("weft.raft.v1.Raft", include_str!("../../../api/proto/raft.proto")),
        ] {
            let methods: Vec<&str> = proto
                .lines()
                .filter_map(|line| line.trim().strip_prefix("rpc "))
                .filter_map(|rest| rest.split('(').next())
                .collect();
            assert!(!methods.is_empty());
            for method in methods {
                let path = format!("/{package}/{}", method.trim());
                assert!(access(&path).is_some(), "{path} has no rule in METHODS");
            }
        }
    }

    fn peer(cert: Option<PeerCert>, not_after: i64) -> RpcPeer {
        RpcPeer { addr: "127.0.0.1:1".parse().unwrap(), tls: true, cert, cert_not_after: Some(not_after) }
    }

    #[test]
    fn callers_are_who_their_certificates_say_for_the_methods_they_may_call() {
        let store = StateStore::new();
        let credential =
            AgentCredentialRecord { node: "vm1".into(), secret_sha256: "ab".repeat(32), ..Default::default() };
        let enrollment = credential.enrollment_id().to_owned();
        let token = JoinTokenRecord {
            id: "t".into(),
            secret_sha256: "h".into(),
            expires_at: i64::MAX,
            uses_left: 1,
            ..Default::default()
        };
        store.apply(RaftIndex(1), &Command::JoinTokenCreate(token));
        store.apply(RaftIndex(2), &Command::JoinTokenRedeem { secret_sha256: "h".into(), credential, now: 0 });
        let open = RpcPolicy::new(false, store.clone());
        assert_eq!(open.check("/weft.raft.v1.Raft/AppendEntries", None, 0).unwrap(), Caller::Anyone);

        let policy = RpcPolicy::new(true, store.clone());
        let agent_cert = |node: &str, enrollment: &str| {
            PeerCert::Agent(weft_tls::AgentName {
                datacenter: "dc1".into(),
                node: node.into(),
                enrollment: enrollment.into(),
            })
        };
        let server = peer(Some(PeerCert::Server), 100);
        let agent = peer(Some(agent_cert("vm1", &enrollment)), 100);
        let impostor = peer(Some(agent_cert("vm2", &enrollment)), 100);
        let stale = peer(Some(agent_cert("vm1", "old-enrollment")), 100);
        let anonymous = peer(None, 100);
        let apply = "/weft.cluster.v1.Cluster/Apply";
        assert_eq!(
            policy.check("/weft.cluster.v1.Cluster/Info", Some(&anonymous), 0).unwrap(),
            Caller::Unauthenticated
        );
        assert!(policy.check("/weft.cluster.v1.Cluster/Enroll", None, 0).is_ok());
        assert_eq!(policy.check(apply, Some(&server), 0).unwrap(), Caller::Server);
        assert_eq!(policy.check(apply, Some(&agent), 0).unwrap(), Caller::Agent("vm1".into()));
        assert_eq!(policy.check(apply, Some(&anonymous), 0).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(policy.check(apply, Some(&impostor), 0).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(policy.check(apply, Some(&stale), 0).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(
            policy.check(apply, Some(&peer(Some(PeerCert::Other), 100)), 0).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // An expired certificate proves nothing, even on a connection made before it expired.
        assert_eq!(policy.check(apply, Some(&server), 101).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(policy.check("/weft.raft.v1.Raft/Vote", Some(&server), 0).is_ok());
        for server_only in
            ["/weft.raft.v1.Raft/Vote", "/weft.cluster.v1.Cluster/Join", "/weft.cluster.v1.Cluster/RotateCa"]
        {
            assert_eq!(policy.check(server_only, Some(&agent), 0).unwrap_err().code(), tonic::Code::PermissionDenied);
        }
        let unknown = policy.check("/weft.cluster.v1.Cluster/Nope", Some(&agent), 0).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::PermissionDenied);
        // Revoked: refused from the next call.
        store.apply(RaftIndex(3), &Command::AgentCredentialDelete { node: "vm1".into() });
        assert_eq!(policy.check(apply, Some(&agent), 0).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn client_agents_write_only_their_own_node_kv_and_events() {
        let agent = Caller::Agent("vm1".into());
        let kv = Command::KvSet { key: "k".into(), value: Vec::new(), flags: 0, cas: None };
        let event = Command::FireEvent(weft_api::event::UserEvent { name: "deploy".into(), ..Default::default() });
        let node = |name: &str| Node { name: name.into(), address: "10.0.0.1".into(), ..Default::default() };
        let register =
            |name: &str| Command::Register(Box::new(Registration { node: node(name), ..Default::default() }));
        let own = [
            kv.clone(),
            event.clone(),
            register("vm1"),
            Command::Deregister(Deregistration { node: "vm1".into(), ..Default::default() }),
            Command::NodeLeave(Box::new(node("vm1"))),
            Command::Batch(vec![kv.clone(), register("vm1")]),
        ];
        for allowed in &own {
            assert!(agent.authorize_write(allowed, false).is_ok(), "{}", allowed.kind());
            assert!(Caller::Server.authorize_write(allowed, true).is_ok());
            assert!(Caller::Anyone.authorize_write(allowed, false).is_ok());
        }
        let serf = Command::Register(Box::new(Registration {
            node: node("vm1"),
            checks: vec![Check { id: CheckId::new(SERF_HEALTH), ..Default::default() }],
            ..Default::default()
        }));
        let redeem = Command::JoinTokenRedeem {
            secret_sha256: "h".into(),
            credential: AgentCredentialRecord::default(),
            now: 0,
        };
        for refused in [
            register("vm2"),
            Command::Deregister(Deregistration { node: "vm2".into(), ..Default::default() }),
            Command::NodeLeave(Box::new(node("vm2"))),
            serf,
            redeem.clone(),
            Command::Restore { snapshot: Vec::new() },
            Command::CaSetState(Default::default()),
            Command::JoinTokenCreate(Default::default()),
            Command::IntentionDelete { id: "x".into() },
            Command::Batch(vec![kv.clone(), redeem]),
        ] {
            let status = agent.authorize_write(&refused, false).unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{}", refused.kind());
            assert!(Caller::Server.authorize_write(&refused, true).is_ok());
        }
        assert!(Caller::Unauthenticated.authorize_write(&kv, false).is_err());
        // With ACLs on, an agent's KV write or event needs its caller's token.
        assert!(agent.authorize_write(&kv, true).is_err() && agent.authorize_write(&event, true).is_err());
        assert!(agent.authorize_write(&own[2], true).is_ok());
    }

    #[test]
    fn an_agent_asks_only_for_its_own_node() {
        let agent = Caller::Agent("vm1".into());
        assert_eq!(agent.node_for("".into(), "a leaf").unwrap(), NodeName::new("vm1"));
        assert_eq!(agent.node_for("vm1".into(), "a leaf").unwrap(), NodeName::new("vm1"));
        assert_eq!(agent.node_for("vm2".into(), "a leaf").unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(Caller::Server.node_for("vm2".into(), "a leaf").unwrap(), NodeName::new("vm2"));
        assert!(Caller::Unauthenticated.node_for("vm1".into(), "a leaf").is_err());
    }
}
