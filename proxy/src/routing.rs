//! An HTTP upstream's requests, sent the way the destination's discovery
//! chain says: the first route that matches, a fault injected if the route
//! asks for one, a split picked by weight, the split's target (or its
//! failovers when it has no healthy endpoint), with the route's timeout,
//! retries, prefix rewrite and header edits.
//!
//! The chain comes compiled in the snapshot (see `weft_api::chain`); this
//! module only follows it, so `weft troubleshoot route` and the sidecar
//! agree on where a request goes.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Request, Response, StatusCode, Uri};
use rand::Rng;
use weft_api::chain::{HeaderEdits, RequestView, Route};
use weft_api::ids::ServiceName;
use weft_api::intentions::PathMatch;
use weft_api::mesh::Protocol;
use weft_api::proxy::{Endpoint, LoadBalancer};

use crate::access_log::UpstreamHost;
use crate::balancer::request_key;
use crate::http::ClientAddr;
use crate::http::{local_response, retarget, Body, H1Links};
use crate::outbound::{Upstream, OVERLOADED};
use crate::runtime::{current, UpstreamRuntime};

/// A request body kept for retries at most this large; a larger one is
/// sent once.
const MAX_RETRY_BODY: usize = 1024 * 1024;

/// Why one try failed.
enum TryError {
    /// No endpoint could be reached: nothing was sent.
    Unreachable(String),
    /// Sent, and the exchange failed.
    Failed(String),
    /// The per-try timeout ran out.
    TimedOut,
}

/// Sends `request` as the upstream's chain says (see the module docs).
pub(crate) async fn send_upstream(
    request: Request<Body>,
    upstream: &Upstream,
    links: &tokio::sync::Mutex<H1Links>,
) -> Response<Body> {
    let Some(runtime) = current(&upstream.runtime) else {
        return local_response(StatusCode::SERVICE_UNAVAILABLE, "not ready", "weft: the sidecar is not ready\n".into());
    };
    let Some(target) = runtime.upstream(&upstream.key) else {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no upstream",
            "weft: this upstream was removed\n".into(),
        );
    };
    send_via(request, target, upstream, links).await
}

/// Sends `request` to `target` (an upstream of a sidecar, or a service an
/// ingress gateway exposes) as its chain says, with `upstream`'s limits,
/// balancer and connections.
pub(crate) async fn send_via(
    request: Request<Body>,
    target: &UpstreamRuntime,
    upstream: &Upstream,
    links: &tokio::sync::Mutex<H1Links>,
) -> Response<Body> {
    let _slot = match upstream.request_slot(&target.snapshot.limits).await {
        Ok(slot) => slot,
        Err(limit) => {
            return local_response(
                StatusCode::SERVICE_UNAVAILABLE,
                OVERLOADED,
                format!("weft: {} is at its limits: {limit}\n", target.snapshot.destination),
            )
        }
    };
    let Some(chain) = &target.chain else {
        let hop = Hop {
            endpoints: target.snapshot.endpoints.clone(),
            service: target.snapshot.destination.clone(),
            connect_timeout: Duration::from_millis(target.snapshot.connect_timeout_ms),
        };
        return match try_once(request, &hop, target, upstream, links, None).await {
            Ok(response) => response,
            Err(error) => error_response(&error, target),
        };
    };
    let route_index = {
        let headers = request.headers();
        let header = |name: &str| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        let view = RequestView {
            method: request.method().as_str(),
            path: request.uri().path(),
            query: request.uri().query(),
            header: &header,
        };
        chain.route(&view).map(|(i, _)| i)
    };
    let Some(route) = route_index.map(|i| &chain.chain.routes[i]) else {
        return local_response(StatusCode::NOT_FOUND, "no route", "weft: no route matches this request\n".into());
    };
    if let Some(fault) = &route.fault {
        if let Some(delay) = fault.delay.as_ref().filter(|d| roll() < d.percentage) {
            tokio::time::sleep(Duration::from_millis(delay.duration_ms)).await;
        }
        if let Some(abort) = fault.abort.as_ref().filter(|a| roll() < a.percentage) {
            let status = StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return local_response(status, "fault injected", format!("weft: fault injected by {}\n", route.origin));
        }
    }
    let Some(split) = route.pick(roll()) else {
        return local_response(StatusCode::SERVICE_UNAVAILABLE, "no split", "weft: the route has no split\n".into());
    };
    let mut request = request;
    edit_headers(request.headers_mut(), &route.request_headers);
    edit_headers(request.headers_mut(), &split.request_headers);
    if let Some(rewritten) = rewrite_prefix(route, request.uri()) {
        *request.uri_mut() = rewritten;
    }
    let work = send_with_retries(request, route, &split.target, target, upstream, links);
    let mut response = match route.request_timeout_ms {
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), work).await {
            Ok(response) => response,
            Err(_) => local_response(
                StatusCode::GATEWAY_TIMEOUT,
                "request timeout",
                format!("weft: no answer within the route's {ms} ms request timeout ({})\n", route.origin),
            ),
        },
        None => work.await,
    };
    edit_headers(response.headers_mut(), &route.response_headers);
    edit_headers(response.headers_mut(), &split.response_headers);
    response
}

/// Uniform in [0, 100).
fn roll() -> f64 {
    rand::thread_rng().gen_range(0.0..100.0)
}

async fn send_with_retries(
    request: Request<Body>,
    route: &Route,
    target_id: &str,
    target: &UpstreamRuntime,
    upstream: &Upstream,
    links: &tokio::sync::Mutex<H1Links>,
) -> Response<Body> {
    let hop = endpoints_for(target, target_id);
    let per_try = route.retry.per_try_timeout_ms.map(Duration::from_millis);
    let retries = route.retry.num_retries;
    if retries == 0 {
        return match try_once(request, &hop, target, upstream, links, per_try).await {
            Ok(response) => response,
            Err(error) => error_response(&error, target),
        };
    }
    // Retries need the body again: keep it (up to a bound).
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_RETRY_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return local_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large to retry",
                format!("weft: a request retried by its route may carry at most {MAX_RETRY_BODY} bytes: {error}\n"),
            )
        }
    };
    let mut last = None;
    for attempt in 0..=retries {
        let mut again = Request::new(Full::new(body.clone()).map_err(|never| match never {}).boxed());
        *again.method_mut() = parts.method.clone();
        *again.uri_mut() = parts.uri.clone();
        *again.version_mut() = parts.version;
        *again.headers_mut() = parts.headers.clone();
        let more = attempt < retries;
        match try_once(again, &hop, target, upstream, links, per_try).await {
            Ok(response) if more && route.retry.on_status_codes.contains(&response.status().as_u16()) => {
                tracing::debug!(status = %response.status(), attempt, "retrying on the route's status codes");
                last = Some(Ok(response));
            }
            Ok(response) => return response,
            Err(TryError::Unreachable(error)) if more && route.retry.on_connect_failure => {
                last = Some(Err(TryError::Unreachable(error)));
            }
            Err(TryError::TimedOut) if more => last = Some(Err(TryError::TimedOut)),
            Err(error) => return error_response(&error, target),
        }
    }
    match last {
        Some(Ok(response)) => response,
        Some(Err(error)) => error_response(&error, target),
        None => local_response(StatusCode::BAD_GATEWAY, "no try", "weft: nothing was sent\n".into()),
    }
}

/// Where one try goes: the endpoints of one chain target, the service
/// they serve (whose identity the peer must prove) and how long
/// connecting may take.
struct Hop {
    endpoints: Vec<Endpoint>,
    service: ServiceName,
    connect_timeout: Duration,
}

/// The endpoints of `target_id`, else of its first failover that has any.
fn endpoints_for(target: &UpstreamRuntime, target_id: &str) -> Hop {
    let targets = target.chain.as_ref().map(|c| &c.chain.targets);
    let chain_target = targets.and_then(|t| t.get(target_id));
    let connect_timeout =
        Duration::from_millis(chain_target.map_or(target.snapshot.connect_timeout_ms, |t| t.connect_timeout_ms));
    let failovers = chain_target.map(|t| t.failover.as_slice()).unwrap_or_default();
    let found = std::iter::once(target_id)
        .chain(failovers.iter().map(String::as_str))
        .filter_map(|id| Some((id, target.snapshot.target_endpoints.get(id)?)))
        .find(|(_, endpoints)| !endpoints.is_empty());
    let (id, endpoints) = found.map_or((target_id, Vec::new()), |(id, endpoints)| (id, endpoints.clone()));
    let service =
        targets.and_then(|t| t.get(id)).map_or_else(|| target.snapshot.destination.clone(), |t| t.service.clone());
    Hop { endpoints, service, connect_timeout }
}

fn error_response(error: &TryError, target: &UpstreamRuntime) -> Response<Body> {
    let destination = &target.snapshot.destination;
    match error {
        TryError::Unreachable(reason) if reason.is_empty() => local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
            format!("weft: {destination} has no healthy instance\n"),
        ),
        TryError::Unreachable(reason) => local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream unreachable",
            format!("weft: no instance of {destination} could be reached: {reason}\n"),
        ),
        TryError::Failed(reason) => local_response(
            StatusCode::BAD_GATEWAY,
            "upstream failed",
            format!("weft: the request to {destination} failed: {reason}\n"),
        ),
        TryError::TimedOut => local_response(
            StatusCode::GATEWAY_TIMEOUT,
            "per-try timeout",
            format!("weft: {destination} did not answer within the route's per-try timeout\n"),
        ),
    }
}

/// One try: the first endpoint that can be reached (in the balancer's
/// order) gets the request. Connecting moves on to the next endpoint; a
/// request once sent is not sent elsewhere within this try.
async fn try_once(
    request: Request<Body>,
    hop: &Hop,
    target: &UpstreamRuntime,
    upstream: &Upstream,
    links: &tokio::sync::Mutex<H1Links>,
    per_try: Option<Duration>,
) -> Result<Response<Body>, TryError> {
    let (endpoints, destination, connect_timeout) = (&hop.endpoints, &hop.service, hop.connect_timeout);
    let addresses: Vec<SocketAddr> = endpoints.iter().map(|e| e.address).collect();
    let http2 = target.snapshot.protocol != Protocol::Http;
    let policy = &target.snapshot.load_balancer;
    let key = match policy {
        LoadBalancer::ConsistentHash(policies) => {
            request_key(policies, &request, request.extensions().get::<ClientAddr>().map(|c| c.0))
        }
        _ => None,
    };
    let request = retarget(request, http2.then_some(destination.as_str())).map_err(TryError::Failed)?;
    let outlier = target.snapshot.outlier.as_ref();
    let mut last_error = String::new();
    for endpoint in upstream.balancer.order(&addresses, policy, key) {
        let Some(to) = endpoints.iter().find(|e| e.address == endpoint) else { continue };
        let tls = target.client_tls();
        // HTTP/1.1 links belong to this application connection: held for the exchange.
        let mut h1_links = if http2 { None } else { Some(links.lock().await) };
        // Connecting may move on to the next endpoint: nothing was sent yet.
        let connected = match h1_links.as_deref_mut() {
            None => upstream.pool.sender(to, destination, tls, connect_timeout).await.map(Sender::H2),
            Some(h1_links) => h1_links.sender(to, destination, tls, connect_timeout).await.map(Sender::H1),
        };
        let sender = match connected {
            Ok(sender) => sender,
            Err(error) => {
                // A service name no TLS server name can carry is not the endpoint's fault.
                crate::tls::check_service_name(destination).map_err(|e| TryError::Failed(e.to_string()))?;
                upstream.balancer.record(endpoint, true, outlier, endpoints.len());
                last_error = error;
                continue;
            }
        };
        let _in_flight = upstream.balancer.start(endpoint);
        let answer = exchange(sender.send(request), endpoint, per_try).await;
        upstream.balancer.record(endpoint, failed(&answer), outlier, endpoints.len());
        return answer;
    }
    Err(TryError::Unreachable(last_error))
}

/// A connection to one endpoint, ready for a request: a pooled HTTP/2
/// connection, or this application connection's HTTP/1.1 link.
enum Sender<'a> {
    H2(hyper::client::conn::http2::SendRequest<Body>),
    H1(&'a mut hyper::client::conn::http1::SendRequest<Body>),
}

impl Sender<'_> {
    async fn send(self, request: Request<Body>) -> hyper::Result<Response<hyper::body::Incoming>> {
        match self {
            Sender::H2(mut sender) => sender.send_request(request).await,
            Sender::H1(sender) => sender.send_request(request).await,
        }
    }
}

/// Whether an exchange counts against its endpoint (outlier detection): it
/// failed, or the endpoint answered with a 5xx.
fn failed(answer: &Result<Response<Body>, TryError>) -> bool {
    answer.as_ref().map_or(true, |response| response.status().is_server_error())
}

/// Waits for the answer to a sent request, within `per_try` if set.
async fn exchange(
    sent: impl std::future::Future<Output = hyper::Result<Response<hyper::body::Incoming>>>,
    endpoint: SocketAddr,
    per_try: Option<Duration>,
) -> Result<Response<Body>, TryError> {
    let answer = match per_try {
        Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| TryError::TimedOut)?,
        None => sent.await,
    };
    answer
        .map(|response| {
            let mut response = response.map(BodyExt::boxed);
            response.extensions_mut().insert(UpstreamHost(endpoint));
            response
        })
        .map_err(|error| TryError::Failed(format!("at {endpoint}: {error}")))
}

/// Adds, sets and removes headers as `edits` say.
fn edit_headers(headers: &mut HeaderMap, edits: &HeaderEdits) {
    if edits.is_empty() {
        return;
    }
    for (name, value) in &edits.add {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            headers.append(name, value);
        }
    }
    for (name, value) in &edits.set {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            headers.insert(name, value);
        }
    }
    for name in &edits.remove {
        headers.remove(name.as_str());
    }
}

/// The URI with the route's matched prefix replaced by its `PrefixRewrite`.
fn rewrite_prefix(route: &Route, uri: &Uri) -> Option<Uri> {
    let rewrite = route.prefix_rewrite.as_deref()?;
    let Some(PathMatch::Prefix(prefix)) = &route.matches.path else { return None };
    let rest = uri.path().strip_prefix(prefix.as_str())?;
    let mut path = format!("{rewrite}{rest}");
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    Uri::try_from(path).ok()
}
