//! One configuration file in Consul's shape, HCL or JSON, every setting
//! optional so files and flags can be layered.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    pub raft_snapshot_threshold: Option<u64>,
    pub raft_trailing_logs: Option<u64>,
    pub log_level: Option<String>,
    #[serde(skip)]
    pub dev_mode: Option<bool>,
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
}

impl ConfigFile {
    /// Reads a `.hcl` or `.json` file (by extension; anything else is tried as HCL).
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigProblem> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigProblem(format!("cannot read config file {}: {e}", path.display())))?;
        let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
        Self::parse(&text, is_json).map_err(|reason| ConfigProblem(format!("{}: {reason}", path.display())))
    }

    /// Parses file contents; the error names what is wrong.
    pub fn parse(text: &str, is_json: bool) -> Result<ConfigFile, String> {
        if is_json {
            serde_json::from_str(text).map_err(|e| format!("invalid JSON config: {e}"))
        } else {
            hcl::from_str(text).map_err(|e| format!("invalid HCL config: {e}"))
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
            raft_snapshot_threshold,
            raft_trailing_logs,
            log_level,
            dev_mode
        );
        self.retry_join.extend(later.retry_join);
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
        let error = ConfigFile::parse("node_nmae = \"s1\"", false).unwrap_err();
        assert!(error.contains("node_nmae"), "{error}");
    }

    #[test]
    fn later_settings_win_and_lists_add_up() {
        let mut merged = ConfigFile::parse(r#"{"node_name": "a", "retry_join": ["x"]}"#, true).unwrap();
        merged.merge(ConfigFile::parse(r#"{"node_name": "b", "retry_join": ["y"]}"#, true).unwrap());
        assert_eq!(merged.node_name.as_deref(), Some("b"));
        assert_eq!(merged.retry_join, vec!["x", "y"]);
    }
}
