//! The few fields of a pod the webhook reads.
//!
//! Everything else in the pod is left alone, and unknown fields are ignored,
//! so a newer API server's pods read the same. Whether a list or map is
//! present at all matters: a JSON Patch adds a missing one whole, and appends
//! to one that exists.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A pod as far as injection is concerned.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    /// A Deployment's pods have this and no name until they are stored.
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default)]
    pub volumes: Option<Vec<Volume>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    pub liveness_probe: Option<Probe>,
    #[serde(default)]
    pub readiness_probe: Option<Probe>,
    #[serde(default)]
    pub startup_probe: Option<Probe>,
}

/// The kubelet's probe of a container: the port it connects to, if any.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default)]
    pub http_get: Option<ProbePort>,
    #[serde(default)]
    pub tcp_socket: Option<ProbePort>,
    #[serde(default)]
    pub grpc: Option<ProbePort>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProbePort {
    /// A number, or the name of one of the container's ports.
    #[serde(default)]
    pub port: serde_json::Value,
}

impl Container {
    /// The ports the kubelet probes this container on: transparent
    /// proxying must let them reach the application directly.
    pub fn probe_ports(&self) -> Vec<u16> {
        let probes = [&self.liveness_probe, &self.readiness_probe, &self.startup_probe];
        let ports = probes.into_iter().flatten().flat_map(|p| [&p.http_get, &p.tcp_socket, &p.grpc]).flatten();
        ports
            .filter_map(|probe| match &probe.port {
                serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                serde_json::Value::String(name) => self
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    /// `int32` in the API; validated when used.
    pub container_port: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Volume {
    pub name: String,
}

impl Pod {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(key).map(String::as_str)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }

    pub fn host_network(&self) -> bool {
        self.spec.host_network.unwrap_or(false)
    }

    /// Every container name in the pod, app and init.
    pub fn container_names(&self) -> impl Iterator<Item = &str> {
        self.spec.containers.iter().chain(self.spec.init_containers.iter().flatten()).map(|c| c.name.as_str())
    }

    pub fn has_volume(&self, name: &str) -> bool {
        self.spec.volumes.iter().flatten().any(|volume| volume.name == name)
    }
}
