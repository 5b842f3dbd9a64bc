//! ExecutorActor: deletes the files of a claimed batch, then acks it.
//!
//! Executors run on a `SyncArbiter` (one thread each): file deletion and the
//! ack are blocking calls and must not run on the async reactor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::retry::RetryPolicy;
use crate::db::models::{AckCounts, Claimed};
use crate::db::{now_ms, queries, Db, DbError};
use crate::metrics::Metrics;
use crate::storage::{LocalStorage, Outcome};
use crate::video_id::VideoId;

/// Acks tried before giving up on a batch; the lease then expires and the
/// batch is claimed again (its files are already gone: counted as missing).
const ACK_TRIES: u32 = 3;

/// Deletes batches of claimed ids.
pub struct ExecutorActor {
    db: Db,
    storage: Arc<LocalStorage>,
    owner: Arc<str>,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl ExecutorActor {
    pub fn new(
        db: Db,
        storage: Arc<LocalStorage>,
        owner: Arc<str>,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> ExecutorActor {
        ExecutorActor {
            db,
            storage,
            owner,
            retry,
            metrics,
        }
    }

    fn ack(
        &self,
        done: &[String],
        failures: &[crate::db::models::Failure],
    ) -> Result<AckCounts, DbError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .db
                .write_relaxed(|conn| queries::ack(conn, &self.owner, done, failures))
            {
                Ok(counts) => return Ok(counts),
                Err(e) if tries >= ACK_TRIES => return Err(e),
                Err(e) => {
                    log::warn!("ack failed (try {tries} of {ACK_TRIES}): {e}");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(tries)));
                }
            }
        }
    }
}

impl Actor for ExecutorActor {
    type Context = SyncContext<Self>;
}

/// Delete the files of these claimed ids and ack the batch.
#[derive(Message)]
#[rtype(result = "BatchReport")]
pub struct DeleteBatch(pub Vec<Claimed>);

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Ids whose files were removed.
    pub deleted: usize,
    /// Ids that had no file left: counted as deleted.
    pub missing: usize,
    /// Ids whose deletion failed (rescheduled or failed for good).
    pub failed: usize,
    /// `None` when the ack could not be written.
    pub ack: Option<AckCounts>,
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
        let mut report = BatchReport::default();
        let mut done = Vec::with_capacity(size);
        let mut failures = Vec::new();
        for claimed in batch {
            let id = match VideoId::parse(&claimed.id) {
                Ok(id) => id,
                Err(e) => {
                    report.failed += 1;
                    failures.push(self.retry.permanent(&claimed, format!("{e}; not deleted")));
                    continue;
                }
            };
            match self.storage.delete(&id) {
                Ok(Outcome::Deleted) => report.deleted += 1,
                Ok(Outcome::Missing) => report.missing += 1,
                Err(e) => {
                    report.failed += 1;
                    failures.push(self.retry.failure(&claimed, e.to_string(), now_ms()));
                    continue;
                }
            }
            done.push(claimed.id);
        }
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
        let ack = self.ack(&done, &failures);
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        match ack {
            Ok(counts) => {
                report.ack = Some(counts);
                log::info!(
                    "batch of {size}: {} deleted, {} missing, {} failed ({} to retry, {} failed for good), {} lost lease, in {:?}",
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
                "batch of {size}: files handled but the ack failed; the rows return when the lease expires: {e}"
            ),
        }
        MessageResult(report)
    }
}
