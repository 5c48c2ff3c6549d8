//! Connect on the agent: leaf certificates for this agent's services, and
//! the sidecar proxies it runs ([`supervisor`]).
//!
//! The private key of a leaf is made here, on the host that runs the
//! service, and never leaves it: the leader only sees a CSR. A leaf is reused
//! until it passes its renewal time (about half its life, with jitter) or
//! the active root changes, then signed anew with a new key. Signing first
//! waits (a few seconds at most) for the service's registration to reach
//! this agent's copy of the catalog, since the leader checks it there.

pub mod snapshot;
pub mod supervisor;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rcgen::{CertificateParams, DnType, KeyPair};
use tokio::sync::Mutex;
use weft_api::ids::{NodeName, ServiceName};
use weft_server::ca::{CaError, SignedLeaf};
use weft_server::store::{StateStore, Table};

use crate::backend::Backend;

/// A leaf and the key it certifies.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub service: ServiceName,
    pub private_key_pem: String,
    pub signed: SignedLeaf,
    /// Seconds since the Unix epoch after which the next request re-signs.
    pub renew_at: i64,
}

/// This agent's leaves, by service.
pub struct LeafCache {
    backend: Backend,
    node: NodeName,
    leaves: Mutex<HashMap<ServiceName, Leaf>>,
}

impl LeafCache {
    pub fn new(backend: Backend, node: NodeName) -> Self {
        Self { backend, node, leaves: Mutex::new(HashMap::new()) }
    }

    /// The current leaf for `service`, signed by `active_root`; signs a new
    /// one when there is none, it is due for renewal, or the root changed.
    pub async fn leaf(&self, service: &ServiceName, active_root: &str) -> Result<Leaf, CaError> {
        let mut leaves = self.leaves.lock().await;
        if let Some(leaf) = leaves.get(service) {
            if leaf.signed.root_id == active_root && unix_now() < leaf.renew_at {
                return Ok(leaf.clone());
            }
        }
        registration_synced(self.backend.store(), &self.node, service).await;
        let leaf = self.sign(service).await?;
        leaves.insert(service.clone(), leaf.clone());
        Ok(leaf)
    }

    /// When the cached leaf for `service` is due for renewal, if there is one.
    pub async fn renew_at(&self, service: &ServiceName) -> Option<i64> {
        self.leaves.lock().await.get(service).map(|leaf| leaf.renew_at)
    }

    async fn sign(&self, service: &ServiceName) -> Result<Leaf, CaError> {
        let signing = |e: rcgen::Error| CaError::Signing(e.to_string());
        let key = KeyPair::generate().map_err(signing)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, service.as_str());
        let csr = params.serialize_request(&key).map_err(signing)?.pem().map_err(signing)?;
        let signed = self.backend.sign_leaf(&self.node, service, &csr).await?;
        // Renew at half-life, give or take a tenth of the lifetime.
        let life = (signed.valid_before - signed.valid_after).max(1);
        let jitter = rand::thread_rng().gen_range(-(life / 10)..=(life / 10));
        let renew_at = signed.valid_after + life / 2 + jitter;
        Ok(Leaf { service: service.clone(), private_key_pem: key.serialize_pem(), signed, renew_at })
    }
}

/// How long signing waits for the service's registration on this agent to
/// reach the catalog: the leader signs leaves only for services it sees on
/// this node, and a sidecar or gateway asks right after registering.
const REGISTRATION_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Waits (a while) until this agent's copy of the catalog has `service` on
/// `node`, so that a leaf asked for right after registering is not refused.
async fn registration_synced(store: &StateStore, node: &NodeName, service: &ServiceName) {
    let deadline = tokio::time::Instant::now() + REGISTRATION_SYNC_WAIT;
    loop {
        let (synced, seen) = {
            let tables = store.read();
            let on_node = tables.catalog().node_services(node);
            let synced = on_node.is_some_and(|n| n.services.iter().any(|s| &s.name == service));
            (synced, tables.index(Table::Services))
        };
        let now = tokio::time::Instant::now();
        if synced || now >= deadline {
            return;
        }
        store.blocking_read(&[Table::Services], seen, deadline - now, |t| ((), t.index(Table::Services))).await;
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
