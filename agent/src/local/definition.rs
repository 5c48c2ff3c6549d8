//! Service and check definitions as users write them: in a config file
//! (`service { name = "web" check { http = "..." interval = "5s" } }`) or in
//! a `PUT /v1/agent/service/register` body. Both go through [`crate::decode`],
//! so the field names below are in its normalized form.
//!
//! A definition is kept as written (it is what the agent persists and
//! re-reads) and validated into the typed [`LocalService`] / [`LocalCheck`]
//! the agent runs. Validation names the field that is wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_api::catalog::{Check, HealthStatus, Service, Weights, CONNECT_PROXY_KIND};
use weft_api::ids::{CheckId, NodeName, ServiceId, ServiceName};
use weft_checks::{GrpcProbe, HttpProbe, Probe};

/// A service as a user defines it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceDefinition {
    #[serde(rename = "id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "name", alias = "service", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "kind", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(rename = "tags", default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(rename = "address", default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Wider than `u16` so an out-of-range port is a clear error, not a decode failure.
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(rename = "meta", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "taggedaddresses", default, skip_serializing_if = "Option::is_none")]
    pub tagged_addresses: Option<BTreeMap<String, Value>>,
    #[serde(rename = "enabletagoverride", default, skip_serializing_if = "Option::is_none")]
    pub enable_tag_override: Option<bool>,
    #[serde(rename = "weights", default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightsDefinition>,
    #[serde(rename = "check", default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckDefinition>,
    #[serde(rename = "checks", default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckDefinition>>,
    /// Kept as given; the Connect work gives them meaning.
    #[serde(rename = "connect", default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Value>,
    #[serde(rename = "proxy", default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Value>,
    /// The ACL token the service's sidecar uses (Consul's `token`; a
    /// registration through the API without one takes the caller's).
    #[serde(rename = "token", default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Keys Weft does not know, kept to be named in errors (a typo such as
    /// `chek` must not vanish).
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// A service definition's fields (normalized, and Consul's spelling): what
/// an unknown key is compared with to suggest the one meant.
const SERVICE_FIELDS: &[(&str, &str)] = &[
    ("id", "ID"),
    ("name", "Name"),
    ("kind", "Kind"),
    ("tags", "Tags"),
    ("address", "Address"),
    ("port", "Port"),
    ("meta", "Meta"),
    ("taggedaddresses", "TaggedAddresses"),
    ("enabletagoverride", "EnableTagOverride"),
    ("weights", "Weights"),
    ("check", "Check"),
    ("checks", "Checks"),
    ("connect", "Connect"),
    ("proxy", "Proxy"),
    ("token", "Token"),
];

/// Consul's service fields Weft has no use for: accepted and ignored, so a
/// client that sends them keeps working.
const IGNORED_SERVICE_FIELDS: &[&str] = &["socketpath", "namespace", "partition", "locality"];

/// A health check definition's fields (normalized, and Consul's spelling).
const CHECK_FIELDS: &[(&str, &str)] = &[
    ("checkid", "CheckID"),
    ("name", "Name"),
    ("notes", "Notes"),
    ("status", "Status"),
    ("serviceid", "ServiceID"),
    ("interval", "Interval"),
    ("timeout", "Timeout"),
    ("ttl", "TTL"),
    ("http", "HTTP"),
    ("method", "Method"),
    ("header", "Header"),
    ("body", "Body"),
    ("tcp", "TCP"),
    ("grpc", "GRPC"),
    ("grpcusetls", "GRPCUseTLS"),
    ("tlsskipverify", "TLSSkipVerify"),
    ("tlsservername", "TLSServerName"),
    ("disableredirects", "DisableRedirects"),
    ("args", "Args"),
    ("successbeforepassing", "SuccessBeforePassing"),
    ("failuresbeforewarning", "FailuresBeforeWarning"),
    ("failuresbeforecritical", "FailuresBeforeCritical"),
    ("deregistercriticalserviceafter", "DeregisterCriticalServiceAfter"),
];

/// Consul's check fields Weft has no use for: accepted and ignored.
const IGNORED_CHECK_FIELDS: &[&str] =
    &["tcpusetls", "shell", "h2pingusetls", "outputmaxsize", "definition", "type", "script"];

/// Refuses `other` (the keys a definition did not know), naming each and
/// the known field closest to it, except those `ignored` lets through:
/// `what` is "service" or "check".
fn refuse_unknown(
    what: &str,
    other: &BTreeMap<String, Value>,
    known: &[(&str, &str)],
    ignored: impl Fn(&str) -> bool,
) -> Result<(), DefinitionError> {
    let unknown: Vec<String> = other
        .keys()
        .filter(|key| !ignored(key))
        .map(|key| match crate::decode::closest(key, known) {
            Some(meant) => format!("{key:?} (did you mean {meant:?}?)"),
            None => format!("{key:?}"),
        })
        .collect();
    match unknown.is_empty() {
        true => Ok(()),
        false => Err(DefinitionError(format!(
            "unknown field{} in the {what} definition: {} (field names match in any case)",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", ")
        ))),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsDefinition {
    #[serde(rename = "passing", default)]
    pub passing: u32,
    #[serde(rename = "warning", default)]
    pub warning: u32,
}

/// A health check as a user defines it (inside a service, or on its own).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckDefinition {
    #[serde(rename = "checkid", alias = "id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "notes", default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The status before the first run (default critical).
    #[serde(rename = "status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// For a check registered on its own: the service it belongs to.
    #[serde(rename = "serviceid", default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(rename = "interval", default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Value>,
    #[serde(rename = "timeout", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Value>,
    #[serde(rename = "ttl", default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Value>,
    #[serde(rename = "http", default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(rename = "method", default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(rename = "header", default, skip_serializing_if = "Option::is_none")]
    pub header: Option<BTreeMap<String, Vec<String>>>,
    #[serde(rename = "body", default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(rename = "tcp", default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(rename = "grpc", default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    #[serde(rename = "grpcusetls", default, skip_serializing_if = "Option::is_none")]
    pub grpc_use_tls: Option<bool>,
    #[serde(rename = "tlsskipverify", default, skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    #[serde(rename = "tlsservername", default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(rename = "disableredirects", default, skip_serializing_if = "Option::is_none")]
    pub disable_redirects: Option<bool>,
    #[serde(rename = "args", alias = "scriptargs", default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(rename = "successbeforepassing", default, skip_serializing_if = "Option::is_none")]
    pub success_before_passing: Option<u32>,
    #[serde(rename = "failuresbeforewarning", default, skip_serializing_if = "Option::is_none")]
    pub failures_before_warning: Option<u32>,
    #[serde(rename = "failuresbeforecritical", default, skip_serializing_if = "Option::is_none")]
    pub failures_before_critical: Option<u32>,
    #[serde(rename = "deregistercriticalserviceafter", default, skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<Value>,
    /// Keys Weft does not know, kept to be named in errors: a check type it
    /// does not run (`UDP`, `H2PING`, ...) is refused, not silently ignored.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// Consul's check types Weft does not run (normalized key, Consul's spelling).
const UNSUPPORTED_CHECK_TYPES: &[(&str, &str)] = &[
    ("udp", "UDP"),
    ("h2ping", "H2PING"),
    ("dockercontainerid", "DockerContainerID"),
    ("aliasnode", "AliasNode"),
    ("aliasservice", "AliasService"),
    ("osservice", "OSService"),
];

/// Whether a value someone sent means anything (`""`, `null`, `false`, `0`
/// and empty collections are what clients send for "not set").
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// `Connect { SidecarService { Port, Proxy { Upstreams } } }`, as much of it
/// as Weft acts on. At every level, a key that is none of Consul's is
/// refused (with the field meant), and Consul's fields Weft does not act on
/// are accepted and ignored.
#[derive(Clone, Debug, Default, Deserialize)]
struct ConnectDefinition {
    #[serde(rename = "sidecarservice", default)]
    sidecar_service: Option<SidecarDefinition>,
    #[serde(flatten, default)]
    other: BTreeMap<String, Value>,
}

/// Consul's `Connect` fields.
const CONNECT_FIELDS: &[(&str, &str)] = &[("sidecarservice", "SidecarService"), ("native", "Native")];

/// `Connect.SidecarService`: any of a service's fields; Weft builds the
/// sidecar's registration itself and takes only `Port` and `Proxy`.
#[derive(Clone, Debug, Default, Deserialize)]
struct SidecarDefinition {
    #[serde(rename = "port", default)]
    port: Option<i64>,
    #[serde(rename = "proxy", default)]
    proxy: Option<SidecarProxyDefinition>,
    #[serde(flatten, default)]
    other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct SidecarProxyDefinition {
    #[serde(rename = "upstreams", default)]
    upstreams: Vec<Upstream>,
    /// `""`/`direct`, or `transparent`.
    #[serde(rename = "mode", default)]
    mode: Option<String>,
    #[serde(flatten, default)]
    other: BTreeMap<String, Value>,
}

/// Consul's proxy fields (`Proxy` of a sidecar or of a `connect-proxy`).
const PROXY_FIELDS: &[(&str, &str)] = &[
    ("destinationservicename", "DestinationServiceName"),
    ("destinationserviceid", "DestinationServiceID"),
    ("localserviceaddress", "LocalServiceAddress"),
    ("localserviceport", "LocalServicePort"),
    ("localservicesocketpath", "LocalServiceSocketPath"),
    ("mode", "Mode"),
    ("transparentproxy", "TransparentProxy"),
    ("config", "Config"),
    ("upstreams", "Upstreams"),
    ("meshgateway", "MeshGateway"),
    ("expose", "Expose"),
    ("accesslogs", "AccessLogs"),
    ("envoyextensions", "EnvoyExtensions"),
];

/// Consul's upstream fields.
const UPSTREAM_FIELDS: &[(&str, &str)] = &[
    ("destinationtype", "DestinationType"),
    ("destinationnamespace", "DestinationNamespace"),
    ("destinationpartition", "DestinationPartition"),
    ("destinationpeer", "DestinationPeer"),
    ("destinationname", "DestinationName"),
    ("datacenter", "Datacenter"),
    ("localbindaddress", "LocalBindAddress"),
    ("localbindport", "LocalBindPort"),
    ("localbindsocketpath", "LocalBindSocketPath"),
    ("localbindsocketmode", "LocalBindSocketMode"),
    ("config", "Config"),
    ("meshgateway", "MeshGateway"),
    ("centrallyconfigured", "CentrallyConfigured"),
];

/// Refuses keys in `other` that are none of `fields` (Consul's, for the
/// block `what`); Consul's own that Weft does not act on pass.
fn refuse_unknown_in(
    what: &str,
    other: &BTreeMap<String, Value>,
    fields: &[(&str, &str)],
) -> Result<(), DefinitionError> {
    refuse_unknown(what, other, fields, |key| fields.iter().any(|(name, _)| *name == key))
}

/// `Proxy.Upstreams` (at `field`): known keys, a destination and a port each.
fn check_upstreams(field: &str, upstreams: &[Upstream]) -> Result<(), DefinitionError> {
    for (n, upstream) in upstreams.iter().enumerate() {
        refuse_unknown_in(&format!("{field}[{n}]"), &upstream.other, UPSTREAM_FIELDS)?;
    }
    if upstreams.iter().any(|u| u.destination_name.is_empty() || u.local_bind_port == 0) {
        return Err(DefinitionError(format!("Invalid {field}: each needs DestinationName and LocalBindPort")));
    }
    Ok(())
}

/// One upstream of a sidecar: the destination service, reached by the local
/// application at `local_bind_address:local_bind_port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    #[serde(rename = "destinationname", default)]
    pub destination_name: String,
    #[serde(rename = "localbindport", default)]
    pub local_bind_port: u16,
    #[serde(rename = "localbindaddress", default, skip_serializing_if = "Option::is_none")]
    pub local_bind_address: Option<String>,
    /// `service` (the default) or `prepared_query`.
    #[serde(rename = "destinationtype", default, skip_serializing_if = "Option::is_none")]
    pub destination_type: Option<String>,
    #[serde(rename = "datacenter", default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// Opaque to Weft; kept as given.
    #[serde(rename = "config", default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// Other keys: Consul's that Weft does not act on, or typos, refused.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

/// The `Proxy` block of a `connect-proxy` service registered directly
/// (rather than as a sidecar): kept and shown by the agent API, as Consul does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyDefinition {
    #[serde(rename = "destinationservicename", default)]
    pub destination_service_name: String,
    #[serde(rename = "destinationserviceid", default, skip_serializing_if = "Option::is_none")]
    pub destination_service_id: Option<String>,
    #[serde(rename = "localserviceaddress", default, skip_serializing_if = "Option::is_none")]
    pub local_service_address: Option<String>,
    #[serde(rename = "localserviceport", default, skip_serializing_if = "Option::is_none")]
    pub local_service_port: Option<u16>,
    #[serde(rename = "mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Opaque to Weft; kept as given.
    #[serde(rename = "config", default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(rename = "upstreams", default)]
    pub upstreams: Vec<Upstream>,
    /// Other keys: Consul's that Weft does not act on, or typos, refused.
    #[serde(flatten, default, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

impl From<&ProxyConfig> for ProxyDefinition {
    fn from(sidecar: &ProxyConfig) -> Self {
        ProxyDefinition {
            destination_service_name: sidecar.destination_service_name.to_string(),
            destination_service_id: Some(sidecar.destination_service_id.to_string()),
            local_service_address: Some(sidecar.local_service_address.clone()),
            local_service_port: Some(sidecar.local_service_port),
            mode: sidecar.transparent.then(|| TRANSPARENT_MODE.to_owned()),
            config: None,
            upstreams: sidecar.upstreams.clone(),
            other: BTreeMap::new(),
        }
    }
}

/// What a sidecar proxy needs to know about the service it fronts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    pub destination_service_name: ServiceName,
    pub destination_service_id: ServiceId,
    /// Where the sidecar forwards allowed traffic (the application).
    pub local_service_address: String,
    pub local_service_port: u16,
    pub upstreams: Vec<Upstream>,
    /// `Proxy.Mode = "transparent"`: the pod's traffic is redirected to the
    /// sidecar, which also takes connections to any mesh service.
    pub transparent: bool,
}

/// Consul's `Proxy.Mode` for transparent proxying.
pub const TRANSPARENT_MODE: &str = "transparent";

/// A sidecar a service definition asks for: its definition and proxy config.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarRequest {
    /// An explicit port (`Connect.SidecarService.Port`); else one is assigned.
    pub port: Option<u16>,
    pub upstreams: Vec<Upstream>,
    pub transparent: bool,
}

/// A definition that cannot be run, with the field to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DefinitionError(pub String);

/// A validated service and the checks defined with it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalService {
    /// The catalog record (node filled in, indexes zero).
    pub service: Service,
    pub checks: Vec<LocalCheck>,
}

/// A validated check: its catalog record and how to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalCheck {
    /// The catalog record: status and output are the current ones.
    pub check: Check,
    pub runner: CheckRunner,
    pub success_before_passing: u32,
    pub failures_before_warning: u32,
    pub failures_before_critical: u32,
    pub deregister_critical_service_after: Option<Duration>,
}

/// What produces a check's status.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckRunner {
    /// Probed every `interval`, each run bounded by `timeout`.
    Probe { probe: Probe, interval: Duration, timeout: Duration },
    /// Set from outside (`/v1/agent/check/pass|warn|fail`); critical when
    /// not refreshed within `ttl`.
    Ttl { ttl: Duration },
    /// A sidecar's "Connect Sidecar Listening" check, probed every
    /// `interval`: its proxy's admin port must say that it is `sidecar` and
    /// listens on `port`, and `address:port` must take a connection. A TCP
    /// connect alone would pass on whatever listens there.
    Sidecar { sidecar: ServiceId, address: String, port: u16, interval: Duration, timeout: Duration },
    /// Maintenance mode (see `local/maintenance.rs`): set once, never run.
    Maintenance,
}

/// Checks are probed at most this often (a shorter `Interval` is raised to it).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl ServiceDefinition {
    /// The `Proxy` block of a `connect-proxy` service: required for that
    /// kind (with `DestinationServiceName`), as in Consul; `None` for others.
    pub fn proxy_definition(&self) -> Result<Option<ProxyDefinition>, DefinitionError> {
        if self.kind.as_deref() != Some(CONNECT_PROXY_KIND) {
            return Ok(None);
        }
        let proxy: ProxyDefinition = match &self.proxy {
            None | Some(Value::Null) => ProxyDefinition::default(),
            Some(value) => {
                serde_json::from_value(value.clone()).map_err(|e| DefinitionError(format!("Invalid Proxy: {e}")))?
            }
        };
        if proxy.destination_service_name.is_empty() {
            return Err(DefinitionError(
                "Invalid Proxy: Proxy.DestinationServiceName must be set for a connect-proxy service".into(),
            ));
        }
        refuse_unknown_in("Proxy", &proxy.other, PROXY_FIELDS)?;
        check_upstreams("Proxy.Upstreams", &proxy.upstreams)?;
        Ok(Some(proxy))
    }

    /// The sidecar `Connect.SidecarService` asks for, if any.
    pub fn sidecar_request(&self) -> Result<Option<SidecarRequest>, DefinitionError> {
        let Some(connect) = &self.connect else { return Ok(None) };
        let connect: ConnectDefinition =
            serde_json::from_value(connect.clone()).map_err(|e| DefinitionError(format!("Invalid Connect: {e}")))?;
        refuse_unknown_in("Connect", &connect.other, CONNECT_FIELDS)?;
        let Some(sidecar) = connect.sidecar_service else { return Ok(None) };
        let consuls =
            |key: &str| SERVICE_FIELDS.iter().any(|(name, _)| *name == key) || IGNORED_SERVICE_FIELDS.contains(&key);
        refuse_unknown("Connect.SidecarService", &sidecar.other, SERVICE_FIELDS, consuls)?;
        let port = match sidecar.port {
            None | Some(0) => None,
            Some(port @ 1..=65535) => Some(port as u16),
            Some(port) => {
                return Err(DefinitionError(format!("Invalid Connect.SidecarService.Port {port}: 1 to 65535")))
            }
        };
        let proxy = sidecar.proxy.unwrap_or_default();
        refuse_unknown_in("Connect.SidecarService.Proxy", &proxy.other, PROXY_FIELDS)?;
        check_upstreams("Connect.SidecarService.Proxy.Upstreams", &proxy.upstreams)?;
        let transparent = match proxy.mode.as_deref() {
            None | Some("") | Some("direct") => false,
            Some(TRANSPARENT_MODE) => true,
            Some(other) => {
                return Err(DefinitionError(format!(
                    "Invalid Connect.SidecarService.Proxy.Mode {other:?}: \"direct\" or \"transparent\""
                )))
            }
        };
        Ok(Some(SidecarRequest { port, upstreams: proxy.upstreams, transparent }))
    }

    /// The sidecar service for `service` (already validated), listening on
    /// `address:port`, with a TCP check on that port.
    pub fn sidecar_definition(service: &Service, address: &str, port: u16) -> ServiceDefinition {
        let proxy = ProxyDefinition {
            destination_service_name: service.name.to_string(),
            destination_service_id: Some(service.id.to_string()),
            ..ProxyDefinition::default()
        };
        ServiceDefinition {
            id: Some(format!("{}-sidecar-proxy", service.id)),
            name: Some(format!("{}-sidecar-proxy", service.name)),
            kind: Some(CONNECT_PROXY_KIND.into()),
            proxy: serde_json::to_value(proxy).ok(),
            address: Some(address.to_owned()),
            port: Some(i64::from(port)),
            check: Some(CheckDefinition {
                name: Some("Connect Sidecar Listening".into()),
                tcp: Some(format!("{address}:{port}")),
                interval: Some(Value::String("10s".into())),
                ..CheckDefinition::default()
            }),
            ..ServiceDefinition::default()
        }
    }

    /// The service's ID: `ID`, else its name.
    pub fn service_id(&self) -> ServiceId {
        let id = self.id.clone().filter(|id| !id.is_empty());
        ServiceId::new(id.or_else(|| self.name.clone()).unwrap_or_default())
    }

    /// The checks defined with the service (`Check`, then `Checks`), in the
    /// order [`validate`](Self::validate) gives their validated forms.
    pub fn check_definitions(&self) -> Vec<&CheckDefinition> {
        self.check.iter().chain(self.checks.iter().flatten()).collect()
    }

    /// Validates into a [`LocalService`] on `node`. Script checks are refused
    /// unless `script_checks` (`--enable-script-checks`).
    pub fn validate(&self, node: &NodeName, script_checks: bool) -> Result<LocalService, DefinitionError> {
        let fail = |text: String| Err(DefinitionError(text));
        refuse_unknown("service", &self.other, SERVICE_FIELDS, |key| IGNORED_SERVICE_FIELDS.contains(&key))?;
        let name = self.name.clone().unwrap_or_default();
        if name.is_empty() {
            return fail("Missing service name: set Name (\"name\" in a config file)".into());
        }
        if name.contains('/') || name.contains(char::is_whitespace) {
            return fail(format!("Invalid service name {name:?}: no spaces or slashes"));
        }
        weft_api::catalog::validate_name("Service name", &name).map_err(DefinitionError)?;
        weft_api::catalog::validate_meta("Meta", self.meta.as_ref().unwrap_or(&BTreeMap::new()))
            .map_err(DefinitionError)?;
        let port = match self.port.unwrap_or(0) {
            port @ 0..=65535 => port as u16,
            port => return fail(format!("Invalid Port {port}: must be between 0 and 65535")),
        };
        let kind = self.kind.clone().unwrap_or_default();
        if !matches!(kind.as_str(), "" | "connect-proxy" | "mesh-gateway" | "ingress-gateway" | "terminating-gateway") {
            return fail(format!(
                "Invalid Kind {kind:?}: use \"\", connect-proxy, mesh-gateway, ingress-gateway or terminating-gateway"
            ));
        }
        self.proxy_definition()?;
        self.sidecar_request()?;
        let id = self.service_id();
        let mut tagged_addresses = BTreeMap::new();
        for (key, value) in self.tagged_addresses.clone().unwrap_or_default() {
            tagged_addresses.insert(key.clone(), tagged_address(&key, &value)?);
        }
        let service = Service {
            node: node.clone(),
            id: id.clone(),
            name: ServiceName::new(&name),
            kind,
            tags: self.tags.clone().unwrap_or_default(),
            address: self.address.clone().unwrap_or_default(),
            port,
            meta: self.meta.clone().unwrap_or_default(),
            tagged_addresses,
            enable_tag_override: self.enable_tag_override.unwrap_or(false),
            weights: match &self.weights {
                Some(w) if w.passing == 0 => return fail("Invalid Weights: Passing must be at least 1".into()),
                Some(w) => Weights { passing: w.passing, warning: w.warning },
                None => Weights::default(),
            },
            indexes: Default::default(),
        };
        let definitions = self.check_definitions();
        let numbered = definitions.len() > 1;
        let mut checks = Vec::with_capacity(definitions.len());
        for (n, definition) in definitions.into_iter().enumerate() {
            let default_id = if numbered { format!("service:{id}:{}", n + 1) } else { format!("service:{id}") };
            let mut check = definition.validate(node, script_checks, &default_id)?;
            check.check.service_id = id.clone();
            check.check.service_name = service.name.clone();
            check.check.service_tags = service.tags.clone();
            if definition.name.as_deref().unwrap_or_default().is_empty() {
                check.check.name = format!("Service '{name}' check");
            }
            checks.push(check);
        }
        Ok(LocalService { service, checks })
    }
}

impl CheckDefinition {
    /// The check's ID: `CheckID`, else its name, else `default_id`.
    pub fn check_id(&self, default_id: &str) -> CheckId {
        let id = self.id.clone().filter(|id| !id.is_empty());
        CheckId::new(
            id.or_else(|| self.name.clone().filter(|n| !n.is_empty())).unwrap_or_else(|| default_id.to_owned()),
        )
    }

    /// This check, defined inside a service, as a check registered on its
    /// own for that service (so it can outlive the service's definition).
    pub fn standalone(&self, check: &Check) -> CheckDefinition {
        CheckDefinition {
            id: Some(check.id.to_string()),
            name: Some(check.name.clone()),
            service_id: Some(check.service_id.to_string()),
            ..self.clone()
        }
    }

    /// Validates into a [`LocalCheck`] on `node`; `default_id` is used when
    /// the definition has neither an ID nor a name.
    pub fn validate(
        &self,
        node: &NodeName,
        script_checks: bool,
        default_id: &str,
    ) -> Result<LocalCheck, DefinitionError> {
        let fail = |text: String| Err(DefinitionError(text));
        // A check type Weft does not run is refused below, by name.
        let ignored = |key: &str| {
            IGNORED_CHECK_FIELDS.contains(&key)
                || UNSUPPORTED_CHECK_TYPES.iter().any(|(unsupported, _)| *unsupported == key)
        };
        refuse_unknown("check", &self.other, CHECK_FIELDS, ignored)?;
        let name = self.name.clone().unwrap_or_default();
        let id = self.check_id(default_id);
        if id.is_empty() {
            return fail("Missing check ID: set CheckID or Name".into());
        }
        let status = match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => HealthStatus::Critical,
            Some(text) => match HealthStatus::parse(text) {
                Some(status @ (HealthStatus::Passing | HealthStatus::Warning | HealthStatus::Critical)) => status,
                _ => return fail(format!("Invalid Status {text:?}: use passing, warning or critical")),
            },
        };
        if let Some((_, name)) =
            UNSUPPORTED_CHECK_TYPES.iter().find(|(key, _)| self.other.get(*key).is_some_and(is_set))
        {
            return fail(format!(
                "Invalid check: {name} checks are not supported by Weft; use one of HTTP, TCP, GRPC, TTL or Args"
            ));
        }
        let interval = duration("Interval", &self.interval)?;
        let timeout = duration("Timeout", &self.timeout)?.unwrap_or(DEFAULT_TIMEOUT);
        let ttl = duration("TTL", &self.ttl)?;
        let (runner, check_type) = match (&self.http, &self.tcp, &self.grpc, &self.args, ttl) {
            (Some(url), None, None, None, None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return fail(format!("Invalid HTTP {url:?}: must be an http:// or https:// URL"));
                }
                let probe = Probe::Http(HttpProbe {
                    url: url.clone(),
                    method: self.method.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| "GET".into()),
                    headers: self.header.clone().unwrap_or_default(),
                    body: self.body.clone(),
                    tls_skip_verify: self.tls_skip_verify.unwrap_or(false),
                    tls_server_name: self.tls_server_name.clone().filter(|s| !s.is_empty()),
                    disable_redirects: self.disable_redirects.unwrap_or(false),
                });
                (probed(probe, interval, timeout, "HTTP")?, "http")
            }
            (None, Some(address), None, None, None) => {
                if !address.contains(':') {
                    return fail(format!("Invalid TCP {address:?}: must be host:port"));
                }
                (probed(Probe::Tcp { address: address.clone() }, interval, timeout, "TCP")?, "tcp")
            }
            (None, None, Some(target), None, None) => {
                let probe = Probe::Grpc(GrpcProbe {
                    target: target.clone(),
                    use_tls: self.grpc_use_tls.unwrap_or(false),
                    tls_skip_verify: self.tls_skip_verify.unwrap_or(false),
                    tls_server_name: self.tls_server_name.clone().filter(|s| !s.is_empty()),
                });
                (probed(probe, interval, timeout, "GRPC")?, "grpc")
            }
            (None, None, None, Some(args), None) => {
                if !script_checks {
                    return fail(
                        "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' (or --enable-script-checks)"
                            .into(),
                    );
                }
                if args.is_empty() {
                    return fail("Invalid Args: give the command and its arguments".into());
                }
                (probed(Probe::Script { args: args.clone() }, interval, timeout, "Args")?, "script")
            }
            (None, None, None, None, Some(ttl)) => (CheckRunner::Ttl { ttl }, "ttl"),
            (None, None, None, None, None) => {
                let unknown: Vec<&str> =
                    self.other.iter().filter(|(_, v)| is_set(v)).map(|(k, _)| k.as_str()).collect();
                if unknown.is_empty() {
                    return fail("Invalid check: one of HTTP, TCP, GRPC, TTL or Args (script) must be set".into());
                }
                return fail(format!(
                    "Invalid check: unknown field(s) {unknown:?}; one of HTTP, TCP, GRPC, TTL or Args (script) must be set"
                ));
            }
            _ => return fail("Invalid check: set only one of HTTP, TCP, GRPC, TTL or Args".into()),
        };
        Ok(LocalCheck {
            check: Check {
                node: node.clone(),
                id,
                name,
                status,
                notes: self.notes.clone().unwrap_or_default(),
                check_type: check_type.to_owned(),
                service_id: ServiceId::new(self.service_id.clone().unwrap_or_default()),
                ..Check::default()
            },
            runner,
            success_before_passing: self.success_before_passing.unwrap_or(0),
            failures_before_warning: self.failures_before_warning.or(self.failures_before_critical).unwrap_or(0),
            failures_before_critical: self.failures_before_critical.unwrap_or(0),
            deregister_critical_service_after: duration(
                "DeregisterCriticalServiceAfter",
                &self.deregister_critical_service_after,
            )?,
        })
    }
}

fn probed(
    probe: Probe,
    interval: Option<Duration>,
    timeout: Duration,
    kind: &str,
) -> Result<CheckRunner, DefinitionError> {
    let interval = interval.ok_or_else(|| DefinitionError(format!("Invalid check: {kind} checks need an Interval")))?;
    if interval < MIN_INTERVAL {
        // Consul raises it rather than refusing the check.
        tracing::warn!(
            interval = %weft_api::duration::format(interval),
            "check interval below the minimum; using {}",
            weft_api::duration::format(MIN_INTERVAL)
        );
    }
    Ok(CheckRunner::Probe { probe, interval: interval.max(MIN_INTERVAL), timeout })
}

/// A duration field: a Go duration string (`"10s"`) or integer nanoseconds,
/// as Consul accepts.
fn duration(field: &str, value: &Option<Value>) -> Result<Option<Duration>, DefinitionError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => {
            weft_api::duration::parse(text).map(Some).map_err(|e| DefinitionError(format!("Invalid {field}: {e}")))
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(None),
            Some(nanos) => Ok(Some(Duration::from_nanos(nanos))),
            None => Err(DefinitionError(format!("Invalid {field} {n}: must not be negative"))),
        },
        Some(other) => Err(DefinitionError(format!("Invalid {field} {other}: use a duration such as \"10s\""))),
    }
}

/// A service tagged address: `{"Address": "...", "Port": n}` or a plain string.
fn tagged_address(key: &str, value: &Value) -> Result<String, DefinitionError> {
    let object = |name: &str| value.get(name).or_else(|| value.get(name.to_lowercase()));
    match value {
        Value::String(address) => Ok(address.clone()),
        Value::Object(_) => {
            let address = object("Address").and_then(Value::as_str).unwrap_or_default();
            let port = object("Port").and_then(Value::as_u64).unwrap_or(0);
            let port = u16::try_from(port)
                .map_err(|_| DefinitionError(format!("Invalid TaggedAddresses[{key:?}]: port {port} is not a port")))?;
            Ok(weft_api::addr::join_host_port(address, port))
        }
        _ => Err(DefinitionError(format!("Invalid TaggedAddresses[{key:?}]: expected {{Address, Port}}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_value;

    fn node() -> NodeName {
        NodeName::new("vm1")
    }

    fn service(json: &str) -> Result<LocalService, DefinitionError> {
        let definition: ServiceDefinition = decode_value(serde_json::from_str(json).unwrap()).unwrap();
        definition.validate(&node(), false)
    }

    #[test]
    fn unknown_keys_are_refused_with_the_field_meant_and_consul_only_ones_ignored() {
        let node = NodeName::new("n1");
        let service = |json: &str| -> ServiceDefinition { decode_value(serde_json::from_str(json).unwrap()).unwrap() };
        let typos = service(r#"{"Name": "web", "Port": 80, "Chek": {"TTL": "10s"}, "tagz": ["a"]}"#);
        let error = typos.validate(&node, false).unwrap_err().to_string();
        assert!(
            error.contains(r#""chek" (did you mean "Check"?)"#) && error.contains(r#""tagz" (did you mean "Tags"?)"#),
            "{error}"
        );
        let nested = service(r#"{"Name": "web", "Port": 80, "Check": {"HTTP": "http://x/", "Intervl": "5s"}}"#);
        let error = nested.validate(&node, false).unwrap_err().to_string();
        assert!(error.contains(r#""intervl" (did you mean "Interval"?)"#), "{error}");
        let consul = service(r#"{"Name": "web", "Port": 80, "SocketPath": "", "Namespace": "default"}"#);
        assert!(consul.validate(&node, false).is_ok());
    }

    #[test]
    fn an_ipv6_tagged_address_keeps_its_brackets() {
        let wan = serde_json::json!({"Address": "2001:db8::7", "Port": 443});
        assert_eq!(tagged_address("wan", &wan).unwrap(), "[2001:db8::7]:443");
        assert!(tagged_address("wan", &serde_json::json!({"Address": "10.0.0.1", "Port": 70000})).is_err());
    }

    #[test]
    fn consul_check_ids_and_names() {
        let one = service(r#"{"Name": "web", "Check": {"TTL": "10s"}}"#).unwrap();
        assert_eq!(one.checks[0].check.id.as_str(), "service:web");
        assert_eq!(one.checks[0].check.name, "Service 'web' check");
        let two = service(
            r#"{"Name": "web", "ID": "web1", "Checks": [{"TTL": "10s"}, {"TCP": "127.0.0.1:1", "Interval": "5s"}]}"#,
        )
        .unwrap();
        let ids: Vec<_> = two.checks.iter().map(|c| c.check.id.as_str()).collect();
        assert_eq!(ids, ["service:web1:1", "service:web1:2"]);
        assert!(two.checks.iter().all(|c| c.check.service_id.as_str() == "web1"));
    }

    #[test]
    fn errors_name_the_field() {
        let error = |json| service(json).unwrap_err().0;
        assert!(error(r#"{"Port": 80}"#).contains("service name"));
        assert!(error(r#"{"Name": "web", "Port": 70000}"#).contains("Port"));
        assert!(error(r#"{"Name": "web", "Check": {"Interval": "5s"}}"#).contains("one of HTTP"));
        assert!(error(r#"{"Name": "web", "Check": {"HTTP": "http://x", "Interval": "nope"}}"#).contains("Interval"));
        assert!(
            error(r#"{"Name": "web", "Check": {"Args": ["true"], "Interval": "5s"}}"#).contains("enable_script_checks")
        );
    }

    #[test]
    fn unsupported_check_types_are_named_and_short_intervals_raised() {
        let error = |json| service(json).unwrap_err().0;
        assert!(error(r#"{"Name": "web", "Check": {"UDP": "x", "Interval": "10s"}}"#).contains("UDP"));
        assert!(error(r#"{"Name": "web", "Check": {"Foo": "x", "Interval": "10s"}}"#).contains("foo"));
        // What clients send for "not set" is no check type.
        let ttl = service(r#"{"Name": "web", "Check": {"TTL": "10s", "OSService": "", "UDP": null}}"#).unwrap();
        assert_eq!(ttl.checks[0].check.check_type, "ttl");
        let fast = service(r#"{"Name": "web", "Check": {"TCP": "127.0.0.1:1", "Interval": "100ms"}}"#).unwrap();
        assert!(matches!(fast.checks[0].runner, CheckRunner::Probe { interval, .. } if interval == MIN_INTERVAL));
    }

    #[test]
    fn a_connect_proxy_needs_its_destination() {
        let error = service(r#"{"Name": "p", "Kind": "connect-proxy", "Port": 21000}"#).unwrap_err().0;
        assert!(error.contains("DestinationServiceName"), "{error}");
        let json = r#"{"Name": "p", "Kind": "connect-proxy", "Port": 21000, "Proxy": {"DestinationServiceName": "web",
            "Config": {"envoy_stats": 1}, "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]}}"#;
        let definition: ServiceDefinition = decode_value(serde_json::from_str(json).unwrap()).unwrap();
        let proxy = definition.proxy_definition().unwrap().unwrap();
        assert_eq!((proxy.destination_service_name.as_str(), proxy.upstreams[0].local_bind_port), ("web", 9191));
        assert_eq!(proxy.config.unwrap()["envoy_stats"], 1, "user keys are kept as written");
    }

    #[test]
    fn a_sidecar_may_ask_for_transparent_proxying_by_consuls_mode() {
        let sidecar = |mode: &str| {
            let json =
                format!(r#"{{"Name": "web", "Connect": {{"SidecarService": {{"Proxy": {{"Mode": "{mode}"}}}}}}}}"#);
            let definition: ServiceDefinition = decode_value(serde_json::from_str(&json).unwrap()).unwrap();
            definition.sidecar_request()
        };
        assert!(sidecar("transparent").unwrap().unwrap().transparent);
        assert!(!sidecar("direct").unwrap().unwrap().transparent);
        assert!(sidecar("sideways").unwrap_err().0.contains("Proxy.Mode"));
    }

    #[test]
    fn durations_as_strings_or_nanoseconds() {
        let a = service(r#"{"Name": "web", "Check": {"TTL": "1m30s"}}"#).unwrap();
        let b = service(r#"{"Name": "web", "Check": {"TTL": 90000000000}}"#).unwrap();
        assert_eq!(a.checks[0].runner, CheckRunner::Ttl { ttl: Duration::from_secs(90) });
        assert_eq!(a.checks[0].runner, b.checks[0].runner);
    }

    #[test]
    fn a_definition_survives_a_round_trip_through_json() {
        let json = r#"{"Name": "web", "Port": 8080, "Tags": ["v1"], "Meta": {"Version": "1"},
            "Check": {"HTTP": "http://127.0.0.1:8080/health", "Interval": "5s", "Header": {"X-A": ["b"]}}}"#;
        let definition: ServiceDefinition = decode_value(serde_json::from_str(json).unwrap()).unwrap();
        let again: ServiceDefinition = decode_value(serde_json::to_value(&definition).unwrap()).unwrap();
        assert_eq!(definition, again);
        assert_eq!(again.meta.unwrap()["Version"], "1");
    }
}
