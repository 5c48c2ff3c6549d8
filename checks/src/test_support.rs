//! Servers on 127.0.0.1 (port 0) for the probes' tests: HTTP and HTTPS (hyper, a self-signed
//! rcgen certificate) and gRPC health (tonic-health), plain and over TLS.
//!
//! HTTP routes:
//!
//! - `/ok`: 200 `all good`
//! - `/status/{code}`: that code, body `status {code}`
//! - `/slow`: answers after 30 s
//! - `/echo`: 200, body = request line, one `name: value` line per header, then `body: ...`
//! - `/big`: 200, 10 000 `x`
//! - `/redirect/{code}?to={location}`: that code with that `Location`
//! - `/loop`: 302 back to `/loop`
//! - `/sni`: 200, body = the TLS server name the client sent

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tonic_health::ServingStatus;

/// Long enough for any probe against a local server, short enough to bound a hung test.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An address nothing listens on (bound, then released).
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// A server certificate for `localhost` / `127.0.0.1`, signed by nobody.
fn tls_config(alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// An HTTP(S) server serving the routes above until the test's runtime shuts down.
pub(crate) struct TestServer {
    address: SocketAddr,
    scheme: &'static str,
    hits: Hits,
}

impl TestServer {
    pub(crate) async fn http() -> Self {
        TestServer::start(None).await
    }

    pub(crate) async fn https() -> Self {
        TestServer::start(Some(TlsAcceptor::from(tls_config(&[b"http/1.1"])))).await
    }

    async fn start(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local addr");
        let hits = Hits::default();
        let server = TestServer { address, scheme: if tls.is_some() { "https" } else { "http" }, hits: hits.clone() };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tls, hits) = (tls.clone(), hits.clone());
                tokio::spawn(async move {
                    let builder = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => {
                            let service = service_fn(move |request| route(request, hits.clone(), None));
                            builder.serve_connection(TokioIo::new(stream), service).await
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let sni = stream.get_ref().1.server_name().map(str::to_owned);
                            let service = service_fn(move |request| route(request, hits.clone(), sni.clone()));
                            builder.serve_connection(TokioIo::new(stream), service).await
                        }
                    };
                });
            }
        });
        server
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("{}://{}{path_and_query}", self.scheme, self.address)
    }

    /// How many requests reached `path` (query excluded).
    pub(crate) fn hits(&self, path: &str) -> usize {
        self.hits.lock().map(|hits| hits.get(path).copied().unwrap_or(0)).unwrap_or(0)
    }
}

async fn route(
    request: Request<Incoming>,
    hits: Hits,
    sni: Option<String>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if let Ok(mut hits) = hits.lock() {
        *hits.entry(path.clone()).or_default() += 1;
    }
    let query = url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect::<HashMap<String, String>>();
    let respond = |code: u16, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::from_u16(code).expect("valid status code");
        response
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let response = match segments.as_slice() {
        ["ok"] => respond(200, "all good".into()),
        ["status", code] => {
            let code = code.parse().expect("numeric status");
            respond(code, format!("status {code}"))
        }
        ["slow"] => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            respond(200, "finally".into())
        }
        ["echo"] => {
            let mut text = format!("{} {}\n", request.method(), request.uri());
            for (name, value) in request.headers() {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("<binary>")));
            }
            let body = request.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
            text.push_str(&format!("body: {}", String::from_utf8_lossy(&body)));
            respond(200, text)
        }
        ["big"] => respond(200, "x".repeat(10_000)),
        ["redirect", code] => {
            let mut response = respond(code.parse().expect("numeric status"), String::new());
            let location = query.get("to").cloned().unwrap_or_default();
            response.headers_mut().insert(header::LOCATION, location.parse().expect("location header"));
            response
        }
        ["loop"] => {
            let mut response = respond(302, String::new());
            response.headers_mut().insert(header::LOCATION, header::HeaderValue::from_static("/loop"));
            response
        }
        ["sni"] => respond(200, sni.unwrap_or_default()),
        _ => respond(404, "not found".into()),
    };
    Ok(response)
}

/// A gRPC health server: `""` and `weft.Up` are SERVING, `weft.Down` is NOT_SERVING.
pub(crate) struct GrpcServer {
    address: SocketAddr,
}

impl GrpcServer {
    /// Served by tonic's own server, over plain HTTP/2.
    pub(crate) async fn plain() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local addr");
        let service = health_service().await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        GrpcServer { address }
    }

    /// Served by hyper's HTTP/2 server behind rustls (ALPN `h2`), with a self-signed certificate.
    pub(crate) async fn tls() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local addr");
        let service = health_service().await;
        let acceptor = TlsAcceptor::from(tls_config(&[b"h2"]));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, service) = (acceptor.clone(), service.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                        .await;
                });
            }
        });
        GrpcServer { address }
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }
}

async fn health_service() -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>
{
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("weft.Up", ServingStatus::Serving).await;
    reporter.set_service_status("weft.Down", ServingStatus::NotServing).await;
    service
}
