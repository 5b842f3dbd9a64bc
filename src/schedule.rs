//! When a request may run: the one place a schedule (`delay_secs`, an RFC
//! 3339 `not_before`, or nothing) becomes epoch milliseconds, for every
//! route and the CLI, and the one place epoch milliseconds become RFC 3339.
//!
//! Times are bounded by what RFC 3339 can write (years 0000 to 9999), so a
//! stored time always reads back as a valid timestamp, and no arithmetic on
//! it can overflow: a schedule past 9999-12-31T23:59:59.999Z is refused, not
//! clamped (a client asking for "in 10^16 seconds" made a mistake, and
//! silently scheduling it for year 9999 would hide it). A time in the past
//! means "due now" and is stored as now.

use chrono::{DateTime, SecondsFormat, Utc};

/// 9999-12-31T23:59:59.999Z: the latest instant RFC 3339 can write.
pub(crate) const MAX_MS: i64 = 253_402_300_799_999;

/// The longest `delay_secs`: 10^11 seconds, about 3,169 years. A fixed
/// bound (not "until year 9999", which moves with the clock), so the API's
/// description can state it and a client meets the same limit every day.
pub const MAX_DELAY_SECS: u64 = 100_000_000_000;

/// Why a schedule is refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScheduleError {
    #[error("give delay_secs or not_before, not both")]
    Both,
    #[error("delay_secs: at most {max} seconds (about 3,000 years), not {given}")]
    DelayTooLong { given: u64, max: u64 },
    #[error("not_before: {0} (expected RFC 3339, e.g. 2026-12-01T00:00:00Z, year at most 9999)")]
    Unparsable(String),
}

/// Epoch milliseconds at which a request recorded at `now` may run.
pub(crate) fn not_before_ms(
    now: i64,
    delay_secs: Option<u64>,
    not_before: Option<&str>,
) -> Result<i64, ScheduleError> {
    match (delay_secs, not_before) {
        (Some(_), Some(_)) => Err(ScheduleError::Both),
        (Some(secs), None) => {
            let until_9999 = (MAX_MS - now.clamp(0, MAX_MS)) as u64 / 1000;
            let max = MAX_DELAY_SECS.min(until_9999);
            if secs > max {
                return Err(ScheduleError::DelayTooLong { given: secs, max });
            }
            // In range by the check above: secs * 1000 <= MAX_MS - now.
            Ok(now + secs as i64 * 1000)
        }
        (None, Some(at)) => {
            let at = DateTime::parse_from_rfc3339(at)
                .map_err(|e| ScheduleError::Unparsable(e.to_string()))?
                .timestamp_millis();
            // chrono only parses four-digit years, but an offset can carry
            // 9999-12-31T23:59:59-23:59 past the limit.
            if at > MAX_MS {
                return Err(ScheduleError::Unparsable("after year 9999".into()));
            }
            Ok(at.max(now))
        }
        (None, None) => Ok(now),
    }
}

/// `ms` as RFC 3339 UTC with milliseconds. Values outside years 0000-9999
/// (never written by this crate; only by hand) are shown at the nearest
/// bound rather than as nothing.
pub(crate) fn rfc3339(ms: i64) -> String {
    const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    DateTime::<Utc>::from_timestamp_millis(ms.clamp(MIN_MS, MAX_MS))
        .expect("clamped into chrono's range")
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    #[test]
    fn nothing_means_now_and_a_delay_adds_seconds() {
        assert_eq!(not_before_ms(NOW, None, None), Ok(NOW));
        assert_eq!(not_before_ms(NOW, Some(0), None), Ok(NOW));
        assert_eq!(not_before_ms(NOW, Some(3600), None), Ok(NOW + 3_600_000));
    }

    #[test]
    fn a_delay_past_year_9999_is_refused_not_wrapped() {
        for huge in [10_000_000_000_000_000, u64::MAX, u64::MAX / 1000 + 1] {
            assert!(matches!(
                not_before_ms(NOW, Some(huge), None),
                Err(ScheduleError::DelayTooLong { .. })
            ));
        }
        let longest = not_before_ms(NOW, Some(MAX_DELAY_SECS), None).unwrap();
        assert_eq!(longest, NOW + MAX_DELAY_SECS as i64 * 1000);
        assert!(not_before_ms(NOW, Some(MAX_DELAY_SECS + 1), None).is_err());
        // Late enough, year 9999 comes first: the bound is the nearer one.
        let late = MAX_MS - 3_600_000;
        let max = (MAX_MS - late) as u64 / 1000;
        let latest = not_before_ms(late, Some(max), None).unwrap();
        assert!(rfc3339(latest).starts_with("9999-12-31T23:59:"));
        assert!(not_before_ms(late, Some(max + 1), None).is_err());
    }

    #[test]
    fn not_before_is_parsed_bounded_and_never_in_the_past() {
        assert_eq!(
            not_before_ms(NOW, None, Some("2099-01-01T00:00:00+02:00")),
            Ok(4_070_901_600_000)
        );
        assert_eq!(
            not_before_ms(NOW, None, Some("1990-01-01T00:00:00Z")),
            Ok(NOW)
        );
        for bad in [
            "tomorrow",
            "10000-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "",
        ] {
            assert!(
                matches!(
                    not_before_ms(NOW, None, Some(bad)),
                    Err(ScheduleError::Unparsable(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            not_before_ms(NOW, Some(1), Some("2030-01-01T00:00:00Z")),
            Err(ScheduleError::Both)
        );
    }

    #[test]
    fn every_stored_time_reads_back_as_rfc3339() {
        assert_eq!(rfc3339(MAX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(i64::MIN), "0000-01-01T00:00:00.000Z");
    }
}
