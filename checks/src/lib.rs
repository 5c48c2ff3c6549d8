//! Health check probes, as a Consul agent runs them, and the debounce their results go through.
//!
//! The agent owns scheduling (interval, jitter) and writes results to the catalog; this crate
//! runs one probe at a time, bounded by a timeout, and turns what it saw into a
//! [`HealthStatus`] plus a human-readable output, worded like Consul's so operators recognise it.
//!
//! Modules:
//!
//! - [`http`]: `GET`/`POST`/... a URL over HTTP or HTTPS; 2xx passing, 429 warning, else critical.
//! - [`tcp`]: open a TCP connection; success is passing.
//! - [`grpc`]: the standard `grpc.health.v1.Health/Check` call, plain or over TLS.
//! - [`script`]: run a program (no shell); exit 0 passing, 1 warning, else critical.
//! - [`debounce`]: Consul's `SuccessBeforePassing` / `FailuresBeforeWarning` /
//!   `FailuresBeforeCritical` counters, as pure logic.
//!
//! Private helpers: `transport` (TCP and rustls client connections shared by HTTP and gRPC) and
//! `output` (truncation and error formatting).
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use weft_checks::{run, Probe};
//!
//! let probe = Probe::Tcp { address: "127.0.0.1:8080".into() };
//! let result = run(&probe, Duration::from_secs(10)).await;
//! println!("{}: {}", result.status.as_str(), result.output);
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod debounce;
pub mod grpc;
pub mod http;
pub mod script;
pub mod tcp;

mod output;
mod transport;

#[cfg(test)]
mod test_support;

use std::time::Duration;

pub use weft_api::catalog::HealthStatus;

pub use crate::debounce::Debounce;
pub use crate::grpc::GrpcProbe;
pub use crate::http::HttpProbe;

/// The most bytes of a response body or a script's output kept in [`ProbeResult::output`]
/// (Consul's default `check_output_max_size`).
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024;

/// One health check to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP(S) request; see [`http`].
    Http(HttpProbe),
    /// A TCP connect to `address` (`host:port`); see [`tcp`].
    Tcp { address: String },
    /// A `grpc.health.v1` call; see [`grpc`].
    Grpc(GrpcProbe),
    /// A program and its arguments, run without a shell; see [`script`].
    Script { args: Vec<String> },
}

/// What one probe run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// `Passing`, `Warning` or `Critical`; probes never report `Maintenance`.
    pub status: HealthStatus,
    /// Human-readable detail for the catalog's `Output` field.
    pub output: String,
}

impl ProbeResult {
    pub(crate) fn new(status: HealthStatus, output: impl Into<String>) -> Self {
        ProbeResult { status, output: output.into() }
    }

    pub(crate) fn critical(output: impl Into<String>) -> Self {
        ProbeResult::new(HealthStatus::Critical, output)
    }
}

/// Runs one probe, never for longer than `timeout`.
///
/// A probe that runs out of time is `Critical`, with an output saying so; a script check's
/// process group is killed first.
pub async fn run(probe: &Probe, timeout: Duration) -> ProbeResult {
    match probe {
        Probe::Http(probe) => http::run(probe, timeout).await,
        Probe::Tcp { address } => tcp::run(address, timeout).await,
        Probe::Grpc(probe) => grpc::run(probe, timeout).await,
        Probe::Script { args } => script::run(args, timeout).await,
    }
}
