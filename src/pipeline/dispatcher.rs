//! DispatcherActor: claims due ids in batches and hands them to executors.
//!
//! Flow control: at most one claim is in flight, and at most `capacity`
//! batches (one per executor thread) are being executed, so claimed rows
//! never wait in a queue while their lease runs out. While claims come back
//! full the dispatcher claims again as soon as an executor is free, without
//! waiting for the next tick.
//!
//! Outages: a failed claim is logged once, then claims pause with an
//! exponential backoff (from one tick up to [`MAX_OUTAGE_BACKOFF`]) until
//! one succeeds, and the recovery is logged once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::executor::{DeleteBatch, ExecutorActor};
use crate::db::models::Claimed;
use crate::db::{now_ms, queries, Db};
use crate::metrics::Metrics;

/// Longest pause between claims while the database is unreachable.
pub const MAX_OUTAGE_BACKOFF: Duration = Duration::from_secs(5);

/// How the dispatcher sizes its work.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub batch_size: usize,
    pub lease: Duration,
    /// Batches allowed in execution at once: the number of executors.
    pub capacity: usize,
    /// The timer's interval: the first backoff step of an outage.
    pub tick: Duration,
}

/// A database outage as the dispatcher sees it.
#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u32,
    /// No claim before this.
    retry_at: Instant,
}

/// Claims batches for one process.
pub struct DispatcherActor {
    db: Db,
    executors: Addr<ExecutorActor>,
    /// `locked_by` of our claims: unique per process start.
    owner: Arc<str>,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Ids of the batches being executed, by batch number: released if
    /// shutdown runs out of time before they are acked.
    in_flight: HashMap<u64, Vec<String>>,
    next_batch: u64,
    claiming: bool,
    /// Work may be due: set by ticks, nudges and full batches.
    more: bool,
    stopping: bool,
    outage: Option<Outage>,
    /// Callers of [`Shutdown`] waiting for the last batch.
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl DispatcherActor {
    pub fn new(
        db: Db,
        executors: Addr<ExecutorActor>,
        owner: Arc<str>,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> DispatcherActor {
        DispatcherActor {
            db,
            executors,
            owner,
            settings,
            metrics,
            in_flight: HashMap::new(),
            next_batch: 0,
            claiming: false,
            more: false,
            stopping: false,
            outage: None,
            idle_waiters: Vec::new(),
        }
    }

    /// Starts a claim if one is useful and allowed.
    fn maybe_claim(&mut self, ctx: &mut Context<Self>) {
        if self.stopping
            || self.claiming
            || !self.more
            || self.in_flight.len() >= self.settings.capacity
            || self
                .outage
                .as_ref()
                .is_some_and(|o| Instant::now() < o.retry_at)
        {
            return;
        }
        self.claiming = true;
        self.more = false;
        let (db, owner, limit) = (
            self.db.clone(),
            self.owner.clone(),
            self.settings.batch_size,
        );
        let lease_ms = self.settings.lease.as_millis() as i64;
        let claim = async move {
            db.write_relaxed_async(move |conn| {
                let now = now_ms();
                queries::claim(conn, &owner, now, now + lease_ms, limit)
            })
            .await
        };
        ctx.spawn(claim.into_actor(self).map(|result, act, ctx| {
            act.claiming = false;
            match result {
                Ok(batch) => {
                    if let Some(outage) = act.outage.take() {
                        log::info!(
                            "database is back after {:?} ({} failed claims); dispatching again",
                            outage.since.elapsed(),
                            outage.failures
                        );
                    }
                    if batch.len() == act.settings.batch_size {
                        act.more = true;
                    }
                    if !batch.is_empty() {
                        act.execute(batch, ctx);
                    }
                }
                Err(e) => {
                    act.metrics.claim_errors.inc();
                    act.more = true;
                    let tick = act.settings.tick;
                    let outage = act.outage.get_or_insert_with(|| {
                        log::warn!(
                            "claim failed; retrying with backoff until the database answers: {e}"
                        );
                        Outage {
                            since: Instant::now(),
                            failures: 0,
                            retry_at: Instant::now(),
                        }
                    });
                    outage.failures += 1;
                    let backoff = tick
                        .saturating_mul(1 << outage.failures.min(16))
                        .min(MAX_OUTAGE_BACKOFF.max(tick));
                    outage.retry_at = Instant::now() + backoff;
                }
            }
            act.maybe_claim(ctx);
            act.notify_if_idle();
        }));
    }

    fn execute(&mut self, batch: Vec<Claimed>, ctx: &mut Context<Self>) {
        let number = self.next_batch;
        self.next_batch += 1;
        self.in_flight
            .insert(number, batch.iter().map(|c| c.id.clone()).collect());
        let run = self.executors.send(DeleteBatch(batch));
        ctx.spawn(run.into_actor(self).map(move |result, act, ctx| {
            act.in_flight.remove(&number);
            if let Err(e) = result {
                // The executor is gone (shutdown): the lease will expire.
                log::error!("executor did not run a batch: {e}");
            }
            act.maybe_claim(ctx);
            act.notify_if_idle();
        }));
    }

    fn notify_if_idle(&mut self) {
        if self.stopping && self.in_flight.is_empty() && !self.claiming {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Actor for DispatcherActor {
    type Context = Context<Self>;
}

/// Periodic wake-up from the TimerActor: look for due work.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// From the RecordActor: requests due now were just committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Nudge;

/// Both wake-ups mean the same: work may be due.
macro_rules! wake_on {
    ($($message:ty),*) => {$(
        impl Handler<$message> for DispatcherActor {
            type Result = ();

            fn handle(&mut self, _: $message, ctx: &mut Context<Self>) {
                self.more = true;
                self.maybe_claim(ctx);
            }
        }
    )*};
}

wake_on!(Tick, Nudge);

/// Stop claiming; resolves once every batch in execution is acked.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for DispatcherActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        self.notify_if_idle();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Shutdown ran out of time: give the leases of the batches still being
/// executed back, so that they are due again now rather than after the
/// lease. Their executor may still finish; its ack then finds the rows no
/// longer ours and leaves them (a file already removed counts as missing).
/// Resolves to the number of rows released.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ReleaseInFlight;

impl Handler<ReleaseInFlight> for DispatcherActor {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: ReleaseInFlight, _: &mut Context<Self>) -> Self::Result {
        let ids: Vec<String> = self.in_flight.drain().flat_map(|(_, ids)| ids).collect();
        let (db, owner) = (self.db.clone(), self.owner.clone());
        Box::pin(async move {
            if ids.is_empty() {
                return 0;
            }
            match db
                .write_relaxed_async(move |c| queries::release(c, &owner, &ids, now_ms()))
                .await
            {
                Ok(released) => released,
                Err(e) => {
                    log::warn!(
                        "could not release leases at shutdown; they expire by themselves: {e}"
                    );
                    0
                }
            }
        })
    }
}
