//! Command-line pieces every benchmark command shares: the output format
//! and Go-style duration flags.

use std::time::Duration;

use clap::ValueEnum;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned lines for people.
    Table,
    /// JSON lines, for scripts.
    Json,
}

/// Parses a duration flag (`"10s"`, `"1m30s"`, or plain seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    weft_api::duration::parse(text).map_err(|e| e.to_string())
}
