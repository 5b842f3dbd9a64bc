//! ExecutorActor: deletes the files of a claimed batch, then acks it.
//!
//! Executors run on a `SyncArbiter` (one thread each): file deletion and the
//! ack are blocking calls and must not run on the async reactor. The work
//! itself is [`batch::execute`], a plain function; this actor only glues it
//! to the database and the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::batch;
use super::retry::RetryPolicy;
use crate::clock::now_ms;
use crate::db::models::{AckCounts, Claimed, Done, Failure};
use crate::db::queries::events::Sinks;
use crate::db::{queries, Db, DbError};
use crate::metrics::Metrics;
use crate::pipeline::notifier::Nudge;
use crate::storage::Storage;

/// Pause between tries of an ack or a release: growing by this step, at
/// most [`MAX_PAUSE`].
const PAUSE_STEP: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Deletes batches of claimed ids.
pub(crate) struct ExecutorActor {
    db: Db,
    storage: Arc<Storage>,
    owner: Arc<str>,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    /// Write a receipt for each completed request (`receipts.retention_days`
    /// above 0).
    receipts: bool,
    /// The outbox's sinks, and the notifier told when an ack wrote events.
    sinks: Arc<Sinks>,
    notifier: Option<Recipient<Nudge>>,
}

impl ExecutorActor {
    pub(crate) fn new(
        db: Db,
        storage: Arc<Storage>,
        owner: Arc<str>,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
        receipts: bool,
        (sinks, notifier): (Arc<Sinks>, Option<Recipient<Nudge>>),
    ) -> ExecutorActor {
        ExecutorActor {
            db,
            storage,
            owner,
            retry,
            metrics,
            receipts,
            sinks,
            notifier,
        }
    }

    /// Runs `write` until it succeeds, pausing between tries, while the
    /// batch's lease lasts (`until`): an ack that is lost makes the rows
    /// come due again when the lease ends, and the next attempt finds the
    /// files gone (`missing` in its receipt), so a failover or a short
    /// outage is waited out rather than given up on after a few seconds.
    /// An error the server will give again (not an outage) ends it at once.
    fn with_retries<T>(
        &self,
        what: &str,
        until: Instant,
        mut write: impl FnMut() -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            let pause = PAUSE_STEP.saturating_mul(tries).min(MAX_PAUSE);
            match write() {
                Ok(value) => return Ok(value),
                Err(e) if !e.is_unavailable() || Instant::now() + pause >= until => return Err(e),
                // An outage is logged once by `Db`.
                Err(e) => log::debug!("{what} failed (try {tries}): {e}; trying again"),
            }
            std::thread::sleep(pause);
        }
    }

    /// Acks a verdict's done ids and failures, each try answered by `until`
    /// (the ack's thread may go on waiting for a server that stopped
    /// answering; its late write is fenced by the lease). Shared with that
    /// thread, not copied.
    fn ack(&self, batch: &Arc<Acked>, until: Instant) -> Result<AckCounts, DbError> {
        self.with_retries("ack", until, || {
            let _timer = self.metrics.ack_seconds.start_timer();
            let (owner, receipts, batch) = (self.owner.clone(), self.receipts, batch.clone());
            let sinks = self.sinks.clone();
            self.db.write_relaxed_by("an ack", until, move |conn| {
                let now = now_ms();
                let acked = (batch.0.as_slice(), batch.1.as_slice());
                queries::ack::ack_announcing(
                    conn,
                    &owner,
                    acked,
                    receipts.then_some(now),
                    now,
                    &sinks,
                )
            })
        })
    }

    /// The storage could not be used: give the batch back, due again after
    /// the first backoff step, with the reason in `last_error` and no
    /// attempt used.
    fn give_back(&self, batch: &[Claimed], reason: &str, until: Instant) -> Result<usize, DbError> {
        let ids: Vec<String> = batch.iter().map(|c| c.id.clone()).collect();
        let retry_at = now_ms().saturating_add(self.retry.base_ms.min(i64::MAX as u64) as i64);
        let (ids, reason) = (Arc::new(ids), Arc::<str>::from(reason));
        self.with_retries("giving the batch back", until, || {
            let (owner, ids, reason) = (self.owner.clone(), ids.clone(), reason.clone());
            self.db
                .write_relaxed_by("giving a batch back", until, move |conn| {
                    queries::claim::release(conn, &owner, &ids, retry_at, Some(&reason))
                })
        })
    }
}

/// What an ack writes: the ids whose paths are gone, and the failures.
type Acked = (Vec<Done>, Vec<Failure>);

/// Request ids shown in one batch line; the rest are counted.
const REQUEST_IDS_SHOWN: usize = 8;

/// `; requests a, b (+3 more)`: the `X-Request-Id`s the batch's ids were
/// recorded with, so that a request can be followed into its batch's log
/// line (every id's is in its receipt). Empty when none has one.
fn request_ids(batch: &[Claimed]) -> String {
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&str> = batch
        .iter()
        .filter_map(|c| c.request_id.as_deref())
        .filter(|id| seen.insert(*id))
        .collect();
    match distinct.len() {
        0 => String::new(),
        n if n <= REQUEST_IDS_SHOWN => format!("; requests {}", distinct.join(", ")),
        n => format!(
            "; requests {} (+{} more)",
            distinct[..REQUEST_IDS_SHOWN].join(", "),
            n - REQUEST_IDS_SHOWN
        ),
    }
}

impl Actor for ExecutorActor {
    type Context = SyncContext<Self>;
}

/// Delete the files of these claimed ids and ack the batch.
#[derive(Message)]
#[rtype(result = "BatchReport")]
pub(crate) struct DeleteBatch {
    pub batch: Vec<Claimed>,
    /// Past this the lease is too far gone to start deleting (the batch
    /// waited for a free executor): the rows are left to come due again.
    pub start_by: Instant,
    /// The ack is tried until then (shortly before the lease ends).
    pub ack_by: Instant,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BatchReport {
    /// Ids whose files were removed.
    pub deleted: usize,
    /// Ids that had no file left: counted as deleted.
    pub missing: usize,
    /// Ids whose deletion failed (rescheduled or failed for good).
    pub failed: usize,
    /// `None` when the ack could not be written.
    pub ack: Option<AckCounts>,
    /// The storage could not be used at all: nothing was deleted and the
    /// batch was given back. The dispatcher backs off on it.
    pub storage_unavailable: Option<String>,
    /// Its lease was too far gone to start: nothing was done.
    pub not_run: bool,
}

impl Handler<DeleteBatch> for ExecutorActor {
    type Result = MessageResult<DeleteBatch>;

    fn handle(
        &mut self,
        DeleteBatch {
            batch,
            start_by,
            ack_by,
        }: DeleteBatch,
        _: &mut SyncContext<Self>,
    ) -> Self::Result {
        let started = Instant::now();
        let size = batch.len();
        let requests = request_ids(&batch);
        if started > start_by {
            log::warn!(
                "a batch of {size} waited {:.1?} past the time its lease allowed to start \
                 deleting: not deleting it; its rows come due again when the lease ends{requests}",
                started - start_by
            );
            return MessageResult(BatchReport {
                not_run: true,
                ..BatchReport::default()
            });
        }
        let verdict = match batch::execute(&self.storage, &batch, &self.retry, now_ms()) {
            Ok(verdict) => verdict,
            Err(unavailable) => {
                let reason = unavailable.to_string();
                match self.give_back(&batch, &reason, ack_by) {
                    Ok(n) => log::debug!("batch of {size} given back ({n} rows): {reason}{requests}"),
                    Err(e) => log::error!(
                        "batch of {size} not run ({reason}) and not given back; the rows return when the lease expires: {e}{requests}"
                    ),
                }
                return MessageResult(BatchReport {
                    storage_unavailable: Some(reason),
                    ..BatchReport::default()
                });
            }
        };
        let mut report = BatchReport {
            deleted: verdict.deleted,
            missing: verdict.missing,
            failed: verdict.failures.len(),
            ..BatchReport::default()
        };
        let outcomes = [
            ("deleted", report.deleted),
            ("missing", report.missing),
            ("failed", report.failed),
        ];
        for (outcome, n) in outcomes {
            self.metrics
                .deletions
                .with_label_values(&[outcome])
                .inc_by(n as u64);
        }
        self.metrics.batches.inc();
        self.metrics.activity.add(
            (report.deleted + report.missing) as u64,
            report.failed as u64,
        );
        let acked = Arc::new((verdict.done, verdict.failures));
        let ack = self.ack(&acked, ack_by);
        if let Ok(counts) = &ack {
            // Counted once their receipts are written: a lost lease's ids
            // are counted by the instance that acks them.
            if counts.lost_lease == 0 {
                self.metrics.count_erased(&acked.0);
            }
            if let Some(notifier) = self
                .notifier
                .as_ref()
                .filter(|_| counts.removed + counts.failed > 0)
            {
                notifier.do_send(Nudge);
            }
        }
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        match ack {
            Ok(counts) => {
                report.ack = Some(counts);
                log::info!(
                    "batch of {size}: {} deleted, {} missing, {} failed ({} to retry, {} failed for good), {} lost lease, in {:?}{requests}",
                    report.deleted,
                    report.missing,
                    report.failed,
                    counts.retried,
                    counts.failed,
                    counts.lost_lease,
                    started.elapsed(),
                );
            }
            Err(e) => log::error!(
                "batch of {size}: files handled but the ack failed; the rows return when the lease expires: {e}{requests}"
            ),
        }
        MessageResult(report)
    }
}
