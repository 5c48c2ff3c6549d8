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
//!
//! A service in `permissive` mode (service-defaults' `MutualTLSMode`) also
//! takes plaintext, told apart by its first byte: such connections are
//! spliced to the application unjudged (nobody proved who they are),
//! counted in `weft_proxy_inbound_plaintext_connections`, and closed if
//! the mode goes back to `strict`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use weft_api::ids::ServiceName;
use weft_api::intentions::ConnectionDecision;
use weft_api::proxy::MutualTlsMode;

use crate::accept::accept_until;
use crate::access_log::{AccessLog, Entry, TcpSession};
use crate::http::{self, LocalApp, APPLICATION_CONNECT_TIMEOUT};
use crate::identity::SpiffeId;
use crate::metrics::{Direction, Layer, Metrics, Outcome};
use crate::rate_limit::RateLimiter;
use crate::runtime::{current, Runtime, RuntimeWatch};
use crate::tls::ALPN_H2;

/// How long a caller has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the inbound listener shares between connections.
pub struct Inbound {
    pub runtime: RuntimeWatch,
    pub metrics: Metrics,
    pub app: LocalApp,
    pub limiter: RateLimiter,
    pub access_log: AccessLog,
}

impl Inbound {
    pub fn new(runtime: RuntimeWatch, metrics: Metrics, access_log: AccessLog) -> Inbound {
        Inbound { runtime, metrics, app: LocalApp::default(), limiter: RateLimiter::default(), access_log }
    }
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
    accept_until(&listener, "inbound", shutdown, move |stream, peer| {
        let inbound = inbound.clone();
        async move {
            let _open = inbound.metrics.open(Direction::Inbound);
            let refused = match handle(stream, peer, &inbound).await {
                Ok(()) => {
                    inbound.metrics.connection(Direction::Inbound, Outcome::Served);
                    return;
                }
                Err(Refused::Denied(reason)) => {
                    inbound.metrics.connection(Direction::Inbound, Outcome::Denied);
                    inbound.metrics.denied(Layer::L4);
                    tracing::info!(%peer, %reason, "inbound connection denied");
                    reason
                }
                Err(Refused::Failed(reason)) => {
                    inbound.metrics.connection(Direction::Inbound, Outcome::Failed);
                    tracing::info!(%peer, %reason, "inbound connection failed");
                    reason
                }
            };
            let logs = current(&inbound.runtime).and_then(|r| r.access_logs.clone()).filter(|l| l.listener_logs);
            if let Some(logs) = logs {
                let entry = Entry {
                    start: Some(SystemTime::now()),
                    downstream_remote: Some(peer),
                    flags: Some(refused),
                    ..Entry::default()
                };
                inbound.access_log.log(&logs, &entry);
            }
        }
    })
    .await
}

enum Refused {
    Denied(String),
    Failed(String),
}

/// Who is calling, as an inbound connection learned it.
#[derive(Clone, Debug)]
pub struct Downstream {
    /// `None` for plaintext (permissive mode): nobody proved anything.
    pub caller: Option<SpiffeId>,
    pub address: SocketAddr,
}

async fn handle(stream: TcpStream, peer: SocketAddr, inbound: &Arc<Inbound>) -> Result<(), Refused> {
    let failed = Refused::Failed;
    let runtime = current(&inbound.runtime).ok_or_else(|| failed("this sidecar has no certificate yet".into()))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = starts_with_tls(&stream).await.map_err(failed)? else {
        // A TCP health check (or port scan): nothing to refuse.
        tracing::debug!(%peer, "connection closed before sending anything");
        return Ok(());
    };
    if !tls {
        let service = &runtime.snapshot.service;
        return match runtime.snapshot.inbound.mutual_tls_mode {
            MutualTlsMode::Permissive => {
                inbound.metrics.plaintext_connections.inc();
                tracing::debug!(%peer, "plaintext connection let in (MutualTLSMode permissive)");
                let downstream = Downstream { caller: None, address: peer };
                splice(stream, runtime, downstream, strict_again(inbound.runtime.clone()), inbound).await
            }
            MutualTlsMode::Strict => Err(failed(format!(
                "plaintext connection refused: {service} accepts only mutual TLS (MutualTLSMode strict)"
            ))),
        };
    }
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
    let identity = SpiffeId::from_certificate(certificate).map_err(|e| failed(e.to_string()))?;
    let caller = identity.service.clone();
    let downstream = Downstream { caller: Some(identity), address: peer };
    // Judged by the newest snapshot, which may have come during the handshake.
    let runtime = current(&inbound.runtime).unwrap_or(runtime);
    let revoked_caller = || {
        let (runtime, caller) = (inbound.runtime.clone(), caller.clone());
        async move { format!("{caller}: open connection closed: {}", revoked(runtime, caller.clone()).await) }
    };
    match judge(&runtime, &caller) {
        Judgement::Deny(reason) => Err(Refused::Denied(format!("{caller}: {reason}"))),
        Judgement::Tcp => splice(tls, runtime, downstream, revoked_caller(), inbound).await,
        // A caller denied from the start gets 403s; one allowed at first is
        // cut off when a new snapshot denies it, streams and all.
        Judgement::Http if l4_denial(&runtime, &caller).is_some() => {
            let http2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
            http::serve_inbound(tls, http2, downstream, inbound.clone()).await.map_err(failed)
        }
        Judgement::Http => {
            let http2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
            tokio::select! {
                served = http::serve_inbound(tls, http2, downstream, inbound.clone()) => served.map_err(failed),
                reason = revoked_caller() => Err(Refused::Denied(reason)),
            }
        }
    }
}

/// Whether the caller opened with a TLS handshake record (0x16), read
/// without consuming it; `None` if it closed without sending anything.
async fn starts_with_tls(stream: &TcpStream) -> Result<Option<bool>, String> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Err(_) => Err("the caller sent nothing in time".into()),
        Ok(Err(error)) => Err(format!("cannot read from the caller: {error}")),
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) => Ok(Some(first[0] == TLS_HANDSHAKE_RECORD)),
    }
}

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Resolves once the service no longer accepts plaintext: open plaintext
/// connections close when permissive mode ends.
async fn strict_again(mut runtime: RuntimeWatch) -> String {
    loop {
        if runtime.changed().await.is_err() {
            return "the sidecar is stopping".to_owned();
        }
        if current(&runtime).is_some_and(|now| now.snapshot.inbound.mutual_tls_mode == MutualTlsMode::Strict) {
            return "plaintext connection closed: the service's MutualTLSMode is now strict".to_owned();
        }
    }
}

/// Splices an allowed connection to the application until either side
/// closes, or `revoked` says it may no longer stay open.
async fn splice<S>(
    mut downstream: S,
    runtime: Arc<Runtime>,
    who: Downstream,
    revoked: impl Future<Output = String>,
    inbound: &Inbound,
) -> Result<(), Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let failed = Refused::Failed;
    let application = runtime.snapshot.local_app;
    let session = TcpSession::begin();
    let mut app = tokio::time::timeout(APPLICATION_CONNECT_TIMEOUT, TcpStream::connect(application))
        .await
        .map_err(|_| failed("the local application did not accept in time".into()))?
        .map_err(|e| failed(format!("cannot reach the local application at {application}: {e}")))?;
    let _ = app.set_nodelay(true);
    tracing::debug!(caller = ?who.caller, "inbound connection allowed");
    let (outcome, bytes) = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut downstream, &mut app) => (Ok(()), copied.ok()),
        reason = revoked => (Err(Refused::Denied(reason)), None),
    };
    let (received, sent) = bytes.unwrap_or_default();
    inbound.metrics.bytes(Direction::Inbound, received, sent);
    if let Some(logs) = &runtime.access_logs {
        let flags = who.caller.is_none().then(|| "plaintext".to_owned());
        let entry = session.entry(received, sent, Entry { flags, ..local_app_entry(&runtime, &who) });
        inbound.access_log.log(logs, &entry);
    }
    outcome
}

/// What every inbound log line says about the two ends.
pub fn local_app_entry(runtime: &Runtime, who: &Downstream) -> Entry {
    Entry {
        upstream_host: Some(runtime.snapshot.local_app),
        upstream_cluster: Some("local_app".to_owned()),
        downstream_remote: Some(who.address),
        downstream_local: Some(runtime.snapshot.public_listener),
        peer_uri_san: who.caller.as_ref().map(|id| id.to_string()),
        ..Entry::default()
    }
}
