//! kv-load's HTTPS client, for targets whose client port speaks TLS (etcd
//! with `--cert-file`, run by `bench/raft-kv.sh` as `etcd-tls`): one
//! HTTP/1.1 keep-alive connection over rustls per load client, opened on
//! first use and again after it breaks, as weft_api's plain-HTTP client
//! does. The server's certificate is verified against `--ca-file` and the
//! address's IP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use weft_api::client::{ClientError, Response};

/// A TLS connector trusting the PEM certificates in `ca_file` (TLS 1.2 or
/// 1.3, ring's default cipher suites, no client certificate).
pub fn connector(ca_file: &Path) -> anyhow::Result<TlsConnector> {
    let pem = std::fs::read(ca_file).with_context(|| format!("--ca-file {}", ca_file.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("--ca-file {}: bad PEM", ca_file.display()))?;
        roots.add(cert).with_context(|| format!("--ca-file {}: unusable CA certificate", ca_file.display()))?;
    }
    if roots.is_empty() {
        bail!("--ca-file {}: no PEM certificate in it", ca_file.display());
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS client configuration")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One load client's HTTPS connection to one address.
pub struct HttpsClient {
    addr: SocketAddr,
    authority: String,
    connector: TlsConnector,
    timeout: Duration,
    /// Sent as `X-Consul-Token` with every request, if any.
    token: Option<String>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpsClient {
    pub fn new(addr: SocketAddr, connector: TlsConnector, timeout: Duration, token: Option<String>) -> Self {
        Self { addr, authority: addr.to_string(), connector, timeout, token, sender: None }
    }

    pub fn addr(&self) -> &str {
        &self.authority
    }

    /// Sends `method path` with `body` and reads the whole answer, within the timeout.
    pub async fn request(&mut self, method: Method, path: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        let url = format!("https://{}{path}", self.authority);
        let mut builder = Request::builder().method(method).uri(path).header(header::HOST, &self.authority);
        if let Some(token) = &self.token {
            builder = builder.header("X-Consul-Token", token);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::InvalidRequest { url: url.clone(), reason: e.to_string() })?;
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(reason)) => Err(ClientError::Unreachable { addr: self.authority.clone(), reason }),
            // The connection is dropped with the request: the next one opens a new one.
            Err(_) => Err(ClientError::TimedOut { url, after: timeout }),
        }
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Response, String> {
        // A kept connection the server closed meanwhile is replaced, not an error.
        let kept = match self.sender.take() {
            Some(mut kept) if !kept.is_closed() => kept.ready().await.ok().map(|()| kept),
            _ => None,
        };
        let mut sender = match kept {
            Some(kept) => kept,
            None => {
                let mut fresh = self.connect().await?;
                fresh.ready().await.map_err(|e| e.to_string())?;
                fresh
            }
        };
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        self.sender = Some(sender);
        Ok(Response { status: parts.status.as_u16(), headers: parts.headers, body: body.to_vec() })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
        // Requests are written whole; do not let Nagle hold back a TLS record's tail.
        tcp.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let name = ServerName::from(self.addr.ip());
        let tls = self.connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("kv-load-ca-test-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").expect("write the test file");
        let refused = super::connector(&path).err().map(|error| error.to_string());
        std::fs::remove_file(&path).ok();
        assert!(refused.is_some_and(|error| error.contains("no PEM certificate")));
        assert!(super::connector(std::path::Path::new("/nonexistent/ca.pem")).is_err());
    }
}
