//! The actor pipeline of the design card:
//!
//! ```text
//! HTTP --Record--> RecordActor --group commit--> video_del_rec
//!                       \--Nudge--.     \--Leased (fast lane: inserted leased)--> DispatcherActor
//! TimerActor --Tick--> DispatcherActor --claim (lease)--> video_del_rec
//! DispatcherActor --DeleteBatch--> ExecutorActor x N --delete--> storage
//! ExecutorActor --ack (delete done, write receipt / reschedule failed)--> video_del_rec
//! PrunerActor --prune expired receipts (one instance at a time)--> video_del_receipt
//! VacuumActor --vacuum past 20,000 dead rows (PostgreSQL)--> video_del_rec
//! ReplicationActor --read standbys / Galera cluster every minute--> Db, /metrics
//! ExecutorActor --Nudge--> NotifierActor --fan out video_del_announce, claim (lease), deliver--> video_del_event, sinks
//! DispatcherActor --Backlog (claims come back full)--> NotifierActor yields
//! ```

pub(crate) mod batch;
mod dispatch;
pub(crate) mod dispatcher;
pub(crate) mod executor;
mod fast_lane;
pub(crate) mod notifier;
pub(crate) mod pruner;
pub(crate) mod record;
pub(crate) mod replication;
pub mod retry;
pub(crate) mod timer;
mod vacuum;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::config::Config;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::storage::Storage;
use dispatcher::{DispatcherActor, ReleaseInFlight, Shutdown};
use executor::ExecutorActor;
use fast_lane::FastLane;
use notifier::{Backlog, NotifierActor, StopNotifier};
use pruner::{PrunerActor, StopPruner};
use record::RecordActor;
use replication::{ReplicationActor, StopReplication};
use retry::RetryPolicy;
use timer::{StopTimer, TimerActor};
use vacuum::{StopVacuum, VacuumActor};

/// How the dispatcher sizes its work, from `config`.
fn settings(config: &Config) -> dispatcher::Settings {
    dispatcher::Settings {
        batch_size: config.batch_size,
        lease: Duration::from_secs(config.lease_secs),
        capacity: config.executors,
        tick: Duration::from_millis(config.tick_ms),
        max_per_sec: config.max_deletions_per_sec,
    }
}

/// The running actors of one process.
pub(crate) struct Pipeline {
    pub record: Addr<RecordActor>,
    pub dispatcher: Addr<DispatcherActor>,
    timer: Addr<TimerActor>,
    pruner: Addr<PrunerActor>,
    /// PostgreSQL only.
    vacuum: Option<Addr<VacuumActor>>,
    replication: Addr<ReplicationActor>,
    notifier: Option<Addr<NotifierActor>>,
    /// `locked_by` of this process's claims (and `acked_by` of receipts).
    pub owner: Arc<str>,
}

impl Pipeline {
    /// Starts the actors on the current actix system.
    pub(crate) fn start(
        db: Db,
        storage: Arc<Storage>,
        metrics: Arc<Metrics>,
        config: &Config,
    ) -> Pipeline {
        let owner: Arc<str> = instance_id().into();
        let retry = RetryPolicy::from_config(config);
        let receipts = config.receipts.retention_days > 0;
        let sinks = crate::notify::Sink::all(config);
        let outbox = Arc::new(crate::notify::outbox_sinks(config));
        // Only an unthrottled drain makes the notifier yield (a throttled
        // one leaves the machine room by the operator's choice).
        let backlog = (config.max_deletions_per_sec == 0).then(Backlog::default);
        let notifier = (!sinks.is_empty()).then(|| {
            NotifierActor::new(
                db.labeled("notify"),
                owner.clone(),
                (sinks, outbox.clone()),
                backlog.clone().unwrap_or_default(),
                metrics.clone(),
                config.webhook_retry_hours,
            )
            .start()
        });
        let executors = {
            let (db, owner, metrics) = (db.labeled("ack"), owner.clone(), metrics.clone());
            let nudge = notifier.clone().map(Addr::recipient);
            SyncArbiter::start(config.executors, move || {
                ExecutorActor::new(
                    db.clone(),
                    storage.clone(),
                    owner.clone(),
                    retry,
                    metrics.clone(),
                    receipts,
                    (outbox.clone(), nudge.clone()),
                )
            })
        };
        let settings = settings(config);
        // MySQL has no INSERT that says which rows it inserted: no lane.
        let fast_lane =
            (config.fast_lane && db.backend() != crate::db::Backend::Mysql).then(FastLane::new);
        let dispatcher = DispatcherActor::new(
            db.labeled("claim"),
            executors,
            owner.clone(),
            settings,
            (metrics.clone(), backlog),
        )
        .with_fast_lane(fast_lane.clone())
        .start();
        let timer =
            TimerActor::new(dispatcher.clone(), Duration::from_millis(config.tick_ms)).start();
        let pruner = PrunerActor::new(
            db.labeled("prune"),
            owner.clone(),
            config.receipts.retention_days,
            Duration::from_secs(config.receipts.prune_every_secs),
        )
        .start();
        let vacuum = VacuumActor::start_for(&db);
        let replication = ReplicationActor::new(db.clone(), metrics.clone()).start();
        let record = RecordActor::new(db.labeled("record"), dispatcher.clone(), metrics)
            .with_fast_lane(fast_lane.map(|lane| (lane, owner.clone(), settings.lease)))
            .start();
        let executors = config.executors;
        log::info!("pipeline started as {owner}: {executors} executors");
        Pipeline {
            record,
            dispatcher,
            timer,
            pruner,
            vacuum,
            replication,
            notifier,
            owner,
        }
    }

    /// Stops ticking and claiming, and waits up to `timeout` for the
    /// batches in execution to be acked; releases the leases of those still
    /// running after that.
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        let _ = self.timer.send(StopTimer).await;
        let _ = self.pruner.send(StopPruner).await;
        if let Some(vacuum) = &self.vacuum {
            let _ = vacuum.send(StopVacuum).await;
        }
        let _ = self.replication.send(StopReplication).await;
        if let Some(notifier) = &self.notifier {
            let _ = notifier.send(StopNotifier).await;
        }
        let drained = actix_web::rt::time::timeout(timeout, self.dispatcher.send(Shutdown)).await;
        if drained.is_err() {
            let released = self.dispatcher.send(ReleaseInFlight).await.unwrap_or(0);
            log::warn!("batches still running after {timeout:?}; released {released} leases");
        }
    }
}

/// What a periodic job's round (pruning, vacuuming) ended with, logged as
/// an operator wants it: a failure once, until a round succeeds again; an
/// outage not at all (`Db` logs it once, whoever meets it). The round's
/// result when it succeeded.
fn round_ended<T>(
    failing: &mut bool,
    result: Result<T, crate::db::DbError>,
    what: &str,
) -> Option<T> {
    match result {
        Ok(done) => {
            *failing = false;
            Some(done)
        }
        Err(e) if e.is_unavailable() => None,
        Err(e) => {
            if !std::mem::replace(failing, true) {
                log::warn!("{what} failed; trying again next round: {e}");
            }
            None
        }
    }
}

/// A `locked_by` unique to this process start: host, pid and a random part
/// (a restarted process must not inherit the leases of its predecessor).
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}
