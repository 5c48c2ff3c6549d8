//! How a caller's sidecar treats its upstreams: `UpstreamConfig` in the
//! caller's service-defaults (`Overrides` by upstream name, then
//! `Defaults`), else in proxy-defaults (Weft's mesh-wide default): connect
//! timeout, `Limits` and `PassiveHealthCheck` (outlier detection).

use serde_json::{Map, Value};
use weft_api::ids::ServiceName;
use weft_api::proxy::{Limits, OutlierDetection};

use super::config_entries::{
    as_object, count_field, field, list_field, str_field, PROXY_DEFAULTS, PROXY_DEFAULTS_NAME, SERVICE_DEFAULTS,
};
use super::mesh::MeshTables;

/// A caller's settings for one upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub connect_timeout_ms: Option<u64>,
    pub limits: Limits,
    pub outlier: Option<OutlierDetection>,
}

/// Consul's passive health check defaults.
const DEFAULT_MAX_FAILURES: u32 = 5;
const DEFAULT_INTERVAL_MS: u64 = 10_000;
const DEFAULT_BASE_EJECTION_MS: u64 = 30_000;
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// `caller`'s settings for traffic to `upstream`.
pub fn upstream_config(mesh: &MeshTables, caller: &ServiceName, upstream: &ServiceName) -> UpstreamConfig {
    let body = |kind: &str, name: &str| match serde_json::from_str(&mesh.config_entry(kind, name)?.body) {
        Ok(Value::Object(body)) => Some(body),
        _ => None,
    };
    [body(SERVICE_DEFAULTS, caller.as_str()), body(PROXY_DEFAULTS, PROXY_DEFAULTS_NAME)]
        .into_iter()
        .flatten()
        .find_map(|body| read(&body, upstream.as_str()).ok().flatten())
        .unwrap_or_default()
}

/// Checks an entry's `UpstreamConfig`; the error names the field.
pub fn validate_upstream_config(body: &Map<String, Value>) -> Result<(), String> {
    let Some(config) = field(body, "UpstreamConfig") else { return Ok(()) };
    let config = as_object(config, "UpstreamConfig")?;
    if let Some(defaults) = field(config, "Defaults") {
        settings(as_object(defaults, "UpstreamConfig.Defaults")?, "UpstreamConfig.Defaults")?;
    }
    for (i, item) in list_field(config, "Overrides", "UpstreamConfig.Overrides")?.iter().enumerate() {
        let path = format!("UpstreamConfig.Overrides[{i}]");
        let item = as_object(item, &path)?;
        str_field(item, "Name", &format!("{path}.Name"))?.ok_or_else(|| format!("{path}.Name must be set"))?;
        settings(item, &path)?;
    }
    Ok(())
}

/// The settings for `upstream` in `body`, if it has any.
fn read(body: &Map<String, Value>, upstream: &str) -> Result<Option<UpstreamConfig>, String> {
    let Some(config) = field(body, "UpstreamConfig").and_then(Value::as_object) else { return Ok(None) };
    for item in list_field(config, "Overrides", "UpstreamConfig.Overrides")? {
        let Some(item) = item.as_object() else { continue };
        if str_field(item, "Name", "Name")? == Some(upstream) {
            return settings(item, "UpstreamConfig.Overrides").map(Some);
        }
    }
    match field(config, "Defaults").and_then(Value::as_object) {
        Some(defaults) => settings(defaults, "UpstreamConfig.Defaults").map(Some),
        None => Ok(None),
    }
}

fn millis(object: &Map<String, Value>, name: &str, path: &str) -> Result<Option<u64>, String> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::String(text)) => weft_api::duration::parse(text)
            .map(|d| Some(d.as_millis().min(u128::from(u64::MAX)) as u64))
            .map_err(|e| format!("{path}.{name}: {e}")),
        Some(other) => Err(format!("{path}.{name} must be a duration like \"30s\", not {other}")),
    }
}

fn settings(object: &Map<String, Value>, path: &str) -> Result<UpstreamConfig, String> {
    let connect_timeout_ms = match field(object, "ConnectTimeoutMs") {
        None => None,
        Some(value) => {
            Some(value.as_u64().ok_or_else(|| format!("{path}.ConnectTimeoutMs must be milliseconds, not {value}"))?)
        }
    };
    let limits = match field(object, "Limits") {
        None => Limits::default(),
        Some(limits) => {
            let at = format!("{path}.Limits");
            let limits = as_object(limits, &at)?;
            Limits {
                max_connections: count_field(limits, "MaxConnections", &at)?,
                max_pending_requests: count_field(limits, "MaxPendingRequests", &at)?,
                max_concurrent_requests: count_field(limits, "MaxConcurrentRequests", &at)?,
            }
        }
    };
    let outlier = match field(object, "PassiveHealthCheck") {
        None => None,
        Some(check) => {
            let at = format!("{path}.PassiveHealthCheck");
            let check = as_object(check, &at)?;
            let max_ejection_percent =
                count_field(check, "MaxEjectionPercent", &at)?.unwrap_or(DEFAULT_MAX_EJECTION_PERCENT);
            if max_ejection_percent > 100 {
                return Err(format!("{at}.MaxEjectionPercent must be at most 100"));
            }
            Some(OutlierDetection {
                max_failures: count_field(check, "MaxFailures", &at)?.unwrap_or(DEFAULT_MAX_FAILURES).max(1),
                interval_ms: millis(check, "Interval", &at)?.unwrap_or(DEFAULT_INTERVAL_MS),
                base_ejection_time_ms: millis(check, "BaseEjectionTime", &at)?.unwrap_or(DEFAULT_BASE_EJECTION_MS),
                max_ejection_percent,
            })
        }
    };
    Ok(UpstreamConfig { connect_timeout_ms, limits, outlier })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn overrides_win_over_defaults_and_mistakes_name_the_field() {
        let body = json!({"UpstreamConfig": {
            "Defaults": {"ConnectTimeoutMs": 2000, "Limits": {"MaxConcurrentRequests": 10}},
            "Overrides": [{"Name": "db", "PassiveHealthCheck": {"MaxFailures": 3, "BaseEjectionTime": "5s"}}]
        }});
        let body = body.as_object().unwrap();
        validate_upstream_config(body).unwrap();
        let defaults = read(body, "api").unwrap().unwrap();
        assert_eq!((defaults.connect_timeout_ms, defaults.limits.max_concurrent_requests), (Some(2000), Some(10)));
        let db = read(body, "db").unwrap().unwrap();
        let outlier = db.outlier.unwrap();
        assert_eq!((outlier.max_failures, outlier.base_ejection_time_ms, outlier.max_ejection_percent), (3, 5000, 10));
        for (bad, message) in [
            (json!({"UpstreamConfig": {"Defaults": {"Limits": {"MaxConnections": -1}}}}), "Limits.MaxConnections"),
            (json!({"UpstreamConfig": {"Overrides": [{"Limits": {}}]}}), "Overrides[0].Name must be set"),
            (json!({"UpstreamConfig": {"Defaults": {"PassiveHealthCheck": {"Interval": "soon"}}}}), "Interval"),
        ] {
            let error = validate_upstream_config(bad.as_object().unwrap()).unwrap_err();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }
}
