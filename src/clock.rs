//! The clock: milliseconds since the Unix epoch, the time unit of every
//! column, every lease and every schedule. A leaf every layer may import
//! (the database, the pipeline, the HTTP answers, the tests).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 if the system clock is set
/// before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_counts_milliseconds_since_the_epoch() {
        // 2026-01-01T00:00:00Z, and before 2100: milliseconds, not seconds
        // or microseconds.
        let now = now_ms();
        assert!(
            (1_767_225_600_000..4_102_444_800_000).contains(&now),
            "{now}"
        );
    }
}
