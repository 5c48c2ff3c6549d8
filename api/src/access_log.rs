//! Access log formats: Consul's `AccessLogs` in proxy-defaults, with
//! Envoy's `%OPERATOR%` placeholders, parsed once so that a format the
//! sidecar cannot fill is refused when the entry is written, not silently
//! logged as dashes.
//!
//! Servers parse to validate; sidecars parse to render each line.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a sidecar writes its access log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessLogSink {
    Stdout,
    Stderr,
    /// Appended to; the sidecar creates it.
    File(String),
}

/// One line per HTTP request (or TCP connection): a JSON object whose
/// values are templates, or a text template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessLogFormat {
    Json(BTreeMap<String, String>),
    Text(String),
}

/// Consul's `AccessLogs`, as a sidecar applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogs {
    pub sink: AccessLogSink,
    pub format: AccessLogFormat,
    /// Also log connections refused before any request (Consul's
    /// `DisableListenerLogs = false`).
    pub listener_logs: bool,
}

/// The fields of Consul's default JSON format that Weft fills.
pub const DEFAULT_JSON_FORMAT: [(&str, &str); 15] = [
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
];

/// What a placeholder stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    /// RFC 3339, UTC, milliseconds.
    StartTime,
    /// A request header; `:method`, `:path` and `:authority` are the
    /// request line's. `A?B` falls back to `B` when `A` is absent.
    RequestHeader(Vec<String>),
    ResponseHeader(String),
    Protocol,
    ResponseCode,
    /// Why the sidecar answered itself (its `x-weft-error`), or `-`.
    ResponseFlags,
    BytesReceived,
    BytesSent,
    /// Milliseconds from the request's arrival to the response's end.
    Duration,
    UpstreamHost,
    UpstreamCluster,
    DownstreamRemoteAddress,
    DownstreamLocalAddress,
    /// The caller's SPIFFE ID, inbound.
    DownstreamPeerUriSan,
}

/// The operators Weft fills, for error messages.
const SUPPORTED: &str = "START_TIME, REQ(header), RESP(header), PROTOCOL, RESPONSE_CODE, RESPONSE_FLAGS, \
BYTES_RECEIVED, BYTES_SENT, DURATION, UPSTREAM_HOST, UPSTREAM_CLUSTER, DOWNSTREAM_REMOTE_ADDRESS, \
DOWNSTREAM_LOCAL_ADDRESS, DOWNSTREAM_PEER_URI_SAN";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Operator(Operator),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("access log format {template:?}: {problem}")]
pub struct TemplateError {
    pub template: String,
    pub problem: String,
}

impl Template {
    pub fn parse(template: &str) -> Result<Template, TemplateError> {
        let error = |problem: String| TemplateError { template: template.to_owned(), problem };
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find('%') {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 1..];
            let end = after.find('%').ok_or_else(|| error(format!("a % at byte {start} is never closed")))?;
            let name = &after[..end];
            if name.is_empty() {
                parts.push(Part::Literal("%".to_owned())); // "%%" is a literal percent sign
            } else {
                parts.push(Part::Operator(operator(name).map_err(error)?));
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The template filled in by `value` (which answers `None` for "not
    /// known", rendered as `-` as Envoy does).
    pub fn render(&self, value: &dyn Fn(&Operator) -> Option<String>) -> String {
        let mut line = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => line.push_str(text),
                Part::Operator(op) => line.push_str(value(op).as_deref().unwrap_or("-")),
            }
        }
        line
    }
}

fn operator(name: &str) -> Result<Operator, String> {
    let argument = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('('))
            .and_then(|rest| rest.split_once(')'))
            .map(|(header, _max_length)| header.to_ascii_lowercase())
    };
    if let Some(headers) = argument("REQ") {
        return Ok(Operator::RequestHeader(headers.split('?').map(str::to_owned).collect()));
    }
    if let Some(header) = argument("RESP") {
        return Ok(Operator::ResponseHeader(header));
    }
    Ok(match name {
        "START_TIME" => Operator::StartTime,
        "PROTOCOL" => Operator::Protocol,
        "RESPONSE_CODE" => Operator::ResponseCode,
        "RESPONSE_FLAGS" => Operator::ResponseFlags,
        "BYTES_RECEIVED" => Operator::BytesReceived,
        "BYTES_SENT" => Operator::BytesSent,
        "DURATION" => Operator::Duration,
        "UPSTREAM_HOST" => Operator::UpstreamHost,
        "UPSTREAM_CLUSTER" => Operator::UpstreamCluster,
        "DOWNSTREAM_REMOTE_ADDRESS" => Operator::DownstreamRemoteAddress,
        "DOWNSTREAM_LOCAL_ADDRESS" => Operator::DownstreamLocalAddress,
        "DOWNSTREAM_PEER_URI_SAN" => Operator::DownstreamPeerUriSan,
        other => return Err(format!("%{other}% is not an operator Weft fills; use one of: {SUPPORTED}")),
    })
}

impl AccessLogFormat {
    /// Every template in the format, parsed.
    pub fn templates(&self) -> Result<CompiledFormat, TemplateError> {
        Ok(match self {
            AccessLogFormat::Text(text) => CompiledFormat::Text(Template::parse(text)?),
            AccessLogFormat::Json(fields) => CompiledFormat::Json(
                fields.iter().map(|(key, template)| Ok((key.clone(), Template::parse(template)?))).collect::<Result<
                    _,
                    TemplateError,
                >>(
                )?,
            ),
        })
    }

    /// Consul's default: JSON.
    pub fn default_json() -> AccessLogFormat {
        AccessLogFormat::Json(DEFAULT_JSON_FORMAT.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }
}

/// A format ready to render lines.
#[derive(Clone, Debug)]
pub enum CompiledFormat {
    Json(Vec<(String, Template)>),
    Text(Template),
}

impl CompiledFormat {
    /// One log line, newline-terminated. JSON values that are whole
    /// numbers are written as numbers, as Envoy does.
    pub fn line(&self, value: &dyn Fn(&Operator) -> Option<String>) -> String {
        match self {
            CompiledFormat::Text(template) => {
                let mut line = template.render(value);
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                line
            }
            CompiledFormat::Json(fields) => {
                let object: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(key, template)| {
                        let numeric = matches!(template.parts.as_slice(), [Part::Operator(op)] if op.is_numeric());
                        let text = template.render(value);
                        let json = match text.parse::<u64>() {
                            Ok(n) if numeric => serde_json::Value::from(n),
                            _ => serde_json::Value::String(text),
                        };
                        (key.clone(), json)
                    })
                    .collect();
                let mut line = serde_json::Value::Object(object).to_string();
                line.push('\n');
                line
            }
        }
    }
}

impl Operator {
    fn is_numeric(&self) -> bool {
        matches!(self, Operator::ResponseCode | Operator::BytesReceived | Operator::BytesSent | Operator::Duration)
    }
}

impl fmt::Display for AccessLogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessLogSink::Stdout => f.write_str("stdout"),
            AccessLogSink::Stderr => f.write_str("stderr"),
            AccessLogSink::File(path) => write!(f, "file {path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operators_literals_and_fallbacks() {
        let template =
            Template::parse("%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE% 100%% \n").unwrap();
        let line = template.render(&|op| match op {
            Operator::RequestHeader(names) if names == &[":method"] => Some("GET".into()),
            Operator::RequestHeader(names) => Some(names.join("|")),
            Operator::ResponseCode => Some("200".into()),
            _ => None,
        });
        assert_eq!(line, "GET x-envoy-original-path|:path 200 100% \n");
    }

    #[test]
    fn refuses_what_it_cannot_fill_and_says_what_it_can() {
        let error = Template::parse("%UPSTREAM_WIRE_BYTES_SENT%").unwrap_err();
        assert!(error.problem.contains("UPSTREAM_WIRE_BYTES_SENT") && error.problem.contains("START_TIME"));
        assert!(Template::parse("50% done").unwrap_err().problem.contains("never closed"));
    }

    #[test]
    fn json_lines_keep_numbers_numeric() {
        let format = AccessLogFormat::default_json().templates().unwrap();
        let line = format.line(&|op| match op {
            Operator::ResponseCode => Some("503".into()),
            Operator::RequestHeader(_) => Some("x".into()),
            _ => None,
        });
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["response_code"], 503);
        assert_eq!(value["method"], "x");
        assert_eq!(value["duration"], "-");
    }
}
