//! Faults a test switches on and off while the server runs, and the
//! counters it reads back: what a real S3 does when it is busy (503
//! SlowDown), slow (an answer that takes long), or refuses a single object
//! inside a DeleteObjects answer.
//!
//! Faults act after authentication: a request with wrong credentials is
//! refused as such, uncounted, whatever faults are on.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use s3s::{S3Error, S3ErrorCode, S3Result};

/// The S3 operations the server implements, as faults and counters name
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `GET /bucket?versioning`.
    GetBucketVersioning,
    /// `PUT /bucket?versioning`.
    PutBucketVersioning,
    /// `GET /bucket?list-type=2`.
    ListObjectsV2,
    /// `GET /bucket?versions`.
    ListObjectVersions,
    /// `POST /bucket?delete`.
    DeleteObjects,
    /// `PUT /bucket/key`.
    PutObject,
    /// `HEAD /bucket/key`.
    HeadObject,
    /// `GET /bucket/key`.
    GetObject,
    /// `HEAD /bucket`.
    HeadBucket,
}

/// Faults switched on and off by a test, and what the server received.
#[derive(Debug, Default)]
pub struct Faults {
    /// Everything, behind one lock: requests touch it briefly, once or
    /// twice each.
    state: Mutex<FaultState>,
}

/// The faults on and the counters, under [`Faults`]'s lock.
#[derive(Debug, Default)]
struct FaultState {
    /// Operation -> 503 SlowDown for the next n calls (`None`: until
    /// cleared).
    slow_down: HashMap<Op, Option<u64>>,
    /// (key, version id or every version) -> error code of its entries in
    /// DeleteObjects answers.
    failing: HashMap<(String, Option<String>), String>,
    /// Operation -> how long it waits before doing anything.
    delays: HashMap<Op, Duration>,
    /// Authenticated calls received per operation.
    calls: HashMap<Op, u64>,
    /// Requests being handled now, per operation.
    in_flight: HashMap<Op, u64>,
    /// Entries per DeleteObjects request past the SlowDown and delay
    /// faults, in order.
    delete_entries: Vec<usize>,
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().expect("the faults lock is poisoned")
    }

    /// 503 SlowDown on `op` for the next `n` calls, or until cleared
    /// (`None`).
    pub fn slow_down(&self, op: Op, n: Option<u64>) {
        self.state().slow_down.insert(op, n);
    }

    /// Inside DeleteObjects answers, the entry for `key` (only the entry
    /// with this version id, or every entry of the key when `None`) fails
    /// with `code` (message "injected") and is not deleted.
    pub fn fail_entry(&self, key: &str, version_id: Option<&str>, code: &str) {
        self.state().failing.insert(
            (key.to_owned(), version_id.map(str::to_owned)),
            code.to_owned(),
        );
    }

    /// Undoes the [`Faults::fail_entry`] with the same key and version id.
    pub fn unfail_entry(&self, key: &str, version_id: Option<&str>) {
        self.state()
            .failing
            .remove(&(key.to_owned(), version_id.map(str::to_owned)));
    }

    /// `op` waits this long before doing anything (`None`: at once). A
    /// client that gives up meanwhile drops the request, and nothing
    /// happens, as when a real server never got to it.
    pub fn delay(&self, op: Op, delay: Option<Duration>) {
        let mut state = self.state();
        match delay {
            Some(delay) => state.delays.insert(op, delay),
            None => state.delays.remove(&op),
        };
    }

    /// Authenticated calls of `op` received, faulted ones included (a
    /// request with wrong credentials is not one).
    pub fn calls(&self, op: Op) -> u64 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    /// Requests of `op` being handled now, delayed ones included. A request
    /// its client gave up on (closing the connection) leaves when hyper
    /// notices and drops it: a test waits for 0 to know it did nothing.
    pub fn in_flight(&self, op: Op) -> u64 {
        self.state().in_flight.get(&op).copied().unwrap_or(0)
    }

    /// Entries per DeleteObjects request received, in order: every request
    /// past the SlowDown and delay faults (as the requests a server acted
    /// on), including those then refused whole (no Content-MD5, MFA).
    pub fn delete_entries(&self) -> Vec<usize> {
        self.state().delete_entries.clone()
    }

    /// Every fault off; counters kept.
    pub fn clear(&self) {
        let mut state = self.state();
        state.slow_down.clear();
        state.failing.clear();
        state.delays.clear();
    }

    /// What every operation does first: counts the call, waits its delay,
    /// answers its SlowDown. The request is in flight until the returned
    /// guard is dropped.
    pub(crate) async fn enter(&self, op: Op) -> S3Result<InFlight<'_>> {
        let (in_flight, delay) = {
            let mut state = self.state();
            *state.calls.entry(op).or_default() += 1;
            *state.in_flight.entry(op).or_default() += 1;
            (
                InFlight { faults: self, op },
                state.delays.get(&op).copied(),
            )
        };
        if let Some(delay) = delay {
            // A client that gives up meanwhile closes the connection; hyper
            // then drops this future, so the request does nothing.
            tokio::time::sleep(delay).await;
        }
        self.slow_down_due(op)?;
        Ok(in_flight)
    }

    /// The SlowDown of `op`, if one is due (and uses it up).
    fn slow_down_due(&self, op: Op) -> S3Result<()> {
        let mut state = self.state();
        let due = match state.slow_down.get_mut(&op) {
            None | Some(Some(0)) => false,
            Some(None) => true,
            Some(Some(n)) => {
                *n -= 1;
                true
            }
        };
        if due {
            return Err(S3Error::with_message(
                S3ErrorCode::SlowDown,
                "Please reduce your request rate. (injected)",
            ));
        }
        Ok(())
    }

    /// Records a DeleteObjects request of these entries; returns, for each,
    /// the error code it must fail with, if any.
    pub(crate) fn delete_request<'a>(
        &self,
        entries: impl ExactSizeIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Vec<Option<String>> {
        let mut state = self.state();
        state.delete_entries.push(entries.len());
        if state.failing.is_empty() {
            return vec![None; entries.len()];
        }
        entries
            .map(|(key, version_id)| {
                let exact = version_id
                    .and_then(|id| state.failing.get(&(key.to_owned(), Some(id.to_owned()))));
                exact
                    .or_else(|| state.failing.get(&(key.to_owned(), None)))
                    .cloned()
            })
            .collect()
    }
}

/// A request being handled: counted in [`Faults::in_flight`] until dropped
/// (with the request's future, however it ends).
pub(crate) struct InFlight<'a> {
    /// Where the count is.
    faults: &'a Faults,
    /// Which count.
    op: Op,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Not `state()`: a drop must not panic, and a count is safe to take
        // from a poisoned lock.
        let mut state = self
            .faults
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = state.in_flight.get_mut(&self.op) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_down_counts_down_and_none_lasts_until_cleared() {
        let faults = Faults::default();
        faults.slow_down(Op::ListObjectsV2, Some(2));
        faults.slow_down(Op::DeleteObjects, None);
        for _ in 0..2 {
            assert!(faults.slow_down_due(Op::ListObjectsV2).is_err());
        }
        assert!(faults.slow_down_due(Op::ListObjectsV2).is_ok());
        assert!(faults.slow_down_due(Op::DeleteObjects).is_err());
        assert!(faults.slow_down_due(Op::DeleteObjects).is_err());
        faults.clear();
        assert!(faults.slow_down_due(Op::DeleteObjects).is_ok());
    }

    #[test]
    fn a_failing_entry_matches_its_version_or_every_version_of_its_key() {
        let faults = Faults::default();
        faults.fail_entry("a", Some("v1"), "InternalError");
        faults.fail_entry("b", None, "AccessDenied");
        let codes = faults.delete_request(
            [
                ("a", Some("v1")),
                ("a", Some("v2")),
                ("a", None),
                ("b", None),
                ("b", Some("v9")),
            ]
            .into_iter(),
        );
        let code = |s: &str| Some(s.to_owned());
        assert_eq!(
            codes,
            [
                code("InternalError"),
                None,
                None,
                code("AccessDenied"),
                code("AccessDenied")
            ]
        );
        faults.unfail_entry("b", None);
        assert_eq!(faults.delete_request([("b", None)].into_iter()), [None]);
        assert_eq!(faults.delete_entries(), [5, 1]);
    }
}
