//! Maintenance mode, as Consul's agent does it: a check in status
//! `maintenance` on the node (`_node_maintenance`) or on one service
//! (`_service_maintenance:<id>`) takes the node's or the service's
//! instances out of DNS and out of passing health answers until it is
//! lifted. The check has no runner; re-registering or reloading its service
//! keeps it; deregistering the service drops it. Kept across restarts in
//! `local/maintenance.json`.

use std::sync::Arc;

use weft_api::catalog::{Check, HealthStatus};
use weft_api::ids::{CheckId, ServiceId};

use super::definition::{CheckDefinition, CheckRunner, DefinitionError, LocalCheck};
use super::{persist, LocalState, Source};

/// The node's maintenance check.
const NODE_MAINTENANCE: &str = "_node_maintenance";
/// A service's maintenance check ID is this, then the service ID.
const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The check type Consul gives them.
const MAINTENANCE_TYPE: &str = "maintenance";

const DEFAULT_NODE_REASON: &str =
    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
const DEFAULT_SERVICE_REASON: &str =
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// The maintenance check ID of the node (`None`) or of a service.
fn maintenance_check_id(service: Option<&ServiceId>) -> CheckId {
    match service {
        None => CheckId::new(NODE_MAINTENANCE),
        Some(service) => CheckId::new(format!("{SERVICE_MAINTENANCE_PREFIX}{service}")),
    }
}

impl LocalState {
    /// Puts the node (`service` `None`) or one of its services in
    /// maintenance, with `reason` (Consul's default message if empty).
    /// Already in maintenance: nothing changes, as in Consul.
    pub fn enable_maintenance(
        self: &Arc<Self>,
        service: Option<&ServiceId>,
        reason: &str,
    ) -> Result<(), DefinitionError> {
        if self.install_maintenance(service, reason)? {
            self.save_maintenance();
            self.changed(Source::Config);
        }
        Ok(())
    }

    /// Adds the maintenance check unless there is one; whether it did.
    fn install_maintenance(
        self: &Arc<Self>,
        service: Option<&ServiceId>,
        reason: &str,
    ) -> Result<bool, DefinitionError> {
        let id = maintenance_check_id(service);
        let mut entries = self.entries();
        if entries.checks.contains_key(&id) {
            return Ok(false);
        }
        let mut check = Check {
            node: self.node.clone(),
            id: id.clone(),
            status: HealthStatus::Maintenance,
            check_type: MAINTENANCE_TYPE.into(),
            ..Check::default()
        };
        match service {
            None => {
                check.name = "Node Maintenance Mode".into();
                check.notes = if reason.is_empty() { DEFAULT_NODE_REASON } else { reason }.into();
            }
            Some(service_id) => {
                let owner = entries.services.get(service_id).ok_or_else(|| no_service(service_id))?;
                check.name = "Service Maintenance Mode".into();
                check.notes = if reason.is_empty() { DEFAULT_SERVICE_REASON } else { reason }.into();
                check.service_id = service_id.clone();
                check.service_name = owner.service.name.clone();
                check.service_tags = owner.service.tags.clone();
            }
        }
        let local = LocalCheck {
            check,
            runner: CheckRunner::Maintenance,
            success_before_passing: 0,
            failures_before_warning: 0,
            failures_before_critical: 0,
            deregister_critical_service_after: None,
        };
        let entry = self.start_check(local, CheckDefinition::default(), None, Source::Api);
        entries.checks.insert(id, entry);
        Ok(true)
    }

    /// Lifts maintenance from the node or a service (nothing to lift: no
    /// change). Err when the service is not registered here.
    pub fn disable_maintenance(self: &Arc<Self>, service: Option<&ServiceId>) -> Result<(), DefinitionError> {
        let removed = {
            let mut entries = self.entries();
            if let Some(service_id) = service {
                if !entries.services.contains_key(service_id) {
                    return Err(no_service(service_id));
                }
            }
            entries.checks.remove(&maintenance_check_id(service)).is_some()
        };
        if removed {
            self.save_maintenance();
            self.changed(Source::Config);
        }
        Ok(())
    }

    /// Saves which maintenance checks there are, with their reasons.
    pub(super) fn save_maintenance(&self) {
        let records: Vec<persist::Maintenance> = self
            .entries()
            .checks
            .values()
            .filter(|c| c.local.runner == CheckRunner::Maintenance)
            .map(|c| persist::Maintenance {
                service: (!c.local.check.service_id.is_empty()).then(|| c.local.check.service_id.to_string()),
                reason: c.local.check.notes.clone(),
            })
            .collect();
        persist::save_maintenance(&self.persist_dir, &records);
    }

    /// Puts back the maintenance saved by the last run, at start-up, without
    /// writing the file again (a service that is gone is left out, and out
    /// of the file at its next save).
    pub(super) fn restore_maintenance(self: &Arc<Self>) {
        for record in persist::load_maintenance(&self.persist_dir) {
            let service = record.service.map(ServiceId::new);
            if let Err(error) = self.install_maintenance(service.as_ref(), &record.reason) {
                tracing::warn!(%error, "dropping saved maintenance mode");
            }
        }
    }
}

fn no_service(id: &ServiceId) -> DefinitionError {
    DefinitionError(format!("No service registered with ID {:?}", id.as_str()))
}
