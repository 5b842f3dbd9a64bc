//! ExecutorActor: deletes the files of a claimed batch, then acks it.
//!
//! Executors run on a `SyncArbiter` (one thread each): file deletion and the
//! ack are blocking calls and must not run on the async reactor. The work
//! itself is [`batch::execute`], a plain function; this actor only glues it
//! to the database and the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::batch::{self, Verdict};
use super::retry::RetryPolicy;
use crate::clock::now_ms;
use crate::db::models::{AckCounts, Claimed};
use crate::db::{queries, Db, DbError};
use crate::metrics::Metrics;
use crate::storage::Storage;

/// Acks tried before giving up on a batch; the lease then expires and the
/// batch is claimed again (its files are already gone: counted as missing).
const ACK_TRIES: u32 = 3;

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
}

impl ExecutorActor {
    pub(crate) fn new(
        db: Db,
        storage: Arc<Storage>,
        owner: Arc<str>,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
        receipts: bool,
    ) -> ExecutorActor {
        ExecutorActor {
            db,
            storage,
            owner,
            retry,
            metrics,
            receipts,
        }
    }

    /// Runs `write` a few times, pausing between tries: an ack or a release
    /// that is lost only delays the work (the lease expires), but trying
    /// again through a short hiccup avoids that delay.
    fn with_retries<T>(
        &self,
        what: &str,
        mut write: impl FnMut() -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match write() {
                Ok(value) => return Ok(value),
                Err(e) if tries >= ACK_TRIES => return Err(e),
                Err(e) => {
                    // An outage is logged once by `Db`; anything else here.
                    if e.is_unavailable() {
                        log::debug!("{what} failed (try {tries} of {ACK_TRIES}): {e}");
                    } else {
                        log::warn!("{what} failed (try {tries} of {ACK_TRIES}): {e}");
                    }
                    std::thread::sleep(Duration::from_millis(200 * u64::from(tries)));
                }
            }
        }
    }

    fn ack(&self, verdict: &Verdict) -> Result<AckCounts, DbError> {
        self.with_retries("ack", || {
            let _timer = self.metrics.ack_seconds.start_timer();
            self.db.write_relaxed(|conn| {
                let receipts_at = self.receipts.then(now_ms);
                queries::ack::ack(
                    conn,
                    &self.owner,
                    &verdict.done,
                    &verdict.failures,
                    receipts_at,
                )
            })
        })
    }

    /// The storage could not be used: give the batch back, due again after
    /// the first backoff step, with the reason in `last_error` and no
    /// attempt used.
    fn give_back(&self, batch: &[Claimed], reason: &str) -> Result<usize, DbError> {
        let ids: Vec<String> = batch.iter().map(|c| c.id.clone()).collect();
        let retry_at = now_ms().saturating_add(self.retry.base_ms.min(i64::MAX as u64) as i64);
        self.with_retries("giving the batch back", || {
            self.db.write_relaxed(|conn| {
                queries::claim::release(conn, &self.owner, &ids, retry_at, Some(reason))
            })
        })
    }
}

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
pub(crate) struct DeleteBatch(pub Vec<Claimed>);

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
}

impl Handler<DeleteBatch> for ExecutorActor {
    type Result = MessageResult<DeleteBatch>;

    fn handle(
        &mut self,
        DeleteBatch(batch): DeleteBatch,
        _: &mut SyncContext<Self>,
    ) -> Self::Result {
        let started = Instant::now();
        let size = batch.len();
        let requests = request_ids(&batch);
        let verdict = match batch::execute(&self.storage, &batch, &self.retry, now_ms()) {
            Ok(verdict) => verdict,
            Err(unavailable) => {
                let reason = unavailable.to_string();
                match self.give_back(&batch, &reason) {
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
        let ack = self.ack(&verdict);
        if let Ok(counts) = &ack {
            // Counted once their receipts are written: a lost lease's ids
            // are counted by the instance that acks them.
            if counts.lost_lease == 0 {
                self.metrics.count_erased(&verdict.done);
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
