//! The injection decision: an admission request in, a [`Decision`] and the
//! response the API server gets out. Pure: no I/O, no clock, no logging (the
//! webhook logs what was decided).
//!
//! A pod is injected when it is created, annotated
//! `weft.io/connect-inject: "true"` (or not annotated, with
//! [`InjectConfig::inject_by_default`]), not already injected, not on the
//! host's network, and its wiring annotations are valid. Otherwise it is
//! admitted unchanged; when that is because something is wrong, the response
//! carries one warning per problem, so whoever created the pod is told.
//!
//! The patch puts the sidecar first among the init containers: init
//! containers run in order, and any the pod already has may need the mesh.
//! A pod with transparent proxying first gets `weft-init`, which redirects
//! its traffic through the proxy, sparing the ports its probes use.

use std::fmt;

use serde::Deserialize;
use weft_api::ids::{is_plain_name, NetworkName};

use crate::admission::{AdmissionRequest, AdmissionResponse, Operation};
use crate::annotations::{self, parse_bool, AnnotationError, CONNECT_INJECT, INJECTED, INJECT_STATUS};
use crate::patch::{JsonPatch, Pointer};
use crate::pod::Pod;
use crate::sidecar::{self, ACL_TOKEN_VOLUME, DATA_VOLUME, INIT_CONTAINER, SIDECAR_CONTAINER};
use crate::wiring::Wiring;

/// How the webhook injects: the same for every pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectConfig {
    /// The image holding the `weft` binary, for both added containers.
    pub agent_image: String,
    /// `HOST:PORT` of the Weft servers' RPC port (usually a Kubernetes
    /// Service), passed to the agent as `--retry-join`.
    pub server_addr: String,
    /// Redirect pods' traffic through their proxy unless a pod's
    /// `weft.io/transparent-proxy` annotation says otherwise.
    pub transparent_proxy: bool,
    /// Inject every pod the webhook is sent unless annotated
    /// `weft.io/connect-inject: "false"`; otherwise only pods annotated `"true"`.
    pub inject_by_default: bool,
    /// The network of this cluster's pods, passed to the agent as
    /// `--network` (empty: the default network).
    pub network: NetworkName,
    /// The CA the servers' RPC certificates chain to (PEM), passed to the
    /// agent in its environment so it verifies the servers.
    pub server_ca_pem: Option<String>,
    /// With ACLs on: the auth method pods log in with. The sidecar gets a
    /// projected service-account token for the `weft` audience, and its
    /// agent exchanges it for a token with the pod's service identity when
    /// it starts (and logs out when it stops).
    pub acl_auth_method: Option<String>,
}

/// Settings the webhook cannot inject with; every problem is listed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid injection settings: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InjectConfigError(pub Vec<ConfigProblem>);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    #[error("the agent image is empty")]
    EmptyAgentImage,
    #[error("the agent image {0:?} contains whitespace")]
    AgentImageWhitespace(String),
    #[error("the server address {0:?} is not HOST:PORT")]
    ServerAddr(String),
    #[error("the network {0:?} must use only letters, digits, '-' and '_'")]
    Network(String),
    #[error("the servers' CA holds no PEM certificate")]
    ServerCa,
    #[error("the auth method {0:?} must use only letters, digits, '-' and '_'")]
    AuthMethod(String),
}

/// What the webhook does with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Admitted unchanged, as intended.
    Skip(SkipReason),
    /// Admitted unchanged because injection was asked for but cannot be done;
    /// each problem becomes a warning.
    Invalid(Vec<InjectionProblem>),
    /// Admitted with the sidecar.
    Inject(Injection),
}

/// Why a pod is admitted unchanged with nothing to warn about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Not the creation of a pod (an update, a subresource, another kind).
    NotAPodCreation,
    /// Neither annotated nor injected by default.
    NotRequested,
    /// Annotated `weft.io/connect-inject: "false"`.
    OptedOut,
    /// Annotated `weft.io/connect-inject-status: injected`.
    AlreadyInjected,
    /// On the host's network, and not asked for by annotation.
    HostNetwork,
}

/// Why a pod that asked for a sidecar did not get one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectionProblem {
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error("the pod cannot be read: {0}")]
    UnreadablePod(String),
    #[error("the pod already has a {kind} named {name:?}")]
    NameTaken { kind: &'static str, name: &'static str },
    #[error("a hostNetwork pod shares the node's network and cannot have a sidecar")]
    HostNetwork,
}

/// A pod's sidecar: its wiring and the patch that adds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub wiring: Wiring,
    pub patch: JsonPatch,
}

/// Decides what to do with `request`.
pub fn decide(request: &AdmissionRequest, config: &InjectConfig) -> Decision {
    if request.operation != Operation::Create || !request.kind.is_pod() || request.sub_resource.is_some() {
        return Decision::Skip(SkipReason::NotAPodCreation);
    }
    let Some(object) = &request.object else {
        return Decision::Invalid(vec![InjectionProblem::UnreadablePod("the request carries no object".into())]);
    };
    match Pod::deserialize(object) {
        Ok(pod) => decide_pod(&pod, config),
        Err(error) => Decision::Invalid(vec![InjectionProblem::UnreadablePod(error.to_string())]),
    }
}

/// Decides, and answers the API server accordingly.
pub fn review(request: &AdmissionRequest, config: &InjectConfig) -> (Decision, AdmissionResponse) {
    let decision = decide(request, config);
    let response = decision.response(request);
    (decision, response)
}

fn decide_pod(pod: &Pod, config: &InjectConfig) -> Decision {
    if pod.annotation(INJECT_STATUS) == Some(INJECTED) {
        return Decision::Skip(SkipReason::AlreadyInjected);
    }
    let annotated = match pod.annotation(CONNECT_INJECT).map(parse_bool) {
        Some(Ok(true)) => true,
        Some(Ok(false)) => return Decision::Skip(SkipReason::OptedOut),
        Some(Err(problem)) => {
            return Decision::Invalid(vec![AnnotationError { annotation: CONNECT_INJECT, problem }.into()])
        }
        None if config.inject_by_default => false,
        None => return Decision::Skip(SkipReason::NotRequested),
    };
    if pod.host_network() {
        return match annotated {
            true => Decision::Invalid(vec![InjectionProblem::HostNetwork]),
            false => Decision::Skip(SkipReason::HostNetwork),
        };
    }

    let (wiring, mut problems) = match Wiring::from_pod(pod, config.transparent_proxy) {
        Ok(wiring) => (Some(wiring), Vec::new()),
        Err(errors) => (None, errors.into_iter().map(InjectionProblem::from).collect()),
    };
    for name in [INIT_CONTAINER, SIDECAR_CONTAINER] {
        if pod.container_names().any(|taken| taken == name) {
            problems.push(InjectionProblem::NameTaken { kind: "container", name });
        }
    }
    for name in [DATA_VOLUME, ACL_TOKEN_VOLUME] {
        if pod.has_volume(name) {
            problems.push(InjectionProblem::NameTaken { kind: "volume", name });
        }
    }
    match wiring {
        Some(wiring) if problems.is_empty() => {
            let patch = patch(pod, config, &wiring);
            Decision::Inject(Injection { wiring, patch })
        }
        _ => Decision::Invalid(problems),
    }
}

/// The sidecar first among the init containers (after `weft-init` with
/// transparent proxying), its data volume, and the injected-status annotation.
fn patch(pod: &Pod, config: &InjectConfig, wiring: &Wiring) -> JsonPatch {
    let mut init_containers = Vec::new();
    if wiring.transparent_proxy {
        // The service's own port stays behind mTLS: sparing it would let
        // anyone in the cluster reach the application around the sidecar.
        let mut probe_ports: Vec<u16> = pod
            .spec
            .containers
            .iter()
            .flat_map(|c| c.probe_ports())
            .filter(|port| Some(*port) != wiring.service_port)
            .collect();
        probe_ports.sort_unstable();
        probe_ports.dedup();
        init_containers.push(sidecar::init_container(config, &probe_ports));
    }
    init_containers.push(sidecar::sidecar_container(config, wiring));

    let mut patch = JsonPatch::default();
    let has_init_containers = pod.spec.init_containers.is_some();
    patch.prepend(Pointer::at(&["spec", "initContainers"]), has_init_containers, init_containers);
    let mut volumes = vec![sidecar::data_volume()];
    if config.acl_auth_method.is_some() {
        volumes.push(sidecar::acl_token_volume());
    }
    patch.append(Pointer::at(&["spec", "volumes"]), pod.spec.volumes.is_some(), volumes);
    let has_annotations = pod.metadata.annotations.is_some();
    patch.set_in_map(Pointer::at(&["metadata", "annotations"]), has_annotations, INJECT_STATUS, INJECTED.into());
    patch
}

impl Decision {
    /// The response to `request`: always allowed.
    pub fn response(&self, request: &AdmissionRequest) -> AdmissionResponse {
        let uid = request.uid.clone();
        match self {
            Decision::Skip(_) => AdmissionResponse::allow(uid),
            Decision::Invalid(problems) => AdmissionResponse::allow(uid).with_warnings(
                problems.iter().map(|problem| format!("Weft sidecar not injected: {problem}")).collect(),
            ),
            Decision::Inject(injection) => AdmissionResponse::allow_patched(uid, &injection.patch.to_bytes()),
        }
    }
}

impl InjectConfig {
    /// Checks the settings once, at start-up.
    pub fn validate(&self) -> Result<(), InjectConfigError> {
        let mut problems = Vec::new();
        if self.agent_image.is_empty() {
            problems.push(ConfigProblem::EmptyAgentImage);
        } else if self.agent_image.chars().any(char::is_whitespace) {
            problems.push(ConfigProblem::AgentImageWhitespace(self.agent_image.clone()));
        }
        let host_and_port = self.server_addr.rsplit_once(':');
        let valid_host = |host: &str| !host.is_empty() && !host.chars().any(char::is_whitespace);
        if !host_and_port.is_some_and(|(host, port)| valid_host(host) && annotations::parse_port(port).is_some()) {
            problems.push(ConfigProblem::ServerAddr(self.server_addr.clone()));
        }
        if !self.network.is_empty() && !is_plain_name(self.network.as_str()) {
            problems.push(ConfigProblem::Network(self.network.to_string()));
        }
        if self.server_ca_pem.as_ref().is_some_and(|pem| !pem.contains("-----BEGIN CERTIFICATE-----")) {
            problems.push(ConfigProblem::ServerCa);
        }
        if let Some(method) = self.acl_auth_method.as_ref().filter(|m| !is_plain_name(m)) {
            problems.push(ConfigProblem::AuthMethod(method.clone()));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(InjectConfigError(problems)),
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NotAPodCreation => "not a pod creation",
            SkipReason::NotRequested => "not annotated for injection",
            SkipReason::OptedOut => "opted out by annotation",
            SkipReason::AlreadyInjected => "already injected",
            SkipReason::HostNetwork => "hostNetwork pod",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::parse_review;
    use crate::annotations::Problem;
    use crate::patch::Operation as PatchOp;
    use serde_json::{json, Value};

    fn config() -> InjectConfig {
        InjectConfig {
            agent_image: "ghcr.io/weft/weft:0.1.0".into(),
            server_addr: "weft-server.weft.svc:8300".into(),
            transparent_proxy: false,
            inject_by_default: false,
            network: NetworkName::default(),
            server_ca_pem: None,
            acl_auth_method: None,
        }
    }

    fn request_for(pod: Value) -> AdmissionRequest {
        request_with(pod, "CREATE")
    }

    fn request_with(pod: Value, operation: &str) -> AdmissionRequest {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "3d1e0b1c-5f0e-4a8e-9d1e-1c9f4d3b2a10",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "object": pod,
            }
        });
        parse_review(&serde_json::to_vec(&review).unwrap()).unwrap()
    }

    fn web_pod(annotations: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "web-6f7d8c9b5-", "namespace": "shop", "labels": {"app": "web"}, "annotations": annotations},
            "spec": {
                "containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"name": "http", "containerPort": 8080}]}],
                "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": []}}]
            }
        })
    }

    fn injection(decision: Decision) -> Injection {
        match decision {
            Decision::Inject(injection) => injection,
            other => panic!("expected an injection, got {other:?}"),
        }
    }

    fn ops(patch: &JsonPatch) -> Vec<(String, &Value)> {
        patch.operations().iter().map(|PatchOp::Add { path, value }| (path.to_string(), value)).collect()
    }

    fn warnings(decision: &Decision) -> Vec<String> {
        decision.response(&request_for(json!({}))).warnings
    }

    #[test]
    fn an_annotated_pod_gets_the_sidecar_first_its_volume_and_the_status() {
        let decision = decide(&request_for(web_pod(json!({CONNECT_INJECT: "true"}))), &config());
        let injection = injection(decision);
        let ops = ops(&injection.patch);
        let paths: Vec<&str> = ops.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            ["/spec/initContainers", "/spec/volumes/-", "/metadata/annotations/weft.io~1connect-inject-status"]
        );

        let init_containers = ops[0].1.as_array().unwrap();
        assert_eq!(init_containers.len(), 1, "no weft-init without transparent proxying");
        let sidecar = &init_containers[0];
        assert_eq!(sidecar["name"], json!("weft-sidecar"));
        assert_eq!(sidecar["restartPolicy"], json!("Always"));
        assert_eq!(sidecar["image"], json!("ghcr.io/weft/weft:0.1.0"));
        assert_eq!(
            sidecar["args"],
            json!(["agent", "--k8s", "--retry-join", "weft-server.weft.svc:8300", "--data-dir", "/weft/data"])
        );
        assert_eq!(sidecar["startupProbe"]["exec"], json!({"command": ["weft", "k8s", "ready"]}));
        assert_eq!(sidecar["securityContext"]["runAsNonRoot"], json!(true));
        assert_eq!(sidecar["securityContext"]["runAsUser"], json!(5995));
        assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], json!(true));
        assert_eq!(sidecar["securityContext"]["capabilities"], json!({"drop": ["ALL"]}));
        assert_eq!(sidecar["volumeMounts"], json!([{"name": "weft-data", "mountPath": "/weft/data"}]));
        assert_eq!(
            sidecar["env"],
            json!([
                {"name": "WEFT_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "WEFT_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "WEFT_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "WEFT_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "WEFT_SERVICE_NAME", "value": "web"},
                {"name": "WEFT_SERVICE_PORT", "value": "8080"},
                {"name": "WEFT_SERVICE_UPSTREAMS", "value": ""},
                {"name": "WEFT_TRANSPARENT_PROXY", "value": "false"},
            ])
        );
        assert_eq!(ops[1].1, &json!({"name": "weft-data", "emptyDir": {}}));
        assert_eq!(ops[2].1, &json!("injected"));
    }

    #[test]
    fn the_response_is_allowed_with_a_base64_json_patch() {
        let request = request_for(web_pod(json!({CONNECT_INJECT: "true"})));
        let (decision, response) = review(&request, &config());
        assert!(response.allowed());
        assert!(response.warnings.is_empty());
        let patch: Value = serde_json::from_slice(&response.patch().unwrap()).unwrap();
        assert_eq!(patch, serde_json::to_value(&injection(decision).patch).unwrap());
        let review = response.to_review();
        assert_eq!(review["response"]["uid"], json!("3d1e0b1c-5f0e-4a8e-9d1e-1c9f4d3b2a10"));
        assert_eq!(review["response"]["patchType"], json!("JSONPatch"));
    }

    #[test]
    fn missing_lists_and_maps_are_added_whole() {
        let pod = json!({
            "metadata": {"name": "worker", "namespace": "shop"},
            "spec": {"containers": [{"name": "worker", "image": "worker:1"}]}
        });
        let config = InjectConfig { inject_by_default: true, ..config() };
        let injection = injection(decide(&request_for(pod), &config));
        let ops = ops(&injection.patch);
        let paths: Vec<&str> = ops.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(paths, ["/spec/initContainers", "/spec/volumes", "/metadata/annotations"]);
        assert_eq!(ops[1].1, &json!([{"name": "weft-data", "emptyDir": {}}]));
        assert_eq!(ops[2].1, &json!({"weft.io/connect-inject-status": "injected"}));
        assert_eq!(injection.wiring.service_port, None);
    }

    #[test]
    fn existing_init_containers_run_after_the_sidecar() {
        let mut pod = web_pod(json!({CONNECT_INJECT: "true"}));
        pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "migrate:1"}]);
        let injection = injection(decide(&request_for(pod), &config()));
        let ops = ops(&injection.patch);
        assert_eq!(ops[0].0, "/spec/initContainers/0");
        assert_eq!(ops[0].1["name"], json!("weft-sidecar"));
    }

    #[test]
    fn transparent_proxying_redirects_first_sparing_probe_ports_but_never_the_service_port() {
        let config = InjectConfig { transparent_proxy: true, ..config() };
        let mut pod = web_pod(json!({CONNECT_INJECT: "true"}));
        pod["spec"]["containers"][0]["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": "http"}});
        pod["spec"]["containers"][0]["readinessProbe"] = json!({"tcpSocket": {"port": 8081}});
        let request = request_for(pod);
        let decision = decide(&request, &config);
        assert!(decision.response(&request).warnings.is_empty());
        let with = injection(decision);
        let init_containers = ops(&with.patch)[0].1.as_array().unwrap().clone();
        let names: Vec<&Value> = init_containers.iter().map(|c| &c["name"]).collect();
        assert_eq!(names, [&json!("weft-init"), &json!("weft-sidecar")], "the redirect first");
        assert_eq!(
            init_containers[0]["args"],
            json!(["k8s", "redirect-traffic", "--exclude-inbound-port", "8081"]),
            "8080 is the service's port: a probe there goes through the sidecar"
        );
        assert_eq!(init_containers[0]["securityContext"]["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
        assert!(init_containers[1]["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "WEFT_TRANSPARENT_PROXY", "value": "true"})));

        let opted_out = json!({CONNECT_INJECT: "true", annotations::TRANSPARENT_PROXY: "false"});
        let without = injection(decide(&request_for(web_pod(opted_out)), &config));
        assert!(!without.wiring.transparent_proxy);
    }

    #[test]
    fn pods_not_asking_are_left_alone() {
        let cases = [
            (json!({}), config(), SkipReason::NotRequested),
            (
                json!({CONNECT_INJECT: "false"}),
                InjectConfig { inject_by_default: true, ..config() },
                SkipReason::OptedOut,
            ),
            (json!({CONNECT_INJECT: "true", INJECT_STATUS: "injected"}), config(), SkipReason::AlreadyInjected),
        ];
        for (annotations, config, reason) in cases {
            let decision = decide(&request_for(web_pod(annotations.clone())), &config);
            assert_eq!(decision, Decision::Skip(reason), "{annotations}");
            let response = decision.response(&request_for(json!({})));
            assert!(response.allowed() && response.patch().is_none() && response.warnings.is_empty());
        }
    }

    #[test]
    fn only_pod_creations_are_considered() {
        let annotated = web_pod(json!({CONNECT_INJECT: "true"}));
        let update = request_with(annotated.clone(), "UPDATE");
        assert_eq!(decide(&update, &config()), Decision::Skip(SkipReason::NotAPodCreation));

        let mut subresource = request_for(annotated.clone());
        subresource.sub_resource = Some("ephemeralcontainers".into());
        assert_eq!(decide(&subresource, &config()), Decision::Skip(SkipReason::NotAPodCreation));

        let mut service = request_for(annotated);
        service.kind.kind = "Service".into();
        assert_eq!(decide(&service, &config()), Decision::Skip(SkipReason::NotAPodCreation));
    }

    #[test]
    fn host_network_pods_are_skipped_and_warned_about_when_annotated() {
        let mut pod = web_pod(json!({CONNECT_INJECT: "true"}));
        pod["spec"]["hostNetwork"] = json!(true);
        let decision = decide(&request_for(pod), &config());
        assert_eq!(decision, Decision::Invalid(vec![InjectionProblem::HostNetwork]));
        assert_eq!(
            warnings(&decision),
            ["Weft sidecar not injected: a hostNetwork pod shares the node's network and cannot have a sidecar"]
        );

        let mut pod = web_pod(json!({}));
        pod["spec"]["hostNetwork"] = json!(true);
        let by_default = InjectConfig { inject_by_default: true, ..config() };
        assert_eq!(decide(&request_for(pod), &by_default), Decision::Skip(SkipReason::HostNetwork));
    }

    #[test]
    fn invalid_annotations_admit_the_pod_unchanged_with_warnings() {
        let annotations = json!({CONNECT_INJECT: "true", annotations::UPSTREAMS: "api:9191,db:99999"});
        let decision = decide(&request_for(web_pod(annotations)), &config());
        let response = decision.response(&request_for(json!({})));
        assert!(response.allowed());
        assert!(response.patch().is_none());
        assert_eq!(
            response.warnings,
            ["Weft sidecar not injected: weft.io/connect-service-upstreams: \"99999\" is not a port number (1-65535)"]
        );

        let decision = decide(&request_for(web_pod(json!({CONNECT_INJECT: "yes"}))), &config());
        assert_eq!(
            decision,
            Decision::Invalid(vec![InjectionProblem::Annotation(AnnotationError {
                annotation: CONNECT_INJECT,
                problem: Problem::NotABool("yes".into())
            })])
        );
    }

    #[test]
    fn warnings_stay_short_enough_for_kubectl() {
        let annotations = json!({
            CONNECT_INJECT: "true",
            annotations::SERVICE: "x".repeat(70),
            annotations::SERVICE_PORT: "metrics-endpoint",
            annotations::UPSTREAMS: "api:9191,api:9192,db:8080",
        });
        let decision = decide(&request_for(web_pod(annotations)), &config());
        let warnings = warnings(&decision);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        for warning in warnings {
            assert!(warning.len() <= 256, "{warning}");
        }
    }

    #[test]
    fn names_the_patch_would_duplicate_are_refused() {
        let mut pod = web_pod(json!({CONNECT_INJECT: "true"}));
        pod["spec"]["containers"][0]["name"] = json!("weft-sidecar");
        pod["spec"]["volumes"] = json!([{"name": "weft-data", "emptyDir": {}}]);
        assert_eq!(
            decide(&request_for(pod), &config()),
            Decision::Invalid(vec![
                InjectionProblem::NameTaken { kind: "container", name: "weft-sidecar" },
                InjectionProblem::NameTaken { kind: "volume", name: "weft-data" },
            ])
        );
    }

    #[test]
    fn an_unreadable_pod_is_admitted_with_a_warning() {
        let pod = json!({"metadata": {"annotations": {CONNECT_INJECT: "true"}}, "spec": {"containers": "nope"}});
        let decision = decide(&request_for(pod), &config());
        assert!(
            matches!(&decision, Decision::Invalid(problems) if matches!(problems[..], [InjectionProblem::UnreadablePod(_)]))
        );
    }

    #[test]
    fn settings_are_validated_together() {
        assert_eq!(config().validate(), Ok(()));
        assert_eq!(InjectConfig { server_addr: "[fd00::1]:8300".into(), ..config() }.validate(), Ok(()));
        let bad = InjectConfig { agent_image: String::new(), server_addr: "weft-server".into(), ..config() };
        let error = bad.validate().unwrap_err();
        assert_eq!(error.0, [ConfigProblem::EmptyAgentImage, ConfigProblem::ServerAddr("weft-server".into())]);
        assert_eq!(
            error.to_string(),
            "invalid injection settings: the agent image is empty; the server address \"weft-server\" is not HOST:PORT"
        );
        let bad = InjectConfig { agent_image: "weft latest".into(), server_addr: "weft:0".into(), ..config() };
        assert_eq!(bad.validate().unwrap_err().0.len(), 2);
        let bad = InjectConfig { network: "pods.east".into(), ..config() };
        assert_eq!(bad.validate().unwrap_err().0, [ConfigProblem::Network("pods.east".into())]);
        let bad = InjectConfig { server_ca_pem: Some("not a certificate".into()), ..config() };
        assert_eq!(bad.validate().unwrap_err().0, [ConfigProblem::ServerCa]);
    }

    #[test]
    fn the_injected_agent_is_given_the_servers_ca() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let config = InjectConfig { server_ca_pem: Some(pem.into()), ..config() };
        let injection = injection(decide(&request_for(web_pod(json!({CONNECT_INJECT: "true"}))), &config));
        let env = &ops(&injection.patch)[0].1[0]["env"];
        let ca = env.as_array().unwrap().iter().find(|e| e["name"] == crate::pod_env::SERVER_CA_PEM);
        assert_eq!(ca.map(|e| &e["value"]), Some(&json!(pem)), "{env}");
    }

    #[test]
    fn with_acls_the_sidecar_logs_in_with_its_service_account_token() {
        let with_login = InjectConfig { acl_auth_method: Some("k8s".into()), ..config() };
        let injection =
            injection(decide(&request_for(web_pod(json!({"weft.io/connect-inject": "true"}))), &with_login));
        let ops = ops(&injection.patch);
        let sidecar = &ops[0].1[0];
        let env = sidecar["env"].as_array().unwrap();
        let var = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
        assert_eq!(var(crate::pod_env::ACL_AUTH_METHOD), Some(json!("k8s")));
        assert_eq!(
            var(crate::pod_env::ACL_BEARER_TOKEN_FILE),
            Some(json!("/var/run/secrets/weft/serviceaccount/token"))
        );
        let mounts = sidecar["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["name"] == "weft-acl-token" && m["readOnly"] == true), "{mounts:?}");
        let volume = ops.iter().find(|(_, v)| v["name"] == "weft-acl-token").map(|(_, v)| *v).unwrap();
        assert_eq!(volume["projected"]["sources"][0]["serviceAccountToken"]["audience"], "weft");
        let bad = InjectConfig { acl_auth_method: Some("k8s method".into()), ..config() };
        assert_eq!(bad.validate().unwrap_err().0, [ConfigProblem::AuthMethod("k8s method".into())]);
    }

    #[test]
    fn the_injected_agent_joins_the_clusters_network() {
        let config = InjectConfig { network: "pods".into(), ..config() };
        let injection = injection(decide(&request_for(web_pod(json!({CONNECT_INJECT: "true"}))), &config));
        let args = &ops(&injection.patch)[0].1[0]["args"];
        assert_eq!(args.as_array().unwrap()[6..], [json!("--network"), json!("pods")], "{args}");
    }
}
