//! TCP checks: passing when a connection to `host:port` opens, critical otherwise.
//!
//! A name that resolves to several addresses is tried address by address; the check passes if
//! any accepts. The connection is closed as soon as it opens: nothing is written or read.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::{HealthStatus, ProbeResult};

/// Connects to `address`, giving up after `timeout`.
pub async fn run(address: &str, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => ProbeResult::new(HealthStatus::Passing, format!("TCP connect {address}: Success")),
        Ok(Err(err)) => ProbeResult::critical(format!("TCP connect {address}: {err}")),
        Err(_) => ProbeResult::critical(format!("TCP connect {address}: timed out after {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{closed_port, TEST_TIMEOUT};

    #[tokio::test]
    async fn open_port_passes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local addr").to_string();

        let result = run(&address, TEST_TIMEOUT).await;

        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert_eq!(result.output, format!("TCP connect {address}: Success"));
    }

    #[tokio::test]
    async fn closed_port_is_critical() {
        let address = closed_port().await.to_string();

        let result = run(&address, TEST_TIMEOUT).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.starts_with(&format!("TCP connect {address}: ")), "{}", result.output);
        assert!(result.output.contains("refused"), "{}", result.output);
    }

    #[tokio::test]
    async fn malformed_address_is_critical() {
        let result = run("no-port-here", TEST_TIMEOUT).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.starts_with("TCP connect no-port-here: "), "{}", result.output);
    }
}
