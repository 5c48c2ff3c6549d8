//! How a service's own sidecar lets traffic in, and what every sidecar
//! logs: `MutualTLSMode` and `RateLimits.InstanceLevel` (service-defaults,
//! else proxy-defaults, the mesh-wide default) and `AccessLogs`
//! (proxy-defaults).
//!
//! Read from validated entries, so reading never fails; the same parsers
//! validate writes, so a field the sidecar could not apply is refused with
//! its path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use weft_api::access_log::{AccessLogFormat, AccessLogSink, AccessLogs};
use weft_api::ids::ServiceName;
use weft_api::intentions::PathMatch;
use weft_api::proxy::{InboundPolicy, MutualTlsMode, RateLimit, RouteRateLimit};

use super::config_entries::{
    as_object, check_regex, count_field, field, list_field, object_field, stored_body, str_field, PROXY_DEFAULTS,
    PROXY_DEFAULTS_NAME, SERVICE_DEFAULTS,
};
use super::intentions::{MESH_CONFIG_KIND, MESH_CONFIG_NAME};
use super::mesh::MeshTables;

/// The mesh entry's switch that lets services turn permissive mode on.
pub const ALLOW_PERMISSIVE_FIELD: &str = "AllowEnablingPermissiveMutualTLS";

/// `service`'s inbound settings.
pub fn inbound_policy(mesh: &MeshTables, service: &ServiceName) -> InboundPolicy {
    let own = mesh.config_entry(SERVICE_DEFAULTS, service.as_str()).and_then(stored_body);
    let global = mesh.config_entry(PROXY_DEFAULTS, PROXY_DEFAULTS_NAME).and_then(stored_body);
    let mode_of = |body: &Option<Map<String, Value>>| body.as_ref().and_then(|b| mutual_tls_mode(b).ok().flatten());
    let limit_of = |body: &Option<Map<String, Value>>| body.as_ref().and_then(|b| rate_limit(b).ok().flatten());
    InboundPolicy {
        mutual_tls_mode: mode_of(&own).or_else(|| mode_of(&global)).unwrap_or_default(),
        rate_limit: limit_of(&own).or_else(|| limit_of(&global)),
    }
}

/// proxy-defaults' access logs, if enabled.
pub fn access_logs(mesh: &MeshTables) -> Option<AccessLogs> {
    let global = mesh.config_entry(PROXY_DEFAULTS, PROXY_DEFAULTS_NAME).and_then(stored_body)?;
    access_logs_of(&global).ok().flatten()
}

/// Checks a service-defaults body's inbound settings on their own.
pub fn check_service_defaults(body: &Map<String, Value>) -> Result<(), String> {
    mutual_tls_mode(body)?;
    rate_limit(body).map(drop)
}

/// Checks a proxy-defaults body's inbound settings and access logs on their own.
pub fn check_proxy_defaults(body: &Map<String, Value>) -> Result<(), String> {
    mutual_tls_mode(body)?;
    rate_limit(body)?;
    access_logs_of(body).map(drop)
}

/// As in Consul, permissive mode must first be allowed mesh-wide: it lets
/// traffic past the sidecar that no intention judged.
pub fn check_permissive_allowed(mesh: &MeshTables, body: &Map<String, Value>) -> Result<(), String> {
    if mutual_tls_mode(body)? != Some(MutualTlsMode::Permissive) {
        return Ok(());
    }
    let allowed = mesh
        .config_entry(MESH_CONFIG_KIND, MESH_CONFIG_NAME)
        .and_then(stored_body)
        .and_then(|mesh| field(&mesh, ALLOW_PERMISSIVE_FIELD).and_then(Value::as_bool))
        .unwrap_or(false);
    match allowed {
        true => Ok(()),
        false => Err(format!(
            "MutualTLSMode \"permissive\" lets plaintext reach the service unjudged by intentions; \
             allow it first with {ALLOW_PERMISSIVE_FIELD} = true in the mesh config entry"
        )),
    }
}

fn mutual_tls_mode(body: &Map<String, Value>) -> Result<Option<MutualTlsMode>, String> {
    match str_field(body, "MutualTLSMode", "MutualTLSMode")? {
        None => Ok(None),
        Some(mode) if mode.eq_ignore_ascii_case("strict") => Ok(Some(MutualTlsMode::Strict)),
        Some(mode) if mode.eq_ignore_ascii_case("permissive") => Ok(Some(MutualTlsMode::Permissive)),
        Some(other) => Err(format!("MutualTLSMode {other:?} is not a mode; use \"strict\" or \"permissive\"")),
    }
}

/// `RateLimits.InstanceLevel`: requests per second and burst (the burst
/// defaults to one second's worth), and per-route limits.
fn rate_limit(body: &Map<String, Value>) -> Result<Option<RateLimit>, String> {
    let Some(limits) = object_field(body, "RateLimits", "RateLimits")? else { return Ok(None) };
    let at = "RateLimits.InstanceLevel";
    let Some(instance) = object_field(limits, "InstanceLevel", at)? else { return Ok(None) };
    let requests_per_second = count_field(instance, "RequestsPerSecond", at)?.unwrap_or(0);
    let max_burst = count_field(instance, "RequestsMaxBurst", at)?.unwrap_or(requests_per_second);
    let mut routes = Vec::new();
    for (i, route) in list_field(instance, "Routes", &format!("{at}.Routes"))?.iter().enumerate() {
        let path = format!("{at}.Routes[{i}]");
        let route = as_object(route, &path)?;
        let exact = str_field(route, "PathExact", &format!("{path}.PathExact"))?;
        let prefix = str_field(route, "PathPrefix", &format!("{path}.PathPrefix"))?;
        let regex = str_field(route, "PathRegex", &format!("{path}.PathRegex"))?;
        check_regex(regex, &format!("{path}.PathRegex"))?;
        let matcher = match (exact, prefix, regex) {
            (Some(p), None, None) => PathMatch::Exact(p.to_owned()),
            (None, Some(p), None) => PathMatch::Prefix(p.to_owned()),
            (None, None, Some(p)) => PathMatch::Regex(p.to_owned()),
            _ => return Err(format!("{path} needs exactly one of PathExact, PathPrefix or PathRegex")),
        };
        let requests_per_second = count_field(route, "RequestsPerSecond", &path)?
            .ok_or_else(|| format!("{path}.RequestsPerSecond must be set"))?;
        let max_burst = count_field(route, "RequestsMaxBurst", &path)?.unwrap_or(requests_per_second);
        routes.push(RouteRateLimit { path: matcher, requests_per_second, max_burst });
    }
    if requests_per_second == 0 && routes.is_empty() {
        return Ok(None);
    }
    Ok(Some(RateLimit { requests_per_second, max_burst, routes }))
}

/// proxy-defaults' `AccessLogs`; `None` unless `Enabled`.
fn access_logs_of(body: &Map<String, Value>) -> Result<Option<AccessLogs>, String> {
    let at = "AccessLogs";
    let Some(logs) = object_field(body, "AccessLogs", at)? else { return Ok(None) };
    let enabled = match field(logs, "Enabled") {
        None => false,
        Some(Value::Bool(enabled)) => *enabled,
        Some(other) => return Err(format!("{at}.Enabled must be true or false, not {other}")),
    };
    let listener_logs = match field(logs, "DisableListenerLogs") {
        None => true,
        Some(Value::Bool(disabled)) => !disabled,
        Some(other) => return Err(format!("{at}.DisableListenerLogs must be true or false, not {other}")),
    };
    let path = str_field(logs, "Path", &format!("{at}.Path"))?;
    let sink = match str_field(logs, "Type", &format!("{at}.Type"))?.map(str::to_ascii_lowercase).as_deref() {
        None | Some("stdout") => AccessLogSink::Stdout,
        Some("stderr") => AccessLogSink::Stderr,
        Some("file") => AccessLogSink::File(
            path.ok_or_else(|| format!("{at}.Path must be set when {at}.Type is \"file\""))?.to_owned(),
        ),
        Some(other) => {
            return Err(format!("{at}.Type {other:?} is not a sink; use \"stdout\", \"stderr\" or \"file\""))
        }
    };
    if path.is_some() && !matches!(sink, AccessLogSink::File(_)) {
        return Err(format!("{at}.Path is only for {at}.Type = \"file\""));
    }
    let json = str_field(logs, "JSONFormat", &format!("{at}.JSONFormat"))?;
    let text = str_field(logs, "TextFormat", &format!("{at}.TextFormat"))?;
    let format = match (json, text) {
        (Some(_), Some(_)) => return Err(format!("{at}: set JSONFormat or TextFormat, not both")),
        (None, Some(text)) => AccessLogFormat::Text(text.to_owned()),
        (Some(json), None) => {
            let fields: BTreeMap<String, Value> = serde_json::from_str(json)
                .map_err(|e| format!("{at}.JSONFormat must be a JSON object of strings: {e}"))?;
            let fields = fields
                .into_iter()
                .map(|(key, value)| match value {
                    Value::String(template) => Ok((key, template)),
                    other => Err(format!("{at}.JSONFormat[{key:?}] must be a string template, not {other}")),
                })
                .collect::<Result<_, String>>()?;
            AccessLogFormat::Json(fields)
        }
        (None, None) => AccessLogFormat::default_json(),
    };
    format.templates().map_err(|e| format!("{at}: {e}"))?;
    Ok(enabled.then_some(AccessLogs { sink, format, listener_logs }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn rate_limits_default_the_burst_and_need_one_path_per_route() {
        let limit = rate_limit(&body(json!({"RateLimits": {"InstanceLevel": {
            "RequestsPerSecond": 10,
            "Routes": [{"PathPrefix": "/api", "RequestsPerSecond": 2, "RequestsMaxBurst": 4}]
        }}})))
        .unwrap()
        .unwrap();
        assert_eq!((limit.requests_per_second, limit.max_burst), (10, 10));
        assert_eq!(limit.routes[0].path, PathMatch::Prefix("/api".into()));
        for (bad, message) in [
            (json!({"RateLimits": {"InstanceLevel": {"Routes": [{"RequestsPerSecond": 1}]}}}), "exactly one of"),
            (
                json!({"RateLimits": {"InstanceLevel": {"Routes": [{"PathRegex": "(", "RequestsPerSecond": 1}]}}}),
                "PathRegex",
            ),
            (json!({"RateLimits": {"InstanceLevel": {"RequestsPerSecond": "fast"}}}), "whole number"),
        ] {
            let error = rate_limit(&body(bad.clone())).unwrap_err();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }

    #[test]
    fn access_logs_need_a_path_for_files_and_known_operators() {
        let logs = access_logs_of(&body(json!({"AccessLogs": {"Enabled": true, "Type": "file", "Path": "/tmp/a.log",
            "TextFormat": "%REQ(:METHOD)% %RESPONSE_CODE%"}})))
        .unwrap()
        .unwrap();
        assert_eq!(logs.sink, AccessLogSink::File("/tmp/a.log".into()));
        assert!(access_logs_of(&body(json!({"AccessLogs": {"Enabled": false}}))).unwrap().is_none());
        for (bad, message) in [
            (json!({"AccessLogs": {"Enabled": true, "Type": "file"}}), "Path must be set"),
            (json!({"AccessLogs": {"Enabled": true, "TextFormat": "%NOPE%"}}), "%NOPE%"),
            (json!({"AccessLogs": {"Enabled": true, "JSONFormat": "[1]"}}), "JSON object"),
            (json!({"AccessLogs": {"Enabled": true, "Type": "syslog"}}), "syslog"),
        ] {
            let error = access_logs_of(&body(bad.clone())).unwrap_err();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }

    #[test]
    fn mutual_tls_modes() {
        assert_eq!(mutual_tls_mode(&body(json!({"MutualTLSMode": "Permissive"}))), Ok(Some(MutualTlsMode::Permissive)));
        assert!(mutual_tls_mode(&body(json!({"MutualTLSMode": "loose"}))).unwrap_err().contains("strict"));
    }
}
