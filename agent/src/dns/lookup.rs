//! Consul's DNS names, answered from the catalog as this agent holds it:
//!
//! - `<service>.service[.<dc>].<domain>`: A/AAAA of each healthy instance
//!   (the service address, else its node's); SRV with `<node>.node.<dc>.<domain>`
//!   targets, or `<hex-ip>.addr.<dc>.<domain>` for an instance with an
//!   address of its own (so a target's A record never disagrees with a
//!   direct query of that name), and their A/AAAA records as additionals.
//!   The SRV weight is `Weights.Warning` for an instance in warning, else
//!   `Weights.Passing`. A service with no healthy instance (or none with the
//!   tag) is NXDOMAIN, as in Consul.
//! - `<tag>.<service>.service[.<dc>].<domain>`: the same, instances with the tag.
//! - `_<service>._<tag>.service[.<dc>].<domain>` (RFC 2782): `_tcp` means any tag.
//! - `<service>.connect[.<dc>].<domain>`: the service's sidecars (A, SRV).
//! - `<service>.ingress[.<dc>].<domain>`: the ingress gateways exposing it.
//! - `<node>.node[.<dc>].<domain>`: the node's address; TXT `key=value` per node meta.
//! - `<hex-ip>.addr[.<dc>].<domain>`: the address the name spells.
//! - `<reversed ip>.in-addr.arpa` / `ip6.arpa` PTR: the node with that
//!   address, else the service whose instances have it; an address neither
//!   has may be known to the recursors ([`Answer::recurse`]).
//! - The zone apex `<domain>`: its SOA and NS (`ns.<domain>`, whose A/AAAA
//!   is this agent's DNS address), so resolvers that prime a stub zone
//!   (unbound's `stub-prime`) find it served. Names between the apex and
//!   the names above (`service.<domain>`, `node.<dc>.<domain>`, `<dc>.<domain>`)
//!   exist without records of their own: NOERROR with no answer (NODATA),
//!   never NXDOMAIN, which would tell a resolver that minimises its
//!   queries (RFC 9156) that nothing below them exists.
//!
//! Service, node and datacenter names match whatever their case, as in Consul.
//!
//! Negative answers (NXDOMAIN, or a name with no records of the type asked)
//! carry the domain's SOA, whose minimum (`dns_config { soa { min_ttl } }`,
//! 0 by default as in Consul) is how long resolvers may cache them (RFC 2308).
//!
//! An instance is healthy unless one of its checks (node-level included) is
//! critical or in maintenance, as in Consul's DNS (warning still answers,
//! unless `only_passing`). Record TTLs come from [`LookupOptions`].
//! This module is pure: names and tables in, records out.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use weft_api::addr::{hex_label, parse_hex_label};
use weft_api::catalog::{HealthStatus, INGRESS_GATEWAY_KIND};
use weft_api::ids::Datacenter;
use weft_server::store::{gateways_exposing, ServiceHealth, Tables};

use crate::config::SoaTimers;

/// What to answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub records: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The name does not exist in the domain (NXDOMAIN).
    pub no_such_name: bool,
    /// The domain's SOA, for the authority section of a negative answer.
    pub soa: Option<Record>,
    /// A reverse name nothing here has: ask the recursors, if there are any.
    pub recurse: bool,
}

/// How answers are made, beyond the name asked.
#[derive(Clone, Debug, Default)]
pub struct LookupOptions {
    /// Leave out instances with a warning check too.
    pub only_passing: bool,
    /// TTL (seconds) of node records, PTR included.
    pub node_ttl: u32,
    /// TTL (seconds) of service records by lower-case service name; a key
    /// ending in `*` is a prefix (`"web*"`, and `"*"` for every service).
    pub service_ttl: BTreeMap<String, u32>,
    /// The SOA's timers.
    pub soa: SoaTimers,
    /// Where this agent answers DNS: the address of `ns.<domain>`.
    pub ns_address: Option<IpAddr>,
}

impl LookupOptions {
    /// Consul's rule: the exact name, else the longest matching prefix.
    fn service_ttl(&self, service: &str) -> u32 {
        let service = service.to_lowercase();
        if let Some(ttl) = self.service_ttl.get(&service) {
            return *ttl;
        }
        self.service_ttl
            .iter()
            .filter_map(|(key, ttl)| {
                key.strip_suffix('*').filter(|prefix| service.starts_with(prefix)).map(|p| (p.len(), *ttl))
            })
            .max_by_key(|(prefix_len, _)| *prefix_len)
            .map_or(0, |(_, ttl)| ttl)
    }
}

/// What a name in the domain asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Asked {
    Node(String),
    Addr(String),
    /// A service's instances, by tag; `rfc2782` for `_service._tag` names.
    Service {
        service: String,
        tag: Option<String>,
        rfc2782: bool,
    },
    /// A service's sidecars (`.connect`).
    Connect(String),
    /// The ingress gateways that expose a service (`.ingress`).
    Ingress(String),
    /// The zone apex: SOA and NS.
    Apex,
    /// `ns.<domain>`, the name server the apex's NS record names.
    NameServer,
    /// A name with names below it but no records of its own
    /// (`service.<domain>`, `<dc>.<domain>`).
    EmptyNonTerminal,
    /// A name in the domain that asks for nothing Weft knows.
    Unknown,
}

impl Asked {
    /// The service or node the name is about, for the ACL check.
    pub fn subject(&self) -> Option<(weft_api::acl::NamedResource, &str)> {
        use weft_api::acl::NamedResource;
        match self {
            Asked::Node(node) => Some((NamedResource::Node, node)),
            Asked::Service { service, .. } | Asked::Connect(service) | Asked::Ingress(service) => {
                Some((NamedResource::Service, service))
            }
            Asked::Addr(_) | Asked::Apex | Asked::NameServer | Asked::EmptyNonTerminal | Asked::Unknown => None,
        }
    }
}

/// What `name` (lower-case, fully qualified) asks for in `domain`; `None`
/// when it is outside `domain`.
pub fn asked(name: &Name, domain: &Name, datacenter: &Datacenter) -> Option<Asked> {
    if !domain.zone_of(name) {
        return None;
    }
    let labels: Vec<String> = name.iter().map(|l| String::from_utf8_lossy(l).to_lowercase()).collect();
    let mut labels = labels[..labels.len() - domain.num_labels() as usize].to_vec();
    // An optional datacenter label sits just before the domain.
    if labels.len() >= 2 && labels.last().is_some_and(|l| l.eq_ignore_ascii_case(datacenter.as_str())) {
        labels.pop();
    }
    let owned = |text: &str| text.to_owned();
    let datacenter = datacenter.as_str().to_lowercase();
    Some(match labels.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Asked::Apex,
        ["ns"] => Asked::NameServer,
        [dc] if *dc == datacenter => Asked::EmptyNonTerminal,
        ["node" | "addr" | "service" | "connect" | "ingress"] => Asked::EmptyNonTerminal,
        [node, "node"] => Asked::Node(owned(node)),
        [hex, "addr"] => Asked::Addr(owned(hex)),
        [service, tag, "service"] if service.starts_with('_') && tag.starts_with('_') => {
            let tag = &tag[1..];
            Asked::Service { service: owned(&service[1..]), tag: (tag != "tcp").then(|| owned(tag)), rfc2782: true }
        }
        [tag, service, "service"] => Asked::Service { service: owned(service), tag: Some(owned(tag)), rfc2782: false },
        [service, "service"] => Asked::Service { service: owned(service), tag: None, rfc2782: false },
        // Consul's `.connect` names: the service's sidecars.
        [service, "connect"] => Asked::Connect(owned(service)),
        // Consul's `.ingress` names: the ingress gateways that expose the service.
        [service, "ingress"] => Asked::Ingress(owned(service)),
        _ => Asked::Unknown,
    })
}

/// Answers `name` (lower-case, fully qualified) of type `record_type`.
/// `None` when the name is outside `domain`: not ours to answer. Service
/// instances on nodes `readable_node` refuses are left out (the ACLs of
/// the agent's default token).
pub fn answer(
    tables: &Tables,
    (name, record_type): (&Name, RecordType),
    domain: &Name,
    datacenter: &Datacenter,
    options: &LookupOptions,
    readable_node: &dyn Fn(&str) -> bool,
) -> Option<Answer> {
    if matches!(record_type, RecordType::PTR | RecordType::ANY) && is_reverse(name) {
        return reverse(tables, name, domain, datacenter, options.node_ttl);
    }
    let asked = asked(name, domain, datacenter)?;
    let lookup = Lookup { tables, name, record_type, domain, datacenter, options, readable_node };
    let answer = match &asked {
        Asked::Node(node) => lookup.node(node),
        Asked::Addr(hex) => lookup.addr(hex),
        Asked::Service { service, tag, rfc2782 } => lookup.service(service, tag.as_deref(), *rfc2782),
        Asked::Connect(service) => lookup.service(&format!("{service}-sidecar-proxy"), None, false),
        Asked::Ingress(service) => lookup.ingress(service),
        Asked::Apex => Some(lookup.apex()),
        Asked::NameServer => Some(lookup.name_server()),
        // No records of its own, but names below it: NODATA.
        Asked::EmptyNonTerminal => Some(Answer::default()),
        Asked::Unknown => None,
    };
    let mut answer = answer.unwrap_or(Answer { no_such_name: true, ..Answer::default() });
    if answer.records.is_empty() {
        answer.soa = Some(soa(domain, &options.soa));
    }
    Some(answer)
}

/// `ns.<domain>`: the name server the apex's NS and SOA name.
fn name_server(domain: &Name) -> Name {
    Name::from_ascii("ns").ok().and_then(|n| n.append_domain(domain).ok()).unwrap_or_else(|| domain.clone())
}

/// The domain's SOA (Consul's shape), its TTL and minimum the negative
/// caching TTL.
pub fn soa(domain: &Name, timers: &SoaTimers) -> Record {
    let mail = Name::from_ascii("hostmaster")
        .ok()
        .and_then(|n| n.append_domain(domain).ok())
        .unwrap_or_else(|| domain.clone());
    let SoaTimers { refresh, retry, expire, min_ttl } = *timers;
    let refresh = i32::try_from(refresh).unwrap_or(i32::MAX);
    let (retry, expire) = (i32::try_from(retry).unwrap_or(i32::MAX), i32::try_from(expire).unwrap_or(i32::MAX));
    let rdata = SOA::new(name_server(domain), mail, 1, refresh, retry, expire, min_ttl);
    Record::from_rdata(domain.clone(), min_ttl, RData::SOA(rdata))
}

fn is_reverse(name: &Name) -> bool {
    let text = name.to_ascii().to_ascii_lowercase();
    text.ends_with(".in-addr.arpa.") || text.ends_with(".ip6.arpa.")
}

/// PTR for a node's address (`<node>.node.<dc>.<domain>`), else for a
/// service address (`<service>.service.<dc>.<domain>`); `None` (not ours) for
/// names that are not a full address.
fn reverse(tables: &Tables, name: &Name, domain: &Name, datacenter: &Datacenter, ttl: u32) -> Option<Answer> {
    let network = name.parse_arpa_name().ok()?;
    if network.prefix_len() != network.max_prefix_len() {
        return None;
    }
    let ip = network.addr();
    let has_ip = |address: &str| address.parse::<IpAddr>().ok() == Some(ip);
    let catalog = tables.catalog();
    let mut targets: Vec<String> = catalog
        .nodes()
        .filter(|n| has_ip(&n.address))
        .map(|n| format!("{}.node.{datacenter}.{domain}", n.name))
        .collect();
    if targets.is_empty() {
        targets = catalog
            .services()
            .filter(|s| has_ip(&s.address))
            .map(|s| format!("{}.service.{datacenter}.{domain}", s.name))
            .collect();
        targets.dedup();
    }
    let mut answer = Answer::default();
    for target in targets.iter().filter_map(|t| Name::from_ascii(t).ok()) {
        answer.records.push(Record::from_rdata(name.clone(), ttl, RData::PTR(PTR(target))));
    }
    answer.no_such_name = answer.records.is_empty();
    answer.recurse = answer.no_such_name;
    Some(answer)
}

struct Lookup<'a> {
    tables: &'a Tables,
    name: &'a Name,
    record_type: RecordType,
    domain: &'a Name,
    datacenter: &'a Datacenter,
    options: &'a LookupOptions,
    readable_node: &'a dyn Fn(&str) -> bool,
}

fn address_record(name: &Name, ip: IpAddr, ttl: u32) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

/// Consul's SRV weight: `Weights.Warning` for an instance in warning.
fn srv_weight(instance: &ServiceHealth) -> u16 {
    let warning = instance.checks.iter().any(|c| c.status == HealthStatus::Warning);
    let weights = instance.service.weights;
    let weight = if warning { weights.warning } else { weights.passing };
    weight.min(u32::from(u16::MAX)) as u16
}

fn is_healthy(instance: &ServiceHealth, only_passing: bool) -> bool {
    instance.checks.iter().all(|c| match c.status {
        HealthStatus::Passing => true,
        HealthStatus::Warning => !only_passing,
        HealthStatus::Critical | HealthStatus::Maintenance => false,
    })
}

impl Lookup<'_> {
    /// The apex: SOA, and NS with its address as an additional.
    fn apex(&self) -> Answer {
        let mut answer = Answer::default();
        if matches!(self.record_type, RecordType::SOA | RecordType::ANY) {
            answer.records.push(soa(self.domain, &self.options.soa));
        }
        if matches!(self.record_type, RecordType::NS | RecordType::ANY) {
            let ns = name_server(self.domain);
            let rdata = RData::NS(hickory_proto::rr::rdata::NS(ns.clone()));
            answer.records.push(Record::from_rdata(self.domain.clone(), self.options.node_ttl, rdata));
            if let Some(ip) = self.options.ns_address {
                answer.additionals.push(address_record(&ns, ip, self.options.node_ttl));
            }
        }
        answer
    }

    /// `ns.<domain>`: this agent's DNS address.
    fn name_server(&self) -> Answer {
        let mut answer = Answer::default();
        if let Some(ip) = self.options.ns_address.filter(|ip| self.wants(ip)) {
            answer.records.push(address_record(self.name, ip, self.options.node_ttl));
        }
        answer
    }

    fn wants(&self, ip: &IpAddr) -> bool {
        match self.record_type {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            RecordType::ANY => true,
            _ => false,
        }
    }

    fn node(&self, node: &str) -> Option<Answer> {
        let node = self.tables.catalog().node_ignoring_case(node)?;
        let mut answer = Answer::default();
        if let Ok(ip) = node.address.parse::<IpAddr>() {
            if self.wants(&ip) {
                answer.records.push(address_record(self.name, ip, self.options.node_ttl));
            }
        }
        if matches!(self.record_type, RecordType::TXT | RecordType::ANY) {
            for (key, value) in &node.meta {
                let txt = TXT::new(vec![format!("{key}={value}")]);
                answer.records.push(Record::from_rdata(self.name.clone(), self.options.node_ttl, RData::TXT(txt)));
            }
        }
        Some(answer)
    }

    fn addr(&self, label: &str) -> Option<Answer> {
        let ip = parse_hex_label(label)?;
        let mut answer = Answer::default();
        if self.wants(&ip) {
            answer.records.push(address_record(self.name, ip, self.options.node_ttl));
        }
        Some(answer)
    }

    /// An SRV target for `instance` at `ip`: its node's name, unless the
    /// instance has an address of its own, which gets an `addr` name.
    fn srv_target(&self, instance: &ServiceHealth, ip: IpAddr) -> Option<Name> {
        let service = &instance.service;
        let own_address = !service.address.is_empty() && service.address != instance.node.address;
        let label =
            if own_address { format!("{}.addr", hex_label(ip)) } else { format!("{}.node", instance.node.name) };
        Name::from_ascii(format!("{label}.{}.{}", self.datacenter, self.domain)).ok()
    }

    fn service(&self, service: &str, tag: Option<&str>, rfc2782: bool) -> Option<Answer> {
        let instances: Vec<ServiceHealth> = self.tables.catalog().service_health_ignoring_case(service);
        self.instances(service, instances, tag, rfc2782)
    }

    /// The ingress gateways exposing `service`, each at the port of the
    /// listener that does (a gateway registers no port of its own).
    fn ingress(&self, service: &str) -> Option<Answer> {
        let catalog = self.tables.catalog();
        let mut gateways: Vec<ServiceHealth> = gateways_exposing(self.tables.mesh(), service)
            .iter()
            .flat_map(|(gateway, port)| {
                catalog.service_health(gateway).into_iter().map(move |mut instance| {
                    instance.service.port = *port;
                    instance
                })
            })
            .filter(|instance| instance.service.kind == INGRESS_GATEWAY_KIND)
            .collect();
        if self.record_type != RecordType::SRV {
            // An address once, however many of its listeners expose the service.
            let mut seen = std::collections::BTreeSet::new();
            gateways.retain(|g| seen.insert((g.service.node.clone(), g.service.id.clone())));
        }
        self.instances(service, gateways, None, false)
    }

    /// The healthy ones of `instances` (of `service`, for its TTL) as A,
    /// AAAA or SRV records.
    fn instances(
        &self,
        service: &str,
        instances: Vec<ServiceHealth>,
        tag: Option<&str>,
        rfc2782: bool,
    ) -> Option<Answer> {
        let healthy: Vec<&ServiceHealth> = instances
            .iter()
            .filter(|i| tag.is_none_or(|t| i.service.tags.iter().any(|s| s.eq_ignore_ascii_case(t))))
            .filter(|i| is_healthy(i, self.options.only_passing))
            .filter(|i| (self.readable_node)(i.node.name.as_str()))
            .collect();
        // No instance, none with the tag, or none healthy: NXDOMAIN, as Consul answers.
        if healthy.is_empty() {
            return None;
        }
        let mut answer = Answer::default();
        let ttl = self.options.service_ttl(service);
        for instance in healthy {
            let address =
                if instance.service.address.is_empty() { &instance.node.address } else { &instance.service.address };
            let Ok(ip) = address.parse::<IpAddr>() else { continue };
            if self.record_type == RecordType::SRV || rfc2782 {
                if self.record_type != RecordType::SRV && self.record_type != RecordType::ANY {
                    continue;
                }
                let Some(target) = self.srv_target(instance, ip) else { continue };
                let srv = SRV::new(1, srv_weight(instance), instance.service.port, target.clone());
                answer.records.push(Record::from_rdata(self.name.clone(), ttl, RData::SRV(srv)));
                answer.additionals.push(address_record(&target, ip, ttl));
            } else if self.wants(&ip) {
                answer.records.push(address_record(self.name, ip, ttl));
            }
        }
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ttls_take_the_exact_name_then_the_longest_prefix() {
        let service_ttl = BTreeMap::from([("*".into(), 5), ("web*".into(), 9), ("we*".into(), 7), ("db".into(), 30)]);
        let options = LookupOptions { service_ttl, ..LookupOptions::default() };
        let ttls: Vec<u32> =
            ["web", "Web-api", "wet", "db", "dbx", "cache"].iter().map(|s| options.service_ttl(s)).collect();
        assert_eq!(ttls, [9, 9, 7, 30, 5, 5]);
        assert_eq!(LookupOptions::default().service_ttl("web"), 0);
    }

    #[test]
    fn the_apex_has_soa_and_ns_and_names_between_it_and_the_records_are_nodata() {
        let tables = Tables::default();
        let domain = Name::from_ascii("weft.").unwrap();
        let dc = Datacenter::new("dc1");
        let options = LookupOptions {
            soa: SoaTimers { min_ttl: 30, ..SoaTimers::default() },
            ns_address: Some("127.0.0.1".parse().unwrap()),
            ..LookupOptions::default()
        };
        let ask = |name: &str, record_type| {
            let name = Name::from_ascii(name).unwrap();
            answer(&tables, (&name, record_type), &domain, &dc, &options, &|_| true).unwrap()
        };
        let soa = ask("weft.", RecordType::SOA);
        assert_eq!((soa.records.len(), soa.records[0].ttl), (1, 30));
        let ns = ask("weft.", RecordType::NS);
        let RData::NS(target) = &ns.records[0].data else { panic!("{ns:?}") };
        assert_eq!(target.0.to_ascii(), "ns.weft.");
        assert_eq!(ns.additionals[0].data.ip_addr(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ask("ns.weft.", RecordType::A).records[0].data.ip_addr(), Some("127.0.0.1".parse().unwrap()));
        for name in ["weft.", "service.weft.", "node.weft.", "dc1.weft.", "service.dc1.weft.", "connect.weft."] {
            let nodata = ask(name, RecordType::A);
            assert!(nodata.records.is_empty() && !nodata.no_such_name, "{name}: {nodata:?}");
            assert_eq!(nodata.soa.as_ref().map(|soa| soa.ttl), Some(30), "{name}: the SOA tells how long to cache it");
        }
        assert!(ask("web.service.weft.", RecordType::A).no_such_name);
        assert!(ask("nothing.weft.", RecordType::A).no_such_name);
    }

    #[test]
    fn addr_labels_spell_the_address_both_ways() {
        for ip in ["10.9.9.2", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_hex_label(&hex_label(ip)), Some(ip));
        }
        assert_eq!(hex_label("10.9.9.2".parse().unwrap()), "0a090902");
        assert_eq!(parse_hex_label("0a0909"), None);
        assert_eq!(parse_hex_label("zz090902"), None);
    }
}
