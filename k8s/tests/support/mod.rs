//! The webhook on a loopback port, called over real TLS as the API server
//! calls it: a CA, a serving certificate for the webhook's Service name
//! (`weft-webhook.weft.svc`), and requests that verify both.

pub mod json_patch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use weft_k8s::{InjectConfig, WebhookConfig, WebhookError};

/// The name the API server dials: the webhook's Service.
pub const SERVICE_DNS_NAME: &str = "weft-webhook.weft.svc";

/// The settings the tests inject with, unless they say otherwise.
pub fn inject_config() -> InjectConfig {
    InjectConfig {
        agent_image: "ghcr.io/weft/weft:0.1.0".into(),
        server_addr: "weft-server.weft.svc:8300".into(),
        transparent_proxy: false,
        inject_by_default: false,
        network: Default::default(),
        server_ca_pem: None,
        acl_auth_method: None,
    }
}

/// A running webhook and a client that trusts its CA.
pub struct Webhook {
    pub address: SocketAddr,
    client_tls: Arc<ClientConfig>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), WebhookError>>,
    _files: tempfile::TempDir,
}

/// What an HTTP request got back.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Which HTTP the client speaks (the API server uses HTTP/2 when offered).
#[derive(Clone, Copy)]
pub enum Http {
    One,
    Two,
}

/// Writes a CA-signed serving certificate and key to `dir` (`tls.crt`,
/// `tls.key`, as in a `kubernetes.io/tls` Secret); returns the CA's certificate.
pub fn write_certificates(dir: &Path) -> CertificateDer<'static> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![SERVICE_DNS_NAME.to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

impl Webhook {
    pub async fn start(inject: InjectConfig) -> Webhook {
        let files = tempfile::tempdir().unwrap();
        let ca = write_certificates(files.path());
        let config = WebhookConfig {
            tls_cert_file: files.path().join("tls.crt"),
            tls_key_file: files.path().join("tls.key"),
            inject,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(weft_k8s::run(config, listener, async {
            let _ = stop.await;
        }));

        let mut roots = RootCertStore::empty();
        roots.add(ca).unwrap();
        let client_tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Webhook { address, client_tls: Arc::new(client_tls), shutdown: Some(shutdown), server, _files: files }
    }

    /// One request on a new TLS connection.
    pub async fn request(&self, http: Http, method: Method, path: &str, body: Vec<u8>) -> Answer {
        let mut tls = (*self.client_tls).clone();
        tls.alpn_protocols = match http {
            Http::One => vec![b"http/1.1".to_vec()],
            Http::Two => vec![b"h2".to_vec()],
        };
        let tcp = TcpStream::connect(self.address).await.unwrap();
        let name = ServerName::try_from(SERVICE_DNS_NAME).unwrap();
        let stream = TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.expect("TLS handshake");
        let request = Request::builder()
            .method(method)
            .uri(format!("https://{SERVICE_DNS_NAME}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = match http {
            Http::One => {
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await.unwrap()
            }
            Http::Two => {
                let (mut sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await.unwrap()
            }
        };
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer { status, body }
    }

    /// `POST /mutate` over HTTP/1.1.
    pub async fn mutate(&self, body: Vec<u8>) -> Answer {
        self.request(Http::One, Method::POST, "/mutate", body).await
    }

    /// Posts the fixture `name` and returns the `AdmissionReview` answered.
    pub async fn review_fixture(&self, name: &str) -> Value {
        let answer = self.mutate(fixture_bytes(name)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
        serde_json::from_slice(&answer.body).unwrap()
    }

    /// Stops the webhook and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), WebhookError> {
        let _ = self.shutdown.take().unwrap().send(());
        (&mut self.server).await.unwrap()
    }
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).unwrap()
}

/// The pod of fixture `name` after the answered review's patch (if any).
pub fn patched_pod(name: &str, review: &Value) -> Value {
    let mut pod = fixture(name)["request"]["object"].clone();
    if let Some(patch) = review["response"]["patch"].as_str() {
        use base64::Engine as _;
        let patch = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        json_patch::apply(&mut pod, &patch).unwrap_or_else(|error| panic!("the patch does not apply: {error}"));
    }
    pod
}

/// The container `name` among the pod's init containers, and its position.
pub fn init_container<'a>(pod: &'a Value, name: &str) -> Option<(usize, &'a Value)> {
    pod["spec"]["initContainers"].as_array()?.iter().enumerate().find(|(_, container)| container["name"] == name)
}

/// The value of the env variable `name` of `container`.
pub fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|var| var["name"] == name)
        .map(|var| var.get("value").unwrap_or(&var["valueFrom"]))
}
