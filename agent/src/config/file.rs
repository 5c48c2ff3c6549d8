//! One configuration file in Consul's shape, HCL or JSON, every setting
//! optional so files and flags can be layered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::locate;
use super::ConfigProblem;

/// Settings as written in a file (or given as flags). Unknown keys are an
/// error, so a typo is never silently ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub node_name: Option<String>,
    pub datacenter: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub server: Option<bool>,
    pub bootstrap_expect: Option<usize>,
    #[serde(default)]
    pub retry_join: Vec<String>,
    /// IP the server RPC listens on (Consul's `bind_addr`).
    pub bind_addr: Option<String>,
    /// IP the HTTP and DNS interfaces listen on (Consul's `client_addr`).
    pub client_addr: Option<String>,
    pub addresses: Option<Addresses>,
    pub ports: Option<Ports>,
    /// Full `IP:port` addresses; these win over the IP/port settings above.
    pub rpc_addr: Option<String>,
    pub http_addr: Option<String>,
    pub dns_addr: Option<String>,
    pub domain: Option<String>,
    /// A second domain answered like `domain` (Consul's `alt_domain`).
    pub alt_domain: Option<String>,
    /// Upstream DNS servers for names outside the domain (`IP` or `IP:port`).
    #[serde(default)]
    pub recursors: Vec<String>,
    pub dns_config: Option<DnsConfigFile>,
    pub raft_snapshot_threshold: Option<u64>,
    pub raft_trailing_logs: Option<u64>,
    pub log_level: Option<String>,
    /// The IP other hosts reach this node at (registered as the node's address).
    pub advertise_addr: Option<String>,
    pub node_meta: Option<BTreeMap<String, String>>,
    /// Weft: the network this node is in (node meta `weft-network`); hosts
    /// in other networks are reached through their mesh gateways.
    pub network: Option<String>,
    /// Weft, client agents: a join token (`weft operator join-token
    /// create`): the servers to join, the CA their certificates chain to,
    /// and a one-time secret with which this agent enrolls for its own
    /// certificate.
    pub join_token: Option<String>,
    /// Consul's `tls { defaults { ... } internal_rpc { ... } }`: TLS on
    /// server RPC.
    pub tls: Option<TlsFile>,
    /// Removed (servers shared this key before RPC had TLS): refused with
    /// a message saying what replaced it, rather than as an unknown key.
    pub rpc_key: Option<String>,
    /// Consul's `limits { rpc_max_conns_per_client }`.
    pub limits: Option<LimitsFile>,
    /// Consul's `performance { raft_multiplier }`.
    pub performance: Option<PerformanceFile>,
    /// Consul's `acl { enabled default_policy down_policy
    /// enable_token_persistence tokens { ... } }`.
    pub acl: Option<AclFile>,
    /// Allow checks that run programs (`args`); off by default.
    pub enable_script_checks: Option<bool>,
    /// `service { ... }` blocks (one or several) and a `services = [...]` list,
    /// decoded into service definitions when validated.
    pub service: Option<Value>,
    #[serde(default)]
    pub services: Vec<Value>,
    /// Node-level checks: `check { ... }` blocks and a `checks = [...]` list.
    pub check: Option<Value>,
    #[serde(default)]
    pub checks: Vec<Value>,
    /// Weft: how long an agent may miss heartbeats before its node turns
    /// critical (acted on by the leader; default 8s: critical within 10s).
    pub liveness_timeout: Option<String>,
    /// Weft: how often anti-entropy compares this node's registrations with
    /// the catalog even when nothing changed locally (default 5s; the
    /// comparison is local, only differences are written).
    pub anti_entropy_interval: Option<String>,
    /// Consul's `check_update_interval`: how long a check whose only change
    /// is its output may wait before it is synced to the catalog (default
    /// 5m; status changes sync at once; "0s" syncs every output change).
    pub check_update_interval: Option<String>,
    /// Consul's `connect { ca_config { leaf_cert_ttl } }`.
    pub connect: Option<ConnectFile>,
    #[serde(skip)]
    pub dev_mode: Option<bool>,
    /// Where each service and check definition was written (`file:line`),
    /// in the order [`service_definitions`](Self::service_definitions) and
    /// [`check_definitions`](Self::check_definitions) list them; set by
    /// [`read`](Self::read).
    #[serde(skip)]
    pub origins: Origins,
    /// Weft, client agents: the CA servers' certificates chain to, inline
    /// (an injected pod's agent has it from its environment).
    #[serde(skip)]
    pub server_ca_pem: Option<String>,
}

/// Consul's `tls { ... }` block: the settings Weft honours. Settings in
/// `internal_rpc` win over `defaults`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub defaults: Option<TlsSettingsFile>,
    pub internal_rpc: Option<TlsSettingsFile>,
}

/// One `tls` stanza.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettingsFile {
    /// The CA that signs servers' certificates (`weft tls ca create`).
    pub ca_file: Option<PathBuf>,
    /// Servers: this server's certificate and key (`weft tls cert create -server`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Require TLS and a certificate from every caller but the open calls
    /// (default true once TLS is configured; false serves plaintext too,
    /// while a running cluster moves to TLS).
    pub verify_incoming: Option<bool>,
    /// Dial servers over TLS and verify them (default true once TLS is configured).
    pub verify_outgoing: Option<bool>,
    /// Also require `server.<datacenter>.<domain>` in servers' certificates
    /// (default true; Consul's default is false).
    pub verify_server_hostname: Option<bool>,
}

/// Consul's `acl { ... }` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclFile {
    pub enabled: Option<bool>,
    /// `allow` or `deny` (what no rule covers).
    pub default_policy: Option<String>,
    /// `allow`, `deny`, `extend-cache` or `async-cache`. Weft's agents
    /// resolve tokens from their copy of the ACL tables, so no server needs
    /// to be reachable: accepted for Consul's configs, and validated.
    pub down_policy: Option<String>,
    /// Keep tokens set through `/v1/agent/token/<kind>` across restarts.
    pub enable_token_persistence: Option<bool>,
    /// Consul's cache lifetimes: accepted and validated; Weft's cache is
    /// kept until the ACL tables change.
    pub token_ttl: Option<String>,
    pub policy_ttl: Option<String>,
    pub role_ttl: Option<String>,
    pub tokens: Option<AclTokensFile>,
    /// Weft: log in with an auth method when the agent starts (a pod's
    /// agent with its service-account token), and out when it stops.
    pub login: Option<AclLoginFile>,
}

/// `acl { login { ... } }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclLoginFile {
    pub auth_method: Option<String>,
    /// The JWT to present, read at start.
    pub bearer_token_file: Option<PathBuf>,
    /// Shown in the token's description.
    #[serde(default)]
    pub meta: std::collections::BTreeMap<String, String>,
}

/// `acl { tokens { ... } }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclTokensFile {
    /// Servers: a management token made when ACLs start (Consul's
    /// `initial_management`, once `master`).
    #[serde(alias = "master")]
    pub initial_management: Option<String>,
    /// The token this agent uses for its own requests.
    pub agent: Option<String>,
    /// The token for requests that carry none (and for DNS).
    pub default: Option<String>,
    /// Consul's `agent_recovery`: accepted, and like `agent` here.
    #[serde(alias = "agent_master")]
    pub agent_recovery: Option<String>,
}

/// Consul's `limits { ... }`: the settings Weft honours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Connections one address may hold to a server's RPC port (default 100).
    pub rpc_max_conns_per_client: Option<usize>,
    /// Connections one address may hold to the HTTP API (default 200; 0: no limit).
    pub http_max_conns_per_client: Option<usize>,
    /// Weft: connections the HTTP API holds in all (default: three quarters
    /// of the open-files limit; 0: no cap).
    pub http_max_conns: Option<usize>,
    /// Writes a second this agent takes through its HTTP API (default: no limit).
    pub rpc_rate: Option<Rate>,
    /// Writes it takes at once above `rpc_rate` (default 1000).
    pub rpc_max_burst: Option<usize>,
}

/// A rate, in events a second (a number; the config files' types derive `Eq`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(transparent)]
pub struct Rate(pub f64);

impl PartialEq for Rate {
    fn eq(&self, other: &Rate) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Rate {}

/// Consul's `performance { ... }`: the settings Weft honours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceFile {
    /// Scales the Raft timings (heartbeat, election timeout), 1 to 10.
    pub raft_multiplier: Option<u32>,
}

/// Consul's `connect { ... }` block: the settings Weft honours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectFile {
    /// Always on in Weft; `false` is refused rather than ignored.
    pub enabled: Option<bool>,
    pub ca_config: Option<CaConfigFile>,
}

/// `connect { ca_config { ... } }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfigFile {
    /// How long the leaves the servers sign are valid (default 72h).
    pub leaf_cert_ttl: Option<String>,
}

/// Consul's `dns_config { ... }`: the settings Weft honours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfigFile {
    /// TTL of node lookups (default 0: not cached).
    pub node_ttl: Option<String>,
    /// TTL of service lookups by service name; a name ending in `*` is a
    /// prefix (`"web*"`; `"*"` matches every service); the longest wins.
    pub service_ttl: Option<std::collections::BTreeMap<String, String>>,
    /// Answer only instances whose checks all pass (warning excluded).
    pub only_passing: Option<bool>,
    /// How long to wait for a recursor (default 2s).
    pub recursor_timeout: Option<String>,
    /// The SOA's timers.
    pub soa: Option<SoaConfigFile>,
}

/// Consul's `dns_config { soa { refresh retry expire min_ttl } }`, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoaConfigFile {
    pub refresh: Option<u32>,
    pub retry: Option<u32>,
    pub expire: Option<u32>,
    /// How long resolvers may cache a negative answer (default 0).
    pub min_ttl: Option<u32>,
}

impl SoaConfigFile {
    /// The timers, Consul's defaults where unset.
    pub fn timers(self) -> super::SoaTimers {
        let default = super::SoaTimers::default();
        super::SoaTimers {
            refresh: self.refresh.unwrap_or(default.refresh),
            retry: self.retry.unwrap_or(default.retry),
            expire: self.expire.unwrap_or(default.expire),
            min_ttl: self.min_ttl.unwrap_or(default.min_ttl),
        }
    }
}

/// Consul's `addresses { http = "..." dns = "..." }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addresses {
    pub http: Option<String>,
    pub dns: Option<String>,
}

/// Consul's `ports { http = 8500 dns = 8600 server = 8300 }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    pub http: Option<u16>,
    pub dns: Option<u16>,
    pub server: Option<u16>,
    /// The range sidecars without an explicit port are given (21000-21255).
    pub sidecar_min_port: Option<u16>,
    pub sidecar_max_port: Option<u16>,
}

impl ConfigFile {
    /// Reads a `.hcl` or `.json` file (by extension; anything else is tried as HCL).
    pub fn read(path: &Path) -> Result<ConfigFile, Vec<ConfigProblem>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![ConfigProblem(format!("cannot read config file {}: {e}", path.display()))])?;
        let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
        let mut file = Self::parse(&text, is_json).map_err(|errors| {
            let problems = errors.into_iter().map(|error| {
                let at = error.line.map(|line| format!(":{line}")).unwrap_or_default();
                ConfigProblem(format!("{}{at}: {}", path.display(), error.message))
            });
            problems.collect::<Vec<_>>()
        })?;
        let place = |lines: Vec<usize>, count: usize| -> Vec<String> {
            // Lines only when they pair up with the definitions one to one.
            let lines = if lines.len() == count { lines.into_iter().map(Some).collect() } else { vec![None; count] };
            lines
                .into_iter()
                .map(|line| match line {
                    Some(line) => format!("{}:{line}", path.display()),
                    None => path.display().to_string(),
                })
                .collect()
        };
        // The spans are read (a second parse) only for an HCL file with definitions.
        let has_definitions = !(file.service_definitions().is_empty() && file.check_definitions().is_empty());
        let source = (!is_json && has_definitions).then(|| locate::HclSource::parse(&text)).flatten();
        let lines = |one, many| source.as_ref().map(|s| s.definition_lines(one, many)).unwrap_or_default();
        let (services, checks) = (lines("service", "services"), lines("check", "checks"));
        file.origins = Origins {
            services: place(services, file.service_definitions().len()),
            checks: place(checks, file.check_definitions().len()),
        };
        Ok(file)
    }

    /// Parses file contents. Every setting that is wrong is reported (its
    /// key, and its line where it can be found), not only the first; an
    /// unknown key comes with the setting meant.
    pub fn parse(text: &str, is_json: bool) -> Result<ConfigFile, Vec<ParseError>> {
        if is_json {
            let mut json = serde_json::Deserializer::from_str(text);
            let first = match serde_path_to_error::deserialize(&mut json) {
                Ok(file) => return Ok(file),
                Err(error) => error,
            };
            // One setting at a time, for every error; the streaming parse's
            // error has the line of the first.
            let first_path = first.path().to_string();
            let first_line = first.inner().line();
            let Ok(Value::Object(settings)) = serde_json::from_str::<Value>(text) else {
                return Err(vec![ParseError {
                    line: Some(first_line),
                    message: format!("invalid JSON: {}", first.inner()),
                }]);
            };
            let errors = settings.into_iter().filter_map(|(key, value)| {
                let one = Value::Object([(key.clone(), value)].into_iter().collect());
                let error = serde_path_to_error::deserialize::<_, ConfigFile>(one).err()?;
                let path = error.path().to_string();
                let line = (path == first_path).then_some(first_line);
                Some(ParseError { line, message: setting_error(&key, &path, &error.into_inner().to_string()) })
            });
            Err(errors.collect())
        } else {
            let body: hcl::Body =
                hcl::parse(text).map_err(|e| vec![ParseError { line: None, message: format!("invalid HCL: {e}") }])?;
            if let Ok(file) = hcl::from_body(body.clone()) {
                return Ok(file);
            }
            // One setting at a time (repeated blocks together), for every error.
            let mut settings: Vec<(String, Vec<hcl::Structure>)> = Vec::new();
            for structure in body.into_inner() {
                let key = match &structure {
                    hcl::Structure::Attribute(attribute) => attribute.key.as_str().to_owned(),
                    hcl::Structure::Block(block) => block.identifier.as_str().to_owned(),
                };
                match settings.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, group)) => group.push(structure),
                    None => settings.push((key, vec![structure])),
                }
            }
            let source = locate::HclSource::parse(text);
            let errors = settings.into_iter().filter_map(|(key, group)| {
                let one = hcl::de::Deserializer::from_body(group.into_iter().collect());
                let error = serde_path_to_error::deserialize::<_, ConfigFile>(one).err()?;
                let line = source.as_ref().and_then(|s| s.line(&locate::steps(error.path())));
                let path = error.path().to_string();
                Some(ParseError { line, message: setting_error(&key, &path, &error.into_inner().to_string()) })
            });
            Err(errors.collect())
        }
    }

    /// Layers `later` over `self`: its settings win; lists add up.
    pub fn merge(&mut self, later: ConfigFile) {
        macro_rules! take {
            ($($field:ident),*) => { $( if later.$field.is_some() { self.$field = later.$field; } )* };
        }
        take!(
            node_name,
            datacenter,
            data_dir,
            server,
            bootstrap_expect,
            bind_addr,
            client_addr,
            addresses,
            ports,
            rpc_addr,
            http_addr,
            dns_addr,
            domain,
            alt_domain,
            dns_config,
            raft_snapshot_threshold,
            raft_trailing_logs,
            log_level,
            advertise_addr,
            node_meta,
            network,
            join_token,
            tls,
            rpc_key,
            limits,
            performance,
            acl,
            enable_script_checks,
            liveness_timeout,
            anti_entropy_interval,
            check_update_interval,
            connect,
            dev_mode,
            server_ca_pem
        );
        self.retry_join.extend(later.retry_join);
        self.recursors.extend(later.recursors);
        // Definitions from every file add up.
        self.services.extend(blocks(later.service));
        self.services.extend(later.services);
        self.checks.extend(blocks(later.check));
        self.checks.extend(later.checks);
        self.origins.services.extend(later.origins.services);
        self.origins.checks.extend(later.origins.checks);
    }

    /// Every service definition from this file, in order.
    pub fn service_definitions(&self) -> Vec<Value> {
        blocks(self.service.clone()).into_iter().chain(self.services.iter().cloned()).collect()
    }

    /// Every node-level check definition from this file, in order.
    pub fn check_definitions(&self) -> Vec<Value> {
        blocks(self.check.clone()).into_iter().chain(self.checks.iter().cloned()).collect()
    }
}

/// Where definitions were written: `file:line` (or `file` where the line
/// is not known), one per definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins {
    pub services: Vec<String>,
    pub checks: Vec<String>,
}

/// Why a config file does not parse: what is wrong (naming the key), and
/// the line if known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What is wrong with the setting `key` (serde's `error` at `path`): an
/// unknown key comes with the one meant, if one is close.
fn setting_error(key: &str, path: &str, error: &str) -> String {
    let fields = crate::decode::struct_fields::<ConfigFile>();
    if !fields.contains(&key) {
        let known: Vec<(&str, &str)> = fields.iter().map(|f| (*f, *f)).collect();
        return match crate::decode::closest(key, &known) {
            Some(meant) => format!("{key}: unknown setting (did you mean {meant}?)"),
            None => format!("{key}: unknown setting"),
        };
    }
    format!("{path}: {error}")
}

/// One `name { ... }` block is an object; repeated blocks arrive as a list.
fn blocks(value: Option<Value>) -> Vec<Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(one) => vec![one],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_say_the_same_thing() {
        let hcl = r#"
            node_name = "s1"
            server = true
            bootstrap_expect = 3
            retry_join = ["127.0.0.1:8311", "127.0.0.1:8321"]
            ports {
              http = 8501
            }
        "#;
        let json = r#"{"node_name": "s1", "server": true, "bootstrap_expect": 3,
            "retry_join": ["127.0.0.1:8311", "127.0.0.1:8321"], "ports": {"http": 8501}}"#;
        assert_eq!(ConfigFile::parse(hcl, false).unwrap(), ConfigFile::parse(json, true).unwrap());
    }

    #[test]
    fn a_typo_is_an_error_that_names_the_key() {
        let errors = ConfigFile::parse("node_nmae = \"s1\"", false).unwrap_err();
        assert_eq!(errors[0].message, "node_nmae: unknown setting (did you mean node_name?)");
        assert_eq!(errors[0].line, Some(1));
        // Every wrong setting, each with its key and line, in HCL and JSON.
        let text = "datacenter = \"dc1\"\nserver = yes\nports {\n  http = \"x\"\n}\nretry_jion = []\n";
        let errors = ConfigFile::parse(text, false).unwrap_err();
        let found: Vec<(Option<usize>, &str)> =
            errors.iter().map(|e| (e.line, &e.message[..e.message.find(':').unwrap()])).collect();
        assert_eq!(found, [(Some(2), "server"), (Some(4), "ports.http"), (Some(6), "retry_jion")], "{errors:?}");
        let errors =
            ConfigFile::parse("{\n  \"ports\": {\n    \"http\": \"x\"\n  },\n  \"server\": 1\n}", true).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].message.starts_with("ports.http: invalid type"), "{errors:?}");
        assert_eq!(errors[0].line, Some(3));
        assert!(errors[1].message.starts_with("server: invalid type"), "{errors:?}");
    }

    #[test]
    fn later_settings_win_and_lists_add_up() {
        let mut merged = ConfigFile::parse(r#"{"node_name": "a", "retry_join": ["x"]}"#, true).unwrap();
        merged.merge(ConfigFile::parse(r#"{"node_name": "b", "retry_join": ["y"]}"#, true).unwrap());
        assert_eq!(merged.node_name.as_deref(), Some("b"));
        assert_eq!(merged.retry_join, vec!["x", "y"]);
    }
}

#[cfg(test)]
mod service_block_tests {
    use super::*;

    #[test]
    fn one_or_several_service_blocks() {
        let one = ConfigFile::parse("service {\n name = \"web\"\n port = 8080\n}", false).unwrap();
        assert_eq!(one.service_definitions().len(), 1);
        let two = ConfigFile::parse(
            r#"
            service {
              name = "web"
              check {
                http = "http://127.0.0.1:8080/health"
                interval = "5s"
              }
            }
            service { name = "api" }
            "#,
            false,
        )
        .unwrap();
        let names: Vec<_> = two.service_definitions().iter().map(|s| s["name"].clone()).collect();
        assert_eq!(names, ["web", "api"]);
    }
}
