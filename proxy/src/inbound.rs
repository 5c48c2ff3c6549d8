//! The public side of a sidecar: accepts mutual TLS from other sidecars,
//! reads the caller's service from its certificate, asks the authorizer
//! (the intentions, decided from local state), and splices an allowed
//! connection to the local application.
//!
//! A refused caller learns nothing beyond a closed connection; the sidecar
//! logs who was refused and why. Open connections are authorized again
//! twice a second, so a new deny closes them within a second.

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
/// How often an open connection's caller is authorized again.
const REAUTHORIZE_EVERY: Duration = Duration::from_millis(500);
/// How long connecting to the local application may take.
const APPLICATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Decides whether `caller` may connect; `Err` carries the reason to log.
/// Asynchronous so that it may ask the local agent, which answers from its
/// own copy of the intentions.
pub type Authorizer = Arc<dyn Fn(SpiffeId) -> BoxFuture<Result<(), String>> + Send + Sync>;

/// A boxed future, as an [`Authorizer`] returns.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

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
    (inbound.authorize)(caller.clone()).await.map_err(|reason| format!("{caller} denied: {reason}"))?;
    let mut application = tokio::time::timeout(APPLICATION_CONNECT_TIMEOUT, TcpStream::connect(inbound.application))
        .await
        .map_err(|_| "the local application did not accept in time".to_owned())?
        .map_err(|e| format!("cannot reach the local application at {}: {e}", inbound.application))?;
    let _ = application.set_nodelay(true);
    tracing::debug!(%caller, "inbound connection allowed");
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut tls, &mut application) => Ok(()),
        reason = revoked(&inbound.authorize, &caller) => Err(format!("{caller}: open connection closed: {reason}")),
    }
}

/// Resolves once `caller` is no longer authorized (checked every
/// [`REAUTHORIZE_EVERY`]), so a new deny intention closes open connections
/// too, not only new ones.
async fn revoked(authorize: &Authorizer, caller: &SpiffeId) -> String {
    loop {
        tokio::time::sleep(REAUTHORIZE_EVERY).await;
        if let Err(reason) = authorize(caller.clone()).await {
            return reason;
        }
    }
}
