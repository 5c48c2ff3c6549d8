//! The names control-plane certificates carry, and who a peer is by them.
//!
//! A server's certificate names `server.<datacenter>.<domain>` (a DNS
//! SAN), as Consul's do. With `verify_server_hostname`, agents and servers
//! accept no other name from a server, so no other certificate of the same
//! CA (an agent's) can pose as one.
//!
//! A client agent's certificate, signed by the servers' agent CA when it
//! enrolls (auto-encrypt), names its node and its enrollment in a URI SAN:
//! `spiffe://<datacenter>.<domain>/agent/client/dc/<datacenter>/node/<node>/enrollment/<id>`
//! (the node name percent-encoded). The enrollment ID ties the certificate
//! to the servers' record of the node's enrollment, so revoking that record
//! refuses every certificate issued under it.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use weft_api::ids::{Datacenter, NodeName};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// `server.<datacenter>.<domain>`: the name every server's certificate carries.
/// Lower case, as DNS names in certificates are compared.
pub fn server_name(datacenter: &Datacenter, domain: &str) -> String {
    format!("server.{datacenter}.{}", domain.trim_matches('.')).to_ascii_lowercase()
}

/// What a client agent's certificate says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentName {
    pub datacenter: Datacenter,
    pub node: NodeName,
    /// The enrollment (see the module docs) the certificate was issued under.
    pub enrollment: String,
}

/// Characters left as they are in a node name inside the URI.
const NODE_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

impl AgentName {
    /// The URI SAN of the agent's certificate.
    pub fn uri(&self, domain: &str) -> String {
        let dc = &self.datacenter;
        let node = utf8_percent_encode(self.node.as_str(), NODE_SAFE);
        format!(
            "spiffe://{dc}.{}/agent/client/dc/{dc}/node/{node}/enrollment/{}",
            domain.trim_matches('.'),
            self.enrollment
        )
    }

    /// Reads a URI written by [`AgentName::uri`]; `None` for any other.
    pub fn parse(uri: &str) -> Option<AgentName> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (_authority, path) = rest.split_once('/')?;
        let parts: Vec<&str> = path.split('/').collect();
        let ["agent", "client", "dc", dc, "node", node, "enrollment", enrollment] = parts.as_slice() else {
            return None;
        };
        let node = percent_decode_str(node).decode_utf8().ok()?;
        if dc.is_empty() || node.is_empty() || enrollment.is_empty() {
            return None;
        }
        Some(AgentName {
            datacenter: Datacenter::new(*dc),
            node: NodeName::new(node.as_ref()),
            enrollment: (*enrollment).to_owned(),
        })
    }
}

/// Who a peer's certificate (already verified against a trusted root) says
/// it is, in this datacenter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCert {
    /// Names `server.<datacenter>.<domain>` and chains to the operator's CA.
    Server,
    /// A client agent's certificate for this datacenter.
    Agent(AgentName),
    /// A trusted certificate that names neither (another datacenter's
    /// server, another tool's client certificate): it proves nothing here.
    Other,
}

/// The DNS and URI names of a DER certificate; empty if it does not parse.
pub(crate) fn subject_names(der: &[u8]) -> (Vec<String>, Vec<String>) {
    let Ok((_, certificate)) = X509Certificate::from_der(der) else { return Default::default() };
    let (mut dns, mut uris) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns.push(name.to_ascii_lowercase()),
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    (dns, uris)
}

/// When a DER certificate becomes valid and stops being valid, in seconds
/// since the Unix epoch.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    Some((certificate.validity().not_before.timestamp(), certificate.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_name_round_trips_through_its_uri() {
        for node in ["vm1", "web-7f9c.example", "odd name/with#chars"] {
            let name = AgentName { datacenter: "dc1".into(), node: node.into(), enrollment: "0a1b2c".into() };
            let uri = name.uri("weft.");
            assert!(uri.starts_with("spiffe://dc1.weft/agent/client/dc/dc1/node/"), "{uri}");
            assert_eq!(AgentName::parse(&uri), Some(name));
        }
        for other in [
            "spiffe://x.weft/ns/default/dc/dc1/svc/web",
            "spiffe://dc1.weft/agent/client/dc/dc1/node//enrollment/1",
            "https://dc1.weft/agent/client/dc/dc1/node/a/enrollment/1",
        ] {
            assert_eq!(AgentName::parse(other), None, "{other}");
        }
        assert_eq!(server_name(&"dc1".into(), "weft."), "server.dc1.weft");
    }
}
