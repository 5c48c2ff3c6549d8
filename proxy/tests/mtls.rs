//! Real TLS handshakes on loopback between an outbound and an inbound
//! sidecar, each run on a snapshot as its agent would stream it: traffic
//! flows when the intentions allow it, and every way of cheating is refused
//! (no certificate, another CA, a denied caller, a sidecar posing as
//! another service). For HTTP services, L7 permissions judge each request,
//! and a new snapshot closes a connection it now denies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weft_api::intentions::{HttpMatch, IntentionRule, PathMatch, Permission, RuleOrigin, Verdict};
use weft_api::mesh::{IntentionAction, Protocol};
use weft_api::proxy::{Endpoint, IntentionSnapshot, LoadBalancer, ProxySnapshot, TlsSnapshot, UpstreamSnapshot};
use weft_proxy::inbound::{self, Inbound};
use weft_proxy::metrics::Metrics;
use weft_proxy::outbound::{self, Upstream};
use weft_proxy::runtime::Runtime;
use weft_proxy::TlsMaterial;

const TRUST_DOMAIN: &str = "11111111-2222-4333-8444-555555555555.weft";

/// A test CA that signs leaves the way the mesh CA does.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn leaf(&self, service: &str) -> TlsMaterial {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let uri = format!("spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/{service}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TlsMaterial {
            cert_chain_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            roots_pem: vec![self.cert_pem.clone()],
        }
    }
}

fn rule(source: &str, destination: &str, verdict: Verdict) -> IntentionRule {
    IntentionRule { source: source.into(), destination: destination.into(), origin: RuleOrigin::ConfigEntry, verdict }
}

fn allow(source: &str, destination: &str) -> IntentionRule {
    rule(source, destination, Verdict::Action(IntentionAction::Allow))
}

/// A snapshot for `service` with `material`, as an agent would send it.
fn snapshot(
    service: &str,
    material: &TlsMaterial,
    protocol: Protocol,
    rules: Vec<IntentionRule>,
    local_app: SocketAddr,
    upstreams: Vec<UpstreamSnapshot>,
) -> ProxySnapshot {
    ProxySnapshot {
        proxy_id: format!("{service}-sidecar-proxy"),
        service: service.into(),
        public_listener: "127.0.0.1:0".parse().unwrap(),
        local_app,
        protocol,
        tls: TlsSnapshot {
            cert_chain_pem: material.cert_chain_pem.clone(),
            private_key_pem: material.private_key_pem.clone(),
            roots_pem: material.roots_pem.clone(),
            leaf_serial: "01".into(),
            leaf_valid_before: 0,
            trust_domain: TRUST_DOMAIN.into(),
        },
        intentions: IntentionSnapshot { rules, default_action: IntentionAction::Deny },
        upstreams,
        admin: None,
        inbound: Default::default(),
        access_logs: None,
        ingress: None,
        mesh_gateway: None,
        transparent: None,
    }
}

type RuntimeSender = watch::Sender<Option<Arc<Runtime>>>;

fn runtime_of(snapshot: ProxySnapshot) -> (RuntimeSender, watch::Receiver<Option<Arc<Runtime>>>) {
    watch::channel(Some(Arc::new(Runtime::compile(snapshot).unwrap())))
}

/// An application that echoes what it reads.
async fn echo_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// An HTTP application that answers `app saw <method> <path>`.
async fn http_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("app saw {} {}", request.method(), request.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let io = hyper_util::rt::TokioIo::new(socket);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    addr
}

/// `service`'s inbound sidecar; returns its public address and the sender
/// of its snapshots.
async fn inbound_sidecar(snapshot: ProxySnapshot) -> (SocketAddr, RuntimeSender) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sender, runtime) = runtime_of(snapshot);
    let inbound = Inbound::new(runtime, Metrics::new(&mut Default::default()), Default::default());
    tokio::spawn(inbound::serve(listener, Arc::new(inbound), std::future::pending()));
    (addr, sender)
}

/// A sidecar with one upstream to `destination` at `endpoint`; returns the
/// upstream's local address.
async fn upstream_to(
    material: &TlsMaterial,
    destination: &str,
    protocol: Protocol,
    endpoint: SocketAddr,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = listener.local_addr().unwrap();
    let upstream = UpstreamSnapshot {
        destination: destination.into(),
        local_bind: bind,
        protocol,
        endpoints: vec![Endpoint { address: endpoint, node: "n1".into(), gateway: None }],
        connect_timeout_ms: 2_000,
        load_balancer: LoadBalancer::RoundRobin,
        chain: None,
        target_endpoints: Default::default(),
        limits: Default::default(),
        outlier: None,
    };
    let unused = "127.0.0.1:9".parse().unwrap();
    let (sender, runtime) = runtime_of(snapshot("web", material, Protocol::Tcp, Vec::new(), unused, vec![upstream]));
    std::mem::forget(sender);
    let upstream = Upstream::new(bind, runtime, Metrics::new(&mut Default::default()), Default::default());
    tokio::spawn(outbound::serve(listener, Arc::new(upstream), std::future::pending()));
    bind
}

/// Sends a line through `addr`; the echo, or `None` if the connection closed.
async fn round_trip(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(b"hello through the mesh\n").await.ok()?;
    let mut buffer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await.ok()?.ok()?;
    (read > 0).then(|| String::from_utf8_lossy(&buffer[..read]).into_owned())
}

/// One HTTP/1.1 request through `addr`: (status, body).
async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await.unwrap().unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

async fn tcp_api(ca: &Ca, rules: Vec<IntentionRule>) -> (SocketAddr, RuntimeSender) {
    inbound_sidecar(snapshot("api", &ca.leaf("api"), Protocol::Tcp, rules, echo_app().await, Vec::new())).await
}

#[tokio::test]
async fn an_allowed_caller_reaches_the_application_through_both_sidecars() {
    let ca = Ca::new();
    let (api, _snapshots) = tcp_api(&ca, vec![allow("web", "api")]).await;
    let web_upstream = upstream_to(&ca.leaf("web"), "api", Protocol::Tcp, api).await;
    assert_eq!(round_trip(web_upstream).await.as_deref(), Some("hello through the mesh\n"));
}

#[tokio::test]
async fn a_caller_no_intention_allows_is_cut_off() {
    let ca = Ca::new();
    let (api, _snapshots) = tcp_api(&ca, vec![allow("web", "api")]).await;
    let db_upstream = upstream_to(&ca.leaf("db"), "api", Protocol::Tcp, api).await;
    assert_eq!(round_trip(db_upstream).await, None);
}

#[tokio::test]
async fn plaintext_and_other_cas_are_refused_at_the_inbound_port() {
    let ca = Ca::new();
    let (api, _snapshots) = tcp_api(&ca, vec![allow("web", "api")]).await;
    // Plaintext straight to the public port: answered with a TLS alert, never echoed.
    let plaintext = round_trip(api).await;
    assert!(plaintext.as_deref().is_none_or(|reply| reply.starts_with('\u{15}')), "{plaintext:?}");
    // A `web` leaf from another CA.
    let impostor_upstream = upstream_to(&Ca::new().leaf("web"), "api", Protocol::Tcp, api).await;
    assert_eq!(round_trip(impostor_upstream).await, None);
}

#[tokio::test]
async fn a_sidecar_posing_as_another_service_is_not_trusted() {
    let ca = Ca::new();
    // A sidecar with a valid leaf for `db`, answering where `api` was expected.
    let (db, _snapshots) = inbound_sidecar(snapshot(
        "db",
        &ca.leaf("db"),
        Protocol::Tcp,
        vec![allow("web", "db")],
        echo_app().await,
        vec![],
    ))
    .await;
    let web_upstream = upstream_to(&ca.leaf("web"), "api", Protocol::Tcp, db).await;
    assert_eq!(round_trip(web_upstream).await, None);
}

#[tokio::test]
async fn a_new_snapshot_that_denies_closes_an_open_connection() {
    let ca = Ca::new();
    let material = ca.leaf("api");
    let app = echo_app().await;
    let (api, snapshots) =
        inbound_sidecar(snapshot("api", &material, Protocol::Tcp, vec![allow("web", "api")], app, vec![])).await;
    let web_upstream = upstream_to(&ca.leaf("web"), "api", Protocol::Tcp, api).await;
    let mut open = TcpStream::connect(web_upstream).await.unwrap();
    open.write_all(b"ping\n").await.unwrap();
    let mut buffer = [0u8; 5];
    open.read_exact(&mut buffer).await.unwrap();

    let deny = rule("web", "api", Verdict::Action(IntentionAction::Deny));
    let denied = snapshot("api", &material, Protocol::Tcp, vec![deny], app, vec![]);
    snapshots.send_replace(Some(Arc::new(Runtime::compile(denied).unwrap())));
    let read = tokio::time::timeout(Duration::from_secs(10), open.read(&mut buffer)).await.expect("closed, not hung");
    assert!(matches!(read, Ok(0) | Err(_)), "the open connection is closed: {read:?}");
}

#[tokio::test]
async fn l7_permissions_judge_each_http_request_and_a_denial_names_the_intention() {
    let ca = Ca::new();
    let deny_admin_deletes = Permission {
        action: IntentionAction::Deny,
        http: HttpMatch {
            path: Some(PathMatch::Prefix("/admin".into())),
            methods: vec!["DELETE".into()],
            ..HttpMatch::default()
        },
    };
    let allow_everything = Permission { action: IntentionAction::Allow, http: HttpMatch::default() };
    let rules = vec![rule("web", "api", Verdict::Permissions(vec![deny_admin_deletes, allow_everything]))];
    let (api, _snapshots) =
        inbound_sidecar(snapshot("api", &ca.leaf("api"), Protocol::Http, rules, http_app().await, vec![])).await;
    let web_upstream = upstream_to(&ca.leaf("web"), "api", Protocol::Http, api).await;

    assert_eq!(http_request(web_upstream, "GET", "/").await, (200, "app saw GET /".to_owned()));
    assert_eq!(http_request(web_upstream, "GET", "/admin/users").await, (200, "app saw GET /admin/users".to_owned()));
    let (status, body) = http_request(web_upstream, "DELETE", "/admin/users").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("service-intentions api, source web, permission 1"), "{body}");

    // A caller with no rule gets the mesh default (deny), as a 403 that says so.
    let db_upstream = upstream_to(&ca.leaf("db"), "api", Protocol::Http, api).await;
    let (status, body) = http_request(db_upstream, "GET", "/").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no intention matches db; the mesh default is to deny"), "{body}");
}
