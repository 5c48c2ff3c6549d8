//! Target addresses. The benchmark commands only ever send load to this
//! machine, so every address they are given must resolve to loopback.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};

/// Resolves `addr` (`HOST:PORT`, optionally `http://`-prefixed) and insists
/// that it is a loopback address: these tools are for benchmarks on one
/// machine and must never send load elsewhere. `flag` names the option in
/// errors (e.g. `--addr`). Returns the first resolved address.
pub async fn resolve_loopback(flag: &str, addr: &str) -> anyhow::Result<SocketAddr> {
    if addr.starts_with("https://") {
        bail!("{flag} {addr}: https is not supported; give HOST:PORT of the plain-HTTP listener");
    }
    let host_port = addr.trim_start_matches("http://").trim_end_matches('/');
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(host_port)
        .await
        .with_context(|| format!("{flag} {addr}: could not resolve (expected HOST:PORT, e.g. 127.0.0.1:8500)"))?
        .collect();
    let Some(first) = resolved.first() else {
        bail!("{flag} {addr}: resolved to no address");
    };
    if let Some(remote) = resolved.iter().find(|a| !a.ip().is_loopback()) {
        bail!("{flag} {addr}: resolves to {remote}, which is not a loopback address; the benchmarks only target this machine");
    }
    Ok(*first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        assert!(resolve_loopback("--addr", "127.0.0.1:2379").await.is_ok());
        assert!(resolve_loopback("--addr", "http://[::1]:2379/").await.is_ok());
        assert!(resolve_loopback("--addr", "10.0.0.1:2379").await.is_err());
        assert!(resolve_loopback("--addr", "https://127.0.0.1:2379").await.is_err());
        assert!(resolve_loopback("--addr", "127.0.0.1").await.is_err());
    }
}
