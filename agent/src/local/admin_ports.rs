//! Where this agent's sidecars serve their admin ports: a free loopback
//! port picked by the supervisor at each start. `weft proxy config-dump`
//! finds a sidecar's `/config` here, and its listening check asks its
//! `/ready` who listens on its public port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use weft_api::ids::ServiceId;

#[derive(Clone, Default)]
pub struct AdminPorts(Arc<Inner>);

#[derive(Default)]
struct Inner {
    ports: Mutex<HashMap<ServiceId, SocketAddr>>,
    /// Whether this agent runs its sidecars (it does, unless it cannot find
    /// its own program); if not, they run on their own and report nothing here.
    supervised: AtomicBool,
}

impl AdminPorts {
    pub fn get(&self, sidecar: &ServiceId) -> Option<SocketAddr> {
        self.0.ports.lock().unwrap_or_else(|p| p.into_inner()).get(sidecar).copied()
    }

    /// Records (or, with `None`, forgets) where `sidecar` serves its admin port.
    pub fn set(&self, sidecar: &ServiceId, admin: Option<SocketAddr>) {
        let mut ports = self.0.ports.lock().unwrap_or_else(|p| p.into_inner());
        match admin {
            Some(admin) => ports.insert(sidecar.clone(), admin),
            None => ports.remove(sidecar),
        };
    }

    /// Marks the sidecars as run by this agent.
    pub fn set_supervised(&self) {
        self.0.supervised.store(true, Ordering::Relaxed);
    }

    pub fn supervised(&self) -> bool {
        self.0.supervised.load(Ordering::Relaxed)
    }
}
