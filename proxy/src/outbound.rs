//! An upstream's local listener: the application connects to
//! `127.0.0.1:<local_bind_port>` in plain TCP; the sidecar picks one of the
//! destination's healthy sidecars (round robin), opens mutual TLS to it,
//! checks that it serves the destination, and splices.
//!
//! Endpoints are replaced live. A connect failure moves on to the next
//! endpoint, so one dead instance costs a retry, not an error.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use weft_api::ids::ServiceName;

use crate::tls::server_name;

/// One upstream: where to send, and with which TLS configuration.
#[derive(Clone)]
pub struct Upstream {
    pub destination: ServiceName,
    /// The destination's healthy sidecars (their public addresses).
    pub endpoints: watch::Receiver<Vec<SocketAddr>>,
    /// Verifies the destination's SPIFFE ID; `None` until there is a leaf.
    pub tls: watch::Receiver<Option<Arc<ClientConfig>>>,
    pub connect_timeout: Duration,
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, upstream: Upstream, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (upstream, next) = (upstream.clone(), next.clone());
        tokio::spawn(async move {
            if let Err(reason) = handle(stream, &upstream, &next).await {
                tracing::warn!(destination = %upstream.destination, %reason, "upstream connection failed");
            }
        });
    }
}

async fn handle(mut local: TcpStream, upstream: &Upstream, next: &AtomicUsize) -> Result<(), String> {
    let _ = local.set_nodelay(true);
    let Some(config) = upstream.tls.borrow().clone() else {
        return Err("this sidecar has no certificate yet".into());
    };
    let endpoints = upstream.endpoints.borrow().clone();
    if endpoints.is_empty() {
        return Err("no healthy instance".into());
    }
    let connector = TlsConnector::from(config);
    let mut last_error = String::new();
    for _ in 0..endpoints.len() {
        let endpoint = endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
        let attempt = async {
            let tcp = TcpStream::connect(endpoint).await.map_err(|e| format!("connect to {endpoint}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            connector
                .connect(server_name(&upstream.destination), tcp)
                .await
                .map_err(|e| format!("TLS to {endpoint}: {e}"))
        };
        match tokio::time::timeout(upstream.connect_timeout, attempt).await {
            Ok(Ok(mut remote)) => {
                let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                return Ok(());
            }
            Ok(Err(error)) => last_error = error,
            Err(_) => last_error = format!("connect to {endpoint} timed out"),
        }
    }
    Err(last_error)
}
