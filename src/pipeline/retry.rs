//! The retry policy: what a failed deletion does to its row.
//!
//! Attempts are persisted in the row, so the policy is a pure function of
//! the attempt count; retry crates (backon, backoff) drive in-process loops
//! and do not fit a schedule that survives restarts.

use crate::config::Config;
use crate::db::models::{Claimed, Failure};

/// Exponential backoff with jitter, capped, and a limit of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_ms: u64,
}

impl RetryPolicy {
    pub(crate) fn from_config(config: &Config) -> RetryPolicy {
        RetryPolicy {
            max_attempts: config.max_attempts,
            base_ms: config.retry_base_ms,
            max_ms: config.retry_max_ms,
        }
    }

    /// Delay after the `attempts`-th failure (1-based): `base * 2^(attempts-1)`
    /// capped at `max`, then "equal jitter": uniform in `[d/2, d]`, so that
    /// requests failing together do not retry together, and the delay never
    /// collapses to zero.
    pub(crate) fn delay_ms(&self, attempts: u32) -> u64 {
        let factor = 1u64
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u64::MAX);
        let d = self.base_ms.saturating_mul(factor).min(self.max_ms);
        d / 2 + fastrand::u64(0..=d - d / 2)
    }

    /// The row update for a failed attempt on `claimed` at time `now`.
    pub fn failure(&self, claimed: &Claimed, error: String, now: i64) -> Failure {
        let attempts = claimed.attempts.saturating_add(1);
        let retry_at = (attempts < self.max_attempts as i32)
            .then(|| now.saturating_add(self.delay_ms(attempts as u32) as i64));
        Failure {
            id: claimed.id.clone(),
            attempts,
            error,
            retry_at,
        }
    }

    /// A failure that retrying cannot fix (an id the seed's table accepted
    /// but that is not a safe path component): `failed` at once.
    pub(crate) fn permanent(&self, claimed: &Claimed, error: String) -> Failure {
        Failure {
            id: claimed.id.clone(),
            attempts: claimed.attempts.saturating_add(1),
            error,
            retry_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_ms: 1000,
            max_ms: 5000,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = policy();
        for _ in 0..100 {
            assert!((500..=1000).contains(&p.delay_ms(1)));
            assert!((1000..=2000).contains(&p.delay_ms(2)));
            assert!((2000..=4000).contains(&p.delay_ms(3)));
            assert!((2500..=5000).contains(&p.delay_ms(4)));
            assert!((2500..=5000).contains(&p.delay_ms(200)));
        }
    }

    #[test]
    fn the_last_attempt_fails_the_request() {
        let p = policy();
        let claimed = |attempts| Claimed {
            id: "v".into(),
            attempts,
            ..Claimed::default()
        };
        let first = p.failure(&claimed(0), "e".into(), 10_000);
        assert_eq!(first.attempts, 1);
        assert!(first.retry_at.unwrap() >= 10_500);
        assert!(p.failure(&claimed(1), "e".into(), 0).retry_at.is_some());
        let last = p.failure(&claimed(2), "e".into(), 0);
        assert_eq!((last.attempts, last.retry_at), (3, None));
    }
}
