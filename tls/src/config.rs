//! rustls configurations for server RPC, in Consul's terms.
//!
//! - `verify_incoming`: a server serves only TLS; a caller without a
//!   verified certificate may call only the open methods (discovery,
//!   enrolling). Without it, a server with certificates also serves
//!   plaintext and callers without certificates (the first step of moving
//!   a running cluster to TLS).
//! - `verify_outgoing`: dial servers over TLS and verify their certificate
//!   against the operator's CA.
//! - `verify_server_hostname`: the server's certificate must also name
//!   `server.<datacenter>.<domain>` (on by default in Weft).
//!
//! A server trusts two authorities for callers' certificates: the
//! operator's CA (servers) and the servers' own agent CA (client agents,
//! see [`crate::issue`]), which the servers replicate and may change: the
//! server configuration reads it from [`AgentRoots`] on every handshake.
//! TLS 1.3 only; ALPN `h2`.

use std::sync::{Arc, OnceLock, RwLock};

use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::verify_server_cert_signed_by_trust_anchor;
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::version::TLS13;
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, Error as RustlsError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use weft_api::ids::Datacenter;

use crate::names::{server_name, subject_names, AgentName, PeerCert};

/// ALPN: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// PEM material or settings that make no TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no PEM certificate in {0}")]
    NoCertificate(String),
    #[error("no usable PEM private key in {0}")]
    NoPrivateKey(String),
    #[error("no usable CA certificate in {0}")]
    NoRoots(String),
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] RustlsError),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(ring::default_provider())).clone()
}

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// From PEM text; `source` names where it came from, for errors.
    pub fn from_pem(cert_pem: &str, key_pem: &str, source: &str) -> Result<Identity, TlsError> {
        let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).filter_map(Result::ok).collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(source.to_owned()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::NoPrivateKey(source.to_owned()))?;
        Ok(Identity { chain, key })
    }

    fn clone_key(&self) -> Identity {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

/// Root certificates from PEM text (one or several); `source` names where
/// they came from.
pub fn roots_from_pem(pem: &str, source: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok) {
        roots.add(cert).map_err(|_| TlsError::NoRoots(source.to_owned()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots(source.to_owned()));
    }
    Ok(Arc::new(roots))
}

/// A client configuration for HTTPS to a service outside the cluster (an
/// auth method's JWKS or OpenID discovery URL): the roots in `ca_pem`, or
/// the system's trust store when it is empty (read once).
pub fn web_client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, TlsError> {
    static SYSTEM_ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = match ca_pem.trim().is_empty() {
        false => roots_from_pem(ca_pem, "the auth method's CA certificate")?,
        true => SYSTEM_ROOTS
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                Arc::new(roots)
            })
            .clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The `tls` settings of one agent or server, with its material loaded.
pub struct RpcTlsSettings {
    /// The operator's CA: what servers' certificates chain to.
    pub ca: Arc<RootCertStore>,
    /// This process's own certificate: a server's, or a client agent's once
    /// it has one.
    pub identity: Option<Identity>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub verify_server_hostname: bool,
    pub datacenter: Datacenter,
    pub domain: String,
}

impl RpcTlsSettings {
    /// `server.<datacenter>.<domain>`.
    pub fn server_name(&self) -> String {
        server_name(&self.datacenter, &self.domain)
    }
}

/// The agent CA's PEM and a verifier that trusts it.
type TrustedAgentCa = (String, Arc<dyn ClientCertVerifier>);

/// The servers' agent CA as this server last saw it, shared with the
/// handshakes that verify agents' certificates against it.
#[derive(Clone, Default)]
pub struct AgentRoots(Arc<RwLock<Option<TrustedAgentCa>>>);

impl AgentRoots {
    /// Trusts `ca_pem` from now on (the same PEM again changes nothing).
    pub fn set(&self, ca_pem: &str) -> Result<(), TlsError> {
        if self.0.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|(pem, _)| pem == ca_pem) {
            return Ok(());
        }
        let verifier = client_verifier(roots_from_pem(ca_pem, "the agent CA")?)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some((ca_pem.to_owned(), verifier));
        Ok(())
    }

    fn verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, verifier)| verifier.clone())
    }
}

impl std::fmt::Debug for AgentRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentRoots")
    }
}

fn client_verifier(roots: Arc<RootCertStore>) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

/// A server's side of RPC TLS.
pub struct ServerTls {
    config: Arc<ServerConfig>,
    operator: Arc<dyn ClientCertVerifier>,
    server_name: String,
    datacenter: Datacenter,
    verify_incoming: bool,
}

impl ServerTls {
    /// A server's TLS from its settings (which must hold its certificate).
    pub fn new(settings: &RpcTlsSettings, agents: AgentRoots) -> Result<Arc<ServerTls>, TlsError> {
        let identity =
            settings.identity.as_ref().ok_or_else(|| TlsError::NoCertificate("the server's cert_file".into()))?;
        let operator = client_verifier(settings.ca.clone())?;
        let verifier = Arc::new(CallerVerifier { operator: operator.clone(), agents });
        let identity = identity.clone_key();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain, identity.key)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(ServerTls {
            config: Arc::new(config),
            operator,
            server_name: settings.server_name(),
            datacenter: settings.datacenter.clone(),
            verify_incoming: settings.verify_incoming,
        }))
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Whether plaintext connections are refused.
    pub fn verify_incoming(&self) -> bool {
        self.verify_incoming
    }

    /// Who the verified certificate chain a caller presented says it is.
    /// A server's certificate must also chain to the operator's CA (not
    /// the agent CA, which never signs a server's name).
    pub fn identify(&self, chain: &[CertificateDer<'_>]) -> PeerCert {
        let Some((end_entity, intermediates)) = chain.split_first() else { return PeerCert::Other };
        let (dns, uris) = subject_names(end_entity);
        if dns.contains(&self.server_name) {
            let chained = self.operator.verify_client_cert(end_entity, intermediates, UnixTime::now()).is_ok();
            return if chained { PeerCert::Server } else { PeerCert::Other };
        }
        uris.iter()
            .filter_map(|uri| AgentName::parse(uri))
            .find(|agent| agent.datacenter == self.datacenter)
            .map_or(PeerCert::Other, PeerCert::Agent)
    }
}

/// Verifies a caller's certificate against the operator's CA, else the
/// agent CA; a caller may also present none (see the module docs).
#[derive(Debug)]
struct CallerVerifier {
    operator: Arc<dyn ClientCertVerifier>,
    agents: AgentRoots,
}

impl ClientCertVerifier for CallerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RustlsError> {
        let by_operator = self.operator.verify_client_cert(end_entity, intermediates, now);
        match (by_operator, self.agents.verifier()) {
            (Ok(verified), _) => Ok(verified),
            (Err(_), Some(agents)) => agents.verify_client_cert(end_entity, intermediates, now),
            (Err(error), None) => Err(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The dialing side of RPC TLS: the roots servers must chain to, the name
/// they must carry, and this process's certificate, which a client agent
/// gets (and renews) while running.
pub struct ClientTls {
    verifier: Arc<ServerVerifier>,
    config: RwLock<Arc<ClientConfig>>,
}

fn client_config(verifier: Arc<ServerVerifier>, identity: Option<Identity>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => builder.with_client_auth_cert(identity.chain, identity.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

impl ClientTls {
    pub fn new(settings: &RpcTlsSettings) -> Result<Arc<ClientTls>, TlsError> {
        let verifier = Arc::new(ServerVerifier {
            roots: settings.ca.clone(),
            server_name: settings.server_name(),
            verify_server_hostname: settings.verify_server_hostname,
        });
        let config = client_config(verifier.clone(), settings.identity.as_ref().map(Identity::clone_key))?;
        Ok(Arc::new(ClientTls { verifier, config: RwLock::new(config) }))
    }

    /// Presents `identity` (or none) on connections made from now on.
    pub fn set_identity(&self, identity: Option<Identity>) -> Result<(), TlsError> {
        let config = client_config(self.verifier.clone(), identity)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The name every connection is made to (what SNI carries).
    pub fn server_name(&self) -> ServerName<'static> {
        // A datacenter or domain no DNS name can carry still dials: the
        // verifier, not SNI, decides.
        ServerName::try_from(self.verifier.server_name.clone())
            .unwrap_or_else(|_| ServerName::try_from("server.invalid").expect("a valid name"))
    }
}

/// Checks a server's chain against the operator's CA and, with
/// `verify_server_hostname`, that it names `server.<datacenter>.<domain>`.
#[derive(Debug)]
struct ServerVerifier {
    roots: Arc<RootCertStore>,
    server_name: String,
    verify_server_hostname: bool,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let algorithms = provider().signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, intermediates, now, algorithms)?;
        if self.verify_server_hostname && !subject_names(end_entity).0.contains(&self.server_name) {
            return Err(RustlsError::General(format!(
                "the peer's certificate does not name {} (verify_server_hostname): it is not a server of this datacenter",
                self.server_name
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}
