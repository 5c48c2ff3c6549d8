//! Instants as RFC 3339 text (`2026-12-07T14:17:10Z`), the way Consul's
//! JSON shows them (`ExpirationTime`, `ValidBefore`): one formatter for
//! every place a Unix time is shown to a person or a client.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `unix_seconds` (seconds since the Unix epoch, UTC) as RFC 3339; `None`
/// when it is out of the range the format can show.
pub fn rfc3339(unix_seconds: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix_seconds).ok()?.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_are_shown_in_utc_and_out_of_range_is_none() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(1_796_652_716).as_deref(), Some("2026-12-07T14:11:56Z"));
        assert_eq!(rfc3339(i64::MAX), None);
    }
}
