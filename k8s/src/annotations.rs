//! The annotations a pod asks for and wires its sidecar with, and the parsers
//! of their values.
//!
//! Parsers are strict and say what is wrong: a typo in an annotation is
//! reported to whoever ran `kubectl` (as an admission warning) rather than
//! guessed at, and the pod runs without a sidecar until it is fixed.

use std::collections::BTreeSet;
use std::fmt;

use weft_api::ids::ServiceName;

/// `"true"` asks for a sidecar, `"false"` refuses one even when injection is
/// on by default.
pub const CONNECT_INJECT: &str = "weft.io/connect-inject";
/// Set to [`INJECTED`] by the patch itself; such a pod is never injected twice.
pub const INJECT_STATUS: &str = "weft.io/connect-inject-status";
pub const INJECTED: &str = "injected";
/// The service's name; defaults to the pod's `app` label, else the first container's name.
pub const SERVICE: &str = "weft.io/connect-service";
/// The service's port: a number, or the name of a container port; defaults to
/// the first port a container declares.
pub const SERVICE_PORT: &str = "weft.io/connect-service-port";
/// `service:local-port` pairs, comma separated: `"api:9191,db:5432"`.
pub const UPSTREAMS: &str = "weft.io/connect-service-upstreams";
/// `"true"` or `"false"`: overrides the webhook's transparent-proxy default.
pub const TRANSPARENT_PROXY: &str = "weft.io/transparent-proxy";

/// One annotation that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{annotation}: {problem}")]
pub struct AnnotationError {
    pub annotation: &'static str,
    pub problem: Problem,
}

/// What is wrong with an annotation's value (or with the default it falls back to).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0:?} is not \"true\" or \"false\"")]
    NotABool(String),
    #[error("{name:?} is not a valid service name: {rule}")]
    InvalidServiceName { name: String, rule: NameError },
    #[error("not set, and the default {name:?} (the {origin}) is not a valid service name: {rule}")]
    InvalidDefaultServiceName { name: String, origin: DefaultSource, rule: NameError },
    #[error("not set, and the pod has no app label or container to name the service after")]
    NoServiceName,
    #[error("{0:?} is not a port number (1-65535)")]
    InvalidPort(String),
    #[error("{0:?} is neither a port number (1-65535) nor a container port's name")]
    UnknownPort(String),
    #[error("not set, and the first container port, {0}, is not 1-65535")]
    InvalidDefaultPort(i64),
    #[error("port {port} is taken by the sidecar ({taken_by})")]
    PortTakenBySidecar { port: u16, taken_by: &'static str },
    #[error("{0:?} is not service:local-port")]
    MalformedUpstream(String),
    #[error("upstream \"{0}\" is listed twice")]
    DuplicateUpstream(ServiceName),
    #[error("local port {0} is listed twice")]
    DuplicateLocalPort(u16),
    #[error("local port {0} is the service's own port")]
    LocalPortIsServicePort(u16),
}

/// Where a defaulted service name came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultSource {
    AppLabel,
    FirstContainer,
}

/// Why a string is not a service name: names are DNS labels (RFC 1123), as
/// they appear in `<name>.service.weft` and in Kubernetes Service names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than 63 characters")]
    TooLong,
    #[error("only lowercase letters, digits and '-' are allowed")]
    InvalidCharacter,
    #[error("it must start and end with a letter or digit")]
    InvalidEdge,
}

/// One upstream: a service the application reaches on `127.0.0.1:<local_port>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub service: ServiceName,
    pub local_port: u16,
}

/// A pod's upstreams, in the order written, with no service or port twice.
/// Displays as the annotation is written, without spaces: `api:9191,db:5432`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upstreams(Vec<Upstream>);

/// Reads `"true"` or `"false"`.
pub fn parse_bool(value: &str) -> Result<bool, Problem> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Problem::NotABool(other.to_owned())),
    }
}

/// Checks a service name: an RFC 1123 DNS label.
pub fn parse_service_name(value: &str) -> Result<ServiceName, NameError> {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err(NameError::Empty);
    };
    if bytes.len() > 63 {
        return Err(NameError::TooLong);
    }
    if !bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-') {
        return Err(NameError::InvalidCharacter);
    }
    if *first == b'-' || *last == b'-' {
        return Err(NameError::InvalidEdge);
    }
    Ok(ServiceName::new(value))
}

/// Reads a port number: decimal digits only, 1 to 65535.
pub fn parse_port(value: &str) -> Option<u16> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u16>().ok().filter(|port| *port != 0)
}

/// Reads `service:local-port` pairs separated by commas (spaces around them
/// and empty entries are ignored), reporting every problem at once.
pub fn parse_upstreams(value: &str) -> Result<Upstreams, Vec<Problem>> {
    let mut upstreams = Vec::new();
    let mut problems = Vec::new();
    let (mut services, mut ports) = (BTreeSet::new(), BTreeSet::new());
    for entry in value.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let Some((service, port)) = entry.split_once(':') else {
            problems.push(Problem::MalformedUpstream(entry.to_owned()));
            continue;
        };
        let service = match parse_service_name(service.trim()) {
            Ok(service) => service,
            Err(rule) => {
                problems.push(Problem::InvalidServiceName { name: service.trim().to_owned(), rule });
                continue;
            }
        };
        let Some(local_port) = parse_port(port.trim()) else {
            problems.push(Problem::InvalidPort(port.trim().to_owned()));
            continue;
        };
        if !services.insert(service.clone()) {
            problems.push(Problem::DuplicateUpstream(service));
            continue;
        }
        if !ports.insert(local_port) {
            problems.push(Problem::DuplicateLocalPort(local_port));
            continue;
        }
        upstreams.push(Upstream { service, local_port });
    }
    if problems.is_empty() {
        Ok(Upstreams(upstreams))
    } else {
        Err(problems)
    }
}

impl Upstreams {
    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Upstreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, upstream) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", upstream.service, upstream.local_port)?;
        }
        Ok(())
    }
}

impl fmt::Display for DefaultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefaultSource::AppLabel => "pod's app label",
            DefaultSource::FirstContainer => "first container's name",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_are_true_or_false_only() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert_eq!(parse_bool("yes"), Err(Problem::NotABool("yes".into())));
        assert_eq!(parse_bool("True"), Err(Problem::NotABool("True".into())));
    }

    #[test]
    fn service_names_are_dns_labels() {
        assert_eq!(parse_service_name("web-2").unwrap(), ServiceName::new("web-2"));
        assert_eq!(parse_service_name("a").unwrap(), ServiceName::new("a"));
        assert_eq!(parse_service_name(&"a".repeat(63)).unwrap().as_str().len(), 63);
        assert_eq!(parse_service_name(""), Err(NameError::Empty));
        assert_eq!(parse_service_name(&"a".repeat(64)), Err(NameError::TooLong));
        assert_eq!(parse_service_name("Web"), Err(NameError::InvalidCharacter));
        assert_eq!(parse_service_name("web.shop"), Err(NameError::InvalidCharacter));
        assert_eq!(parse_service_name("web_1"), Err(NameError::InvalidCharacter));
        assert_eq!(parse_service_name("-web"), Err(NameError::InvalidEdge));
        assert_eq!(parse_service_name("web-"), Err(NameError::InvalidEdge));
    }

    #[test]
    fn ports_are_decimal_and_in_range() {
        assert_eq!(parse_port("1"), Some(1));
        assert_eq!(parse_port("65535"), Some(65535));
        for bad in ["0", "65536", "", "+80", "-1", "80 ", "0x50", "http"] {
            assert_eq!(parse_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn upstreams_parse_in_order_and_display_canonically() {
        let upstreams = parse_upstreams(" api:9191, db:5432 ,").unwrap();
        let pairs: Vec<_> = upstreams.iter().map(|u| (u.service.as_str(), u.local_port)).collect();
        assert_eq!(pairs, [("api", 9191), ("db", 5432)]);
        assert_eq!(upstreams.to_string(), "api:9191,db:5432");
        assert!(parse_upstreams("").unwrap().is_empty());
        assert_eq!(parse_upstreams("").unwrap().to_string(), "");
    }

    #[test]
    fn every_upstream_problem_is_reported() {
        let problems = parse_upstreams("api:9191,db:99999,api:7000,cache:9191,Queue:1,mail,x:y:z").unwrap_err();
        assert_eq!(
            problems,
            [
                Problem::InvalidPort("99999".into()),
                Problem::DuplicateUpstream(ServiceName::new("api")),
                Problem::DuplicateLocalPort(9191),
                Problem::InvalidServiceName { name: "Queue".into(), rule: NameError::InvalidCharacter },
                Problem::MalformedUpstream("mail".into()),
                Problem::InvalidPort("y:z".into()),
            ]
        );
    }

    #[test]
    fn problems_name_their_annotation() {
        let error = AnnotationError { annotation: UPSTREAMS, problem: Problem::InvalidPort("99999".into()) };
        assert_eq!(error.to_string(), "weft.io/connect-service-upstreams: \"99999\" is not a port number (1-65535)");
    }
}
