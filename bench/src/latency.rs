//! A latency histogram (HDR, microseconds, 3 significant digits, as in
//! `kv-load`'s stats) and the quantiles the reports print; each load worker
//! keeps its own and they are merged at the end.

use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to this (longer ones are clamped).
const MAX_LATENCY_MICROS: u64 = 600_000_000;

/// Recorded latencies.
pub struct Latencies {
    histogram: Histogram<u64>,
}

/// The usual quantiles of a set of latencies, in milliseconds (`None` when empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub min_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl Latencies {
    pub fn new() -> anyhow::Result<Self> {
        let histogram =
            Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).context("could not create the latency histogram")?;
        Ok(Self { histogram })
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    /// Adds `other`'s latencies to these (e.g. each load worker's, at the end of a run).
    pub fn merge(&mut self, other: &Latencies) -> anyhow::Result<()> {
        self.histogram.add(&other.histogram).context("could not merge latency histograms")
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    fn ms(micros: u64) -> f64 {
        micros as f64 / 1000.0
    }

    pub fn summary(&self) -> Summary {
        let h = &self.histogram;
        if h.is_empty() {
            return Summary::default();
        }
        let q = |quantile: f64| Some(Self::ms(h.value_at_quantile(quantile)));
        Summary {
            count: h.len(),
            min_ms: Some(Self::ms(h.min())),
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: Some(Self::ms(h.max())),
            mean_ms: Some(h.mean() / 1000.0),
        }
    }
}

/// `12.34 ms`, or `-` for no value.
pub fn fmt_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_one_to_a_hundred_ms() -> anyhow::Result<()> {
        let mut latencies = Latencies::new()?;
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 100);
        let p50 = summary.p50_ms.unwrap_or_default();
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        let p99 = summary.p99_ms.unwrap_or_default();
        assert!((98.0..=100.1).contains(&p99), "p99 {p99}");
        assert!((summary.max_ms.unwrap_or_default() - 100.0).abs() < 0.1);
        Ok(())
    }

    #[test]
    fn merged_latencies_keep_both_halves() -> anyhow::Result<()> {
        let (mut low, mut high) = (Latencies::new()?, Latencies::new()?);
        for ms in 1..=50 {
            low.record(Duration::from_millis(ms));
            high.record(Duration::from_millis(ms + 50));
        }
        low.merge(&high)?;
        let summary = low.summary();
        assert_eq!(summary.count, 100);
        let p50 = summary.p50_ms.unwrap_or_default();
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        Ok(())
    }

    #[test]
    fn empty_has_no_quantiles() -> anyhow::Result<()> {
        let summary = Latencies::new()?.summary();
        assert_eq!(summary, Summary::default());
        assert_eq!(fmt_ms(summary.p99_ms), "-");
        Ok(())
    }
}
