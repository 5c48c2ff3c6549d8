//! An ingress gateway (`weft connect gateway --kind ingress`): HTTP
//! listeners on the edge that send each request, by its `Host`, to a mesh
//! service, and on through that service's discovery chain (so path routes,
//! splits and retries apply as they do from any sidecar).
//!
//! The gateway is a mesh client like any other: it holds a leaf for its own
//! service name and calls the services' sidecars over mutual TLS, so their
//! intentions judge it as the source. On the edge it speaks plain HTTP, or
//! terminates TLS with a certificate given to it on its own host (never
//! replicated). Listeners follow the gateway's `ingress-gateway` entry:
//! opened and closed as it changes, without a restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use weft_api::ids::ServiceName;

use crate::accept::{accept_until, ListenerSet};
use crate::access_log::{AccessLog, Entry, Exchange};
use crate::http::{local_response, Body, ClientAddr, H1Links};
use crate::metrics::{Direction, Metrics, Outcome};
use crate::outbound::Upstream;
use crate::routing::send_via;
use crate::runtime::{current, Runtime, RuntimeWatch};

/// Why the gateway answered itself.
pub const NO_SERVICE_FOR_HOST: &str = "no service for this host";

/// What every listener of the gateway shares.
struct Gateway {
    runtime: RuntimeWatch,
    metrics: Metrics,
    access_log: AccessLog,
    /// The edge certificate, if the gateway was given one.
    edge_tls: Option<Arc<ServerConfig>>,
    /// Each exposed service's limits, balancer and connections, by
    /// listener and service; kept across snapshots.
    upstreams: Mutex<HashMap<(SocketAddr, ServiceName), Arc<Upstream>>>,
}

/// Serves the listeners of the current snapshot until `shutdown` resolves.
pub async fn serve(
    mut runtime: RuntimeWatch,
    metrics: Metrics,
    access_log: AccessLog,
    edge_tls: Option<Arc<ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let gateway =
        Arc::new(Gateway { runtime: runtime.clone(), metrics, access_log, edge_tls, upstreams: Mutex::default() });
    let mut listeners = ListenerSet::default();
    tokio::pin!(shutdown);
    loop {
        if let Some(now) = current(&runtime) {
            reconcile(&now, &mut listeners, &gateway).await;
        }
        tokio::select! {
            _ = &mut shutdown => break,
            changed = runtime.changed() => if changed.is_err() { break },
        }
    }
}

/// Opens the listeners the snapshot has and closes the others.
async fn reconcile(now: &Runtime, listeners: &mut ListenerSet, gateway: &Arc<Gateway>) {
    let wanted: Vec<SocketAddr> = now.ingress.keys().copied().collect();
    let open = |bind: SocketAddr| {
        let listener = &now.ingress[&bind].listener;
        if listener.tls && gateway.edge_tls.is_none() {
            tracing::error!(%bind, "this listener terminates TLS, but the gateway has no certificate (--tls-cert-file, --tls-key-file)");
            return false;
        }
        tracing::info!(%bind, protocol = %listener.protocol, tls = listener.tls, services = listener.services.len(), "opening an ingress listener");
        true
    };
    listeners
        .reconcile("ingress", &wanted, open, |socket, bind, stopped| {
            let gateway = gateway.clone();
            async move {
                accept_until(&socket, "ingress", async move { drop(stopped.await) }, move |stream, peer| {
                    serve_connection(stream, bind, peer, gateway.clone())
                })
                .await
            }
        })
        .await;
}

/// One edge connection, TLS terminated if its listener says so.
async fn serve_connection(stream: TcpStream, bind: SocketAddr, peer: SocketAddr, gateway: Arc<Gateway>) {
    let _open = gateway.metrics.open(Direction::Inbound);
    let _ = stream.set_nodelay(true);
    let tls = current(&gateway.runtime).and_then(|r| r.ingress.get(&bind).map(|l| l.listener.tls));
    let served = match (tls, &gateway.edge_tls) {
        (Some(true), Some(config)) => match TlsAcceptor::from(config.clone()).accept(stream).await {
            Ok(stream) => serve_http(stream, bind, peer, &gateway).await,
            Err(error) => Err(format!("TLS handshake failed: {error}")),
        },
        _ => serve_http(stream, bind, peer, &gateway).await,
    };
    let outcome = if served.is_ok() { Outcome::Served } else { Outcome::Failed };
    gateway.metrics.connection(Direction::Inbound, outcome);
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "ingress connection ended");
    }
}

/// HTTP/1.1 or HTTP/2 on one edge connection.
async fn serve_http<S>(stream: S, bind: SocketAddr, peer: SocketAddr, gateway: &Arc<Gateway>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let links = Arc::new(tokio::sync::Mutex::new(H1Links::default()));
    let service = service_fn(|request: Request<Incoming>| {
        let (gateway, links) = (gateway.clone(), links.clone());
        async move {
            let started = Instant::now();
            let mut request = request.map(BodyExt::boxed);
            request.extensions_mut().insert(ClientAddr(peer));
            let response = route(request, bind, peer, &gateway, &links).await;
            gateway.metrics.request(Direction::Inbound, response.status().as_u16(), started.elapsed().as_secs_f64());
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|error| error.to_string())
}

/// One request: the service its host names, then that service's chain.
async fn route(
    request: Request<Body>,
    bind: SocketAddr,
    peer: SocketAddr,
    gateway: &Gateway,
    links: &tokio::sync::Mutex<H1Links>,
) -> Response<Body> {
    let Some(runtime) = current(&gateway.runtime) else {
        return local_response(StatusCode::SERVICE_UNAVAILABLE, "not ready", "weft: the gateway is not ready\n".into());
    };
    let Some(listener) = runtime.ingress.get(&bind) else {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no listener",
            "weft: this listener was removed\n".into(),
        );
    };
    let host = request
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| request.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).map(strip_port))
        .unwrap_or_default();
    let Some(target) = listener.service_for(&host) else {
        return local_response(
            StatusCode::NOT_FOUND,
            NO_SERVICE_FOR_HOST,
            format!("weft: this gateway exposes no service for host {host:?} on port {}\n", bind.port()),
        );
    };
    let destination = target.snapshot.destination.clone();
    let upstream = {
        let mut upstreams = gateway.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        upstreams
            .entry((bind, destination.clone()))
            .or_insert_with(|| {
                Arc::new(Upstream::new(
                    bind,
                    gateway.runtime.clone(),
                    gateway.metrics.clone(),
                    gateway.access_log.clone(),
                ))
            })
            .clone()
    };
    match runtime.access_logs.clone() {
        None => send_via(request, target, &upstream, links).await,
        Some(logs) => {
            let base = Entry {
                upstream_cluster: Some(destination.to_string()),
                downstream_remote: Some(peer),
                downstream_local: Some(bind),
                ..Entry::default()
            };
            let (exchange, request) = Exchange::begin(request, base);
            let response = send_via(request, target, &upstream, links).await;
            exchange.finish(response, gateway.access_log.clone(), logs)
        }
    }
}

/// The host of a `Host` header: `name:port`, `[v6]:port`, or no port.
fn strip_port(host: &str) -> String {
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default().to_owned();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_lose_their_port() {
        assert_eq!(strip_port("api.example.com:8080"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:8080"), "::1");
    }
}
