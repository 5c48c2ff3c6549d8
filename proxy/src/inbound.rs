//! The public side of a sidecar: accepts mutual TLS from other sidecars,
//! reads the caller's service from its certificate, asks the authorizer
//! (the intentions, decided from local state), and splices an allowed
//! connection to the local application.
//!
//! A refused caller learns nothing beyond a closed connection; the sidecar
//! logs who was refused and why.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::identity::SpiffeId;

/// How long a caller has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the local application may take.
const APPLICATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Decides whether `caller` may connect; `Err` carries the reason to log.
pub type Authorizer = Arc<dyn Fn(&SpiffeId) -> Result<(), String> + Send + Sync>;

/// What the inbound listener needs; the TLS configuration is replaced live
/// (leaf renewal, root rotation) and applies to new handshakes.
#[derive(Clone)]
pub struct Inbound {
    /// `None` until the sidecar has a leaf: connections are closed meanwhile.
    pub tls: watch::Receiver<Option<Arc<ServerConfig>>>,
    pub authorize: Authorizer,
    pub application: SocketAddr,
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, inbound: Inbound, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "inbound accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let inbound = inbound.clone();
        tokio::spawn(async move {
            if let Err(reason) = handle(stream, &inbound).await {
                tracing::info!(%peer, %reason, "inbound connection refused");
            }
        });
    }
}

async fn handle(stream: TcpStream, inbound: &Inbound) -> Result<(), String> {
    let Some(config) = inbound.tls.borrow().clone() else {
        return Err("this sidecar has no certificate yet".into());
    };
    let _ = stream.set_nodelay(true);
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let certificate =
        tls.get_ref().1.peer_certificates().and_then(|certs| certs.first()).ok_or("the caller sent no certificate")?;
    let caller = SpiffeId::from_certificate(certificate).map_err(|e| e.to_string())?;
    (inbound.authorize)(&caller).map_err(|reason| format!("{caller} denied: {reason}"))?;
    let mut application = tokio::time::timeout(APPLICATION_CONNECT_TIMEOUT, TcpStream::connect(inbound.application))
        .await
        .map_err(|_| "the local application did not accept in time".to_owned())?
        .map_err(|e| format!("cannot reach the local application at {}: {e}", inbound.application))?;
    let _ = application.set_nodelay(true);
    tracing::debug!(%caller, "inbound connection allowed");
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut application).await;
    Ok(())
}
