//! Real TLS handshakes on loopback between an outbound and an inbound
//! sidecar: traffic flows when the intention allows it, and every way of
//! cheating is refused (no certificate, another CA, a denied caller, a
//! sidecar posing as another service).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weft_api::ids::ServiceName;
use weft_proxy::inbound::{self, Inbound};
use weft_proxy::outbound::{self, Upstream};
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

/// `api`'s inbound sidecar, allowing only `web`; returns its public address.
async fn api_sidecar(material: &TlsMaterial, app: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A receiver keeps the last value after its sender is gone.
    let (_, tls) = watch::channel(Some(material.server_config().unwrap()));
    let authorize: inbound::Authorizer = Arc::new(|caller| {
        Box::pin(async move {
            if caller.service.as_str() == "web" {
                Ok(())
            } else {
                Err(format!("no intention allows {} => api", caller.service))
            }
        })
    });
    tokio::spawn(inbound::serve(listener, Inbound { tls, authorize, application: app }, std::future::pending()));
    addr
}

/// An upstream listener for `api` using `material`; returns its local address.
async fn upstream_to(material: &TlsMaterial, destination: &str, endpoint: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let destination = ServiceName::new(destination);
    let (_, tls) = watch::channel(Some(material.client_config(&destination).unwrap()));
    let (_, endpoints) = watch::channel(vec![endpoint]);
    let upstream = Upstream { destination, endpoints, tls, connect_timeout: Duration::from_secs(2) };
    tokio::spawn(outbound::serve(listener, upstream, std::future::pending()));
    addr
}

/// Sends a line through `addr`; the echo, or `None` if the connection closed.
async fn round_trip(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(b"hello through the mesh\n").await.ok()?;
    let mut buffer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await.ok()?.ok()?;
    (read > 0).then(|| String::from_utf8_lossy(&buffer[..read]).into_owned())
}

#[tokio::test]
async fn an_allowed_caller_reaches_the_application_through_both_sidecars() {
    let ca = Ca::new();
    let api = api_sidecar(&ca.leaf("api"), echo_app().await).await;
    let web_upstream = upstream_to(&ca.leaf("web"), "api", api).await;
    assert_eq!(round_trip(web_upstream).await.as_deref(), Some("hello through the mesh\n"));
}

#[tokio::test]
async fn a_caller_no_intention_allows_is_cut_off() {
    let ca = Ca::new();
    let api = api_sidecar(&ca.leaf("api"), echo_app().await).await;
    let db_upstream = upstream_to(&ca.leaf("db"), "api", api).await;
    assert_eq!(round_trip(db_upstream).await, None);
}

#[tokio::test]
async fn plaintext_and_other_cas_are_refused_at_the_inbound_port() {
    let ca = Ca::new();
    let api = api_sidecar(&ca.leaf("api"), echo_app().await).await;
    // Plaintext straight to the public port: answered with a TLS alert, never echoed.
    let plaintext = round_trip(api).await;
    assert!(plaintext.as_deref().is_none_or(|reply| reply.starts_with('\u{15}')), "{plaintext:?}");
    // A `web` leaf from another CA.
    let impostor_upstream = upstream_to(&Ca::new().leaf("web"), "api", api).await;
    assert_eq!(round_trip(impostor_upstream).await, None);
}

#[tokio::test]
async fn a_sidecar_posing_as_another_service_is_not_trusted() {
    let ca = Ca::new();
    // A sidecar with a valid leaf for `db`, answering where `api` was expected.
    let db = api_sidecar(&ca.leaf("db"), echo_app().await).await;
    let web_upstream = upstream_to(&ca.leaf("web"), "api", db).await;
    assert_eq!(round_trip(web_upstream).await, None);
}
