//! The public side of a sidecar: accepts mutual TLS from other sidecars,
//! reads the caller's service from its certificate and judges it by the
//! intentions of the current snapshot, with no round trip to anyone.
//!
//! A `tcp` service's allowed connections are spliced to the application. An
//! HTTP-like service's are served as HTTP (see [`crate::http`]), so L7
//! permissions apply to each request. Either way an open connection is
//! judged again whenever a new snapshot arrives, and closed at once if its
//! caller is now denied. A refused caller learns nothing beyond a closed
//! connection; the sidecar logs who was refused and why.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use weft_api::ids::ServiceName;
use weft_api::intentions::ConnectionDecision;

use crate::accept::accept_until;
use crate::http::{self, LocalApp, APPLICATION_CONNECT_TIMEOUT};
use crate::identity::SpiffeId;
use crate::metrics::{Direction, Layer, Metrics, Outcome};
use crate::runtime::{current, Runtime, RuntimeWatch};
use crate::tls::ALPN_H2;

/// How long a caller has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the inbound listener shares between connections.
pub struct Inbound {
    pub runtime: RuntimeWatch,
    pub metrics: Metrics,
    pub app: LocalApp,
}

/// How a caller's connection is to be served, by the intentions now.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    Deny(String),
    /// Spliced to the application (a `tcp` service).
    Tcp,
    /// Served as HTTP, each request judged on its own: a denied caller gets
    /// 403s that say why, rather than a closed connection.
    Http,
}

/// Judges a connection from `caller` by `runtime`'s intentions.
pub fn judge(runtime: &Runtime, caller: &ServiceName) -> Judgement {
    if runtime.snapshot.protocol.is_http_like() {
        return Judgement::Http;
    }
    match l4_denial(runtime, caller) {
        Some(reason) => Judgement::Deny(reason),
        None => Judgement::Tcp,
    }
}

/// Why a whole connection from `caller` is denied, if it is: for a `tcp`
/// service any deny (an L7 rule counts as one); for an HTTP service only
/// a deny that no request could escape.
fn l4_denial(runtime: &Runtime, caller: &ServiceName) -> Option<String> {
    if runtime.snapshot.protocol.is_http_like() {
        match runtime.intentions.decide_connection(caller) {
            ConnectionDecision::Decided(decision) if !decision.allowed() => Some(decision.reason),
            _ => None,
        }
    } else {
        let decision = runtime.intentions.decide_l4(caller);
        (!decision.allowed()).then_some(decision.reason)
    }
}

/// Resolves once a new snapshot denies every connection from `caller`,
/// with the reason.
pub async fn revoked(mut runtime: RuntimeWatch, caller: ServiceName) -> String {
    loop {
        if runtime.changed().await.is_err() {
            // The sidecar is stopping: the connection goes with it.
            return "the sidecar is stopping".to_owned();
        }
        if let Some(reason) = current(&runtime).and_then(|now| l4_denial(&now, &caller)) {
            return reason;
        }
    }
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>, shutdown: impl Future<Output = ()>) {
    accept_until(&listener, "inbound", shutdown, |stream, peer| {
        let inbound = inbound.clone();
        tokio::spawn(async move {
            let _open = inbound.metrics.open(Direction::Inbound);
            match handle(stream, &inbound).await {
                Ok(()) => inbound.metrics.connection(Direction::Inbound, Outcome::Served),
                Err(Refused::Denied(reason)) => {
                    inbound.metrics.connection(Direction::Inbound, Outcome::Denied);
                    inbound.metrics.denied(Layer::L4);
                    tracing::info!(%peer, %reason, "inbound connection denied");
                }
                Err(Refused::Failed(reason)) => {
                    inbound.metrics.connection(Direction::Inbound, Outcome::Failed);
                    tracing::info!(%peer, %reason, "inbound connection failed");
                }
            }
        });
    })
    .await
}

enum Refused {
    Denied(String),
    Failed(String),
}

async fn handle(stream: TcpStream, inbound: &Arc<Inbound>) -> Result<(), Refused> {
    let failed = Refused::Failed;
    let runtime = current(&inbound.runtime).ok_or_else(|| failed("this sidecar has no certificate yet".into()))?;
    let _ = stream.set_nodelay(true);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(runtime.server_tls.clone()).accept(stream))
        .await
        .map_err(|_| failed("handshake timed out".into()))?
        .map_err(|e| failed(format!("TLS handshake failed: {e}")))?;
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| failed("the caller sent no certificate".into()))?;
    let caller = SpiffeId::from_certificate(certificate).map_err(|e| failed(e.to_string()))?.service;
    // Judged by the newest snapshot, which may have come during the handshake.
    let runtime = current(&inbound.runtime).unwrap_or(runtime);
    match judge(&runtime, &caller) {
        Judgement::Deny(reason) => Err(Refused::Denied(format!("{caller}: {reason}"))),
        Judgement::Tcp => splice(tls, runtime.snapshot.local_app, caller, inbound).await,
        // A caller denied from the start gets 403s; one allowed at first is
        // cut off when a new snapshot denies it, streams and all.
        Judgement::Http if l4_denial(&runtime, &caller).is_some() => {
            let http2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
            http::serve_inbound(tls, http2, caller.clone(), inbound.clone()).await.map_err(failed)
        }
        Judgement::Http => {
            let http2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
            tokio::select! {
                served = http::serve_inbound(tls, http2, caller.clone(), inbound.clone()) => served.map_err(failed),
                reason = revoked(inbound.runtime.clone(), caller.clone()) => {
                    Err(Refused::Denied(format!("{caller}: open connection closed: {reason}")))
                }
            }
        }
    }
}

async fn splice(
    mut tls: TlsStream<TcpStream>,
    application: SocketAddr,
    caller: ServiceName,
    inbound: &Inbound,
) -> Result<(), Refused> {
    let failed = Refused::Failed;
    let mut app = tokio::time::timeout(APPLICATION_CONNECT_TIMEOUT, TcpStream::connect(application))
        .await
        .map_err(|_| failed("the local application did not accept in time".into()))?
        .map_err(|e| failed(format!("cannot reach the local application at {application}: {e}")))?;
    let _ = app.set_nodelay(true);
    tracing::debug!(%caller, "inbound connection allowed");
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut tls, &mut app) => {
            if let Ok((received, sent)) = copied {
                inbound.metrics.bytes(Direction::Inbound, received, sent);
            }
            Ok(())
        }
        reason = revoked(inbound.runtime.clone(), caller.clone()) => {
            Err(Refused::Denied(format!("{caller}: open connection closed: {reason}")))
        }
    }
}
