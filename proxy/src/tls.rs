//! rustls configurations for the mesh, from PEM material.
//!
//! Both directions speak TLS 1.3 only and present this sidecar's leaf.
//! Inbound requires the caller's certificate to chain to a mesh root (and to
//! allow client authentication). Outbound verifies the chain the same way,
//! then checks the SPIFFE service ID in place of a DNS name: a sidecar only
//! accepts the service it meant to reach. That service is in the server
//! name the sidecar itself puts on each connection ([`server_name`]), so one
//! client configuration per protocol serves every destination.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::{verify_server_cert_signed_by_trust_anchor, Resumption};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::version::TLS13;
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, Error as RustlsError, RootCertStore, ServerConfig, SignatureScheme,
};
use weft_api::addr::{hex_label, parse_hex_label};
use weft_api::ids::ServiceName;
use weft_api::mesh::Protocol;

use crate::identity::SpiffeId;

/// A sidecar's certificate, key and the roots it trusts, as the agent serves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The leaf first, then any intermediates.
    pub cert_chain_pem: String,
    pub private_key_pem: String,
    /// Every trusted root (during a rotation, old and new).
    pub roots_pem: Vec<String>,
}

/// Material that cannot make a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the leaf PEM")]
    NoCertificate,
    #[error("no usable private key in the key PEM")]
    NoPrivateKey,
    #[error("no usable root certificate")]
    NoRoots,
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] RustlsError),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("service name {0:?} cannot be part of a TLS server name: use letters, digits, '-', '_' and '.'")]
    ServerName(ServiceName),
}

/// How many TLS sessions with other sidecars each client configuration
/// keeps for resumption.
const RESUMABLE_SESSIONS: usize = 1024;

/// ALPN between HTTP sidecars: HTTP/2 for `http2` and `grpc`, HTTP/1.1
/// (pooled keep-alive connections) for `http`.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The server side of an ingress gateway's TLS listeners: the edge
/// certificate and key given to the gateway on its host (PEM), any TLS
/// version rustls offers, no client certificate asked, HTTP/2 or HTTP/1.1.
pub fn edge_server_config(cert_chain_pem: &str, private_key_pem: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let material = TlsMaterial {
        cert_chain_pem: cert_chain_pem.into(),
        private_key_pem: private_key_pem.into(),
        roots_pem: Vec::new(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(material.chain()?, material.key()?)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

impl TlsMaterial {
    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let chain: Vec<_> =
            CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes()).filter_map(Result::ok).collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        Ok(chain)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.private_key_pem.as_bytes()).map_err(|_| TlsError::NoPrivateKey)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for pem in &self.roots_pem {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok) {
                roots.add(cert).map_err(|_| TlsError::NoRoots)?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        Ok(Arc::new(roots))
    }

    /// The inbound side: mutual TLS 1.3, callers chained to a mesh root.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain()?, self.key()?)?;
        // HTTP sidecars say which HTTP they speak; TCP ones ask for nothing.
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }

    /// The outbound side: one configuration per protocol, for every
    /// destination (see [`ClientTls`]).
    pub fn client_tls(&self) -> Result<ClientTls, TlsError> {
        let (chain, key) = (self.chain()?, self.key()?);
        let verifier = Arc::new(SpiffeVerifier { roots: self.roots()?, provider: provider() });
        let config = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, TlsError> {
            let mut config = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&TLS13])?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_client_auth_cert(chain.clone(), key.clone_key())?;
            config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
            // Shared by every destination of the protocol (the default keeps 256).
            config.resumption = Resumption::in_memory_sessions(RESUMABLE_SESSIONS);
            Ok(Arc::new(config))
        };
        Ok(ClientTls { tcp: config(&[])?, http1: config(&[ALPN_HTTP1])?, h2: config(&[ALPN_H2])? })
    }
}

/// Mutual TLS 1.3 to other sidecars, built once per snapshot. Each
/// handshake accepts only a peer whose SPIFFE ID names the service in the
/// connection's [`server_name`], the destination the sidecar set out to
/// reach; the configurations differ only in the ALPN they ask for.
#[derive(Debug)]
pub struct ClientTls {
    /// `tcp` upstreams: no ALPN.
    tcp: Arc<ClientConfig>,
    /// `http`: HTTP/1.1 keep-alive connections.
    http1: Arc<ClientConfig>,
    /// `http2` and `grpc`: HTTP/2.
    h2: Arc<ClientConfig>,
}

impl ClientTls {
    /// The configuration for an upstream speaking `protocol`.
    pub fn for_protocol(&self, protocol: Protocol) -> Arc<ClientConfig> {
        match protocol {
            Protocol::Tcp => &self.tcp,
            Protocol::Http => &self.http1,
            Protocol::Http2 | Protocol::Grpc => &self.h2,
        }
        .clone()
    }
}

/// The name a sidecar sends as SNI for the sidecar of `destination` at
/// `address`: `<hex IP>-<port>.<service>.svc.weft`. A mesh gateway relays
/// by it ([`instance_of_server_name`]), and the sidecar's own verifier
/// expects the service it names.
pub fn server_name(destination: &ServiceName, address: SocketAddr) -> Result<ServerName<'static>, TlsError> {
    let ip = hex_label(address.ip());
    ServerName::try_from(format!("{ip}-{}.{destination}.svc.weft", address.port()))
        .map_err(|_| TlsError::ServerName(destination.clone()))
}

/// Whether sidecars of `destination` can be named by a [`server_name`] at
/// all: checked when connecting failed, so that a service name no TLS
/// server name can carry is not held against its endpoints.
pub fn check_service_name(destination: &ServiceName) -> Result<(), TlsError> {
    server_name(destination, SocketAddr::from(([0, 0, 0, 0], 0))).map(drop)
}

/// The sidecar a [`server_name`] names: its address and service.
pub fn instance_of_server_name(name: &str) -> Option<(SocketAddr, ServiceName)> {
    let (instance, rest) = name.split_once('.')?;
    let service = rest.strip_suffix(".svc.weft")?;
    let (ip, port) = instance.split_once('-')?;
    Some((SocketAddr::new(parse_hex_label(ip)?, port.parse().ok()?), ServiceName::new(service)))
}

/// Verifies a server's chain to the mesh roots and that its SPIFFE ID names
/// the service in the server name the connection was made with.
#[derive(Debug)]
struct SpiffeVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let expected = match server_name {
            ServerName::DnsName(name) => instance_of_server_name(name.as_ref()).map(|(_, service)| service),
            _ => None,
        }
        .ok_or_else(|| RustlsError::General(format!("{server_name:?} names no mesh service")))?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let algorithms = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, intermediates, now, algorithms)?;
        let id = SpiffeId::from_certificate(end_entity).map_err(|e| RustlsError::General(e.to_string()))?;
        if id.service != expected {
            return Err(RustlsError::General(format!(
                "expected a sidecar of {:?} but the peer is {id}",
                expected.as_str()
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
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_name_names_the_instance_a_gateway_relays_to() {
        for address in ["198.18.2.10:21000", "[2001:db8::7]:443"] {
            let address: SocketAddr = address.parse().unwrap();
            let Ok(ServerName::DnsName(name)) = server_name(&"api".into(), address) else { panic!("not a DNS name") };
            assert_eq!(instance_of_server_name(name.as_ref()), Some((address, "api".into())));
        }
        assert_eq!(
            server_name(&"api".into(), "198.18.2.10:21000".parse().unwrap()).unwrap().to_str(),
            "c612020a-21000.api.svc.weft"
        );
        for bad in [
            "api.svc.weft",
            "c612020a.api.svc.weft",
            "c61202-1.api.svc.weft",
            "c612020a-1.api.example.com",
            "zz12020a-1.api.svc.weft",
        ] {
            assert_eq!(instance_of_server_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_service_name_that_cannot_be_a_server_name_is_an_error_naming_it() {
        let error = server_name(&"web app".into(), "10.0.0.1:21000".parse().unwrap()).unwrap_err();
        assert!(error.to_string().contains("\"web app\""), "{error}");
    }
}
