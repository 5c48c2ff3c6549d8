//! The agent's own services and checks: the source of truth for what runs on
//! this node.
//!
//! Services come from config files (re-read on reload) and from the agent
//! API (kept in the data dir, so they survive a restart). Checks run here
//! ([`runner`]) and their results land in this state first; anti-entropy
//! ([`sync`]) then makes the catalog's record of this node match it: at once
//! after every change, and on a timer to repair any drift.
//!
//! **Architecture Invariant:** the catalog is never written for this node's
//! services or checks except by [`sync`], from this state.

pub mod definition;
mod persist;
pub mod runner;
pub mod sync;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use weft_api::catalog::{Check, HealthStatus, Service};
use weft_api::ids::{CheckId, NodeName, ServiceId};

use crate::config::{AgentConfig, ConfigErrors};
use definition::{
    CheckDefinition, CheckRunner, DefinitionError, LocalCheck, LocalService, ProxyConfig, ServiceDefinition,
    SidecarRequest,
};

/// Ports given to sidecars that do not ask for one (Consul's default range).
const SIDECAR_PORTS: std::ops::RangeInclusive<u16> = 21000..=21255;

/// Where a registration came from: config files are re-read on reload and
/// never persisted; API registrations are persisted and survive reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Config,
    Api,
}

/// This agent's services and checks, shared by the API, the check runners
/// and anti-entropy.
pub struct LocalState {
    node: NodeName,
    /// This node's address: sidecars listen and are checked there.
    address: String,
    script_checks: bool,
    persist_dir: PathBuf,
    entries: Mutex<Entries>,
    /// Bumped on every change: wakes anti-entropy and `?hash` blocking queries.
    version: watch::Sender<u64>,
}

#[derive(Default)]
struct Entries {
    services: BTreeMap<ServiceId, ServiceEntry>,
    checks: BTreeMap<CheckId, CheckEntry>,
}

struct ServiceEntry {
    service: Service,
    definition: ServiceDefinition,
    source: Source,
    /// For a sidecar: the service it fronts and its proxy configuration.
    /// Sidecars are made from their parent's definition, never persisted.
    sidecar_of: Option<(ServiceId, ProxyConfig)>,
}

struct CheckEntry {
    local: LocalCheck,
    /// Set for checks registered on their own (not inside a service).
    definition: Option<CheckDefinition>,
    source: Source,
    task: Option<AbortHandle>,
    /// Wakes a TTL check's timer when it is refreshed.
    refreshed: Arc<Notify>,
    ttl_deadline: Option<Instant>,
    critical_since: Option<Instant>,
}

impl Entries {
    /// Removes a service and the checks bound to it.
    fn remove_service(&mut self, id: &ServiceId) -> Option<ServiceEntry> {
        let removed = self.services.remove(id)?;
        self.checks.retain(|_, c| &c.local.check.service_id != id);
        Some(removed)
    }
}

impl Drop for CheckEntry {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl LocalState {
    /// Loads the API registrations persisted in `data_dir` (if any).
    pub fn open(node: NodeName, address: String, data_dir: &std::path::Path, script_checks: bool) -> Arc<Self> {
        let state = Arc::new(Self {
            node,
            address,
            script_checks,
            persist_dir: data_dir.join("local"),
            entries: Mutex::new(Entries::default()),
            version: watch::Sender::new(0),
        });
        let (services, checks) = persist::load(&state.persist_dir);
        for definition in services {
            if let Err(error) = state.add_service(definition, Source::Api) {
                tracing::warn!(%error, "dropping a persisted service that no longer validates");
            }
        }
        for definition in checks {
            if let Err(error) = state.add_check(definition, Source::Api) {
                tracing::warn!(%error, "dropping a persisted check that no longer validates");
            }
        }
        state
    }

    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// Adds or replaces a service and its checks (a re-registration replaces
    /// the checks defined with it).
    pub fn add_service(
        self: &Arc<Self>,
        definition: ServiceDefinition,
        source: Source,
    ) -> Result<ServiceId, DefinitionError> {
        let local = definition.validate(&self.node, self.script_checks)?;
        let sidecar = definition.sidecar_request()?;
        let id = local.service.id.clone();
        {
            let mut entries = self.entries();
            let sidecar = match sidecar {
                None => None,
                Some(request) => Some(self.sidecar_for(&entries, &local.service, request)?),
            };
            let sidecar_id = ServiceId::new(format!("{id}-sidecar-proxy"));
            entries.remove_service(&sidecar_id);
            entries.checks.retain(|_, c| c.local.check.service_id != id || c.definition.is_some());
            for check in local.checks {
                let entry = self.start_check(check, None, source);
                entries.checks.insert(entry.local.check.id.clone(), entry);
            }
            let parent = ServiceEntry { service: local.service, definition, source, sidecar_of: None };
            entries.services.insert(id.clone(), parent);
            if let Some((sidecar, definition, proxy)) = sidecar {
                for check in sidecar.checks {
                    let entry = self.start_check(check, None, source);
                    entries.checks.insert(entry.local.check.id.clone(), entry);
                }
                let entry = ServiceEntry {
                    service: sidecar.service,
                    definition,
                    source,
                    sidecar_of: Some((id.clone(), proxy)),
                };
                entries.services.insert(sidecar_id, entry);
            }
        }
        self.changed(source);
        Ok(id)
    }

    /// The sidecar service for `service`: on the requested port, or on the
    /// port it already has, or on the first free one of the sidecar range.
    fn sidecar_for(
        &self,
        entries: &Entries,
        service: &Service,
        request: SidecarRequest,
    ) -> Result<(LocalService, ServiceDefinition, ProxyConfig), DefinitionError> {
        let sidecar_id = ServiceId::new(format!("{}-sidecar-proxy", service.id));
        let taken: Vec<u16> = entries
            .services
            .values()
            .filter(|s| s.sidecar_of.is_some() && s.service.id != sidecar_id)
            .map(|s| s.service.port)
            .collect();
        let port = request
            .port
            .or_else(|| entries.services.get(&sidecar_id).map(|s| s.service.port))
            .or_else(|| SIDECAR_PORTS.clone().find(|p| !taken.contains(p)))
            .ok_or_else(|| DefinitionError("no free sidecar port left in 21000-21255".into()))?;
        let definition = ServiceDefinition::sidecar_definition(service, &self.address, port);
        let sidecar = definition.validate(&self.node, false)?;
        let proxy = ProxyConfig {
            destination_service_name: service.name.clone(),
            destination_service_id: service.id.clone(),
            local_service_address: "127.0.0.1".into(),
            local_service_port: service.port,
            upstreams: request.upstreams,
        };
        Ok((sidecar, definition, proxy))
    }

    /// Removes a service, its checks and its sidecar. False if there was none.
    pub fn remove_service(&self, id: &ServiceId) -> bool {
        let source = {
            let mut entries = self.entries();
            let Some(removed) = entries.remove_service(id) else { return false };
            entries.remove_service(&ServiceId::new(format!("{id}-sidecar-proxy")));
            removed.source
        };
        self.changed(source);
        true
    }

    /// The proxy configuration of sidecar `id`, if it is one.
    pub fn proxy(&self, id: &ServiceId) -> Option<ProxyConfig> {
        self.entries().services.get(id).and_then(|s| s.sidecar_of.as_ref()).map(|(_, proxy)| proxy.clone())
    }

    /// Every sidecar on this agent: its service ID and the ID of the service it fronts.
    pub fn sidecars(&self) -> Vec<(ServiceId, ServiceId)> {
        self.entries()
            .services
            .iter()
            .filter_map(|(id, s)| s.sidecar_of.as_ref().map(|(parent, _)| (id.clone(), parent.clone())))
            .collect()
    }

    /// Adds or replaces a check registered on its own.
    pub fn add_check(
        self: &Arc<Self>,
        definition: CheckDefinition,
        source: Source,
    ) -> Result<CheckId, DefinitionError> {
        let mut local = definition.validate(&self.node, self.script_checks, "")?;
        let id = local.check.id.clone();
        {
            let mut entries = self.entries();
            if !local.check.service_id.is_empty() {
                let Some(owner) = entries.services.get(&local.check.service_id) else {
                    return Err(DefinitionError(format!(
                        "ServiceID {:?} does not exist on this agent",
                        local.check.service_id.as_str()
                    )));
                };
                local.check.service_name = owner.service.name.clone();
                local.check.service_tags = owner.service.tags.clone();
            }
            let entry = self.start_check(local, Some(definition), source);
            entries.checks.insert(id.clone(), entry);
        }
        self.changed(source);
        Ok(id)
    }

    /// Removes a check. False if there was none.
    pub fn remove_check(&self, id: &CheckId) -> bool {
        let source = {
            let mut entries = self.entries();
            let Some(removed) = entries.checks.remove(id) else { return false };
            removed.source
        };
        self.changed(source);
        true
    }

    /// `/v1/agent/check/pass|warn|fail|update`: sets a TTL check's status
    /// and restarts its timer.
    pub fn refresh_ttl(&self, id: &CheckId, status: HealthStatus, output: String) -> Result<(), DefinitionError> {
        {
            let mut entries = self.entries();
            let entry =
                entries.checks.get_mut(id).ok_or_else(|| DefinitionError(format!("Unknown check ID {id:?}")))?;
            let CheckRunner::Ttl { ttl } = entry.local.runner else {
                return Err(DefinitionError(format!(
                    "Check {id:?} is not a TTL check; only TTL checks are updated from outside"
                )));
            };
            entry.ttl_deadline = Some(Instant::now() + ttl);
            entry.refreshed.notify_one();
        }
        self.update_check(id, status, output);
        Ok(())
    }

    /// Sets a check's status and output. Returns `None` if there is no such check.
    pub fn update_check(&self, id: &CheckId, status: HealthStatus, output: String) -> Option<()> {
        let changed = {
            let mut entries = self.entries();
            let entry = entries.checks.get_mut(id)?;
            let check = &mut entry.local.check;
            let changed = check.status != status || check.output != output;
            if check.status != status {
                entry.critical_since = (status == HealthStatus::Critical).then(Instant::now);
                tracing::info!(check = %id, status = status.as_str(), "check status changed");
            }
            check.status = status;
            check.output = output;
            changed
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
        Some(())
    }

    /// This node's services, as the catalog should show them.
    pub fn services(&self) -> Vec<Service> {
        self.entries().services.values().map(|s| s.service.clone()).collect()
    }

    pub fn service(&self, id: &ServiceId) -> Option<Service> {
        self.entries().services.get(id).map(|s| s.service.clone())
    }

    /// This node's checks, as the catalog should show them.
    pub fn checks(&self) -> Vec<Check> {
        self.entries().checks.values().map(|c| c.local.check.clone()).collect()
    }

    pub fn check(&self, id: &CheckId) -> Option<LocalCheck> {
        self.entries().checks.get(id).map(|c| c.local.clone())
    }

    /// The version of this state; changes whenever anything in it does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Makes the services and node-level checks from config files exactly
    /// `services` and `checks`, leaving API registrations alone. Definitions
    /// that did not change keep their checks' state (nothing flaps on reload).
    /// They were validated with the config; one that fails now is logged.
    pub fn apply_config(self: &Arc<Self>, services: Vec<ServiceDefinition>, checks: Vec<CheckDefinition>) {
        let (stale_services, stale_checks) = {
            let entries = self.entries();
            let stale_services: Vec<ServiceId> = entries
                .services
                .iter()
                .filter(|(_, s)| {
                    s.source == Source::Config && s.sidecar_of.is_none() && !services.contains(&s.definition)
                })
                .map(|(id, _)| id.clone())
                .collect();
            let stale_checks: Vec<CheckId> = entries
                .checks
                .iter()
                .filter(|(_, c)| c.source == Source::Config)
                .filter(|(_, c)| c.definition.as_ref().is_some_and(|d| !checks.contains(d)))
                .map(|(id, _)| id.clone())
                .collect();
            (stale_services, stale_checks)
        };
        for id in &stale_services {
            self.remove_service(id);
        }
        for id in &stale_checks {
            self.remove_check(id);
        }
        for definition in services {
            let known =
                self.entries().services.values().any(|s| s.source == Source::Config && s.definition == definition);
            if !known {
                if let Err(error) = self.add_service(definition, Source::Config) {
                    tracing::error!(%error, "service from the config files not registered");
                }
            }
        }
        for definition in checks {
            let known = self
                .entries()
                .checks
                .values()
                .any(|c| c.source == Source::Config && c.definition.as_ref() == Some(&definition));
            if !known {
                if let Err(error) = self.add_check(definition, Source::Config) {
                    tracing::error!(%error, "check from the config files not registered");
                }
            }
        }
    }

    /// Re-reads the config files and applies their services and checks
    /// (`weft reload`, SIGHUP). A config with any error changes nothing.
    pub fn reload(self: &Arc<Self>, config: &AgentConfig) -> Result<(), ConfigErrors> {
        let definitions = config.sources.read_definitions(&self.node, self.script_checks)?;
        self.apply_config(definitions.services, definitions.checks);
        tracing::info!("reloaded services and checks from the config files");
        Ok(())
    }

    /// When a check has been critical since, if it is.
    fn critical_since(&self, id: &CheckId) -> Option<Instant> {
        self.entries().checks.get(id).and_then(|c| c.critical_since)
    }

    fn ttl_deadline(&self, id: &CheckId) -> Option<(Instant, Arc<Notify>)> {
        let entries = self.entries();
        let entry = entries.checks.get(id)?;
        Some((entry.ttl_deadline?, entry.refreshed.clone()))
    }

    fn start_check(
        self: &Arc<Self>,
        local: LocalCheck,
        definition: Option<CheckDefinition>,
        source: Source,
    ) -> CheckEntry {
        let ttl_deadline = match local.runner {
            CheckRunner::Ttl { ttl } => Some(Instant::now() + ttl),
            CheckRunner::Probe { .. } => None,
        };
        let critical_since = (local.check.status == HealthStatus::Critical).then(Instant::now);
        let task = Some(runner::spawn(Arc::downgrade(self), local.clone()));
        CheckEntry { local, definition, source, task, refreshed: Arc::new(Notify::new()), ttl_deadline, critical_since }
    }

    fn changed(&self, source: Source) {
        if source == Source::Api {
            let entries = self.entries();
            let services = entries
                .services
                .values()
                .filter(|s| s.source == Source::Api && s.sidecar_of.is_none())
                .map(|s| &s.definition);
            let checks =
                entries.checks.values().filter(|c| c.source == Source::Api).filter_map(|c| c.definition.as_ref());
            persist::save(&self.persist_dir, services, checks);
        }
        self.version.send_modify(|v| *v += 1);
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
