//! The dispatcher's decisions as a plain struct: when to claim and how
//! many ids, what a claim's or a batch's outcome changes, the backoff while
//! the database or the storage is in trouble, and which batches are in
//! flight. No actor, no database, no clock: the caller passes the time in,
//! so unit tests drive it step by step, as [`super::batch::execute`] is
//! driven without an executor. The [`super::dispatcher::DispatcherActor`]
//! runs the claims, sends the batches, waits on the rate limiter and logs
//! the [`Report`]s it is handed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

mod report;

pub(super) use report::Report;

/// Longest pause between claims while the database is unreachable (or the
/// storage unusable): short, so that work resumes within a second or two
/// of the end of an outage, however long it lasted.
pub(super) const MAX_OUTAGE_BACKOFF: Duration = Duration::from_secs(1);

/// How the dispatcher sizes its work.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Ids claimed at most at once: one executor's batch.
    pub batch_size: usize,
    /// How long a claim holds its ids before another may claim them.
    pub lease: Duration,
    /// Batches allowed in execution at once: the number of executors.
    pub capacity: usize,
    /// The timer's interval: the first backoff step of an outage.
    pub tick: Duration,
    /// `max_deletions_per_sec` (0: no limit).
    pub max_per_sec: u32,
}

/// What keeps the dispatcher from claiming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// Claims fail.
    Database,
    /// Batches come back refused by the storage.
    Storage,
}

/// Trouble as the dispatcher sees it: claims wait until `retry_at`.
#[derive(Debug)]
struct Trouble {
    /// What failed last: only a success of that kind ends the trouble.
    cause: Cause,
    /// When the streak began: the recovery line says how long it lasted.
    since: Instant,
    /// Failures in the streak: the backoff's exponent, and reported at the end.
    failures: u32,
    /// No claim before this.
    retry_at: Instant,
}

/// The order to claim: the actor runs the claim and reports its outcome
/// with [`Dispatch::claim_returned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClaimOrder {
    /// Ids to claim at most: the batch size, or a second's worth under a
    /// rate limit.
    pub limit: usize,
    /// Only urgent rows: a batch of normal ones waits for the rate limiter,
    /// and only urgent work may pass it.
    pub urgent_only: bool,
    /// Look for urgent rows first: they may be due (see
    /// `Dispatch::urgent_may_be_due`).
    pub urgent: bool,
}

/// What a claim came back with.
#[derive(Debug)]
pub(super) enum ClaimOutcome {
    /// Ids claimed (possibly none); normal ones, which wait for the rate
    /// limiter.
    Batch { len: usize },
    /// Urgent ids claimed: handed over at once, past the rate limiter. The
    /// claim then looks again (normal work may be due behind them), unless
    /// it took only urgent rows and found fewer than it asked for.
    Urgent { len: usize },
    /// An operator paused deletions: nothing was claimed.
    Paused,
    /// The claim failed; `unavailable` for an outage, which `Db` logs itself.
    Failed { unavailable: bool, error: String },
    /// The claim lost to other instances' claims of the same rows through
    /// all its reruns (Galera): contention, not trouble. Claim again at
    /// once; `Db` counts and logs conflicts.
    Conflicted,
}

/// What an executor made of a batch.
#[derive(Debug)]
pub(super) enum BatchOutcome {
    /// The batch ran (whatever each id's fate).
    Ran,
    /// The storage refused the batch as a whole; nothing was deleted.
    StorageUnavailable { reason: String },
    /// The executor is gone (shutdown), or the batch's lease was too far
    /// gone to start deleting: the lease will expire.
    NotRun,
}

/// Every decision of the dispatcher, and the state they rest on.
#[derive(Debug)]
pub(super) struct Dispatch {
    /// Batch size, executors, tick and rate limit: what the decisions weigh.
    settings: Settings,
    /// Ids of the batches being executed, by batch number: their count is
    /// checked against `capacity`, shutdown waits for them, and their leases
    /// are released if shutdown runs out of time before they are acked.
    in_flight: HashMap<u64, Vec<String>>,
    /// Number of the next batch handed out (keys of `in_flight`).
    next_batch: u64,
    /// The claim in flight, if one is: at most one at a time (two would
    /// race for the same rows), and a batch that fills its limit means more
    /// is due at once.
    claiming: Option<ClaimOrder>,
    /// A claimed batch of normal ids waits for the rate limiter: no other
    /// normal claim meanwhile (the claim-ahead is one batch, a second's
    /// worth at most), but urgent claims go on.
    throttled: bool,
    /// Work may be due: set by ticks, nudges, full batches and failures;
    /// without it an idle dispatcher would claim in a loop.
    more: bool,
    /// Shutdown began: no more claims, and "idle" can be announced.
    stopping: bool,
    /// Claims are held back by a failure, with a growing backoff, so an
    /// outage is not hammered once a tick.
    trouble: Option<Trouble>,
    /// The last claim found deletions paused by an operator: the change is
    /// logged once each way, not on every claim.
    paused: bool,
    /// Urgent rows may be due, so the next claim looks for them first. Set
    /// by every tick (urgent rows recorded by another instance, or come
    /// due after a delay, are found within a tick), by a nudge for urgent
    /// ids recorded here, and by an urgent claim that came back full or
    /// could not tell; cleared when a claim goes to look. Without it the
    /// urgent claim ran before every claim and almost always found nothing:
    /// a third of a PostgreSQL drain's statements (BENCHMARKS.md).
    urgent_may_be_due: bool,
}

impl Dispatch {
    pub(super) fn new(settings: Settings) -> Dispatch {
        Dispatch {
            settings,
            in_flight: HashMap::new(),
            next_batch: 0,
            claiming: None,
            throttled: false,
            more: false,
            stopping: false,
            trouble: None,
            paused: false,
            urgent_may_be_due: true,
        }
    }

    /// A tick: work may be due, urgent rows too.
    pub(super) fn wake(&mut self) {
        self.nudge(true);
    }

    /// Requests due now were recorded here; `urgent` if any of them is.
    pub(super) fn nudge(&mut self, urgent: bool) {
        self.more = true;
        self.urgent_may_be_due |= urgent;
    }

    /// The claim in flight took expired leases before it came to urgent
    /// rows: the next one looks for them.
    pub(super) fn urgent_not_looked_for(&mut self) {
        self.urgent_may_be_due = true;
    }

    /// A claim to run at `now`, if one is useful and allowed; the claim is
    /// then in flight until [`Dispatch::claim_returned`]. While a batch
    /// waits for the rate limiter, only urgent rows are claimed.
    pub(super) fn next_claim(&mut self, now: Instant) -> Option<ClaimOrder> {
        if self.stopping
            || self.claiming.is_some()
            || !self.more
            || self.in_flight.len() >= self.settings.capacity
            || self.trouble.as_ref().is_some_and(|t| now < t.retry_at)
            // Throttled, only urgent rows would be claimed.
            || (self.throttled && !self.urgent_may_be_due)
        {
            return None;
        }
        // With a rate limit, a claim of normal rows takes at most one
        // second's worth.
        let order = match (self.throttled, self.settings.max_per_sec) {
            (true, _) | (false, 0) => ClaimOrder {
                limit: self.settings.batch_size,
                urgent_only: self.throttled,
                urgent: self.urgent_may_be_due,
            },
            (false, per_sec) => ClaimOrder {
                limit: self.settings.batch_size.min(per_sec as usize),
                urgent_only: false,
                urgent: self.urgent_may_be_due,
            },
        };
        // The claim looks now; what it finds, or a nudge meanwhile, says
        // whether to look again.
        self.urgent_may_be_due = false;
        self.claiming = Some(order);
        self.more = false;
        Some(order)
    }

    /// How many ids recorded now may take the fast lane (README, "Fast
    /// lane"): the batches of the executors free, a claim in flight
    /// counted as one; none while more is known to be due (the backlog
    /// goes first), under a rate limit (the lane would pass it), in
    /// trouble, paused (as the last claim saw it; the record reads the
    /// pause too), or stopping.
    pub(super) fn fast_lane_room(&self) -> usize {
        let closed = self.stopping
            || self.more
            || self.throttled
            || self.paused
            || self.trouble.is_some()
            || self.settings.max_per_sec > 0;
        match closed {
            true => 0,
            false => {
                let busy = self.in_flight.len() + usize::from(self.claiming.is_some());
                let free = self.settings.capacity.saturating_sub(busy);
                free * self.settings.batch_size
            }
        }
    }

    /// A claimed batch of normal ids began waiting for the rate limiter.
    pub(super) fn throttle_began(&mut self) {
        self.throttled = true;
    }

    /// The throttled batch may go: normal claims resume (whether more is
    /// due was not known while only urgent rows were claimed).
    pub(super) fn throttle_ended(&mut self) {
        self.throttled = false;
        self.more = true;
    }

    /// The claim in flight came back at `now` with `outcome`: what to log.
    pub(super) fn claim_returned(&mut self, now: Instant, outcome: ClaimOutcome) -> Vec<Report> {
        let order = self.claiming.take();
        let limit = order.map(|o| o.limit);
        let mut reports = Vec::new();
        match outcome {
            ClaimOutcome::Paused => {
                // It found nothing because of the pause, not for want of
                // urgent rows.
                self.urgent_may_be_due |= order.is_some_and(|o| o.urgent);
                reports.extend(self.recovered(Cause::Database, now));
                if !self.paused {
                    reports.push(Report::Paused);
                    self.paused = true;
                }
            }
            ClaimOutcome::Batch { len } | ClaimOutcome::Urgent { len } => {
                reports.extend(self.recovered(Cause::Database, now));
                if self.paused {
                    reports.push(Report::Resumed);
                    self.paused = false;
                }
                let urgent_only = order.is_some_and(|o| o.urgent_only);
                let urgent = matches!(outcome, ClaimOutcome::Urgent { .. });
                let behind = urgent && !urgent_only;
                if Some(len) == limit || behind {
                    self.more = true;
                }
                // A full urgent claim: more urgent rows may wait.
                self.urgent_may_be_due |= urgent && Some(len) == limit;
            }
            ClaimOutcome::Conflicted => {
                self.more = true;
                self.urgent_may_be_due |= order.is_some_and(|o| o.urgent);
            }
            ClaimOutcome::Failed { unavailable, error } => {
                self.urgent_may_be_due |= order.is_some_and(|o| o.urgent);
                // Outages are logged by `Db`; any other error is a fault
                // worth an error line, once per streak.
                if self.trouble.is_none() && !unavailable {
                    reports.push(Report::ClaimFailed { error });
                }
                self.failed(Cause::Database, now);
            }
        }
        reports
    }

    /// A claimed batch of `ids` goes to an executor: its number, for
    /// [`Dispatch::batch_returned`].
    pub(super) fn batch_started(&mut self, ids: Vec<String>) -> u64 {
        let number = self.next_batch;
        self.next_batch += 1;
        self.in_flight.insert(number, ids);
        number
    }

    /// Batch `number` came back at `now` with `outcome`: what to log.
    pub(super) fn batch_returned(
        &mut self,
        number: u64,
        now: Instant,
        outcome: BatchOutcome,
    ) -> Option<Report> {
        self.in_flight.remove(&number);
        match outcome {
            BatchOutcome::StorageUnavailable { reason } => {
                let report = self
                    .trouble
                    .is_none()
                    .then_some(Report::StorageUnavailable { reason });
                self.failed(Cause::Storage, now);
                report
            }
            BatchOutcome::Ran => self.recovered(Cause::Storage, now),
            BatchOutcome::NotRun => None,
        }
    }

    /// Shutdown began: claim no more.
    pub(super) fn stop(&mut self) {
        self.stopping = true;
    }

    /// Shutdown began: batches are no longer started.
    pub(super) fn stopping(&self) -> bool {
        self.stopping
    }

    /// Shutdown began and nothing is running any more: no batch, no claim.
    pub(super) fn idle(&self) -> bool {
        self.stopping && self.in_flight.is_empty() && self.claiming.is_none() && !self.throttled
    }

    /// The ids of every batch still being executed, forgotten here (their
    /// leases are given back by the caller).
    pub(super) fn release_in_flight(&mut self) -> Vec<String> {
        self.in_flight.drain().flat_map(|(_, ids)| ids).collect()
    }

    /// A claim or a batch failed for `cause` at `now`: pause claims, longer
    /// each time. A failure of the other cause takes the streak over.
    fn failed(&mut self, cause: Cause, now: Instant) {
        self.more = true;
        let trouble = self.trouble.get_or_insert(Trouble {
            cause,
            since: now,
            failures: 0,
            retry_at: now,
        });
        trouble.cause = cause;
        trouble.failures += 1;
        trouble.retry_at = now + backoff(self.settings.tick, trouble.failures);
    }

    /// A claim or a batch went through at `now`: trouble of that `cause` is
    /// over; say so once.
    fn recovered(&mut self, cause: Cause, now: Instant) -> Option<Report> {
        let trouble = self.trouble.take_if(|t| t.cause == cause)?;
        Some(Report::Recovered {
            cause,
            after: now.saturating_duration_since(trouble.since),
            failures: trouble.failures,
        })
    }
}

/// The pause after the `failures`-th failure in a row: `tick` × 2^failures,
/// capped at [`MAX_OUTAGE_BACKOFF`] (or the tick, if that is longer).
fn backoff(tick: Duration, failures: u32) -> Duration {
    tick.saturating_mul(1 << failures.min(16))
        .min(MAX_OUTAGE_BACKOFF.max(tick))
}

#[cfg(test)]
mod tests;
