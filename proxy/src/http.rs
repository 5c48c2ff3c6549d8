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
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, HandshakeKind};
use tokio_rustls::TlsConnector;
use weft_api::ids::ServiceName;
use weft_api::intentions::RequestAttributes;
use weft_api::mesh::Protocol;
use weft_api::proxy::{Endpoint, LoadBalancer};

use crate::access_log::{Entry, Exchange};
use crate::identity::SpiffeId;
use crate::inbound::{Downstream, Inbound};
use crate::metrics::{Direction, Layer};
use crate::outbound::Upstream;
use crate::runtime::{current, Runtime};
use crate::tls::{server_name, ALPN_H2, ALPN_HTTP1};

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

/// `request` made ready to send on: no hop-by-hop headers, `Host` kept (or
/// set from the URI's authority), and the URI in the form the next hop's
/// HTTP wants: absolute for HTTP/2 (`http://<authority>/...`), origin-form
/// (the path) for HTTP/1.1.
pub(crate) fn retarget(mut request: Request<Body>, http2_authority: Option<&str>) -> Result<Request<Body>, String> {
    if !request.headers().contains_key(HOST) {
        if let Some(value) = request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            request.headers_mut().insert(HOST, value);
        }
    }
    strip_hop_by_hop(request.headers_mut());
    match http2_authority {
        Some(authority) => {
            let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            *request.uri_mut() = Uri::try_from(format!("http://{authority}{path}"))
                .map_err(|e| format!("cannot forward to {authority}: {e}"))?;
            *request.version_mut() = Version::HTTP_2;
        }
        None => {
            if request.uri().authority().is_some() {
                let path = request.uri().path_and_query().cloned();
                *request.uri_mut() = path.map(Uri::from).unwrap_or_else(|| Uri::from_static("/"));
            }
            *request.version_mut() = Version::HTTP_11;
        }
    }
    Ok(request)
}

/// The application behind an inbound sidecar. An `http` application gets
/// one keep-alive connection per inbound connection (its requests come one
/// at a time, so nothing is shared); `http2` and `grpc` ones a pooled
/// HTTP/2 client.
pub struct LocalApp {
    http2: Client<HttpConnector, Body>,
}

impl Default for LocalApp {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(APPLICATION_CONNECT_TIMEOUT));
        LocalApp { http2: Client::builder(TokioExecutor::new()).http2_only(true).build(connector) }
    }
}

/// How long connecting to the local application may take.
pub(crate) const APPLICATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One inbound connection's HTTP/1.1 connection to the application.
type AppLink = tokio::sync::Mutex<Option<http1::SendRequest<Body>>>;

impl LocalApp {
    async fn send(
        &self,
        protocol: Protocol,
        address: SocketAddr,
        request: Request<Body>,
        link: &AppLink,
    ) -> Response<Body> {
        let unreachable = |error: String| {
            local_response(
                StatusCode::BAD_GATEWAY,
                "application unreachable",
                format!("weft: the local application at {address} did not answer: {error}\n"),
            )
        };
        let authority = (protocol != Protocol::Http).then(|| address.to_string());
        let request = match retarget(request, authority.as_deref()) {
            Ok(request) => request,
            Err(message) => return local_response(StatusCode::BAD_REQUEST, "bad request", message),
        };
        if protocol != Protocol::Http {
            return match self.http2.request(request).await {
                Ok(response) => response.map(BodyExt::boxed),
                Err(error) => unreachable(error.to_string()),
            };
        }
        let mut link = link.lock().await;
        let usable = match link.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let connect = tokio::time::timeout(APPLICATION_CONNECT_TIMEOUT, TcpStream::connect(address));
            let stream = match connect.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return unreachable(error.to_string()),
                Err(_) => return unreachable("connecting timed out".into()),
            };
            let _ = stream.set_nodelay(true);
            let (sender, connection) = match http1::handshake(TokioIo::new(stream)).await {
                Ok(handshake) => handshake,
                Err(error) => return unreachable(error.to_string()),
            };
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%address, %error, "application connection ended");
                }
            });
            *link = Some(sender);
        }
        let Some(sender) = link.as_mut() else { return unreachable("lost the connection".into()) };
        match sender.send_request(request).await {
            Ok(response) => response.map(BodyExt::boxed),
            Err(error) => unreachable(error.to_string()),
        }
    }
}

/// Serves HTTP from `downstream` on an accepted mTLS connection until it
/// closes: HTTP/2 when the handshake chose it, else HTTP/1.1.
pub async fn serve_inbound<S>(
    stream: S,
    http2: bool,
    downstream: Downstream,
    inbound: Arc<Inbound>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let caller = match &downstream.caller {
        Some(identity) => Arc::new(identity.service.clone()),
        None => return Err("HTTP is served only to callers with a mesh identity".into()),
    };
    // Shared by the connection's requests: cloning these costs no allocation.
    let downstream = Arc::new(downstream);
    let link = Arc::new(AppLink::default());
    let service = service_fn(|request: Request<Incoming>| {
        let (caller, downstream, inbound, link) = (caller.clone(), downstream.clone(), inbound.clone(), link.clone());
        async move {
            let request = request.map(BodyExt::boxed);
            let runtime = current(&inbound.runtime);
            let logs = runtime.as_ref().and_then(|runtime| {
                let logs = runtime.access_logs.clone()?;
                Some((logs, crate::inbound::local_app_entry(runtime, &downstream)))
            });
            let response = match logs {
                None => inbound_request(request, runtime, &caller, &inbound, &link).await,
                Some((logs, base)) => {
                    let (exchange, request) = Exchange::begin(request, base);
                    let response = inbound_request(request, runtime, &caller, &inbound, &link).await;
                    exchange.finish(response, inbound.access_log.clone(), logs)
                }
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let io = TokioIo::new(stream);
    let served = if http2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await
    } else {
        hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
    };
    served.map_err(|e| format!("HTTP connection from {caller} failed: {e}"))
}

/// Where the application's request came from (a request extension), for
/// `SourceIP` hash policies.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Why a request was refused by the local rate limit.
pub const RATE_LIMITED: &str = "rate limited";

async fn inbound_request(
    request: Request<Body>,
    runtime: Option<Arc<Runtime>>,
    caller: &ServiceName,
    inbound: &Inbound,
    link: &AppLink,
) -> Response<Body> {
    let started = Instant::now();
    let response = match runtime {
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
            let limited =
                || runtime.rate_limit.as_ref().is_some_and(|limit| !inbound.limiter.admit(limit, request.uri().path()));
            if !decision.allowed() {
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
            } else if limited() {
                inbound.metrics.rate_limited.inc();
                let service = &runtime.snapshot.service;
                local_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    RATE_LIMITED,
                    format!("weft: too many requests to {service} (its service-defaults RateLimits)\n"),
                )
            } else {
                inbound.app.send(runtime.snapshot.protocol, runtime.snapshot.local_app, request, link).await
            }
        }
    };
    inbound.metrics.request(Direction::Inbound, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Opens mutual TLS to a sidecar of `destination` at `endpoint` (through
/// its network's mesh gateway if it is in another network), within
/// `timeout`; checks the ALPN protocol the caller needs, if any.
pub async fn connect_tls(
    endpoint: &Endpoint,
    destination: &ServiceName,
    tls: Arc<ClientConfig>,
    timeout: Duration,
    alpn: Option<&[u8]>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let address = endpoint.address;
    let name = server_name(destination, address).map_err(|e| e.to_string())?;
    let handshake = async {
        let tcp = match endpoint.gateway {
            None => TcpStream::connect(address).await.map_err(|e| format!("connect to {address}: {e}"))?,
            Some(gateway) => TcpStream::connect(gateway)
                .await
                .map_err(|e| format!("connect to {address} through the mesh gateway at {gateway}: {e}"))?,
        };
        let _ = tcp.set_nodelay(true);
        let stream = TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| format!("TLS to {address}: {e}"))?;
        // A resumed session skips the verifier, and the session cache
        // compares server names without regard to case: check its
        // certificate's service again, exactly.
        if stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
            let peer = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
            let service =
                peer.and_then(|certificate| SpiffeId::from_certificate(certificate).ok()).map(|id| id.service);
            if service.as_ref() != Some(destination) {
                return Err(format!("{address} resumed a session of {service:?}, not of {destination}"));
            }
        }
        if alpn.is_some() && stream.get_ref().1.alpn_protocol() != alpn {
            return Err(format!("{address} does not speak this protocol to sidecars (is {destination}'s protocol the same on both sides?)"));
        }
        Ok(stream)
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| format!("connect to {address} timed out after {timeout:?}"))?
}

/// Mutual TLS HTTP/2 connections to one upstream's endpoints (for `http2`
/// and `grpc`), one each, shared by every request to that endpoint.
#[derive(Default)]
pub struct H2Pool {
    senders: tokio::sync::Mutex<HashMap<SocketAddr, http2::SendRequest<Body>>>,
}

impl H2Pool {
    /// Forgets connections to endpoints no longer listed.
    pub fn retain(&self, endpoints: &[SocketAddr]) {
        if let Ok(mut senders) = self.senders.try_lock() {
            senders.retain(|endpoint, _| endpoints.contains(endpoint));
        }
    }

    /// The pooled connection to `endpoint`, or a new one. Connecting holds
    /// the pool, so a burst of requests opens one connection, not many.
    pub(crate) async fn sender(
        &self,
        to: &Endpoint,
        destination: &ServiceName,
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<http2::SendRequest<Body>, String> {
        let endpoint = to.address;
        let mut senders = self.senders.lock().await;
        if let Some(sender) = senders.get(&endpoint).filter(|sender| !sender.is_closed()) {
            return Ok(sender.clone());
        }
        let stream = connect_tls(to, destination, tls, timeout, Some(ALPN_H2)).await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 to {endpoint}: {e}"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%endpoint, %error, "upstream HTTP/2 connection ended");
            }
        });
        senders.insert(endpoint, sender.clone());
        Ok(sender)
    }
}

/// The HTTP/1.1 connections of one application connection, one per
/// endpoint its requests went to. Requests on an HTTP/1.1 connection come
/// one at a time, so these need no sharing: one keep-alive connection
/// between sidecars per application connection and endpoint.
#[derive(Default)]
pub(crate) struct H1Links {
    senders: HashMap<SocketAddr, http1::SendRequest<Body>>,
}

impl H1Links {
    pub(crate) async fn sender(
        &mut self,
        to: &Endpoint,
        destination: &ServiceName,
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<&mut http1::SendRequest<Body>, String> {
        let endpoint = to.address;
        let usable = match self.senders.get_mut(&endpoint) {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let stream = connect_tls(to, destination, tls, timeout, Some(ALPN_HTTP1)).await?;
            let (sender, connection) =
                http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("HTTP/1.1 to {endpoint}: {e}"))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%endpoint, %error, "upstream HTTP/1.1 connection ended");
                }
            });
            self.senders.insert(endpoint, sender);
        }
        self.senders.get_mut(&endpoint).ok_or_else(|| "lost the connection".to_owned())
    }
}

/// Serves the application's HTTP on one accepted local connection:
/// HTTP/1.1 for an `http` upstream; HTTP/1.1 or HTTP/2 (prior knowledge,
/// as gRPC clients speak it) for the others.
pub async fn serve_outbound(stream: TcpStream, application: SocketAddr, upstream: Arc<Upstream>, protocol: Protocol) {
    let links = Arc::new(tokio::sync::Mutex::new(H1Links::default()));
    let service = service_fn(|request: Request<Incoming>| {
        let (upstream, links) = (upstream.clone(), links.clone());
        async move {
            let started = Instant::now();
            let mut request = request.map(BodyExt::boxed);
            let runtime = current(&upstream.runtime);
            let target = runtime.as_ref().and_then(|runtime| runtime.upstream(&upstream.key));
            // Only a SourceIP hash needs the caller's address; most requests skip the allocation.
            if target.is_some_and(|t| matches!(t.snapshot.load_balancer, LoadBalancer::ConsistentHash(_))) {
                request.extensions_mut().insert(ClientAddr(application));
            }
            let logs = runtime
                .as_ref()
                .and_then(|runtime| Some((runtime.access_logs.clone()?, target?.snapshot.destination.to_string())));
            let response = match logs {
                None => crate::routing::send_upstream(request, &upstream, &links).await,
                Some((logs, destination)) => {
                    let base = Entry {
                        upstream_cluster: Some(destination),
                        downstream_remote: Some(application),
                        downstream_local: Some(upstream.bind),
                        ..Entry::default()
                    };
                    let (exchange, request) = Exchange::begin(request, base);
                    let response = crate::routing::send_upstream(request, &upstream, &links).await;
                    exchange.finish(response, upstream.access_log.clone(), logs)
                }
            };
            upstream.metrics.request(Direction::Outbound, response.status().as_u16(), started.elapsed().as_secs_f64());
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let io = TokioIo::new(stream);
    let served = if protocol == Protocol::Http {
        hyper::server::conn::http1::Builder::new().serve_connection(io, service).await.map_err(|e| e.to_string())
    } else {
        auto::Builder::new(TokioExecutor::new()).serve_connection(io, service).await.map_err(|e| e.to_string())
    };
    if let Err(error) = served {
        tracing::debug!(%error, "application HTTP connection ended");
    }
}
