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
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::balancer::Balancer;
use crate::http::{self, H2Pool};
use crate::metrics::{Direction, Metrics, Outcome};
use crate::runtime::{current, RuntimeWatch};

/// One upstream: its listener's address (its key in the snapshot), and the
/// state its connections share.
pub struct Upstream {
    pub bind: SocketAddr,
    pub runtime: RuntimeWatch,
    pub metrics: Metrics,
    pub balancer: Balancer,
    pub pool: H2Pool,
}

impl Upstream {
    pub fn new(bind: SocketAddr, runtime: RuntimeWatch, metrics: Metrics) -> Upstream {
        Upstream { bind, runtime, metrics, balancer: Balancer::default(), pool: H2Pool::default() }
    }

    /// Drops per-endpoint state of endpoints that are gone.
    pub fn retain(&self, endpoints: &[SocketAddr]) {
        self.balancer.retain(endpoints);
        self.pool.retain(endpoints);
    }
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, upstream: Arc<Upstream>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let _open = upstream.metrics.open(Direction::Outbound);
            let protocol = current(&upstream.runtime)
                .and_then(|r| r.upstreams.get(&upstream.bind).map(|u| u.snapshot.protocol))
                .unwrap_or_default();
            if protocol.is_http_like() {
                http::serve_outbound(stream, upstream.clone(), protocol).await;
                upstream.metrics.connection(Direction::Outbound, Outcome::Served);
                return;
            }
            match splice(stream, &upstream).await {
                Ok(()) => upstream.metrics.connection(Direction::Outbound, Outcome::Served),
                Err(reason) => {
                    upstream.metrics.connection(Direction::Outbound, Outcome::Failed);
                    tracing::warn!(bind = %upstream.bind, %reason, "upstream connection failed");
                }
            }
        });
    }
}

/// Splices one application connection to one endpoint of the destination.
async fn splice(mut local: TcpStream, upstream: &Upstream) -> Result<(), String> {
    let runtime = current(&upstream.runtime).ok_or("this sidecar has no certificate yet")?;
    let target = runtime.upstreams.get(&upstream.bind).ok_or("this upstream was removed")?;
    let destination = &target.snapshot.destination;
    let endpoints: Vec<SocketAddr> = target.snapshot.endpoints.iter().map(|e| e.address).collect();
    if endpoints.is_empty() {
        return Err(format!("{destination} has no healthy instance"));
    }
    let timeout = Duration::from_millis(target.snapshot.connect_timeout_ms);
    let mut last_error = String::new();
    for endpoint in upstream.balancer.order(&endpoints, target.snapshot.load_balancer) {
        match http::connect_tls(endpoint, destination, target.client_tls.clone(), timeout, None).await {
            Ok(mut remote) => {
                let _in_flight = upstream.balancer.start(endpoint);
                if let Ok((sent, received)) = tokio::io::copy_bidirectional(&mut local, &mut remote).await {
                    upstream.metrics.bytes(Direction::Outbound, sent, received);
                }
                return Ok(());
            }
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}
