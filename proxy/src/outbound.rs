//! An upstream's local listener: the application connects to
//! `127.0.0.1:<local_bind_port>` in plain text, and the sidecar carries its
//! traffic over mutual TLS to one of the destination's healthy sidecars,
//! having checked that the peer's SPIFFE ID names the destination.
//!
//! For a `tcp` destination each connection is spliced to one endpoint; for
//! an HTTP-like one each request is sent on its own (see [`crate::http`]).
//! The destination's endpoints and protocol come from the current snapshot
//! at every connection and request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_api::proxy::Limits;

use crate::accept::accept_until;
use crate::access_log::{AccessLog, Entry, TcpSession};
use crate::balancer::{connection_key, Balancer};
use crate::http::{self, H2Pool};
use crate::metrics::{Direction, Metrics, Outcome};
use crate::runtime::{current, RuntimeWatch, UpstreamKey};

/// One upstream: the listener its connections arrive at, which of the
/// runtime's upstreams it is, and the state its connections share.
pub struct Upstream {
    pub bind: SocketAddr,
    pub key: UpstreamKey,
    pub runtime: RuntimeWatch,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub balancer: Balancer,
    pub pool: H2Pool,
    /// The application's connections open to this upstream now.
    connections: AtomicUsize,
    /// `MaxConcurrentRequests` as last seen, and its permits.
    request_slots: Mutex<Option<(u32, Arc<Semaphore>)>>,
    /// Requests waiting for a permit now.
    pending: AtomicUsize,
}

/// Why a request or connection was refused by the upstream's limits.
pub const OVERLOADED: &str = "overloaded";

/// A request's permission to go out under `MaxConcurrentRequests`.
pub struct RequestSlot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Upstream {
    /// The upstream listening at `bind` (its key in the snapshot).
    pub fn new(bind: SocketAddr, runtime: RuntimeWatch, metrics: Metrics, access_log: AccessLog) -> Upstream {
        Upstream::keyed(UpstreamKey::Listener(bind), bind, runtime, metrics, access_log)
    }

    /// The upstream `key` names, whose connections arrive at `bind`.
    pub fn keyed(
        key: UpstreamKey,
        bind: SocketAddr,
        runtime: RuntimeWatch,
        metrics: Metrics,
        access_log: AccessLog,
    ) -> Upstream {
        Upstream {
            bind,
            key,
            runtime,
            metrics,
            access_log,
            balancer: Balancer::default(),
            pool: H2Pool::default(),
            connections: AtomicUsize::new(0),
            request_slots: Mutex::new(None),
            pending: AtomicUsize::new(0),
        }
    }

    /// A slot for one request under `limits`: at once, after waiting among
    /// at most `MaxPendingRequests` others, or `Err` with the limit that
    /// refused it.
    pub async fn request_slot(&self, limits: &Limits) -> Result<RequestSlot, String> {
        let Some(max) = limits.max_concurrent_requests else { return Ok(RequestSlot(None)) };
        let slots = {
            let mut current = self.request_slots.lock().unwrap_or_else(|p| p.into_inner());
            match &*current {
                Some((limit, slots)) if *limit == max => slots.clone(),
                _ => {
                    let slots = Arc::new(Semaphore::new(max as usize));
                    *current = Some((max, slots.clone()));
                    slots
                }
            }
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(RequestSlot(Some(permit)));
        }
        let max_pending = limits.max_pending_requests.unwrap_or(u32::MAX) as usize;
        if self.pending.fetch_add(1, Ordering::SeqCst) >= max_pending {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "{max} requests in flight (MaxConcurrentRequests) and {max_pending} waiting (MaxPendingRequests)"
            ));
        }
        let permit = slots.acquire_owned().await;
        self.pending.fetch_sub(1, Ordering::SeqCst);
        permit.map(|p| RequestSlot(Some(p))).map_err(|_| "the upstream's limits changed".to_owned())
    }

    /// Drops per-endpoint state of endpoints that are gone.
    pub fn retain(&self, endpoints: &[SocketAddr]) {
        self.balancer.retain(endpoints);
        self.pool.retain(endpoints);
    }
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, upstream: Arc<Upstream>, shutdown: impl Future<Output = ()>) {
    accept_until(&listener, "upstream", shutdown, move |stream, application| {
        handle(stream, application, upstream.clone())
    })
    .await
}

/// One application connection to `upstream`: limits, then spliced or served as HTTP.
pub(crate) async fn handle(stream: TcpStream, application: SocketAddr, upstream: Arc<Upstream>) {
    let _ = stream.set_nodelay(true);
    let _open = upstream.metrics.open(Direction::Outbound);
    let settings = current(&upstream.runtime)
        .and_then(|r| r.upstream(&upstream.key).map(|u| (u.snapshot.protocol, u.snapshot.limits.max_connections)));
    let (protocol, max_connections) = settings.unwrap_or_default();
    let open = upstream.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let _counted = CountedConnection(&upstream.connections);
    if max_connections.is_some_and(|max| open > max as usize) {
        upstream.metrics.connection(Direction::Outbound, Outcome::Failed);
        tracing::info!(bind = %upstream.bind, "refusing a connection: the upstream's MaxConnections is reached");
        refuse_overloaded(stream, protocol).await;
        return;
    }
    if protocol.is_http_like() {
        http::serve_outbound(stream, application, upstream.clone(), protocol).await;
        upstream.metrics.connection(Direction::Outbound, Outcome::Served);
        return;
    }
    match splice(stream, application, &upstream).await {
        Ok(()) => upstream.metrics.connection(Direction::Outbound, Outcome::Served),
        Err(reason) => {
            upstream.metrics.connection(Direction::Outbound, Outcome::Failed);
            tracing::warn!(bind = %upstream.bind, %reason, "upstream connection failed");
        }
    }
}

/// Counts an application connection until dropped.
struct CountedConnection<'a>(&'a AtomicUsize);

impl Drop for CountedConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes a connection over the upstream's `MaxConnections`; an HTTP one
/// first gets a 503 that says why.
async fn refuse_overloaded(mut stream: TcpStream, protocol: weft_api::mesh::Protocol) {
    if protocol.is_http_like() {
        let body = "weft: too many connections to this upstream (MaxConnections)\n";
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\n{}: {OVERLOADED}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            crate::http::ERROR_HEADER,
            body.len()
        );
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, response.as_bytes()).await;
    }
}

/// Splices one application connection to one endpoint of the destination.
async fn splice(mut local: TcpStream, application: SocketAddr, upstream: &Upstream) -> Result<(), String> {
    let runtime = current(&upstream.runtime).ok_or("this sidecar has no certificate yet")?;
    let target = runtime.upstream(&upstream.key).ok_or("this upstream was removed")?;
    let destination = &target.snapshot.destination;
    let endpoints: Vec<SocketAddr> = target.snapshot.endpoints.iter().map(|e| e.address).collect();
    if endpoints.is_empty() {
        return Err(format!("{destination} has no healthy instance"));
    }
    let timeout = Duration::from_millis(target.snapshot.connect_timeout_ms);
    let mut last_error = String::new();
    let policy = &target.snapshot.load_balancer;
    let key = connection_key(policy, application);
    for endpoint in upstream.balancer.order(&endpoints, policy, key) {
        let Some(to) = target.snapshot.endpoints.iter().find(|e| e.address == endpoint) else { continue };
        let connected = http::connect_tls(to, destination, target.client_tls(), timeout, None).await;
        if connected.is_err() {
            // A service name no TLS server name can carry is not the endpoint's fault.
            crate::tls::check_service_name(destination).map_err(|e| e.to_string())?;
        }
        upstream.balancer.record(endpoint, connected.is_err(), target.snapshot.outlier.as_ref(), endpoints.len());
        match connected {
            Ok(mut remote) => {
                let _in_flight = upstream.balancer.start(endpoint);
                let session = TcpSession::begin();
                let (received, sent) = tokio::io::copy_bidirectional(&mut local, &mut remote).await.unwrap_or_default();
                upstream.metrics.bytes(Direction::Outbound, received, sent);
                if let Some(logs) = &runtime.access_logs {
                    let ends = Entry {
                        upstream_host: Some(endpoint),
                        upstream_cluster: Some(destination.to_string()),
                        downstream_remote: Some(application),
                        downstream_local: Some(upstream.bind),
                        ..Entry::default()
                    };
                    let entry = session.entry(received, sent, ends);
                    upstream.access_log.log(logs, &entry);
                }
                return Ok(());
            }
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}
