//! gRPC checks: the standard health protocol, `grpc.health.v1.Health/Check`.
//!
//! The target is `host:port` to ask about the server as a whole (service `""`), or
//! `host:port/package.Service` to ask about one service, as in Consul. `SERVING` is passing;
//! any other status, an RPC error (tonic-health answers `NOT_FOUND` for a service it does not
//! know) or a failed connection is critical.
//!
//! The request carries the check's deadline (`grpc-timeout`), so the server can give up too.
//! With [`GrpcProbe::use_tls`] the connection is TLS (rustls, ALPN `h2`, certificates verified
//! as for HTTPS unless [`GrpcProbe::tls_skip_verify`]). This crate makes the connection itself
//! and hands it to tonic, so tonic's TLS features are not needed; the requests' `:scheme` is
//! `http` either way, which servers do not check.
//!
//! Outputs: `gRPC check 127.0.0.1:5000: success` (Consul's words), `gRPC check
//! 127.0.0.1:5000/x.Y: serving status NOT_SERVING`, or the error.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::output::error_chain;
use crate::transport::{self, Alpn, ConnectError, Io, Tls};
use crate::{HealthStatus, ProbeResult};

/// A gRPC check's target and transport.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcProbe {
    /// `host:port`, or `host:port/package.Service` to check one service.
    pub target: String,
    /// Connect with TLS.
    pub use_tls: bool,
    /// Accept any server certificate (with `use_tls`).
    pub tls_skip_verify: bool,
    /// The name to send as SNI and to verify the certificate against, instead of the host.
    pub tls_server_name: Option<String>,
}

impl GrpcProbe {
    /// A plain-text check of `target`.
    pub fn new(target: impl Into<String>) -> Self {
        GrpcProbe { target: target.into(), ..GrpcProbe::default() }
    }

    /// The `host:port` part of the target, and the service name (empty for the whole server).
    pub fn server_and_service(&self) -> (&str, &str) {
        self.target.split_once('/').unwrap_or((&self.target, ""))
    }
}

/// Asks the target's health service, giving up after `timeout`.
pub async fn run(probe: &GrpcProbe, timeout: Duration) -> ProbeResult {
    let prefix = format!("gRPC check {}", probe.target);
    match tokio::time::timeout(timeout, check(probe, timeout)).await {
        Ok(Ok(ServingStatus::Serving)) => ProbeResult::new(HealthStatus::Passing, format!("{prefix}: success")),
        Ok(Ok(status)) => ProbeResult::critical(format!("{prefix}: serving status {}", status.as_str_name())),
        Ok(Err(err)) => ProbeResult::critical(format!("{prefix}: {}", error_chain(&err))),
        Err(_) => ProbeResult::critical(format!("{prefix}: timed out after {timeout:?}")),
    }
}

#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("invalid target")]
    Target(#[source] tonic::transport::Error),
    #[error("target has no host")]
    NoHost,
    #[error("target has no port")]
    NoPort,
    #[error(transparent)]
    Connect(tonic::transport::Error),
    #[error("rpc error: code = {code:?} desc = {message}")]
    Rpc { code: tonic::Code, message: String },
}

impl From<tonic::Status> for CheckError {
    fn from(status: tonic::Status) -> Self {
        let mut message = status.message().to_owned();
        // A status made from a transport error carries it as its source, often with the same text.
        if let Some(source) = std::error::Error::source(&status) {
            let cause = error_chain(source);
            message = if cause.starts_with(&message) { cause } else { format!("{message}: {cause}") };
        }
        CheckError::Rpc { code: status.code(), message }
    }
}

async fn check(probe: &GrpcProbe, timeout: Duration) -> Result<ServingStatus, CheckError> {
    let (server, service) = probe.server_and_service();
    let endpoint = Endpoint::from_shared(format!("http://{server}")).map_err(CheckError::Target)?;
    let host = endpoint.uri().host().ok_or(CheckError::NoHost)?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = endpoint.uri().port_u16().ok_or(CheckError::NoPort)?;
    let tls = probe.use_tls.then(|| Tls {
        server_name: probe.tls_server_name.clone().unwrap_or_else(|| host.clone()),
        skip_verify: probe.tls_skip_verify,
    });

    let channel = endpoint.connect_with_connector(Connector { host, port, tls }).await.map_err(CheckError::Connect)?;
    let mut request = tonic::Request::new(HealthCheckRequest { service: service.to_owned() });
    request.set_timeout(timeout);
    let response = HealthClient::new(channel).check(request).await?;
    Ok(response.into_inner().status())
}

/// Dials the probe's server (ignoring the URI tonic passes, which names the same place).
#[derive(Clone, Debug)]
struct Connector {
    host: String,
    port: u16,
    tls: Option<Tls>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let Connector { host, port, tls } = self.clone();
        Box::pin(async move { transport::connect(&host, port, tls.as_ref(), Alpn::H2).await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{closed_port, GrpcServer, TEST_TIMEOUT};

    async fn check(probe: GrpcProbe) -> ProbeResult {
        run(&probe, TEST_TIMEOUT).await
    }

    #[tokio::test]
    async fn serving_server_is_passing() {
        let server = GrpcServer::plain().await;
        let target = server.address().to_string();

        let result = check(GrpcProbe::new(&target)).await;

        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert_eq!(result.output, format!("gRPC check {target}: success"));
    }

    #[tokio::test]
    async fn serving_service_is_passing() {
        let server = GrpcServer::plain().await;

        let result = check(GrpcProbe::new(format!("{}/weft.Up", server.address()))).await;

        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
    }

    #[tokio::test]
    async fn not_serving_service_is_critical() {
        let server = GrpcServer::plain().await;
        let target = format!("{}/weft.Down", server.address());

        let result = check(GrpcProbe::new(&target)).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert_eq!(result.output, format!("gRPC check {target}: serving status NOT_SERVING"));
    }

    #[tokio::test]
    async fn unknown_service_is_critical() {
        let server = GrpcServer::plain().await;

        let result = check(GrpcProbe::new(format!("{}/weft.Nobody", server.address()))).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.contains("rpc error: code = NotFound"), "{}", result.output);
    }

    #[tokio::test]
    async fn closed_port_is_critical() {
        let target = closed_port().await.to_string();

        let result = check(GrpcProbe::new(&target)).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.contains(&format!("dial tcp {target}")), "{}", result.output);
    }

    #[tokio::test]
    async fn plain_client_against_a_tls_server_is_critical() {
        let server = GrpcServer::tls().await;

        let result = run(&GrpcProbe::new(server.address().to_string()), Duration::from_secs(2)).await;

        assert_eq!(result.status, HealthStatus::Critical);
    }

    #[tokio::test]
    async fn tls_with_skip_verify_is_passing() {
        let server = GrpcServer::tls().await;
        let probe = GrpcProbe {
            use_tls: true,
            tls_skip_verify: true,
            ..GrpcProbe::new(format!("{}/weft.Up", server.address()))
        };

        let result = check(probe).await;

        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
    }

    #[tokio::test]
    async fn tls_rejects_a_self_signed_certificate() {
        let server = GrpcServer::tls().await;
        let probe = GrpcProbe { use_tls: true, ..GrpcProbe::new(server.address().to_string()) };

        let result = check(probe).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.contains("invalid peer certificate"), "{}", result.output);
    }

    #[tokio::test]
    async fn malformed_targets_are_critical() {
        for target in ["", "no-port", "bad host:1"] {
            let result = check(GrpcProbe::new(target)).await;
            assert_eq!(result.status, HealthStatus::Critical, "{target:?}: {}", result.output);
        }
    }

    #[test]
    fn target_splits_into_server_and_service() {
        assert_eq!(GrpcProbe::new("h:1").server_and_service(), ("h:1", ""));
        assert_eq!(GrpcProbe::new("h:1/a.B").server_and_service(), ("h:1", "a.B"));
        assert_eq!(GrpcProbe::new("h:1/a/b").server_and_service(), ("h:1", "a/b"));
    }
}
