//! The catalog: nodes, the services on them and their health checks, with
//! Consul's registration rules (a service needs its node, a check's service
//! must exist on the same node, deregistering a node takes everything on it).
//! It also remembers nodes that left gracefully, so members can show them as
//! `left` (rather than vanish) until they register again.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::catalog::{Check, Deregistration, Node, Registration, Service};
use weft_api::command::CommandOutcome;
use weft_api::ids::{CheckId, Indexes, NodeName, RaftIndex, ServiceId, ServiceName};

use super::{Changed, Table};

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    nodes: BTreeMap<NodeName, Node>,
    services: BTreeMap<(NodeName, ServiceId), Service>,
    checks: BTreeMap<(NodeName, CheckId), Check>,
    /// The instances of each service name: derived from `services` (never
    /// stored in snapshots), so a lookup by name (DNS, health, blocking
    /// queries) does not scan the whole catalog.
    by_name: BTreeMap<ServiceName, BTreeSet<(NodeName, ServiceId)>>,
    /// The service names in `by_name` by their lower-case form, for lookups
    /// that ignore case (DNS names). Derived like `by_name`.
    by_lower_name: BTreeMap<String, BTreeSet<ServiceName>>,
    /// Nodes that left gracefully (`Command::NodeLeave`), as they were when
    /// they left; an entry goes when the node registers again or is
    /// deregistered outright.
    left: BTreeMap<NodeName, Node>,
}

/// A service instance with the node it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInstance {
    pub node: Node,
    pub service: Service,
}

/// A node with every service registered on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeServices {
    pub node: Node,
    pub services: Vec<Service>,
}

/// Stores `record` unless an equal one (indexes aside) is there already;
/// keeps the create index and sets the modify index. Returns whether it wrote.
fn upsert<K: Ord, V: Clone + PartialEq>(
    map: &mut BTreeMap<K, V>,
    key: K,
    mut record: V,
    index: RaftIndex,
    indexes: impl Fn(&mut V) -> &mut Indexes,
) -> bool {
    match map.get(&key) {
        Some(existing) => {
            let mut existing_indexes = *indexes(&mut existing.clone());
            *indexes(&mut record) = existing_indexes;
            if *existing == record {
                return false;
            }
            existing_indexes.modify = index;
            *indexes(&mut record) = existing_indexes;
        }
        None => *indexes(&mut record) = Indexes::created_at(index),
    }
    map.insert(key, record);
    true
}

impl Catalog {
    pub(super) fn from_parts(nodes: Vec<Node>, services: Vec<Service>, checks: Vec<Check>, left: Vec<Node>) -> Self {
        let mut catalog = Self {
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
            services: services.into_iter().map(|s| ((s.node.clone(), s.id.clone()), s)).collect(),
            checks: checks.into_iter().map(|c| ((c.node.clone(), c.id.clone()), c)).collect(),
            by_name: BTreeMap::new(),
            by_lower_name: BTreeMap::new(),
            left: left.into_iter().map(|n| (n.name.clone(), n)).collect(),
        };
        let keys: Vec<((NodeName, ServiceId), ServiceName)> =
            catalog.services.iter().map(|(key, s)| (key.clone(), s.name.clone())).collect();
        for (key, name) in keys {
            catalog.reindex(&key, None, Some(&name));
        }
        catalog
    }

    /// Keeps `by_name` (and `by_lower_name`) in step when the service at
    /// `key` goes from `old` to `new`.
    fn reindex(&mut self, key: &(NodeName, ServiceId), old: Option<&ServiceName>, new: Option<&ServiceName>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            if let Some(keys) = self.by_name.get_mut(old) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_name.remove(old);
                    let lower = old.as_str().to_lowercase();
                    if let Some(names) = self.by_lower_name.get_mut(&lower) {
                        names.remove(old);
                        if names.is_empty() {
                            self.by_lower_name.remove(&lower);
                        }
                    }
                }
            }
        }
        if let Some(new) = new {
            self.by_name.entry(new.clone()).or_default().insert(key.clone());
            self.by_lower_name.entry(new.as_str().to_lowercase()).or_default().insert(new.clone());
        }
    }

    pub(super) fn register(
        &mut self,
        index: RaftIndex,
        registration: &Registration,
        changed: &mut Changed,
    ) -> CommandOutcome {
        let node_name = registration.node.name.clone();
        if node_name.is_empty() {
            return CommandOutcome::Rejected("Node is required".into());
        }
        let node_exists = self.nodes.contains_key(&node_name);
        if registration.skip_node_update && !node_exists {
            return CommandOutcome::Rejected(format!("SkipNodeUpdate given but node {node_name:?} is not registered"));
        }
        if !registration.skip_node_update && registration.node.address.is_empty() {
            return CommandOutcome::Rejected("Address is required".into());
        }
        // Validate everything before writing anything: a rejected registration changes nothing.
        let service = registration.service.as_ref().map(|s| {
            let mut service = s.clone();
            service.node = node_name.clone();
            if service.id.is_empty() {
                service.id = ServiceId::new(service.name.as_str());
            }
            service
        });
        if let Some(service) = &service {
            if service.name.is_empty() {
                return CommandOutcome::Rejected("Service.Service (the service name) is required".into());
            }
        }
        let mut checks = Vec::with_capacity(registration.checks.len());
        for check in &registration.checks {
            let mut check = check.clone();
            check.node = node_name.clone();
            if check.id.is_empty() {
                check.id = CheckId::new(check.name.as_str());
            }
            if check.id.is_empty() {
                return CommandOutcome::Rejected("a check needs a CheckID or a Name".into());
            }
            if !check.service_id.is_empty() {
                let owner = match &service {
                    Some(s) if s.id == check.service_id => Some(s.clone()),
                    _ => self.services.get(&(node_name.clone(), check.service_id.clone())).cloned(),
                };
                let Some(owner) = owner else {
                    return CommandOutcome::Rejected(format!(
                        "check {:?} refers to service {:?}, which is not registered on node {node_name:?}",
                        check.id.as_str(),
                        check.service_id.as_str()
                    ));
                };
                check.service_name = owner.name.clone();
                check.service_tags = owner.tags.clone();
            }
            checks.push(check);
        }

        if !registration.skip_node_update {
            if self.left.remove(&node_name).is_some() {
                changed.mark(Table::Nodes);
            }
            let mut node = registration.node.clone();
            if node_exists && node.id.is_empty() {
                node.id = self.nodes[&node_name].id.clone();
            }
            if upsert(&mut self.nodes, node_name.clone(), node, index, |n| &mut n.indexes) {
                changed.mark(Table::Nodes);
            }
        }
        if let Some(service) = service {
            let key = (node_name.clone(), service.id.clone());
            let old_name = self.services.get(&key).map(|s| s.name.clone());
            let new_name = service.name.clone();
            if upsert(&mut self.services, key.clone(), service, index, |s| &mut s.indexes) {
                changed.mark(Table::Services);
                self.reindex(&key, old_name.as_ref(), Some(&new_name));
            }
        }
        for check in checks {
            let key = (node_name.clone(), check.id.clone());
            if upsert(&mut self.checks, key, check, index, |c| &mut c.indexes) {
                changed.mark(Table::Checks);
            }
        }
        CommandOutcome::Done
    }

    pub(super) fn deregister(&mut self, deregistration: &Deregistration, changed: &mut Changed) -> CommandOutcome {
        let node = &deregistration.node;
        if node.is_empty() {
            return CommandOutcome::Rejected("Node is required".into());
        }
        match (&deregistration.service_id, &deregistration.check_id) {
            (Some(service_id), _) => {
                let key = (node.clone(), service_id.clone());
                if let Some(removed) = self.services.remove(&key) {
                    changed.mark(Table::Services);
                    self.reindex(&key, Some(&removed.name), None);
                }
                let before = self.checks.len();
                self.checks.retain(|(n, _), c| !(n == node && &c.service_id == service_id));
                if self.checks.len() != before {
                    changed.mark(Table::Checks);
                }
            }
            (None, Some(check_id)) => {
                if self.checks.remove(&(node.clone(), check_id.clone())).is_some() {
                    changed.mark(Table::Checks);
                }
            }
            (None, None) => {
                // Deregistering a node outright also forgets that it left.
                let was_left = self.left.remove(node).is_some();
                if self.nodes.remove(node).is_some() || was_left {
                    changed.mark(Table::Nodes);
                }
                let removed: Vec<((NodeName, ServiceId), ServiceName)> = self
                    .services
                    .range((node.clone(), ServiceId::default())..)
                    .take_while(|((n, _), _)| n == node)
                    .map(|(key, s)| (key.clone(), s.name.clone()))
                    .collect();
                for (key, name) in &removed {
                    self.services.remove(key);
                    self.reindex(key, Some(name), None);
                }
                if !removed.is_empty() {
                    changed.mark(Table::Services);
                }
                let before = self.checks.len();
                self.checks.retain(|(n, _), _| n != node);
                if self.checks.len() != before {
                    changed.mark(Table::Checks);
                }
            }
        }
        CommandOutcome::Done
    }

    /// A graceful leave: the node goes with everything on it, and is
    /// remembered as left (with its record as it was, indexes set to `index`).
    pub(super) fn leave(&mut self, index: RaftIndex, node: &Node, changed: &mut Changed) -> CommandOutcome {
        if node.name.is_empty() {
            return CommandOutcome::Rejected("Node is required".into());
        }
        let record = self.nodes.get(&node.name).cloned().unwrap_or_else(|| node.clone());
        let outcome =
            self.deregister(&Deregistration { node: node.name.clone(), ..Deregistration::default() }, changed);
        self.left.insert(node.name.clone(), Node { indexes: Indexes::created_at(index), ..record });
        changed.mark(Table::Nodes);
        outcome
    }

    /// Nodes that left gracefully and have not registered since.
    pub fn left_nodes(&self) -> impl Iterator<Item = &Node> {
        self.left.values()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn node(&self, name: &NodeName) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// The node named `name` whatever the case (`VM1` for `vm1`), as DNS
    /// names are matched.
    pub fn node_ignoring_case(&self, name: &str) -> Option<&Node> {
        self.nodes
            .get(&NodeName::new(name))
            .or_else(|| self.nodes.values().find(|n| n.name.as_str().eq_ignore_ascii_case(name)))
    }

    pub fn node_services(&self, name: &NodeName) -> Option<NodeServices> {
        let node = self.nodes.get(name)?.clone();
        let services = self
            .services
            .range((name.clone(), ServiceId::default())..)
            .take_while(|((n, _), _)| n == name)
            .map(|(_, s)| s.clone())
            .collect();
        Some(NodeServices { node, services })
    }

    /// Each service name with the union of its instances' tags.
    pub fn service_names(&self) -> BTreeMap<ServiceName, BTreeSet<String>> {
        let mut names: BTreeMap<ServiceName, BTreeSet<String>> = BTreeMap::new();
        for service in self.services.values() {
            names.entry(service.name.clone()).or_default().extend(service.tags.iter().cloned());
        }
        names
    }

    /// Every instance of `name`, each with its node.
    pub fn service_instances(&self, name: &ServiceName) -> Vec<ServiceInstance> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|key| {
                let service = self.services.get(key)?;
                Some(ServiceInstance { node: self.nodes.get(&service.node)?.clone(), service: service.clone() })
            })
            .collect()
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values()
    }

    pub fn check(&self, node: &NodeName, id: &CheckId) -> Option<&Check> {
        self.checks.get(&(node.clone(), id.clone()))
    }

    /// Every check on `node`, node-level and service-level.
    pub fn node_checks(&self, node: &NodeName) -> Vec<Check> {
        self.checks
            .range((node.clone(), CheckId::default())..)
            .take_while(|((n, _), _)| n == node)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Like [`service_health`](Self::service_health), for every service whose
    /// name is `name` whatever the case (`Web` for `web`), as DNS names are matched.
    pub fn service_health_ignoring_case(&self, name: &str) -> Vec<ServiceHealth> {
        let names = self.by_lower_name.get(&name.to_lowercase()).into_iter().flatten();
        names.flat_map(|name| self.service_health(name)).collect()
    }

    /// Every instance of `name` with its node and the checks that decide its
    /// health: the node's own checks and the instance's checks.
    pub fn service_health(&self, name: &ServiceName) -> Vec<ServiceHealth> {
        self.service_instances(name)
            .into_iter()
            .map(|instance| {
                let checks = self
                    .node_checks(&instance.node.name)
                    .into_iter()
                    .filter(|c| c.service_id.is_empty() || c.service_id == instance.service.id)
                    .collect();
                ServiceHealth { node: instance.node, service: instance.service, checks }
            })
            .collect()
    }
}

/// A service instance, its node, and the checks that decide its health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    pub node: Node,
    pub service: Service,
    pub checks: Vec<Check>,
}

impl ServiceHealth {
    /// Consul's `?passing`: every check passing (no checks counts as passing).
    pub fn is_passing(&self) -> bool {
        self.checks.iter().all(|c| c.status == weft_api::catalog::HealthStatus::Passing)
    }
}

#[cfg(test)]
mod tests {
    use weft_api::catalog::HealthStatus;
    use weft_api::command::Command;

    use super::super::Tables;
    use super::*;

    fn registration(node: &str, service: Option<&str>) -> Registration {
        Registration {
            node: Node { name: node.into(), address: "10.0.0.1".into(), ..Node::default() },
            service: service.map(|s| Service { name: s.into(), port: 80, ..Service::default() }),
            ..Registration::default()
        }
    }

    #[test]
    fn re_registering_the_same_thing_changes_no_index() {
        let mut tables = Tables::default();
        let reg = Command::Register(Box::new(registration("n1", Some("web"))));
        let (_, changed) = tables.apply(RaftIndex(3), &reg);
        assert_eq!(changed.tables(), &[Table::Nodes, Table::Services]);
        let (_, changed) = tables.apply(RaftIndex(4), &reg);
        assert!(changed.tables().is_empty());
        let instance = &tables.catalog().service_instances(&"web".into())[0];
        assert_eq!(instance.service.indexes, Indexes { create: RaftIndex(3), modify: RaftIndex(3) });
        assert_eq!(instance.service.id.as_str(), "web");
    }

    #[test]
    fn a_check_for_a_missing_service_is_rejected_whole() {
        let mut tables = Tables::default();
        let mut reg = registration("n1", None);
        reg.checks.push(Check { id: "c".into(), service_id: "nope".into(), ..Check::default() });
        let (outcome, changed) = tables.apply(RaftIndex(1), &Command::Register(Box::new(reg)));
        assert!(matches!(outcome, CommandOutcome::Rejected(_)));
        assert!(changed.tables().is_empty());
        assert_eq!(tables.catalog().nodes().count(), 0);
    }

    #[test]
    fn lookups_by_name_follow_renames_and_deregistrations() {
        let mut catalog = Catalog::default();
        let mut changed = Changed::default();
        catalog.register(RaftIndex(1), &registration("n1", Some("web")), &mut changed);
        catalog.register(RaftIndex(2), &registration("n2", Some("web")), &mut changed);
        assert_eq!(catalog.service_instances(&ServiceName::new("web")).len(), 2);
        // Same service ID on n1, now named api.
        let mut renamed = registration("n1", Some("web"));
        let service = renamed.service.as_mut().unwrap();
        (service.id, service.name) = (ServiceId::new("web"), ServiceName::new("api"));
        catalog.register(RaftIndex(3), &renamed, &mut changed);
        assert_eq!(catalog.service_instances(&ServiceName::new("web")).len(), 1);
        assert_eq!(catalog.service_instances(&ServiceName::new("api")).len(), 1);
        let node = Deregistration { node: NodeName::new("n2"), ..Deregistration::default() };
        catalog.deregister(&node, &mut changed);
        assert!(catalog.service_instances(&ServiceName::new("web")).is_empty());
        assert!(!catalog.by_name.contains_key(&ServiceName::new("web")), "no empty entries are left");
        assert!(!catalog.by_lower_name.contains_key("web"), "no empty entries are left");
    }

    #[test]
    fn lookups_ignoring_case_find_every_spelling() {
        let mut catalog = Catalog::default();
        let mut changed = Changed::default();
        catalog.register(RaftIndex(1), &registration("VM1", Some("Web")), &mut changed);
        catalog.register(RaftIndex(2), &registration("vm2", Some("web")), &mut changed);
        assert_eq!(catalog.service_health_ignoring_case("WEB").len(), 2);
        assert!(catalog.service_health_ignoring_case("api").is_empty());
        assert_eq!(catalog.node_ignoring_case("vm1").map(|n| n.name.as_str()), Some("VM1"));
        catalog.deregister(&Deregistration { node: NodeName::new("VM1"), ..Deregistration::default() }, &mut changed);
        assert_eq!(catalog.service_health_ignoring_case("web").len(), 1);
        let rebuilt = Catalog::from_parts(
            catalog.nodes.values().cloned().collect(),
            catalog.services.values().cloned().collect(),
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(rebuilt.service_health_ignoring_case("WEB").len(), 1);
    }

    #[test]
    fn a_node_that_leaves_is_remembered_until_it_registers_again() {
        let mut tables = Tables::default();
        let mut reg = registration("n1", Some("web"));
        reg.node.meta.insert("weft-role".into(), "client".into());
        tables.apply(RaftIndex(1), &Command::Register(Box::new(reg.clone())));
        let leaving = Node { name: "n1".into(), ..Node::default() };
        let (_, changed) = tables.apply(RaftIndex(2), &Command::NodeLeave(Box::new(leaving)));
        assert!(changed.tables().contains(&Table::Nodes) && changed.tables().contains(&Table::Services));
        assert!(tables.catalog().node(&"n1".into()).is_none());
        assert_eq!(tables.catalog().services().count(), 0);
        let left: Vec<&Node> = tables.catalog().left_nodes().collect();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].address.as_str(), left[0].meta["weft-role"].as_str()), ("10.0.0.1", "client"));
        assert_eq!(left[0].indexes.modify, RaftIndex(2));

        tables.apply(RaftIndex(3), &Command::Register(Box::new(reg)));
        assert_eq!(tables.catalog().left_nodes().count(), 0, "registering again clears it");
        tables.apply(RaftIndex(4), &Command::NodeLeave(Box::new(Node { name: "n1".into(), ..Node::default() })));
        tables.apply(RaftIndex(5), &Command::Deregister(Deregistration { node: "n1".into(), ..Default::default() }));
        assert_eq!(tables.catalog().left_nodes().count(), 0, "deregistering outright prunes it");
    }

    #[test]
    fn deregistering_a_node_takes_its_services_and_checks() {
        let mut tables = Tables::default();
        let mut reg = registration("n1", Some("web"));
        reg.checks.push(Check {
            id: "service:web".into(),
            service_id: "web".into(),
            status: HealthStatus::Passing,
            ..Check::default()
        });
        tables.apply(RaftIndex(1), &Command::Register(Box::new(reg)));
        assert_eq!(tables.catalog().checks().next().unwrap().service_name.as_str(), "web");
        tables.apply(RaftIndex(2), &Command::Deregister(Deregistration { node: "n1".into(), ..Default::default() }));
        assert_eq!(tables.catalog().services().count(), 0);
        assert_eq!(tables.catalog().checks().count(), 0);
        assert_eq!(tables.index(Table::Checks), RaftIndex(2));
    }
}
