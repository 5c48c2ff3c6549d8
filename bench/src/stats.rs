//! Counting what the load clients saw (successes with their latencies, and
//! errors by kind) and turning it into the report `kv-load` prints, as a
//! table for people or as one line of JSON for scripts such as `raft-kv.sh`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::Target;

/// Latencies are recorded in microseconds, from 1 µs to this (longer ones are clamped).
const MAX_LATENCY_MICROS: u64 = 600_000_000;

/// What one client (or all of them, merged) observed.
pub struct Tally {
    latencies: Histogram<u64>,
    pub writes: u64,
    pub errors: BTreeMap<String, u64>,
    /// Requests still in flight when the hard stop (duration plus grace) came.
    pub cut_off: u64,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latencies: Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
                .context("could not create the latency histogram")?,
            writes: 0,
            errors: BTreeMap::new(),
            cut_off: 0,
            first_error: None,
        })
    }

    pub fn success(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latencies.saturating_record(micros.max(1));
        self.writes += 1;
    }

    pub fn error(&mut self, kind: &str, detail: impl FnOnce() -> String) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(detail());
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latencies.add(&other.latencies).context("could not merge latency histograms")?;
        self.writes += other.writes;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.cut_off += other.cut_off;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        (self.writes > 0).then(|| self.latencies.value_at_quantile(quantile) as f64 / 1000.0)
    }
}

/// The run's parameters, echoed in the report.
pub struct RunInfo {
    pub target: Target,
    pub addrs: Vec<String>,
    pub clients: usize,
    pub value_size: usize,
    pub requested: Duration,
    pub count: Option<u64>,
}

/// The result of a run, as printed.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: Target,
    pub addrs: Vec<String>,
    pub clients: usize,
    pub value_size: usize,
    pub requested_duration_s: f64,
    pub count: Option<u64>,
    /// Wall time from the first request to the last client finishing.
    pub elapsed_s: f64,
    pub writes: u64,
    pub writes_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub cut_off: u64,
    pub first_error: Option<String>,
    /// The longest time between two acknowledged writes (any clients): a
    /// leader failover's stall.
    pub longest_stall_ms: Option<f64>,
}

impl Report {
    pub fn new(info: RunInfo, tally: Tally, elapsed: Duration) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        let has_writes = tally.writes > 0;
        Self {
            target: info.target,
            addrs: info.addrs,
            clients: info.clients,
            value_size: info.value_size,
            requested_duration_s: info.requested.as_secs_f64(),
            count: info.count,
            elapsed_s,
            writes: tally.writes,
            writes_per_sec: if elapsed_s > 0.0 { tally.writes as f64 / elapsed_s } else { 0.0 },
            p50_ms: tally.quantile_ms(0.50),
            p90_ms: tally.quantile_ms(0.90),
            p99_ms: tally.quantile_ms(0.99),
            p999_ms: tally.quantile_ms(0.999),
            max_ms: has_writes.then(|| tally.latencies.max() as f64 / 1000.0),
            mean_ms: has_writes.then(|| tally.latencies.mean() / 1000.0),
            errors: tally.error_count(),
            cut_off: tally.cut_off,
            error_kinds: tally.errors,
            first_error: tally.first_error,
            longest_stall_ms: None,
        }
    }

    pub fn json(&self) -> anyhow::Result<String> {
        serde_json::to_string(self).context("could not encode the report as JSON")
    }

    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
        let target = match self.target {
            Target::Weft => "weft",
            Target::Etcd => "etcd",
        };
        let mut out = String::new();
        let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<12} {value}\n"));
        line("target", format!("{target} ({})", self.addrs.join(", ")));
        line("clients", self.clients.to_string());
        line("value size", format!("{} B", self.value_size));
        let limit = match self.count {
            Some(count) => format!(" (stopping at {count} writes or {:.1} s)", self.requested_duration_s),
            None => format!(" (requested {:.1} s)", self.requested_duration_s),
        };
        line("elapsed", format!("{:.2} s{limit}", self.elapsed_s));
        line("writes", self.writes.to_string());
        line("writes/s", format!("{:.1}", self.writes_per_sec));
        line("p50", ms(self.p50_ms));
        line("p90", ms(self.p90_ms));
        line("p99", ms(self.p99_ms));
        line("p99.9", ms(self.p999_ms));
        line("longest stall", ms(self.longest_stall_ms));
        line("max", ms(self.max_ms));
        line("mean", ms(self.mean_ms));
        let kinds: Vec<String> = self.error_kinds.iter().map(|(kind, n)| format!("{kind}={n}")).collect();
        line(
            "errors",
            if kinds.is_empty() { "0".to_owned() } else { format!("{} ({})", self.errors, kinds.join(", ")) },
        );
        if self.cut_off > 0 {
            line("cut off", format!("{} (in flight at the hard stop; not counted)", self.cut_off));
        }
        if let Some(first) = &self.first_error {
            line("first error", first.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_tallies_give_quantiles_and_rate() -> anyhow::Result<()> {
        let mut a = Tally::new()?;
        let mut b = Tally::new()?;
        for ms in 1..=50 {
            a.success(Duration::from_millis(ms));
        }
        for ms in 51..=100 {
            b.success(Duration::from_millis(ms));
        }
        b.error("http_500", || "HTTP 500: boom".to_owned());
        a.merge(b)?;
        let info = RunInfo {
            target: Target::Etcd,
            addrs: vec!["127.0.0.1:2379".to_owned()],
            clients: 2,
            value_size: 128,
            requested: Duration::from_secs(2),
            count: None,
        };
        let report = Report::new(info, a, Duration::from_secs(2));
        assert_eq!(report.writes, 100);
        assert!((report.writes_per_sec - 50.0).abs() < 1e-9);
        let p50 = report.p50_ms.unwrap_or_default();
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        let p99 = report.p99_ms.unwrap_or_default();
        assert!((98.0..=100.1).contains(&p99), "p99 {p99}");
        assert_eq!(report.errors, 1);
        assert_eq!(report.first_error.as_deref(), Some("HTTP 500: boom"));
        assert!(report.json()?.contains(r#""writes_per_sec":50.0"#));
        Ok(())
    }

    #[test]
    fn no_writes_means_no_latencies() -> anyhow::Result<()> {
        let info = RunInfo {
            target: Target::Weft,
            addrs: vec![],
            clients: 1,
            value_size: 1,
            requested: Duration::from_secs(1),
            count: Some(5),
        };
        let report = Report::new(info, Tally::new()?, Duration::from_secs(1));
        assert_eq!(report.p50_ms, None);
        assert!(report.json()?.contains(r#""p99_ms":null"#));
        assert!(report.table().contains("p99          -"));
        Ok(())
    }
}
