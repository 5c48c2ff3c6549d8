//! Mesh records: intentions, config entries and the CA's public state.
//!
//! Their tables, indexes and Raft commands exist so that the store's shape is
//! settled; the Connect work gives them behaviour.

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

/// One trusted CA root certificate (public part only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRoot {
    pub id: String,
    pub cert_pem: String,
    pub active: bool,
}

/// The mesh CA's replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    pub trust_domain: String,
    pub roots: Vec<CaRoot>,
    pub indexes: Indexes,
}
