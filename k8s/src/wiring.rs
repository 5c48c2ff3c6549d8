//! What a pod's sidecar is told about its service: the name, the port, the
//! upstreams and whether traffic is redirected through the proxy, read from
//! the pod's annotations or defaulted from the pod itself.
//!
//! Every problem is found in one pass and reported together, so one
//! `kubectl apply` shows them all.

use weft_api::ids::ServiceName;

use crate::annotations::{
    parse_bool, parse_port, parse_service_name, parse_upstreams, AnnotationError, DefaultSource, Problem, Upstreams,
    SERVICE, SERVICE_PORT, TRANSPARENT_PROXY, UPSTREAMS,
};
use crate::pod::Pod;
use crate::sidecar;

/// A pod's service as its sidecar registers and proxies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wiring {
    pub service: ServiceName,
    /// The port the application serves on; `None` when the pod declares no
    /// port (a client-only workload: upstreams, no inbound traffic).
    pub service_port: Option<u16>,
    pub upstreams: Upstreams,
    pub transparent_proxy: bool,
}

impl Wiring {
    /// Reads `pod`'s wiring; `transparent_proxy_by_default` applies unless
    /// the pod's annotation says otherwise.
    pub fn from_pod(pod: &Pod, transparent_proxy_by_default: bool) -> Result<Wiring, Vec<AnnotationError>> {
        let service = service_name(pod);
        let service_port = service_port(pod);
        let upstreams = upstreams(pod, service_port.as_ref().ok().copied().flatten());
        let transparent_proxy = pod.annotation(TRANSPARENT_PROXY).map_or(Ok(transparent_proxy_by_default), parse_bool);
        match (service, service_port, upstreams, transparent_proxy) {
            (Ok(service), Ok(service_port), Ok(upstreams), Ok(transparent_proxy)) => {
                Ok(Wiring { service, service_port, upstreams, transparent_proxy })
            }
            (service, service_port, upstreams, transparent_proxy) => {
                let on = |annotation| move |problem| AnnotationError { annotation, problem };
                let mut errors: Vec<AnnotationError> = service.err().map(on(SERVICE)).into_iter().collect();
                errors.extend(service_port.err().map(on(SERVICE_PORT)));
                errors.extend(upstreams.err().into_iter().flatten().map(on(UPSTREAMS)));
                errors.extend(transparent_proxy.err().map(on(TRANSPARENT_PROXY)));
                Err(errors)
            }
        }
    }
}

/// The annotation, else the pod's `app` label, else its first container's name.
fn service_name(pod: &Pod) -> Result<ServiceName, Problem> {
    if let Some(name) = pod.annotation(SERVICE) {
        return parse_service_name(name).map_err(|rule| Problem::InvalidServiceName { name: name.to_owned(), rule });
    }
    let (name, origin) = match (pod.label("app"), pod.spec.containers.first()) {
        (Some(app), _) => (app, DefaultSource::AppLabel),
        (None, Some(container)) => (container.name.as_str(), DefaultSource::FirstContainer),
        (None, None) => return Err(Problem::NoServiceName),
    };
    parse_service_name(name).map_err(|rule| Problem::InvalidDefaultServiceName { name: name.to_owned(), origin, rule })
}

/// The annotation (a number, or a container port's name), else the first
/// port an application container declares, else none; never a port the
/// sidecar takes.
fn service_port(pod: &Pod) -> Result<Option<u16>, Problem> {
    match declared_service_port(pod)? {
        Some(port) => match sidecar::port_taken_by(port) {
            Some(taken_by) => Err(Problem::PortTakenBySidecar { port, taken_by }),
            None => Ok(Some(port)),
        },
        None => Ok(None),
    }
}

fn declared_service_port(pod: &Pod) -> Result<Option<u16>, Problem> {
    let mut declared = pod.spec.containers.iter().flat_map(|container| &container.ports);
    let Some(value) = pod.annotation(SERVICE_PORT) else {
        return match declared.next() {
            None => Ok(None),
            Some(port) => {
                declared_port(port.container_port).map(Some).ok_or(Problem::InvalidDefaultPort(port.container_port))
            }
        };
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return parse_port(value).map(Some).ok_or_else(|| Problem::InvalidPort(value.to_owned()));
    }
    match declared.find(|port| port.name.as_deref() == Some(value)) {
        Some(port) => declared_port(port.container_port)
            .map(Some)
            .ok_or_else(|| Problem::InvalidPort(port.container_port.to_string())),
        None => Err(Problem::UnknownPort(value.to_owned())),
    }
}

/// The annotation's upstreams, none of them on a port the sidecar or the
/// service takes.
fn upstreams(pod: &Pod, service_port: Option<u16>) -> Result<Upstreams, Vec<Problem>> {
    let upstreams = parse_upstreams(pod.annotation(UPSTREAMS).unwrap_or_default())?;
    let problems: Vec<Problem> = upstreams
        .iter()
        .filter_map(|upstream| {
            let port = upstream.local_port;
            match sidecar::port_taken_by(port) {
                Some(taken_by) => Some(Problem::PortTakenBySidecar { port, taken_by }),
                None if service_port == Some(port) => Some(Problem::LocalPortIsServicePort(port)),
                None => None,
            }
        })
        .collect();
    match problems.is_empty() {
        true => Ok(upstreams),
        false => Err(problems),
    }
}

fn declared_port(port: i64) -> Option<u16> {
    u16::try_from(port).ok().filter(|port| *port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::NameError;
    use serde_json::{json, Value};

    fn pod(annotations: Value, labels: Value, containers: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"generateName": "web-", "annotations": annotations, "labels": labels},
            "spec": {"containers": containers}
        }))
        .unwrap()
    }

    fn web_containers() -> Value {
        json!([
            {"name": "nginx", "image": "nginx:1.27", "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9102}]},
            {"name": "log-shipper", "image": "fluent-bit:3", "ports": [{"name": "admin", "containerPort": 2020}]}
        ])
    }

    fn problems(result: Result<Wiring, Vec<AnnotationError>>) -> Vec<(&'static str, Problem)> {
        result.unwrap_err().into_iter().map(|error| (error.annotation, error.problem)).collect()
    }

    #[test]
    fn defaults_come_from_the_app_label_and_the_first_port() {
        let wiring = Wiring::from_pod(&pod(json!({}), json!({"app": "web"}), web_containers()), false).unwrap();
        assert_eq!(
            wiring,
            Wiring {
                service: ServiceName::new("web"),
                service_port: Some(8080),
                upstreams: Upstreams::default(),
                transparent_proxy: false
            }
        );
    }

    #[test]
    fn without_an_app_label_the_first_container_names_the_service() {
        let wiring = Wiring::from_pod(&pod(json!({}), json!({}), web_containers()), true).unwrap();
        assert_eq!(wiring.service, ServiceName::new("nginx"));
        assert!(wiring.transparent_proxy);
    }

    #[test]
    fn annotations_override_the_defaults() {
        let annotations = json!({
            SERVICE: "frontend",
            SERVICE_PORT: "admin",
            UPSTREAMS: "api:9191, db:5432",
            TRANSPARENT_PROXY: "false",
        });
        let wiring = Wiring::from_pod(&pod(annotations, json!({"app": "web"}), web_containers()), true).unwrap();
        assert_eq!(wiring.service, ServiceName::new("frontend"));
        assert_eq!(wiring.service_port, Some(2020));
        assert_eq!(wiring.upstreams.to_string(), "api:9191,db:5432");
        assert!(!wiring.transparent_proxy);

        let numeric = json!({SERVICE_PORT: "9000"});
        let wiring = Wiring::from_pod(&pod(numeric, json!({}), web_containers()), false).unwrap();
        assert_eq!(wiring.service_port, Some(9000));
    }

    #[test]
    fn a_pod_without_ports_has_no_service_port() {
        let containers = json!([{"name": "worker", "image": "worker:1"}]);
        let wiring = Wiring::from_pod(&pod(json!({UPSTREAMS: "api:9191"}), json!({}), containers), false).unwrap();
        assert_eq!(wiring.service_port, None);
        assert_eq!(wiring.service, ServiceName::new("worker"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let annotations = json!({
            SERVICE: "Frontend",
            SERVICE_PORT: "grpc",
            UPSTREAMS: "api:99999,db:5432,db:5433",
            TRANSPARENT_PROXY: "on",
        });
        assert_eq!(
            problems(Wiring::from_pod(&pod(annotations, json!({}), web_containers()), false)),
            [
                (SERVICE, Problem::InvalidServiceName { name: "Frontend".into(), rule: NameError::InvalidCharacter }),
                (SERVICE_PORT, Problem::UnknownPort("grpc".into())),
                (UPSTREAMS, Problem::InvalidPort("99999".into())),
                (UPSTREAMS, Problem::DuplicateUpstream(ServiceName::new("db"))),
                (TRANSPARENT_PROXY, Problem::NotABool("on".into())),
            ]
        );
    }

    #[test]
    fn an_invalid_default_name_says_where_it_came_from() {
        let problems = problems(Wiring::from_pod(&pod(json!({}), json!({"app": "Web_App"}), web_containers()), false));
        assert_eq!(
            problems,
            [(
                SERVICE,
                Problem::InvalidDefaultServiceName {
                    name: "Web_App".into(),
                    origin: DefaultSource::AppLabel,
                    rule: NameError::InvalidCharacter
                }
            )]
        );
        assert_eq!(
            AnnotationError { annotation: problems[0].0, problem: problems[0].1.clone() }.to_string(),
            "weft.io/connect-service: not set, and the default \"Web_App\" (the pod's app label) is not a valid \
             service name: only lowercase letters, digits and '-' are allowed"
        );
    }

    #[test]
    fn ports_the_sidecar_uses_are_refused() {
        let annotations = json!({SERVICE_PORT: "8500", UPSTREAMS: "api:20000,db:15001"});
        assert_eq!(
            problems(Wiring::from_pod(&pod(annotations, json!({}), web_containers()), false)),
            [
                (SERVICE_PORT, Problem::PortTakenBySidecar { port: 8500, taken_by: "the agent's HTTP API" }),
                (UPSTREAMS, Problem::PortTakenBySidecar { port: 20000, taken_by: "the proxy's inbound listener" }),
                (UPSTREAMS, Problem::PortTakenBySidecar { port: 15001, taken_by: "the proxy's outbound listener" }),
            ]
        );
    }

    #[test]
    fn a_port_taken_by_the_sidecar_is_named_in_the_message() {
        let error = AnnotationError {
            annotation: SERVICE_PORT,
            problem: Problem::PortTakenBySidecar { port: 8500, taken_by: "the agent's HTTP API" },
        };
        assert_eq!(
            error.to_string(),
            "weft.io/connect-service-port: port 8500 is taken by the sidecar (the agent's HTTP API)"
        );
    }

    #[test]
    fn an_upstream_cannot_listen_on_the_service_port() {
        let annotations = json!({UPSTREAMS: "api:8080"});
        assert_eq!(
            problems(Wiring::from_pod(&pod(annotations, json!({}), web_containers()), false)),
            [(UPSTREAMS, Problem::LocalPortIsServicePort(8080))]
        );
    }
}
