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

mod admin_ports;
pub mod definition;
mod maintenance;
mod persist;
pub mod runner;
pub mod sync;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use weft_api::catalog::{sidecar_id, Check, HealthStatus, Service};
use weft_api::ids::{CheckId, NodeName, ServiceId};

use crate::config::{AgentConfig, ConfigErrors, Definitions};
pub use admin_ports::AdminPorts;
use definition::{
    CheckDefinition, CheckRunner, DefinitionError, LocalCheck, LocalService, ProxyConfig, ProxyDefinition,
    ServiceDefinition, SidecarRequest,
};

/// Where a registration came from: config files are re-read on reload and
/// never persisted; API registrations are persisted and survive reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Config,
    Api,
}

/// How a service registration treats what the service had before. A
/// service is always updated in place (never removed and added again), so
/// it does not leave the catalog for a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reregistration {
    /// `PUT /v1/agent/service/register`: the new definition's checks start
    /// anew; the service's other checks stay, unless `replace_existing_checks`
    /// (Consul's `?replace-existing-checks`).
    Api { replace_existing_checks: bool },
    /// A config reload: checks whose definition did not change keep their
    /// state; the ones the definition dropped go; checks registered on their
    /// own (through the API) stay.
    Reload,
}

/// This agent's services and checks, shared by the API, the check runners
/// and anti-entropy.
pub struct LocalState {
    node: NodeName,
    /// This node's address: sidecars listen and are checked there.
    address: String,
    script_checks: bool,
    /// Ports given to sidecars that do not ask for one.
    sidecar_ports: std::ops::RangeInclusive<u16>,
    persist_dir: PathBuf,
    entries: Mutex<Entries>,
    /// TTL checks' states saved by the last run, taken by each check as it
    /// starts again (see [`persist::TtlState`]).
    restored_ttl: Mutex<BTreeMap<CheckId, persist::TtlState>>,
    /// Bumped on every change: wakes anti-entropy and `?hash` blocking queries.
    version: watch::Sender<u64>,
    admin_ports: AdminPorts,
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
    /// What the check was made from (for a check inside a service, its block).
    spec: CheckDefinition,
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

impl CheckEntry {
    /// Takes `updated` (the same definition, validated again) as this
    /// check's record, keeping the status and output it has now.
    fn keep_state_with(&mut self, updated: LocalCheck) {
        let (status, output) = (self.local.check.status, std::mem::take(&mut self.local.check.output));
        self.local = updated;
        self.local.check.status = status;
        self.local.check.output = output;
    }
}

/// Pairs a service's validated checks with the definitions they came from.
fn with_specs(checks: Vec<LocalCheck>, definition: &ServiceDefinition) -> Vec<(LocalCheck, CheckDefinition)> {
    checks.into_iter().zip(definition.check_definitions().into_iter().cloned()).collect()
}

/// How API registrations made before a restart come back.
const REGISTRATION: Reregistration = Reregistration::Api { replace_existing_checks: false };

impl Drop for CheckEntry {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl LocalState {
    /// Loads the API registrations persisted in `data_dir` (if any) and the
    /// config files' `services` and `checks`. Checks registered through the
    /// API come last, as they may belong to a service from the config files.
    pub fn open(
        node: NodeName,
        address: String,
        data_dir: &std::path::Path,
        script_checks: bool,
        sidecar_ports: std::ops::RangeInclusive<u16>,
        config: Definitions,
    ) -> Arc<Self> {
        let persist_dir = data_dir.join("local");
        let state = Arc::new(Self {
            node,
            address,
            script_checks,
            sidecar_ports,
            restored_ttl: Mutex::new(persist::load_ttl_states(&persist_dir)),
            persist_dir,
            entries: Mutex::new(Entries::default()),
            version: watch::Sender::new(0),
            admin_ports: AdminPorts::default(),
        });
        let (services, checks) = persist::load(&state.persist_dir);
        for definition in services {
            if let Err(error) = state.add_service(definition, Source::Api, REGISTRATION) {
                tracing::warn!(%error, "dropping a persisted service that no longer validates");
            }
        }
        state.apply_config(config.services, config.checks);
        for definition in checks {
            if let Err(error) = state.add_check(definition, Source::Api) {
                tracing::warn!(%error, "dropping a persisted check that no longer validates");
            }
        }
        state.restore_maintenance();
        // Every check there is has taken its saved state; the rest belonged to
        // checks that are gone, and must not pass on to a new one with their ID.
        let leftover = std::mem::take(&mut *state.restored_ttl.lock().unwrap_or_else(|p| p.into_inner()));
        if !leftover.is_empty() {
            state.save_ttl_states();
        }
        state
    }

    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// Where this agent's sidecars serve their admin ports.
    pub fn admin_ports(&self) -> &AdminPorts {
        &self.admin_ports
    }

    /// Adds a service and its checks, or updates it in place (see
    /// [`Reregistration`]); a sidecar it asks for is added or updated with it.
    pub fn add_service(
        self: &Arc<Self>,
        definition: ServiceDefinition,
        source: Source,
        how: Reregistration,
    ) -> Result<ServiceId, DefinitionError> {
        let id = self.install_with_sidecar(&mut self.entries(), definition, source, how, None)?;
        self.changed(source);
        Ok(id)
    }

    /// Gives the sidecar of `parent` another port from the sidecar range,
    /// after its proxy found its port taken (another process bound it after
    /// the agent picked it). `None` when the port was set in the
    /// registration (the user's choice stays), or none is left.
    pub fn repick_sidecar_port(self: &Arc<Self>, parent: &ServiceId) -> Option<u16> {
        let sidecar_id = sidecar_id(parent);
        let port = {
            let mut entries = self.entries();
            let entry = entries.services.get(parent)?;
            if entry.definition.sidecar_request().ok()??.port.is_some() {
                return None;
            }
            let (definition, source) = (entry.definition.clone(), entry.source);
            let taken = entries.services.get(&sidecar_id)?.service.port;
            let installed =
                self.install_with_sidecar(&mut entries, definition, source, Reregistration::Reload, Some(taken));
            if let Err(error) = installed {
                tracing::warn!(service = %parent, %error, "cannot move the sidecar to another port");
                return None;
            }
            entries.services.get(&sidecar_id)?.service.port
        };
        self.changed(Source::Config);
        Some(port)
    }

    /// [`add_service`](Self::add_service) under the entries' lock; a new
    /// sidecar port is never `avoid`.
    fn install_with_sidecar(
        self: &Arc<Self>,
        entries: &mut Entries,
        definition: ServiceDefinition,
        source: Source,
        how: Reregistration,
        avoid: Option<u16>,
    ) -> Result<ServiceId, DefinitionError> {
        let local = definition.validate(&self.node, self.script_checks)?;
        let sidecar = definition.sidecar_request()?;
        let id = local.service.id.clone();
        {
            let sidecar = match sidecar {
                None => None,
                Some(request) => Some(self.sidecar_for(entries, &local.service, request, avoid)?),
            };
            let checks = with_specs(local.checks, &definition);
            let parent = ServiceEntry { service: local.service, definition, source, sidecar_of: None };
            self.install_service(entries, parent, checks, how);
            let sidecar_id = sidecar_id(&id);
            match sidecar {
                None => {
                    entries.remove_service(&sidecar_id);
                }
                Some((sidecar, definition, proxy)) => {
                    let checks = with_specs(sidecar.checks, &definition);
                    let entry = ServiceEntry {
                        service: sidecar.service,
                        definition,
                        source,
                        sidecar_of: Some((id.clone(), proxy)),
                    };
                    let how = match how {
                        Reregistration::Reload => Reregistration::Reload,
                        Reregistration::Api { .. } => Reregistration::Api { replace_existing_checks: true },
                    };
                    self.install_service(entries, entry, checks, how);
                }
            }
        }
        Ok(id)
    }

    /// Puts `entry` in place of the service with its ID (if any), with
    /// `checks` (each with the definition it came from), without a moment
    /// where the service or its unchanged checks are missing.
    fn install_service(
        self: &Arc<Self>,
        entries: &mut Entries,
        entry: ServiceEntry,
        checks: Vec<(LocalCheck, CheckDefinition)>,
        how: Reregistration,
    ) {
        let id = entry.service.id.clone();
        let source = entry.source;
        let new_ids: Vec<CheckId> = checks.iter().map(|(c, _)| c.check.id.clone()).collect();
        let dropped: Vec<CheckId> = entries
            .checks
            .iter()
            .filter(|(check_id, c)| c.local.check.service_id == id && !new_ids.contains(check_id))
            // Maintenance is not part of a definition: it stays until lifted.
            .filter(|(_, c)| c.local.runner != CheckRunner::Maintenance)
            .map(|(check_id, _)| check_id.clone())
            .collect();
        for check_id in dropped {
            let on_its_own = entries.checks.get(&check_id).is_some_and(|c| c.definition.is_some());
            match (how, on_its_own) {
                (Reregistration::Api { replace_existing_checks: true }, _) | (Reregistration::Reload, false) => {
                    entries.checks.remove(&check_id);
                }
                // Kept, as a check of its own: it is persisted as one from now on.
                (Reregistration::Api { replace_existing_checks: false }, false) => {
                    if let Some(check) = entries.checks.get_mut(&check_id) {
                        check.definition = Some(check.spec.standalone(&check.local.check));
                        check.source = source;
                    }
                }
                (_, true) => {}
            }
        }
        for (local, spec) in checks {
            let check_id = local.check.id.clone();
            match entries.checks.get_mut(&check_id) {
                Some(current)
                    if how == Reregistration::Reload
                        && current.spec == spec
                        && current.local.check.service_id == id =>
                {
                    current.keep_state_with(local);
                    current.definition = None;
                    current.source = source;
                }
                _ => {
                    let started = self.start_check(local, spec, None, source);
                    entries.checks.insert(check_id, started);
                }
            }
        }
        // Every check of the service, its own included, follows its name and tags.
        for check in entries.checks.values_mut().filter(|c| c.local.check.service_id == id) {
            check.local.check.service_name = entry.service.name.clone();
            check.local.check.service_tags = entry.service.tags.clone();
        }
        entries.services.insert(id, entry);
    }

    /// The sidecar service for `service`: on the requested port, or on the
    /// port it already has, or on the first port of the sidecar range that
    /// no other sidecar of this agent has and nothing on this host listens
    /// on now (another agent's sidecar, on a host that runs two agents);
    /// never on `avoid`, unless requested. Its listening check asks the
    /// sidecar itself (see [`CheckRunner::Sidecar`]).
    fn sidecar_for(
        &self,
        entries: &Entries,
        service: &Service,
        request: SidecarRequest,
        avoid: Option<u16>,
    ) -> Result<(LocalService, ServiceDefinition, ProxyConfig), DefinitionError> {
        let sidecar_id = sidecar_id(&service.id);
        let taken: Vec<u16> = entries
            .services
            .values()
            .filter(|s| s.sidecar_of.is_some() && s.service.id != sidecar_id)
            .map(|s| s.service.port)
            .collect();
        let port = request
            .port
            .or_else(|| entries.services.get(&sidecar_id).map(|s| s.service.port).filter(|p| Some(*p) != avoid))
            .or_else(|| {
                let mut range = self.sidecar_ports.clone();
                range.find(|p| !taken.contains(p) && Some(*p) != avoid && self.port_is_free(*p))
            })
            .ok_or_else(|| {
                let (low, high) = (self.sidecar_ports.start(), self.sidecar_ports.end());
                DefinitionError(format!("no free sidecar port left in {low}-{high} (ports.sidecar_min_port/max_port)"))
            })?;
        let definition = ServiceDefinition::sidecar_definition(service, &self.address, port);
        let mut sidecar = definition.validate(&self.node, false)?;
        for check in &mut sidecar.checks {
            if let CheckRunner::Probe { interval, timeout, .. } = check.runner {
                let sidecar = sidecar_id.clone();
                check.runner = CheckRunner::Sidecar { sidecar, address: self.address.clone(), port, interval, timeout };
            }
        }
        let proxy = ProxyConfig {
            destination_service_name: service.name.clone(),
            destination_service_id: service.id.clone(),
            local_service_address: "127.0.0.1".into(),
            local_service_port: service.port,
            upstreams: request.upstreams,
            transparent: request.transparent,
        };
        Ok((sidecar, definition, proxy))
    }

    /// Whether nothing listens on `port` at this node's address now.
    fn port_is_free(&self, port: u16) -> bool {
        let ip = self.address.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        std::net::TcpListener::bind(std::net::SocketAddr::new(ip, port)).is_ok()
    }

    /// Removes a service, its checks and its sidecar. False if there was none.
    pub fn remove_service(&self, id: &ServiceId) -> bool {
        let source = {
            let mut entries = self.entries();
            let Some(removed) = entries.remove_service(id) else { return false };
            entries.remove_service(&sidecar_id(id));
            removed.source
        };
        self.changed(source);
        true
    }

    /// The proxy configuration of sidecar `id`, if it is one.
    pub fn proxy(&self, id: &ServiceId) -> Option<ProxyConfig> {
        self.entries().services.get(id).and_then(|s| s.sidecar_of.as_ref()).map(|(_, proxy)| proxy.clone())
    }

    /// The `Proxy` block of service `id`, as the agent API shows it: a
    /// sidecar's (made by this agent) or a directly registered
    /// `connect-proxy`'s (as registered).
    pub fn proxy_definition(&self, id: &ServiceId) -> Option<ProxyDefinition> {
        let entries = self.entries();
        let entry = entries.services.get(id)?;
        match &entry.sidecar_of {
            Some((_, sidecar)) => Some(ProxyDefinition::from(sidecar)),
            None => entry.definition.proxy_definition().ok().flatten(),
        }
    }

    /// Every sidecar on this agent: its service ID and the ID of the service it fronts.
    /// The ACL token the service `id`'s sidecar uses, if it has one.
    pub fn service_token(&self, id: &ServiceId) -> Option<String> {
        self.entries().services.get(id).and_then(|s| s.definition.token.clone()).filter(|t| !t.is_empty())
    }

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
            let entry = self.start_check(local, definition.clone(), Some(definition), source);
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
        self.save_ttl_states();
        Ok(())
    }

    /// Saves every TTL check's status and deadline, so a restarted agent
    /// picks them up (as Consul keeps TTL check state across restarts).
    fn save_ttl_states(&self) {
        let states: BTreeMap<CheckId, persist::TtlState> = self
            .entries()
            .checks
            .iter()
            .filter_map(|(id, c)| Some((id.clone(), persist::TtlState::new(&c.local.check, c.ttl_deadline?))))
            .collect();
        persist::save_ttl_states(&self.persist_dir, &states);
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
    /// `services` and `checks`, leaving API registrations alone. A changed
    /// service is updated in place, and checks whose definition did not
    /// change keep their state (nothing flaps on reload). The definitions
    /// were validated with the config; one that fails now is logged.
    pub fn apply_config(self: &Arc<Self>, services: Vec<ServiceDefinition>, checks: Vec<CheckDefinition>) {
        let wanted_services: Vec<ServiceId> = services.iter().map(ServiceDefinition::service_id).collect();
        let wanted_checks: Vec<CheckId> = checks.iter().map(|c| c.check_id("")).collect();
        let (stale_services, stale_checks) = {
            let entries = self.entries();
            let stale_services: Vec<ServiceId> = entries
                .services
                .iter()
                .filter(|(id, s)| s.source == Source::Config && s.sidecar_of.is_none() && !wanted_services.contains(id))
                .map(|(id, _)| id.clone())
                .collect();
            let stale_checks: Vec<CheckId> = entries
                .checks
                .iter()
                .filter(|(id, c)| c.source == Source::Config && c.definition.is_some() && !wanted_checks.contains(id))
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
                if let Err(error) = self.add_service(definition, Source::Config, Reregistration::Reload) {
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
        mut local: LocalCheck,
        spec: CheckDefinition,
        definition: Option<CheckDefinition>,
        source: Source,
    ) -> CheckEntry {
        let ttl_deadline = match local.runner {
            CheckRunner::Ttl { ttl } => Some(self.restore_ttl(&mut local).unwrap_or_else(|| Instant::now() + ttl)),
            CheckRunner::Probe { .. } | CheckRunner::Sidecar { .. } | CheckRunner::Maintenance => None,
        };
        let critical_since = (local.check.status == HealthStatus::Critical).then(Instant::now);
        let task = runner::spawn(Arc::downgrade(self), local.clone());
        CheckEntry {
            local,
            spec,
            definition,
            source,
            task,
            refreshed: Arc::new(Notify::new()),
            ttl_deadline,
            critical_since,
        }
    }

    /// A TTL check's state from before a restart, if it has not expired:
    /// sets its status and output, and returns its deadline.
    fn restore_ttl(&self, local: &mut LocalCheck) -> Option<Instant> {
        let saved = self.restored_ttl.lock().unwrap_or_else(|p| p.into_inner()).remove(&local.check.id)?;
        let deadline = saved.deadline()?;
        local.check.status = saved.status;
        local.check.output = saved.output;
        Some(deadline)
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decode::decode_value;

    fn service(value: serde_json::Value) -> ServiceDefinition {
        decode_value(value).unwrap()
    }

    fn check(value: serde_json::Value) -> CheckDefinition {
        decode_value(value).unwrap()
    }

    fn open(dir: &std::path::Path, services: Vec<ServiceDefinition>) -> Arc<LocalState> {
        let config = Definitions { services, checks: Vec::new() };
        LocalState::open(NodeName::new("vm1"), "127.0.0.1".into(), dir, false, 21000..=21255, config)
    }

    fn status(state: &LocalState, id: &str) -> Option<HealthStatus> {
        state.check(&CheckId::new(id)).map(|c| c.check.status)
    }

    const API: Reregistration = Reregistration::Api { replace_existing_checks: false };

    #[tokio::test]
    async fn a_reload_updates_a_service_in_place_and_keeps_unchanged_checks() {
        let dir = tempfile::tempdir().unwrap();
        let web =
            |tag: &str| service(json!({"Name": "web", "Tags": [tag], "Check": {"CheckID": "web-ttl", "TTL": "60s"}}));
        let state = open(dir.path(), vec![web("v1")]);
        let api = service(json!({"Name": "api", "Check": {"TTL": "60s"}}));
        state.add_service(api.clone(), Source::Api, API).unwrap();
        state.refresh_ttl(&CheckId::new("web-ttl"), HealthStatus::Passing, "ok".into()).unwrap();

        state.apply_config(vec![web("v2")], Vec::new());
        assert_eq!(state.service(&ServiceId::new("web")).unwrap().tags, ["v2"]);
        let kept = state.check(&CheckId::new("web-ttl")).unwrap().check;
        assert_eq!(
            (kept.status, kept.output.as_str(), kept.service_tags.clone()),
            (HealthStatus::Passing, "ok", vec!["v2".to_owned()])
        );
        assert!(state.service(&ServiceId::new("api")).is_some(), "API registrations are left alone");

        // A changed check definition starts anew; a dropped service goes.
        let changed = service(json!({"Name": "web", "Tags": ["v2"], "Check": {"CheckID": "web-ttl", "TTL": "30s"}}));
        state.apply_config(vec![changed], Vec::new());
        assert_eq!(status(&state, "web-ttl"), Some(HealthStatus::Critical));
        state.apply_config(Vec::new(), Vec::new());
        assert!(state.service(&ServiceId::new("web")).is_none());
        assert!(state.service(&ServiceId::new("api")).is_some());
    }

    #[tokio::test]
    async fn re_registration_keeps_other_checks_unless_told_to_replace_them() {
        let dir = tempfile::tempdir().unwrap();
        let state = open(dir.path(), Vec::new());
        let both = json!({"Name": "web", "Checks": [{"CheckID": "a", "TTL": "60s"}, {"CheckID": "b", "TTL": "60s"}]});
        let only_a = service(json!({"Name": "web", "Checks": [{"CheckID": "a", "TTL": "60s"}]}));
        state.add_service(service(both.clone()), Source::Api, API).unwrap();
        state.add_service(only_a.clone(), Source::Api, API).unwrap();
        assert!(status(&state, "b").is_some(), "without replace-existing-checks, b stays");
        // ... and is kept across a restart, as a check of its own.
        drop(state);
        let state = open(dir.path(), Vec::new());
        assert!(status(&state, "a").is_some() && status(&state, "b").is_some());

        let replace = Reregistration::Api { replace_existing_checks: true };
        state.add_service(only_a, Source::Api, replace).unwrap();
        assert!(status(&state, "a").is_some());
        assert!(status(&state, "b").is_none(), "replace-existing-checks removes b");
    }

    #[tokio::test]
    async fn an_api_check_on_a_config_service_and_its_ttl_state_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let web = service(json!({"Name": "web", "Port": 80}));
        let state = open(dir.path(), vec![web.clone()]);
        let ttl = check(json!({"CheckID": "web-ttl", "ServiceID": "web", "TTL": "5m"}));
        state.add_check(ttl, Source::Api).unwrap();
        state.refresh_ttl(&CheckId::new("web-ttl"), HealthStatus::Passing, "fine".into()).unwrap();
        drop(state);

        let state = open(dir.path(), vec![web]);
        let restored = state.check(&CheckId::new("web-ttl")).expect("the API check is back").check;
        assert_eq!(restored.service_id.as_str(), "web");
        assert_eq!((restored.status, restored.output.as_str()), (HealthStatus::Passing, "fine"));
    }
}
