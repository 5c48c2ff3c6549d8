//! SPIFFE IDs as the mesh CA writes them
//! (`spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<service>`), and reading
//! one out of a certificate's URI SAN.

use std::fmt;

use weft_api::ids::ServiceName;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A service's identity in the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub datacenter: String,
    pub service: ServiceName,
}

/// Why a certificate names no service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate could not be parsed")]
    BadCertificate,
    #[error("the certificate has no SPIFFE service ID in its URI SANs")]
    NoSpiffeId,
}

impl SpiffeId {
    /// Parses `spiffe://<td>/ns/default/dc/<dc>/svc/<service>`; `None` for anything else.
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (trust_domain, path) = rest.split_once('/')?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", _namespace, "dc", datacenter, "svc", service]
                if !trust_domain.is_empty() && !datacenter.is_empty() && !service.is_empty() =>
            {
                Some(SpiffeId {
                    trust_domain: trust_domain.to_owned(),
                    datacenter: (*datacenter).to_owned(),
                    service: ServiceName::new(*service),
                })
            }
            _ => None,
        }
    }

    /// The service ID in a DER certificate's URI SANs.
    pub fn from_certificate(der: &[u8]) -> Result<SpiffeId, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::BadCertificate)?;
        let names = cert.subject_alternative_name().map_err(|_| IdentityError::BadCertificate)?;
        names
            .into_iter()
            .flat_map(|san| san.value.general_names.iter())
            .find_map(|name| match name {
                GeneralName::URI(uri) => SpiffeId::parse(uri),
                _ => None,
            })
            .ok_or(IdentityError::NoSpiffeId)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/default/dc/{}/svc/{}", self.trust_domain, self.datacenter, self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_ids_and_nothing_else() {
        let id = SpiffeId::parse("spiffe://abc.weft/ns/default/dc/dc1/svc/web").unwrap();
        assert_eq!((id.trust_domain.as_str(), id.datacenter.as_str(), id.service.as_str()), ("abc.weft", "dc1", "web"));
        assert_eq!(id.to_string(), "spiffe://abc.weft/ns/default/dc/dc1/svc/web");
        for bad in [
            "spiffe://abc.weft",
            "https://x/ns/default/dc/dc1/svc/web",
            "spiffe://abc.weft/ns/default/dc/dc1/svc/",
            "spiffe:///ns/default/dc/dc1/svc/web",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }
}
