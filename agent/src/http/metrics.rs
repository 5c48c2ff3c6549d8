//! `GET /v1/agent/metrics`: this agent's measurements, in Consul's JSON
//! shape, or in Prometheus' text format with `?format=prometheus`.
//!
//! A server reports how long each stage of a write took
//! (`weft_server::telemetry`); a client agent has no such stages yet and
//! reports none. Samples are cumulative since the agent started, where
//! Consul's cover the last 10 s interval: a reader subtracts two readings.

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use time::OffsetDateTime;
use weft_acl::Permission;
use weft_api::acl::{Access, NamedResource};
use weft_server::telemetry::Sample;

use super::authz::Acl;
use super::error::ApiError;
use super::query::QueryParams;
use super::AppState;

/// Consul's metric names start with its `telemetry.metrics_prefix`.
const PREFIX: &str = "consul";

pub async fn metrics(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    acl.require(Permission::Named(NamedResource::Agent, state.node.name.to_string(), Access::Read))?;
    let samples = state.backend.server().map(|server| server.timers().samples(PREFIX)).unwrap_or_default();
    match QueryParams::parse(raw.as_deref()).get("format") {
        None | Some("") => Ok(Json(json!({
            "Timestamp": timestamp(OffsetDateTime::now_utc()),
            "Gauges": [],
            "Points": [],
            "Counters": [],
            "Samples": samples.iter().map(|s| json!({
                "Name": s.name, "Count": s.count, "Sum": s.sum, "Min": s.min, "Max": s.max,
                "Mean": s.mean, "Stddev": s.stddev, "Labels": {},
            })).collect::<Vec<_>>(),
        }))
        .into_response()),
        Some("prometheus") => {
            Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], prometheus_text(&samples))
                .into_response())
        }
        Some(other) => Err(ApiError::BadRequest(format!("format {other:?} is not one Weft serves; use prometheus"))),
    }
}

/// Consul's timestamp: Go's `time.Time` string, `2017-08-08 02:55:10 +0000 UTC`.
fn timestamp(at: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Each sample as a Prometheus summary without quantiles (`_sum` in
/// seconds, `_count`), named as Consul's Prometheus sink names them: dots
/// become underscores.
fn prometheus_text(samples: &[Sample]) -> String {
    let mut text = String::new();
    for sample in samples {
        let name = sample.name.replace(['.', '-'], "_");
        text.push_str(&format!(
            "# TYPE {name} summary\n{name}_sum {}\n{name}_count {}\n",
            sample.sum / 1000.0,
            sample.count
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_prometheus_names_read_as_consuls() {
        let at = OffsetDateTime::from_unix_timestamp(1_502_160_910).unwrap();
        assert_eq!(timestamp(at), "2017-08-08 02:55:10 +0000 UTC");
        let sample = Sample {
            name: "consul.raft.fsm.apply".into(),
            count: 2,
            sum: 3.0,
            min: 1.0,
            max: 2.0,
            mean: 1.5,
            stddev: 0.5,
        };
        assert_eq!(
            prometheus_text(&[sample]),
            "# TYPE consul_raft_fsm_apply summary\nconsul_raft_fsm_apply_sum 0.003\nconsul_raft_fsm_apply_count 2\n"
        );
    }
}
