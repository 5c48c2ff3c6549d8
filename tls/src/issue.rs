//! Making control-plane certificates (rcgen, ECDSA P-256).
//!
//! Two authorities sign them, and neither is the mesh CA, so no sidecar's
//! leaf can ever act as an agent or a server:
//! - the operator's **RPC CA** (`weft tls ca create`), whose key stays
//!   with the operator: it signs server certificates (`weft tls cert
//!   create -server`), and servers and agents trust it to verify servers;
//! - the servers' **agent CA**, made by the first leader and replicated
//!   (its key never leaves the servers): it signs a client agent's
//!   certificate from the CSR the agent sends when it enrolls, so the
//!   agent's key never leaves the agent either.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::names::AgentName;

/// Certificates are valid from a little before they are made, for clock skew.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why a certificate was not made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    #[error("the CA certificate or key is unusable: {0}")]
    BadAuthority(String),
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
}

/// A certificate authority: its certificate and private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Authority {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// A certificate and the private key made for it, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn offset(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Parameters valid from now (less [`BACKDATE`]) for `ttl`, with a random serial.
fn params_for(common_name: &str, ttl: Duration) -> CertificateParams {
    let now = unix_now();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.not_before = offset(now - BACKDATE.as_secs() as i64);
    params.not_after = offset(now.saturating_add(ttl.as_secs() as i64));
    // Positive and non-zero: the top bit clear, the low bit set.
    let serial = (rand::random::<u64>() >> 1) | 1;
    params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
    params
}

impl Authority {
    /// A new self-signed CA named `common_name`, valid for `ttl`.
    pub fn create(common_name: &str, ttl: Duration) -> Result<Authority, IssueError> {
        let key = KeyPair::generate()?;
        let mut params = params_for(common_name, ttl);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, IssueError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| IssueError::BadAuthority(e.to_string()))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| IssueError::BadAuthority(e.to_string()))
    }

    /// A server certificate (new key) naming `server_name` (see
    /// [`crate::names::server_name`]), `localhost` and the extra names and
    /// addresses given, for both TLS server and client use (servers call
    /// each other).
    pub fn issue_server(
        &self,
        server_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<Issued, IssueError> {
        let key = KeyPair::generate()?;
        let mut params = params_for(server_name, ttl);
        let mut names = vec![server_name.to_owned(), "localhost".to_owned()];
        names.extend(dns_names.iter().cloned());
        params.subject_alt_names = names
            .into_iter()
            .map(|name| Ok(SanType::DnsName(name.try_into()?)))
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A client agent's certificate for `agent`, valid for `ttl`, from the
    /// public key of `csr_pem`: the names are the signer's to set, whatever
    /// the CSR asks for. Client use only.
    pub fn sign_agent(
        &self,
        csr_pem: &str,
        agent: &AgentName,
        domain: &str,
        ttl: Duration,
    ) -> Result<String, IssueError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| IssueError::BadCsr(e.to_string()))?;
        let mut params = params_for(agent.node.as_str(), ttl);
        params.subject_alt_names = vec![SanType::URI(agent.uri(domain).try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let request = CertificateSigningRequestParams { params, public_key: csr.public_key };
        Ok(request.signed_by(&self.issuer()?)?.pem())
    }
}

/// A new key pair and a CSR for it (an agent enrolling): (CSR PEM, key PEM).
pub fn new_csr() -> Result<(String, String), IssueError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{subject_names, AgentName};

    fn der(pem: &str) -> Vec<u8> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn servers_and_agents_get_the_names_the_signer_sets() {
        let ca = Authority::create("Weft RPC CA", Duration::from_secs(3600)).unwrap();
        let server = ca
            .issue_server(
                "server.dc1.weft",
                &["s1.example".into()],
                &["10.0.0.1".parse().unwrap()],
                Duration::from_secs(60),
            )
            .unwrap();
        let (dns, _) = subject_names(&der(&server.cert_pem));
        assert_eq!(dns, ["server.dc1.weft", "localhost", "s1.example"]);

        // The CSR asks to be a server; the certificate names the agent only.
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["server.dc1.weft".to_owned()]).unwrap().serialize_request(&key).unwrap();
        let agent = AgentName { datacenter: "dc1".into(), node: "vm1".into(), enrollment: "e1".into() };
        let cert = ca.sign_agent(&csr.pem().unwrap(), &agent, "weft", Duration::from_secs(60)).unwrap();
        let (dns, uris) = subject_names(&der(&cert));
        assert!(dns.is_empty(), "{dns:?}");
        assert_eq!(uris.iter().filter_map(|u| AgentName::parse(u)).collect::<Vec<_>>(), [agent]);
        assert!(matches!(
            ca.sign_agent(
                "junk",
                &AgentName { datacenter: "dc1".into(), node: "vm1".into(), enrollment: "e".into() },
                "weft",
                Duration::from_secs(1)
            ),
            Err(IssueError::BadCsr(_))
        ));
    }
}
