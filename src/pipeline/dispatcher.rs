//! DispatcherActor: claims due ids in batches and hands them to executors.
//!
//! Flow control: at most one claim is in flight, and at most `capacity`
//! batches (one per executor thread) are being executed, so claimed rows
//! never wait in a queue while their lease runs out. While claims come back
//! full the dispatcher claims again as soon as an executor is free, without
//! waiting for the next tick. With `max_deletions_per_sec`, a claim takes
//! at most a second's worth of ids and hands them over once the limiter
//! (governor's token bucket) has that many permits.
//!
//! Pause: an operator's pause is read by every claim (see
//! [`queries::claim`]): claims come back empty until it is lifted, and the
//! change is logged once each way.
//!
//! Trouble: a failed claim (the database) or a batch the storage refused as
//! a whole (its root is not the directory opened at start-up, its marker is
//! missing) pauses claims with an exponential backoff, from one tick up to
//! [`MAX_OUTAGE_BACKOFF`], until a claim succeeds or a batch runs. Database
//! outages are logged by [`Db`]; other database errors and storage trouble
//! are logged here, once when they start and once when they end.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;

use super::executor::{BatchReport, DeleteBatch, ExecutorActor};
use crate::db::models::{Claim, Claimed};
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
    /// `max_deletions_per_sec` (0: no limit).
    pub max_per_sec: u32,
}

/// What keeps the dispatcher from claiming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Claims fail.
    Database,
    /// Batches come back refused by the storage.
    Storage,
}

/// Trouble as the dispatcher sees it: claims wait until `retry_at`.
#[derive(Debug)]
struct Trouble {
    cause: Cause,
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
    /// Number of the next batch handed out (keys of `in_flight`).
    next_batch: u64,
    /// A claim is in flight: at most one at a time.
    claiming: bool,
    /// Work may be due: set by ticks, nudges and full batches.
    more: bool,
    /// Shutdown began: no more claims.
    stopping: bool,
    /// Claims are paused by a failure, with backoff.
    trouble: Option<Trouble>,
    /// The last claim found deletions paused by an operator (logged when
    /// it changes).
    paused: bool,
    /// `max_deletions_per_sec`: ids are handed to executors only as fast
    /// as this allows (and the limit per second, which caps a claim).
    limiter: Option<(Arc<DefaultDirectRateLimiter>, NonZeroU32)>,
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
            trouble: None,
            paused: false,
            limiter: NonZeroU32::new(settings.max_per_sec).map(|per_sec| {
                (
                    Arc::new(RateLimiter::direct(Quota::per_second(per_sec))),
                    per_sec,
                )
            }),
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
                .trouble
                .as_ref()
                .is_some_and(|t| Instant::now() < t.retry_at)
        {
            return;
        }
        self.claiming = true;
        self.more = false;
        let (db, owner) = (self.db.clone(), self.owner.clone());
        let limiter = self.limiter.clone();
        // With a rate limit, a claim takes at most one second's worth.
        let limit = match &limiter {
            Some((_, per_sec)) => self.settings.batch_size.min(per_sec.get() as usize),
            None => self.settings.batch_size,
        };
        let lease_ms = self.settings.lease.as_millis() as i64;
        let claim_seconds = self.metrics.claim_seconds.clone();
        let claim = async move {
            let started = Instant::now();
            let claim = db
                .write_relaxed_async(move |conn| {
                    let now = now_ms();
                    queries::claim(conn, &owner, now, now + lease_ms, limit)
                })
                .await;
            claim_seconds.observe(started.elapsed().as_secs_f64());
            // The ids are handed over only as fast as the limit allows:
            // at most a second's wait, while their leases run for
            // `lease_secs`.
            if let (Ok(Claim::Batch(batch)), Some((limiter, _))) = (&claim, &limiter) {
                if let Some(n) = NonZeroU32::new(batch.len() as u32) {
                    let _ = limiter.until_n_ready(n).await;
                }
            }
            claim
        };
        ctx.spawn(claim.into_actor(self).map(move |result, act, ctx| {
            act.claiming = false;
            match result {
                Ok(Claim::Paused) => {
                    act.recovered(Cause::Database);
                    if !act.paused {
                        log::info!("deletions paused by an operator; claiming again once resumed");
                        act.paused = true;
                    }
                }
                Ok(Claim::Batch(batch)) => {
                    act.recovered(Cause::Database);
                    if act.paused {
                        log::info!("deletions resumed");
                        act.paused = false;
                    }
                    if batch.len() == limit {
                        act.more = true;
                    }
                    if !batch.is_empty() {
                        act.execute(batch, ctx);
                    }
                }
                Err(e) => {
                    act.metrics.claim_errors.inc();
                    if act.trouble.is_none() && !e.is_unavailable() {
                        // Outages are logged by `Db`; any other error is a
                        // fault worth an error line, once per streak.
                        log::error!("claim failed; retrying with backoff: {e}");
                    }
                    act.failed(Cause::Database);
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
            match result {
                Ok(BatchReport {
                    storage_unavailable: Some(reason),
                    ..
                }) => {
                    if act.trouble.is_none() {
                        log::warn!("storage unavailable, pausing deletions: {reason}");
                    }
                    act.more = true;
                    act.failed(Cause::Storage);
                }
                Ok(_) => act.recovered(Cause::Storage),
                // The executor is gone (shutdown): the lease will expire.
                Err(e) => log::error!("executor did not run a batch: {e}"),
            }
            act.maybe_claim(ctx);
            act.notify_if_idle();
        }));
    }

    /// A claim or a batch failed for `cause`: pause claims, longer each time.
    fn failed(&mut self, cause: Cause) {
        self.more = true;
        let tick = self.settings.tick;
        let trouble = self.trouble.get_or_insert_with(|| Trouble {
            cause,
            since: Instant::now(),
            failures: 0,
            retry_at: Instant::now(),
        });
        trouble.cause = cause;
        trouble.failures += 1;
        let backoff = tick
            .saturating_mul(1 << trouble.failures.min(16))
            .min(MAX_OUTAGE_BACKOFF.max(tick));
        trouble.retry_at = Instant::now() + backoff;
    }

    /// A claim or a batch went through: trouble of that `cause` is over;
    /// say so once.
    fn recovered(&mut self, cause: Cause) {
        if self.trouble.as_ref().is_some_and(|t| t.cause == cause) {
            let trouble = self.trouble.take().expect("checked above");
            let what = match trouble.cause {
                Cause::Database => "claims work",
                Cause::Storage => "storage is usable",
            };
            log::info!(
                "{what} again after {:.1?} ({} failed tries); dispatching again",
                trouble.since.elapsed(),
                trouble.failures
            );
        }
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
                .write_relaxed_async(move |c| queries::release(c, &owner, &ids, now_ms(), None))
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
