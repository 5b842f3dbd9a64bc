//! Outages of the database as one process sees them: logged once when they
//! start, with the server's own words, and once when they end, with how
//! long they lasted and how many operations failed meanwhile. The
//! dispatcher, the recorder and the handlers all report through it, so an
//! outage is one warning however many callers meet it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Distinct causes logged per outage: an outage usually shows one or two
/// (the connections are killed, then new ones are refused, and why).
const CAUSES_LOGGED: usize = 4;

/// An outage in progress.
struct Outage {
    since: Instant,
    /// The causes logged so far, the latest last.
    causes: Vec<String>,
    /// The server answers but takes no writes (a hot standby, a read-only
    /// or unsynced node): reads prove nothing, only a write ends it.
    until_write: bool,
}

/// The state of the current outage, if any.
#[derive(Default)]
pub(super) struct Tracker {
    /// Fast path: successes only take the lock while an outage is on.
    on: AtomicBool,
    /// Operations that failed during the current outage.
    failures: AtomicU64,
    current: Mutex<Option<Outage>>,
    /// When the last outage ended: a failure of an operation begun before
    /// then belongs to it (see [`Tracker::failed`]).
    ended: Mutex<Option<Instant>>,
}

impl Tracker {
    /// An operation `started` at that time failed because of `cause`, in
    /// the server's words: the first failure of an outage is logged with
    /// it, and each different cause after it once (the connection was
    /// killed, then a new one is refused because the database no longer
    /// exists). An operation begun before the last outage ended, failing
    /// after it (a connection attempt that waited through it), belongs to
    /// that outage: it starts no new one, as a success begun before an
    /// outage does not end it.
    pub(super) fn failed(&self, cause: &str, started: Instant) {
        self.failed_with(cause, false, started);
    }

    /// A write failed because the server takes none (see
    /// [`Outage::until_write`]): an outage that only a write ends.
    pub(super) fn refused_write(&self, cause: &str, started: Instant) {
        self.failed_with(cause, true, started);
    }

    fn failed_with(&self, cause: &str, until_write: bool, started: Instant) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let ended = *self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none() && ended.is_some_and(|ended| started < ended) {
            log::debug!("an operation begun during the last outage failed after it: {cause}");
            return;
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
        let outage = current.get_or_insert_with(|| Outage {
            since: Instant::now(),
            causes: Vec::new(),
            until_write,
        });
        outage.until_write |= until_write;
        self.on.store(true, Ordering::Release);
        if outage.causes.len() < CAUSES_LOGGED && !outage.causes.iter().any(|c| c == cause) {
            if outage.causes.is_empty() {
                log::warn!("database unavailable: {cause}; retrying until it answers");
            } else {
                log::warn!("database still unavailable, now: {cause}");
            }
            outage.causes.push(cause.to_owned());
        }
    }

    /// An operation failed fast, without trying, during a known outage.
    pub(super) fn failed_again(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The latest cause of the current outage, `None` when there is none.
    pub(super) fn current_cause(&self) -> Option<String> {
        self.latest_cause(|_| true)
    }

    /// The cause of the current outage when it is one that only a write
    /// ends: reads succeed meanwhile, and must not make it look over.
    pub(super) fn refusing_writes(&self) -> Option<String> {
        self.latest_cause(|o| o.until_write)
    }

    /// The latest cause of the current outage if it is one `of_kind`.
    fn latest_cause(&self, of_kind: impl Fn(&Outage) -> bool) -> Option<String> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let outage = current.as_ref().filter(|o| of_kind(o))?;
        outage.causes.last().cloned()
    }

    /// The latest cause of the current outage (or a generic text).
    pub(super) fn cause(&self) -> String {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match current.as_ref().and_then(|o| o.causes.last()) {
            Some(cause) => format!("database unreachable ({cause})"),
            None => "database unreachable".to_owned(),
        }
    }

    /// An operation `started` at that time succeeded: an outage in progress
    /// is over, unless the operation began before the outage was seen (work
    /// already under way on another connection when the server went away
    /// proves nothing about now, and would make one outage log twice).
    pub(super) fn succeeded(&self, started: Instant, wrote: bool) {
        if !self.on.load(Ordering::Acquire) {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current
            .as_ref()
            .is_some_and(|o| started < o.since || (o.until_write && !wrote))
        {
            return;
        }
        if let Some(Outage { since, .. }) = current.take() {
            self.on.store(false, Ordering::Release);
            *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            let failures = self.failures.swap(0, Ordering::Relaxed);
            log::info!(
                "database is back after {:.1?}; {failures} operations failed meanwhile",
                since.elapsed()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_begun_during_an_outage_and_met_after_it_starts_no_new_one() {
        let tracker = Tracker::default();
        let during = Instant::now();
        tracker.failed("connection refused", during);
        assert!(tracker.current_cause().is_some());
        tracker.succeeded(Instant::now(), true);
        assert_eq!(tracker.current_cause(), None);

        // A connection attempt that waited through the outage fails now.
        tracker.failed("timed out waiting for connection", during);
        assert_eq!(tracker.current_cause(), None);

        // One begun after the outage ended is a new outage.
        tracker.failed("connection refused", Instant::now());
        assert_eq!(
            tracker.current_cause().as_deref(),
            Some("connection refused")
        );
    }

    #[test]
    fn a_success_begun_before_an_outage_does_not_end_it() {
        let tracker = Tracker::default();
        let before = Instant::now();
        tracker.failed("connection refused", Instant::now());
        tracker.succeeded(before, true);
        assert!(tracker.current_cause().is_some());
        tracker.succeeded(Instant::now(), true);
        assert_eq!(tracker.current_cause(), None);
    }
}
