//! The HTTP path of a sidecar, for services whose protocol is `http`,
//! `http2` or `grpc`.
//!
//! Inbound, each request from another sidecar is judged by the intentions
//! (L7 permissions included) before it reaches the application; a denial is
//! a 403 whose body names what denied it. Allowed requests go to the
//! application over a pool of keep-alive connections (HTTP/1.1, or HTTP/2
//! for `http2` and `grpc`).
//!
//! Outbound, the application's requests to an upstream are spread over the
//! destination's sidecars request by request, and carried over one mutual
//! TLS HTTP/2 connection per endpoint, which every request multiplexes.
//!
//! Errors the sidecar makes itself carry `x-weft-error`, so nobody mistakes
//! them for the application's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use weft_api::ids::ServiceName;
use weft_api::intentions::RequestAttributes;
use weft_api::mesh::Protocol;

use crate::inbound::Inbound;
use crate::metrics::{Direction, Layer};
use crate::outbound::Upstream;
use crate::runtime::current;
use crate::tls::{server_name, ALPN_H2};

/// Every body the sidecar sends on.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The header on responses the sidecar makes itself.
pub const ERROR_HEADER: &str = "x-weft-error";

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
];

/// A response the sidecar makes itself.
pub fn local_response(status: StatusCode, error: &str, message: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(error) {
        headers.insert(ERROR_HEADER, value);
    }
    response
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `request` with an absolute URI for `authority` and no hop-by-hop
/// headers; keeps (or sets) `Host` to what the caller asked for.
fn retarget(mut request: Request<Body>, authority: &str) -> Result<Request<Body>, String> {
    let original_authority = request.uri().authority().map(|a| a.to_string());
    if !request.headers().contains_key(HOST) {
        if let Some(value) = original_authority.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
            request.headers_mut().insert(HOST, value);
        }
    }
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    *request.uri_mut() = Uri::try_from(format!("http://{authority}{path}"))
        .map_err(|e| format!("cannot forward to {authority}: {e}"))?;
    strip_hop_by_hop(request.headers_mut());
    Ok(request)
}

/// The application behind an inbound sidecar: pooled keep-alive clients.
pub struct LocalApp {
    http1: Client<HttpConnector, Body>,
    http2: Client<HttpConnector, Body>,
}

impl Default for LocalApp {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http1 = Client::builder(TokioExecutor::new()).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        LocalApp { http1, http2 }
    }
}

impl LocalApp {
    async fn send(&self, protocol: Protocol, address: SocketAddr, request: Request<Body>) -> Response<Body> {
        let mut request = match retarget(request, &address.to_string()) {
            Ok(request) => request,
            Err(message) => return local_response(StatusCode::BAD_REQUEST, "bad request", message),
        };
        let (client, version) =
            if protocol == Protocol::Http { (&self.http1, Version::HTTP_11) } else { (&self.http2, Version::HTTP_2) };
        *request.version_mut() = version;
        match client.request(request).await {
            Ok(response) => response.map(BodyExt::boxed),
            Err(error) => local_response(
                StatusCode::BAD_GATEWAY,
                "application unreachable",
                format!("weft: the local application at {address} did not answer: {error}\n"),
            ),
        }
    }
}

/// Serves HTTP from `caller` on an accepted mTLS connection until it closes.
pub async fn serve_inbound<S>(stream: S, caller: ServiceName, inbound: Arc<Inbound>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|request: Request<Incoming>| {
        let (caller, inbound) = (caller.clone(), inbound.clone());
        async move {
            Ok::<_, std::convert::Infallible>(inbound_request(request.map(BodyExt::boxed), &caller, &inbound).await)
        }
    });
    auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|e| format!("HTTP connection from {caller} failed: {e}"))
}

async fn inbound_request(request: Request<Body>, caller: &ServiceName, inbound: &Inbound) -> Response<Body> {
    let started = Instant::now();
    let response = match current(&inbound.runtime) {
        None => local_response(StatusCode::SERVICE_UNAVAILABLE, "not ready", "weft: the sidecar is not ready\n".into()),
        Some(runtime) => {
            let decision = {
                let headers = request.headers();
                let header = |name: &str| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
                let attributes = RequestAttributes {
                    method: request.method().as_str(),
                    path: request.uri().path(),
                    header: &header,
                };
                runtime.intentions.decide_request(caller, &attributes)
            };
            if decision.allowed() {
                inbound.app.send(runtime.snapshot.protocol, runtime.snapshot.local_app, request).await
            } else {
                inbound.metrics.denied(Layer::L7);
                tracing::info!(%caller, method = %request.method(), path = request.uri().path(), reason = %decision.reason, "request denied");
                local_response(
                    StatusCode::FORBIDDEN,
                    "denied by intention",
                    format!(
                        "weft: {caller} may not {} {}: {}\n",
                        request.method(),
                        request.uri().path(),
                        decision.reason
                    ),
                )
            }
        }
    };
    inbound.metrics.request(Direction::Inbound, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Mutual TLS HTTP/2 connections to one upstream's endpoints, one each,
/// shared by every request to that endpoint.
#[derive(Default)]
pub struct H2Pool {
    senders: Mutex<HashMap<SocketAddr, hyper::client::conn::http2::SendRequest<Body>>>,
}

impl H2Pool {
    fn pooled(&self, endpoint: SocketAddr) -> Option<hyper::client::conn::http2::SendRequest<Body>> {
        let senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        senders.get(&endpoint).filter(|sender| !sender.is_closed()).cloned()
    }

    /// Forgets connections to endpoints no longer listed.
    pub fn retain(&self, endpoints: &[SocketAddr]) {
        self.senders.lock().unwrap_or_else(|p| p.into_inner()).retain(|endpoint, _| endpoints.contains(endpoint));
    }

    /// A connection to `endpoint`: the pooled one, or a new one.
    async fn connect(
        &self,
        endpoint: SocketAddr,
        destination: &ServiceName,
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, String> {
        if let Some(sender) = self.pooled(endpoint) {
            return Ok(sender);
        }
        let handshake = async {
            let tcp = TcpStream::connect(endpoint).await.map_err(|e| format!("connect to {endpoint}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let stream = TlsConnector::from(tls)
                .connect(server_name(destination), tcp)
                .await
                .map_err(|e| format!("TLS to {endpoint}: {e}"))?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(format!("{endpoint} does not speak HTTP to sidecars (is {destination}'s protocol http?)"));
            }
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("HTTP/2 to {endpoint}: {e}"))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%endpoint, %error, "upstream HTTP/2 connection ended");
                }
            });
            Ok(sender)
        };
        let sender = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| format!("connect to {endpoint} timed out after {timeout:?}"))??;
        self.senders.lock().unwrap_or_else(|p| p.into_inner()).insert(endpoint, sender.clone());
        Ok(sender)
    }
}

/// Serves the application's HTTP on one accepted local connection.
pub async fn serve_outbound(stream: TcpStream, upstream: Arc<Upstream>) {
    let service = service_fn(|request: Request<Incoming>| {
        let upstream = upstream.clone();
        async move { Ok::<_, std::convert::Infallible>(outbound_request(request.map(BodyExt::boxed), &upstream).await) }
    });
    if let Err(error) = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await {
        tracing::debug!(%error, "application HTTP connection ended");
    }
}

async fn outbound_request(request: Request<Body>, upstream: &Upstream) -> Response<Body> {
    let started = Instant::now();
    let response = send_upstream(request, upstream).await;
    upstream.metrics.request(Direction::Outbound, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn send_upstream(request: Request<Body>, upstream: &Upstream) -> Response<Body> {
    let Some(runtime) = current(&upstream.runtime) else {
        return local_response(StatusCode::SERVICE_UNAVAILABLE, "not ready", "weft: the sidecar is not ready\n".into());
    };
    let Some(target) = runtime.upstreams.get(&upstream.bind) else {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no upstream",
            "weft: this upstream was removed\n".into(),
        );
    };
    let destination = &target.snapshot.destination;
    let endpoints: Vec<SocketAddr> = target.snapshot.endpoints.iter().map(|e| e.address).collect();
    if endpoints.is_empty() {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
            format!("weft: {destination} has no healthy instance\n"),
        );
    }
    let timeout = Duration::from_millis(target.snapshot.connect_timeout_ms);
    let mut last_error = String::new();
    // Connecting is retried on the next endpoint; a request once sent is not
    // (it may have had an effect).
    for endpoint in upstream.balancer.order(&endpoints, target.snapshot.load_balancer) {
        let mut sender = match upstream.pool.connect(endpoint, destination, target.client_tls.clone(), timeout).await {
            Ok(sender) => sender,
            Err(error) => {
                last_error = error;
                continue;
            }
        };
        let mut request = match retarget(request, destination.as_str()) {
            Ok(request) => request,
            Err(message) => return local_response(StatusCode::BAD_REQUEST, "bad request", message),
        };
        *request.version_mut() = Version::HTTP_2;
        let _in_flight = upstream.balancer.start(endpoint);
        return match sender.send_request(request).await {
            Ok(response) => response.map(BodyExt::boxed),
            Err(error) => local_response(
                StatusCode::BAD_GATEWAY,
                "upstream failed",
                format!("weft: the request to {destination} at {endpoint} failed: {error}\n"),
            ),
        };
    }
    local_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream unreachable",
        format!("weft: no instance of {destination} could be reached: {last_error}\n"),
    )
}
