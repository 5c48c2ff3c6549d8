//! The webhook's TLS: a rustls server configuration from PEM files.
//!
//! The API server only calls webhooks over HTTPS, checking the certificate
//! against the `caBundle` of the webhook configuration. The files are read
//! once, at start-up: a renewed certificate is served after a restart (the
//! chart rolls the Deployment when its Secret changes), not reloaded in place.
//! PEM is read with rustls' own `pki_types` parser, as the proxy does.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{Error as RustlsError, ServerConfig};

/// PEM files that cannot make the webhook's TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("no PEM certificate in {}", .0.display())]
    NoCertificate(PathBuf),
    #[error("no PEM private key in {}", .0.display())]
    NoPrivateKey(PathBuf),
    #[error("the certificate and key make no TLS configuration: {0}")]
    Rustls(#[from] RustlsError),
}

/// ALPN: HTTP/2 when the API server offers it, else HTTP/1.1.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The server configuration for `cert_file` (the certificate first, then
/// any intermediates) and `key_file` (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoPrivateKey(key_file.to_owned()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}
