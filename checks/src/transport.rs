//! Client connections for the HTTP and gRPC probes: TCP, optionally wrapped in rustls.
//!
//! Certificates are verified against the operating system's trust store, read once through
//! `rustls-native-certs`, as Go's `crypto/tls` does for Consul: a private CA installed on the
//! host is honoured. `tls_skip_verify` swaps in a verifier that accepts any certificate but
//! still checks the handshake signatures: the session is encrypted, just not authenticated.
//! The crypto provider (`ring`) is passed to each config, so no process-wide default is needed.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, InvalidDnsNameError, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

/// A connected byte stream, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// How to wrap a connection in TLS.
#[derive(Clone, Debug)]
pub(crate) struct Tls {
    /// Sent as SNI (unless it is an IP address) and matched against the certificate.
    pub(crate) server_name: String,
    /// Accept any certificate.
    pub(crate) skip_verify: bool,
}

/// The application protocol to offer in the TLS handshake.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Alpn {
    Http1,
    H2,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("dial tcp {address}")]
    Tcp {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid TLS server name {name:?}")]
    ServerName {
        name: String,
        #[source]
        source: InvalidDnsNameError,
    },
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
    #[error("TLS handshake with {server_name}")]
    Handshake {
        server_name: String,
        #[source]
        source: io::Error,
    },
}

/// Connects to `host:port` (a DNS name or a bare IP address, no brackets), then runs the TLS
/// handshake if `tls` says so.
pub(crate) async fn connect(host: &str, port: u16, tls: Option<&Tls>, alpn: Alpn) -> Result<Box<dyn Io>, ConnectError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| ConnectError::Tcp { address: host_port(host, port), source })?;
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let server_name = ServerName::try_from(tls.server_name.clone())
        .map_err(|source| ConnectError::ServerName { name: tls.server_name.clone(), source })?;
    let config = client_config(tls.skip_verify, alpn).await?;
    let stream = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|source| ConnectError::Handshake { server_name: tls.server_name.clone(), source })?;
    Ok(Box::new(stream))
}

/// `host:port`, bracketing an IPv6 address.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    weft_api::addr::join_host_port(host, port)
}

/// One client config per ALPN offer; both share the roots and the session cache.
struct Configs {
    http1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
}

impl Configs {
    fn new(base: ClientConfig) -> Self {
        let mut http1 = base.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut h2 = base;
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Configs { http1: Arc::new(http1), h2: Arc::new(h2) }
    }

    fn get(&self, alpn: Alpn) -> Arc<ClientConfig> {
        match alpn {
            Alpn::Http1 => self.http1.clone(),
            Alpn::H2 => self.h2.clone(),
        }
    }
}

static VERIFYING: OnceCell<Configs> = OnceCell::const_new();
static ACCEPTING_ANY: OnceCell<Configs> = OnceCell::const_new();

async fn client_config(skip_verify: bool, alpn: Alpn) -> Result<Arc<ClientConfig>, ConnectError> {
    let configs = if skip_verify {
        ACCEPTING_ANY.get_or_try_init(|| async { accepting_any() }).await?
    } else {
        VERIFYING.get_or_try_init(verifying).await?
    };
    Ok(configs.get(alpn))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

async fn verifying() -> Result<Configs, ConnectError> {
    // Reading the trust store is blocking file I/O; it happens once per process.
    let roots = tokio::task::spawn_blocking(system_roots).await.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "loading the system's trusted certificates failed");
        RootCertStore::empty()
    });
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(ConnectError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Configs::new(config))
}

fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "reading the system's trusted certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no trusted certificates found on this system: HTTPS and gRPC TLS checks will fail verification"
        );
    }
    tracing::debug!(added, ignored, "loaded the system's trusted certificates");
    roots
}

fn accepting_any() -> Result<Configs, ConnectError> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ConnectError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Configs::new(config))
}

/// `tls_skip_verify`: trusts whatever certificate the server presents (Go's `InsecureSkipVerify`),
/// but still verifies that the server holds its key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
