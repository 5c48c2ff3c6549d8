//! The webhook's HTTPS server: `POST /mutate` takes an `AdmissionReview`
//! and answers with one; `GET /health` is for the kubelet's probes.
//!
//! A body that is not an `admission.k8s.io/v1` review is answered 400 with
//! the reason (the API server logs it; with the chart's `failurePolicy:
//! Ignore` the pod is still created, without a sidecar), one over
//! [`MAX_BODY_BYTES`] 413. Everything else is answered 200 with an allowed
//! review, whatever the pod: see [`crate::inject`].
//!
//! The caller binds the listener (tests use port 0). On `shutdown` the server
//! stops accepting, lets requests in flight finish (for at most
//! [`DRAIN_TIMEOUT`]) and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, AdmissionRequest, ReviewError};
use crate::inject::{self, Decision, InjectConfig, InjectConfigError};
use crate::tls::{self, TlsError};

/// The largest review accepted. The API server caps a whole object at about
/// 1.5 MiB, so a real pod never comes near it.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long a client has for its TLS handshake, and for sending a request's
/// headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight have to finish after shutdown; the API server
/// waits at most 30 s for a webhook.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `weft k8s webhook` needs besides its listener.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// The serving certificate (PEM, the leaf first), for the Service name
    /// the webhook configuration calls (`<service>.<namespace>.svc`).
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub inject: InjectConfig,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Config(#[from] InjectConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Serves the webhook on `listener` until `shutdown` completes. Fails only at
/// start-up, on invalid settings or unusable TLS files.
pub async fn run(
    config: WebhookConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    config.inject.validate()?;
    let acceptor = TlsAcceptor::from(tls::server_config(&config.tls_cert_file, &config.tls_key_file)?);
    tracing::info!(
        address = ?listener.local_addr().ok(),
        agent_image = %config.inject.agent_image,
        server_addr = %config.inject.server_addr,
        transparent_proxy = config.inject.transparent_proxy,
        inject_by_default = config.inject.inject_by_default,
        "sidecar-injection webhook listening"
    );
    let router = router(Arc::new(config.inject));
    let graceful = GracefulShutdown::new();

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection = serve_connection(stream, peer, acceptor.clone(), router.clone(), graceful.watcher());
                    tokio::spawn(connection);
                }
                Err(error) => {
                    // Out of file descriptors, usually: back off rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open after the drain timeout; returning without them");
    }
    tracing::info!("sidecar-injection webhook stopped");
    Ok(())
}

/// The routes, without TLS: what `run` serves on every connection.
fn router(inject: Arc<InjectConfig>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/health", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(inject)
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, tls: TlsAcceptor, router: Router, watcher: Watcher) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Why `/mutate` refused a body, answered in one place.
enum MutateError {
    Body(BytesRejection),
    Review(ReviewError),
}

async fn mutate(State(config): State<Arc<InjectConfig>>, body: Result<Bytes, BytesRejection>) -> Response {
    let request =
        body.map_err(MutateError::Body).and_then(|body| admission::parse_review(&body).map_err(MutateError::Review));
    let request = match request {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let (decision, response) = inject::review(&request, &config);
    log_decision(&request, &decision);
    Json(response.to_review()).into_response()
}

fn log_decision(request: &AdmissionRequest, decision: &Decision) {
    let uid = request.uid.0.as_str();
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let pod = request.object_display_name();
    match decision {
        Decision::Inject(injection) => tracing::info!(
            uid,
            namespace,
            pod,
            service = %injection.wiring.service,
            transparent_proxy = injection.wiring.transparent_proxy,
            "injected the Weft sidecar"
        ),
        Decision::Skip(reason) => tracing::debug!(uid, namespace, pod, %reason, "not injected"),
        Decision::Invalid(problems) => {
            for problem in problems {
                tracing::warn!(uid, namespace, pod, %problem, "Weft sidecar not injected");
            }
        }
    }
}

impl IntoResponse for MutateError {
    fn into_response(self) -> Response {
        match self {
            MutateError::Body(rejection) => {
                tracing::warn!(status = %rejection.status(), reason = %rejection.body_text(), "refused an admission request's body");
                rejection.into_response()
            }
            MutateError::Review(error) => {
                tracing::warn!(%error, "refused a request that is not an admission review");
                (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response()
            }
        }
    }
}
