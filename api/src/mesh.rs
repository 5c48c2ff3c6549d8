//! Mesh records: intentions, config entries and the CA's state.

use serde::{Deserialize, Serialize};

use crate::catalog::Meta;
use crate::ids::{Indexes, ServiceName};

/// Whether an intention lets traffic through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentionAction {
    Allow,
    #[default]
    Deny,
}

/// A source -> destination authorization rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intention {
    pub id: String,
    pub source: ServiceName,
    pub destination: ServiceName,
    pub action: IntentionAction,
    pub description: String,
    pub meta: Meta,
    pub indexes: Indexes,
}

/// A config entry (`service-defaults`, `service-router`, ...), keyed by kind and
/// name. Its body stays opaque JSON text until its kind is given a type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub kind: String,
    pub name: String,
    pub body: String,
    pub indexes: Indexes,
}

/// One CA root: a self-signed certificate and its signing key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRoot {
    /// The root's subject key ID, colon-separated hex (Consul's root ID).
    pub id: String,
    pub name: String,
    pub serial_number: u64,
    /// PEM: the root's self-signed certificate, then (during a rotation)
    /// the same root cross-signed by the root it replaced.
    pub cert_pem: String,
    /// The root's private key (PKCS#8 PEM). It lives in the replicated state
    /// so any server that becomes leader can sign; it is never served by an
    /// API (only snapshots carry it, as Consul's do).
    pub private_key_pem: String,
    /// Validity, in seconds since the Unix epoch. A root made by a rotation
    /// became active at `not_before` (plus the CA's backdating).
    pub not_before: i64,
    pub not_after: i64,
    /// The root that signs new leaves; others are still trusted.
    pub active: bool,
}

impl CaRoot {
    /// The root's own (self-signed) certificate: the first of `cert_pem`.
    pub fn certificate_pem(&self) -> &str {
        pem_certificates(&self.cert_pem).first().copied().unwrap_or(&self.cert_pem)
    }

    /// The same root cross-signed by earlier roots: the rest of `cert_pem`.
    /// During a rotation, leaves this root signs carry them, so sidecars
    /// that trust only the old root still accept the new leaves.
    pub fn cross_signed_pems(&self) -> Vec<&str> {
        pem_certificates(&self.cert_pem).into_iter().skip(1).collect()
    }
}

/// Each `-----BEGIN CERTIFICATE-----` block of `pem`, in order.
pub fn pem_certificates(pem: &str) -> Vec<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let (Some(start), Some(end)) = (rest.find("-----BEGIN CERTIFICATE-----"), rest.find(END)) {
        if end < start {
            break;
        }
        blocks.push(&rest[start..end + END.len()]);
        rest = &rest[end + END.len()..];
    }
    blocks
}

/// The mesh CA's replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// A UUID made when the CA is first set up; names the trust domain.
    pub cluster_id: String,
    /// `<cluster_id>.weft`: the authority of every SPIFFE ID in the mesh.
    pub trust_domain: String,
    pub roots: Vec<CaRoot>,
    pub indexes: Indexes,
}

impl CaState {
    /// The root that signs new leaves.
    pub fn active_root(&self) -> Option<&CaRoot> {
        self.roots.iter().find(|r| r.active)
    }

    /// This state without any root's private key: what client agents hold
    /// (only servers sign).
    pub fn without_private_keys(&self) -> CaState {
        let roots = self.roots.iter().map(|root| CaRoot { private_key_pem: String::new(), ..root.clone() }).collect();
        CaState { roots, ..self.clone() }
    }
}

/// What a service speaks, as its `service-defaults` (or `proxy-defaults`)
/// say: sidecars parse HTTP for the HTTP-like ones, and only those can be
/// routed, split or given L7 intentions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Http,
    Http2,
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::Tcp, Protocol::Http, Protocol::Http2, Protocol::Grpc];

    /// A protocol name in any case (`"HTTP2"`).
    pub fn parse(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }

    pub fn is_http_like(self) -> bool {
        self != Protocol::Tcp
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
