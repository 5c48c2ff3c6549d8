//! The mesh CA: a root made by the first leader, and leaf certificates
//! signed for services that are registered where the request comes from.
//!
//! The root (ECDSA P-256) and its key live in the replicated state
//! (`CaState`), written by the leader as an ordinary command, so whichever
//! server leads can sign. A leaf is signed from a CSR: the private key is
//! made and kept where the sidecar runs. The leader never trusts what the CSR
//! asks for beyond its public key: it sets the SPIFFE ID itself, for the
//! service it checked is registered on the caller's node.
//!
//! Signing is rate-limited on the leader; a caller over the limit gets a
//! clear "try later" rather than a queue.
//!
//! A rotation makes a new root, cross-signed by the active one, and makes
//! it active: agents sign new leaves with it at once, and those leaves
//! carry the cross-signed certificate, so a sidecar that still trusts only
//! the old root accepts them. The old root stays trusted until every leaf it
//! signed has expired (one leaf TTL after the rotation); then the leader
//! drops it. No handshake fails on the way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use weft_api::command::Command;
use weft_api::ids::{Datacenter, NodeName, ServiceName};
use weft_api::mesh::{CaRoot, CaState};

use crate::server::Server;

/// How long a leaf is valid unless configured (Consul's default).
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
/// How long a root is valid.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves and roots are valid from a little before they are made, for clock skew.
const BACKDATE: Duration = Duration::from_secs(60);
/// How long past the last old leaf's expiry an old root is still trusted.
const PRUNE_MARGIN: Duration = Duration::from_secs(3600);

/// Why a leaf was not signed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CaError {
    #[error("the mesh CA is not initialized yet; retry in a moment")]
    NotInitialized,
    /// The service is not registered on the node that asked.
    #[error("{0}")]
    NotRegistered(String),
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    #[error("too many certificate signing requests; retry in a second")]
    RateLimited,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error(transparent)]
    Cluster(#[from] crate::ServerError),
}

/// A signed leaf, as the leader returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedLeaf {
    pub cert_pem: String,
    /// Colon-separated hex.
    pub serial_number: String,
    /// Seconds since the Unix epoch.
    pub valid_after: i64,
    pub valid_before: i64,
    pub spiffe_id: String,
    pub root_id: String,
}

/// `spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<service>`.
pub fn spiffe_id(trust_domain: &str, datacenter: &Datacenter, service: &ServiceName) -> String {
    format!("spiffe://{trust_domain}/ns/default/dc/{datacenter}/svc/{service}")
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn offset(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> (SerialNumber, u64) {
    // Positive and non-zero: the top bit clear, the low bit set.
    let serial = (rand::random::<u64>() >> 1) | 1;
    (SerialNumber::from_slice(&serial.to_be_bytes()), serial)
}

/// Colon-separated hex, as Consul writes serials and key IDs.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A fresh CA state: a new cluster ID, its trust domain and one active root.
pub(crate) fn new_ca_state() -> Result<CaState, CaError> {
    let cluster_id = weft_api::ids::uuid_v4(rand::random());
    let trust_domain = format!("{cluster_id}.weft");
    let (root, _, _) = new_root(&trust_domain, 1)?;
    Ok(CaState { cluster_id, trust_domain, roots: vec![root], indexes: Default::default() })
}

/// `state` with a new active root, cross-signed by the active one; the old
/// roots stay trusted (see the module docs).
pub(crate) fn rotated(state: &CaState) -> Result<CaState, CaError> {
    let signing = |e: rcgen::Error| CaError::Signing(e.to_string());
    let old = state.active_root().ok_or(CaError::NotInitialized)?;
    let generation = state.roots.iter().filter_map(|r| r.name.rsplit(' ').next()?.parse::<u32>().ok()).max();
    let (mut root, params, key) = new_root(&state.trust_domain, generation.unwrap_or(1) + 1)?;
    let old_key = KeyPair::from_pem(&old.private_key_pem).map_err(signing)?;
    let old_issuer = Issuer::from_ca_cert_pem(old.certificate_pem(), old_key).map_err(signing)?;
    let cross_signed = params.signed_by(&key, &old_issuer).map_err(signing)?;
    root.cert_pem.push_str(&cross_signed.pem());
    let mut roots: Vec<CaRoot> = state.roots.iter().map(|r| CaRoot { active: false, ..r.clone() }).collect();
    roots.push(root);
    Ok(CaState { roots, ..state.clone() })
}

/// `state` without the roots that stopped signing over `leaf_ttl` (and a
/// margin) ago, when there are such: every leaf they signed has expired.
/// The active root then drops its cross-signed certificates too.
pub(crate) fn pruned(state: &CaState, now: i64, leaf_ttl: Duration) -> Option<CaState> {
    let active = state.active_root()?;
    let retired = state.roots.iter().any(|r| !r.active);
    let rotated_at = active.not_before + BACKDATE.as_secs() as i64;
    if !retired || now < rotated_at + (leaf_ttl + PRUNE_MARGIN).as_secs() as i64 {
        return None;
    }
    let root = CaRoot { cert_pem: active.certificate_pem().to_owned(), ..active.clone() };
    Some(CaState { roots: vec![root], ..state.clone() })
}

/// A self-signed root for `trust_domain`, with the parameters and key that
/// made it (a rotation cross-signs them).
fn new_root(trust_domain: &str, generation: u32) -> Result<(CaRoot, CertificateParams, KeyPair), CaError> {
    let signing = |e: rcgen::Error| CaError::Signing(e.to_string());
    let key = KeyPair::generate().map_err(signing)?;
    let now = unix_now();
    let (serial, serial_number) = random_serial();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, format!("Weft CA {generation}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let uri = format!("spiffe://{trust_domain}").try_into().map_err(signing)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.not_before = offset(now - BACKDATE.as_secs() as i64);
    params.not_after = offset(now + ROOT_TTL.as_secs() as i64);
    params.serial_number = Some(serial);
    let id = colon_hex(&params.key_identifier(&key));
    let cert = params.self_signed(&key).map_err(signing)?;
    let root = CaRoot {
        id,
        name: format!("Weft CA Root Cert {generation}"),
        serial_number,
        cert_pem: cert.pem(),
        private_key_pem: key.serialize_pem(),
        not_before: now - BACKDATE.as_secs() as i64,
        not_after: now + ROOT_TTL.as_secs() as i64,
        active: true,
    };
    Ok((root, params, key))
}

/// Signs `csr_pem`'s public key into a leaf for `spiffe_id`, valid for `ttl`.
pub(crate) fn sign(root: &CaRoot, csr_pem: &str, spiffe_id: &str, ttl: Duration) -> Result<SignedLeaf, CaError> {
    let signing = |e: rcgen::Error| CaError::Signing(e.to_string());
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::BadCsr(e.to_string()))?;
    let key = KeyPair::from_pem(&root.private_key_pem).map_err(signing)?;
    let issuer = Issuer::from_ca_cert_pem(root.certificate_pem(), key).map_err(signing)?;
    let now = unix_now();
    let (valid_after, valid_before) = (now - BACKDATE.as_secs() as i64, now + ttl.as_secs() as i64);
    let (serial, serial_number) = random_serial();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let service = spiffe_id.rsplit('/').next().unwrap_or_default();
    params.distinguished_name.push(DnType::CommonName, service);
    params.subject_alt_names = vec![SanType::URI(spiffe_id.to_owned().try_into().map_err(signing)?)];
    params.key_usages =
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::KeyAgreement];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(valid_after);
    params.not_after = offset(valid_before);
    params.serial_number = Some(serial);
    // Only the CSR's public key is used: the name is ours to set.
    let request = CertificateSigningRequestParams { params, public_key: csr.public_key };
    let cert = request.signed_by(&issuer).map_err(signing)?;
    // During a rotation the leaf carries its root cross-signed by the old one.
    let mut cert_pem = cert.pem();
    for cross_signed in root.cross_signed_pems() {
        cert_pem.push_str(cross_signed);
        cert_pem.push('\n');
    }
    Ok(SignedLeaf {
        cert_pem,
        serial_number: colon_hex(&serial_number.to_be_bytes()),
        valid_after,
        valid_before,
        spiffe_id: spiffe_id.to_owned(),
        root_id: root.id.clone(),
    })
}

/// On the leader: checks that `service` is registered on `node`, then signs.
pub(crate) fn sign_for(
    server: &Server,
    node: &NodeName,
    service: &ServiceName,
    csr_pem: &str,
) -> Result<SignedLeaf, CaError> {
    if !server.inner.sign_limiter.take() {
        return Err(CaError::RateLimited);
    }
    let (ca, registered) = {
        let tables = server.store().read();
        let catalog = tables.catalog();
        let registered =
            catalog.node_services(node).is_some_and(|found| found.services.iter().any(|s| &s.name == service));
        (tables.mesh().ca().cloned(), registered)
    };
    let ca = ca.ok_or(CaError::NotInitialized)?;
    if !registered {
        return Err(CaError::NotRegistered(format!(
            "service {:?} is not registered on node {:?}; register it on that agent first",
            service.as_str(),
            node.as_str()
        )));
    }
    let root = ca.active_root().ok_or(CaError::NotInitialized)?;
    let id = spiffe_id(&ca.trust_domain, server.datacenter(), service);
    let leaf = sign(root, csr_pem, &id, server.inner.leaf_ttl)?;
    tracing::info!(%node, %service, serial = %leaf.serial_number, "signed a leaf certificate");
    Ok(leaf)
}

/// On the leader: rotates the root (see the module docs); the new active
/// root's ID. One rotation at a time.
pub(crate) async fn rotate(server: &Server) -> Result<String, CaError> {
    let _one_at_a_time = server.inner.ca_changes.lock().await;
    let current = server.store().read().mesh().ca().cloned().ok_or(CaError::NotInitialized)?;
    let state = rotated(&current)?;
    let root_id = state.active_root().map(|r| r.id.clone()).unwrap_or_default();
    server.write_local(&Command::CaSetState(state)).await?;
    tracing::info!(%root_id, "rotated the mesh CA root; the old root stays trusted until its leaves expire");
    Ok(root_id)
}

/// Runs on every server; while it leads, makes sure the CA exists (and the
/// agent CA, see `crate::join`) and drops roots whose leaves have all
/// expired.
pub(crate) async fn maintain_when_leading(server: Server) {
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        if server.store().is_closed() {
            return;
        }
        if server.leading_term().is_none() {
            continue;
        }
        crate::join::ensure_agent_ca(&server).await;
        crate::acl::ensure_built_ins(&server).await;
        let _one_at_a_time = server.inner.ca_changes.lock().await;
        let current = server.store().read().mesh().ca().cloned();
        let (change, what) = match current {
            None => match new_ca_state() {
                Ok(state) => (state, "mesh CA initialized"),
                Err(error) => {
                    tracing::error!(%error, "could not create the mesh CA root");
                    continue;
                }
            },
            Some(current) => match pruned(&current, unix_now(), server.inner.leaf_ttl) {
                Some(state) => (state, "dropped CA roots whose leaves have all expired"),
                None => continue,
            },
        };
        let trust_domain = change.trust_domain.clone();
        match server.write_local(&Command::CaSetState(change)).await {
            Ok(_) => tracing::info!(%trust_domain, "{what}"),
            Err(error) => tracing::warn!(%error, "could not store the mesh CA; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_carries_the_spiffe_id_we_chose_not_the_one_asked_for() {
        let ca = new_ca_state().unwrap();
        let root = ca.active_root().unwrap();
        assert!(ca.trust_domain.ends_with(".weft"));
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        asked.subject_alt_names.push(SanType::URI("spiffe://other/ns/default/dc/dc1/svc/db".try_into().unwrap()));
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let id = spiffe_id(&ca.trust_domain, &Datacenter::new("dc1"), &ServiceName::new("web"));
        let leaf = sign(root, &csr, &id, Duration::from_secs(3600)).unwrap();
        assert!(leaf.valid_before - leaf.valid_after >= 3600);
        let der = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        drop(der);
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(leaf.root_id, root.id);
    }

    #[test]
    fn garbage_is_not_a_csr() {
        let ca = new_ca_state().unwrap();
        let error =
            sign(ca.active_root().unwrap(), "not a csr", "spiffe://x/ns/default/dc/dc1/svc/web", DEFAULT_LEAF_TTL);
        assert!(matches!(error, Err(CaError::BadCsr(_))), "{error:?}");
    }

    #[test]
    fn a_rotation_cross_signs_and_the_old_root_goes_once_its_leaves_expired() {
        let first = new_ca_state().unwrap();
        let rotated = rotated(&first).unwrap();
        assert_eq!(rotated.roots.len(), 2);
        let (old, new) = (&rotated.roots[0], &rotated.roots[1]);
        assert!(!old.active && new.active);
        assert_eq!(new.name, "Weft CA Root Cert 2");
        assert_eq!(new.cross_signed_pems().len(), 1, "the new root cross-signed by the old");
        // A leaf from the new root carries the cross-signed certificate.
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        let leaf = sign(new, &csr, "spiffe://x/ns/default/dc/dc1/svc/web", DEFAULT_LEAF_TTL).unwrap();
        assert_eq!(weft_api::mesh::pem_certificates(&leaf.cert_pem).len(), 2);

        let ttl = Duration::from_secs(3600);
        assert!(pruned(&rotated, new.not_before + 60, ttl).is_none(), "old leaves may still be valid");
        let later = new.not_before + 60 + (ttl + PRUNE_MARGIN).as_secs() as i64 + 1;
        let pruned = pruned(&rotated, later, ttl).unwrap();
        assert_eq!(pruned.roots.len(), 1);
        assert_eq!(pruned.roots[0].id, new.id);
        assert!(pruned.roots[0].cross_signed_pems().is_empty());
        assert!(super::pruned(&first, later, ttl).is_none(), "nothing to drop without a rotation");
    }
}
