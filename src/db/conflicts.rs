//! Write conflicts: transactions the server rolled back because another
//! writer got there first (a deadlock between instances recording
//! overlapping ids, a Galera certification failure when instances on two
//! nodes claim the same rows, a PostgreSQL serialization failure). They are
//! contention, not an outage: [`super::Db`] runs the transaction again
//! after a jittered, growing pause, counts the conflict by statement for
//! `/metrics`, and logs a count at most once a minute.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often conflicts are logged at most, and how long after the last one
/// the database counts as contended.
const WINDOW: Duration = Duration::from_secs(60);

/// Conflicts of one process, by statement.
#[derive(Default)]
pub(crate) struct Conflicts {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every conflict so far, by statement (`/metrics`).
    totals: BTreeMap<&'static str, u64>,
    /// Conflicts since the last log line, by statement.
    unlogged: BTreeMap<&'static str, u64>,
    /// When the last log line was written.
    logged_at: Option<Instant>,
    /// When the last conflict happened.
    last: Option<Instant>,
}

impl Conflicts {
    /// A transaction of `statement` was rolled back by a conflict (`error`,
    /// the server's words): counted, and logged unless a line was written
    /// in the last minute.
    pub(crate) fn seen(&self, statement: &'static str, error: &str) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state.totals.entry(statement).or_default() += 1;
        *state.unlogged.entry(statement).or_default() += 1;
        state.last = Some(now);
        if state.logged_at.is_some_and(|at| now - at < WINDOW) {
            return;
        }
        let unlogged = std::mem::take(&mut state.unlogged);
        let count: u64 = unlogged.values().sum();
        let by: Vec<String> = unlogged.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let since = match state.logged_at {
            Some(at) => format!("in the last {}s", (now - at).as_secs()),
            None => "so far".to_owned(),
        };
        state.logged_at = Some(now);
        log::info!(
            "{count} write conflict(s) with other writers {since} ({}), each run again \
             after a short pause; latest: {error}",
            by.join(", ")
        );
    }

    /// Every conflict so far, by statement.
    pub(crate) fn totals(&self) -> Vec<(&'static str, u64)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.totals.iter().map(|(s, n)| (*s, *n)).collect()
    }

    /// Whether a conflict happened within the last minute: claims then
    /// spread over the due rows (see `queries::claim`).
    pub(crate) fn recent(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last.is_some_and(|at| at.elapsed() < WINDOW)
    }
}

/// The pause before the `attempt`-th run (from 2) of a transaction that
/// conflicted: a random time up to 2 ms × 2^attempt, capped at 250 ms
/// ("full jitter": writers that collided do not collide again in step).
/// Nine reruns wait about 0.5 s in all on average, 1 s at most.
pub(crate) fn pause(attempt: u32) -> Duration {
    let cap = (2u64 << attempt.min(16)).min(250);
    Duration::from_millis(fastrand::u64(1..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_stay_capped() {
        for attempt in 1..30 {
            let cap = (2u64 << attempt.min(16)).min(250);
            for _ in 0..50 {
                let p = pause(attempt).as_millis() as u64;
                assert!((1..=cap).contains(&p), "attempt {attempt}: {p} ms");
            }
        }
    }

    #[test]
    fn conflicts_are_counted_by_statement_and_make_the_database_contended() {
        let c = Conflicts::default();
        assert!(!c.recent());
        c.seen("claim", "Deadlock found");
        c.seen("claim", "Deadlock found");
        c.seen("record", "Deadlock found");
        assert_eq!(c.totals(), vec![("claim", 2), ("record", 1)]);
        assert!(c.recent());
    }
}
