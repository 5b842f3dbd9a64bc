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
//! Priority (README, "Priority"): a claim takes urgent due rows first
//! ([`Due::Urgent`]) whenever some may be due (after a tick, a nudge for
//! urgent ids recorded here, or a full urgent claim: `Dispatch`), and
//! urgent rows pass the rate limiter: they are
//! handed over at once and take no permit. While a batch of normal rows
//! waits for its permits (at most one such batch: the claim-ahead is a
//! second's worth), only urgent rows are claimed, at each tick or nudge,
//! so a takedown recorded behind a throttled bulk purge starts within a
//! tick (a nudge, when it is due now) and never waits for the throttle.
//!
//! Pause: an operator's pause is read by every claim (see
//! [`queries::claim`]): claims come back empty until it is lifted, and the
//! change is logged once each way.
//!
//! Takeover: every quarter lease a claim first looks for expired leases (a
//! dead or cut-off instance's rows, see [`Due::Expired`]) and takes them
//! before the backlog; when there are none it claims the urgent, then the
//! oldest due rows in the same call.
//!
//! Trouble: a failed claim (the database) or a batch the storage refused as
//! a whole (its root is not the directory opened at start-up, its marker is
//! missing) pauses claims with an exponential backoff, tick × 2^failures
//! (two ticks after the first failure) up to `dispatch::MAX_OUTAGE_BACKOFF`, until
//! a claim succeeds or a batch runs. Database outages are logged by
//! [`Db`]; other database errors and storage trouble are logged here, once
//! when they start and once when they end.
//!
//! Every one of these decisions is made by `Dispatch` (`dispatch.rs`), a
//! plain struct unit-tested without actors; this actor runs the claims,
//! sends the batches, waits on the limiter and logs what it is told.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;

pub(crate) use super::dispatch::Settings;
use super::dispatch::{BatchOutcome, ClaimOrder, ClaimOutcome, Dispatch, Report};
use super::executor::{BatchReport, DeleteBatch, ExecutorActor};
use super::fast_lane::FastLane;
use super::notifier::Backlog;
use crate::clock::now_ms;
use crate::db::models::{Claim, Claimed};
use crate::db::queries::claim::{claim_first, Due};
use crate::db::{queries, Db, DbError};
use crate::metrics::Metrics;

/// Batches' worth of the oldest due rows a contended claim may start in.
const SPREAD_BATCHES: usize = 4;

/// Claims batches for one process: the glue between `Dispatch`'s
/// decisions and the database, the executors, the rate limiter and the log.
pub(crate) struct DispatcherActor {
    /// Where claims and releases are written.
    db: Db,
    /// Where claimed batches are sent.
    executors: Addr<ExecutorActor>,
    /// `locked_by` of our claims: unique per process start.
    owner: Arc<str>,
    /// How long a claim holds its ids.
    lease: Duration,
    /// Ids per batch handed to an executor.
    batch_size: usize,
    /// Claim duration and failures are counted for `/metrics`.
    metrics: Arc<Metrics>,
    /// Told when a claim comes back full (the notifier yields meanwhile);
    /// none when `max_deletions_per_sec` throttles the claims.
    backlog: Option<Backlog>,
    /// The limit of the claim in flight (at most one is).
    claim_limit: usize,
    /// Every decision: when to claim, how many, backoff, what to log.
    dispatch: Dispatch,
    /// `max_deletions_per_sec`: ids are handed to executors only as fast
    /// as this allows (the claim's size is capped by `Dispatch`).
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// Callers of [`Shutdown`] waiting for the last batch.
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// When a claim looks for expired leases first (every quarter lease):
    /// a dead or cut-off instance's rows are taken over before the
    /// backlog, at most a quarter lease after they expired.
    next_takeover: Instant,
    /// Where the fast lane's room is published (`fast_lane: true`).
    fast_lane: Option<FastLane>,
}

impl DispatcherActor {
    pub(crate) fn new(
        db: Db,
        executors: Addr<ExecutorActor>,
        owner: Arc<str>,
        settings: Settings,
        (metrics, backlog): (Arc<Metrics>, Option<Backlog>),
    ) -> DispatcherActor {
        DispatcherActor {
            db,
            executors,
            owner,
            lease: settings.lease,
            batch_size: settings.batch_size,
            metrics,
            backlog,
            claim_limit: 0,
            dispatch: Dispatch::new(settings),
            limiter: NonZeroU32::new(settings.max_per_sec)
                .map(|per_sec| Arc::new(RateLimiter::direct(Quota::per_second(per_sec)))),
            idle_waiters: Vec::new(),
            next_takeover: Instant::now(),
            fast_lane: None,
        }
    }

    /// Publishes the fast lane's room to `lane` (none: no lane).
    pub(crate) fn with_fast_lane(self, fast_lane: Option<FastLane>) -> DispatcherActor {
        DispatcherActor { fast_lane, ..self }
    }

    /// After every event: starts a claim if [`Dispatch`] finds one useful
    /// and allowed, and tells the recorder how many ids may take the fast
    /// lane now.
    fn maybe_claim(&mut self, ctx: &mut Context<Self>) {
        self.claim_if_due(ctx);
        self.publish_room();
    }

    fn publish_room(&self) {
        if let Some(lane) = &self.fast_lane {
            lane.publish(self.dispatch.fast_lane_room());
        }
    }

    /// Starts a claim if [`Dispatch`] finds one useful and allowed.
    fn claim_if_due(&mut self, ctx: &mut Context<Self>) {
        let Some(ClaimOrder {
            limit,
            urgent_only,
            urgent,
        }) = self.dispatch.next_claim(Instant::now())
        else {
            return;
        };
        self.claim_limit = limit;
        let (db, owner) = (self.db.clone(), self.owner.clone());
        let lease_ms = self.lease.as_millis() as i64;
        let claim_seconds = self.metrics.claim_seconds.clone();
        // While claims conflict (instances on different Galera nodes taking
        // the same oldest rows), each starts at one of the first few
        // batches' worth of due rows, chosen at random.
        let oldest = Due::Oldest {
            offset: match db.contended() {
                true => fastrand::usize(..SPREAD_BATCHES) * limit,
                false => 0,
            },
        };
        let take_over = !urgent_only && Instant::now() >= self.next_takeover;
        if take_over {
            self.next_takeover = Instant::now() + self.lease / 4;
        }
        // A claim that has not come back by then is given up on (its answer
        // would come too late to be used anyway): a database that stopped
        // answering is an outage this instance notices and logs.
        let give_up_after = self.lease / 4;
        let claim = async move {
            let started = Instant::now();
            // Expired leases (every quarter lease), then urgent rows (when
            // some may be due), then the oldest due: the first that finds
            // rows is the batch, with the kind that found it.
            let order = match urgent_only {
                true => vec![Due::Urgent],
                false => [
                    take_over.then_some(Due::Expired),
                    urgent.then_some(Due::Urgent),
                    Some(oldest),
                ]
                .into_iter()
                .flatten()
                .collect(),
            };
            let claiming = db.write_relaxed_async(move |conn| {
                let now = now_ms();
                claim_first(conn, &owner, (now, now + lease_ms), limit, &order)
            });
            let claim = match actix_web::rt::time::timeout(give_up_after, claiming).await {
                Ok(claim) => claim,
                Err(_) => Err(db.no_answer("a claim", give_up_after, true)),
            };
            claim_seconds.observe(started.elapsed().as_secs_f64());
            (claim, started)
        };
        ctx.spawn(
            claim
                .into_actor(self)
                .map(|(result, started), act, ctx| act.claimed(result, started, ctx)),
        );
    }

    /// A claim sent at `started` came back with `result` (and which kind
    /// of due rows it leased).
    fn claimed(
        &mut self,
        result: Result<(Claim, Due), DbError>,
        started: Instant,
        ctx: &mut Context<Self>,
    ) {
        let outcome = match &result {
            Ok((Claim::Paused, _)) => ClaimOutcome::Paused,
            Ok((Claim::Batch(batch), Due::Urgent)) => ClaimOutcome::Urgent { len: batch.len() },
            Ok((Claim::Batch(batch), due)) => {
                // Expired leases found first: the urgent rows were not
                // looked for.
                if *due == Due::Expired && !batch.is_empty() {
                    self.dispatch.urgent_not_looked_for();
                }
                ClaimOutcome::Batch { len: batch.len() }
            }
            // Counted and logged by `Db`: claim again, no backoff.
            Err(DbError::Busy(_)) => ClaimOutcome::Conflicted,
            Err(e) => {
                self.metrics.claim_errors.inc();
                ClaimOutcome::Failed {
                    unavailable: e.is_unavailable(),
                    error: e.to_string(),
                }
            }
        };
        for report in self.dispatch.claim_returned(Instant::now(), outcome) {
            say(&report);
        }
        if let Ok((Claim::Batch(batch), due)) = result {
            let urgent = due == Due::Urgent;
            if let Some(backlog) = self
                .backlog
                .as_ref()
                .filter(|_| !urgent && batch.len() >= self.claim_limit)
            {
                backlog.full_claim();
            }
            let n = NonZeroU32::new(batch.len() as u32);
            match (self.limiter.clone(), n) {
                // Normal ids are handed over only as fast as the limit
                // allows: at most a second's wait, while their leases run
                // for `lease_secs`. Urgent ones meanwhile are claimed and
                // handed over at once.
                (Some(limiter), Some(n)) if !urgent => {
                    self.dispatch.throttle_began();
                    let wait = async move { limiter.until_n_ready(n).await };
                    ctx.spawn(wait.into_actor(self).map(move |_, act, ctx| {
                        act.dispatch.throttle_ended();
                        act.hand_over(batch, started, ctx);
                        act.maybe_claim(ctx);
                        act.notify_if_idle();
                    }));
                }
                _ => self.hand_over(batch, started, ctx),
            }
        }
        self.maybe_claim(ctx);
        self.notify_if_idle();
    }

    /// Hands a `batch` claimed at `started` to an executor, unless too
    /// much of its lease is gone.
    fn hand_over(&mut self, batch: Vec<Claimed>, started: Instant, ctx: &mut Context<Self>) {
        if batch.is_empty() {
            return;
        }
        // The lease began at the latest when the claim was sent: deleting
        // must start within the first half of it, so that it ends (and is
        // acked) before another instance may take the rows over. (A claim
        // is given up on after a quarter; the rate limit's wait comes on
        // top.)
        let start_by = started + self.lease / 2;
        let ack_by = started + self.lease - self.lease / 10;
        if Instant::now() > start_by {
            log::warn!(
                "a claim of {} ids answered {:.1?} after it was sent, past half of the \
                 {:?} lease: not deleting them; they come due again when the lease ends",
                batch.len(),
                started.elapsed(),
                self.lease
            );
        } else {
            self.execute(batch, (start_by, ack_by), ctx);
        }
    }

    /// Hands `batch` to an executor, to start deleting by `start_by` and
    /// ack by `ack_by`.
    fn execute(
        &mut self,
        batch: Vec<Claimed>,
        (start_by, ack_by): (Instant, Instant),
        ctx: &mut Context<Self>,
    ) {
        let number = self
            .dispatch
            .batch_started(batch.iter().map(|c| c.id.clone()).collect());
        let run = self.executors.send(DeleteBatch {
            batch,
            start_by,
            ack_by,
        });
        ctx.spawn(run.into_actor(self).map(move |result, act, ctx| {
            let outcome = match result {
                Ok(BatchReport {
                    storage_unavailable: Some(reason),
                    ..
                }) => BatchOutcome::StorageUnavailable { reason },
                Ok(BatchReport { not_run: true, .. }) => BatchOutcome::NotRun,
                Ok(_) => BatchOutcome::Ran,
                // The executor is gone (shutdown): the lease will expire.
                Err(e) => {
                    log::error!("executor did not run a batch: {e}");
                    BatchOutcome::NotRun
                }
            };
            if let Some(report) = act.dispatch.batch_returned(number, Instant::now(), outcome) {
                say(&report);
            }
            act.maybe_claim(ctx);
            act.notify_if_idle();
        }));
    }

    /// Gives the leases of `ids` back at shutdown, due now: the rows they
    /// were not deleted for, so that they need not wait for the lease.
    /// Resolves to the rows released (0 on an error, logged: the leases
    /// then expire by themselves).
    fn give_back(&self, ids: Vec<String>) -> impl std::future::Future<Output = usize> + 'static {
        let (db, owner) = (self.db.clone(), self.owner.clone());
        async move {
            if ids.is_empty() {
                return 0;
            }
            let released = db
                .write_relaxed_async(move |c| {
                    queries::claim::release(c, &owner, &ids, now_ms(), None)
                })
                .await;
            released.unwrap_or_else(|e| {
                log::warn!("could not release leases at shutdown; they expire by themselves: {e}");
                0
            })
        }
    }

    fn notify_if_idle(&mut self) {
        if self.dispatch.idle() {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Logs a line [`Dispatch`] asked for, from this module (the log target
/// operators filter on).
fn say(report: &Report) {
    log::log!(report.level(), "{report}");
}

impl Actor for DispatcherActor {
    type Context = Context<Self>;

    /// The fast lane opens at once, not at the first tick.
    fn started(&mut self, _: &mut Context<Self>) {
        self.publish_room();
    }
}

/// Periodic wake-up from the TimerActor: look for due work.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Tick;

impl Handler<Tick> for DispatcherActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.dispatch.wake();
        self.maybe_claim(ctx);
    }
}

/// From the RecordActor: requests due now were just committed, urgent ones
/// among them if `urgent` (the next claim looks for urgent rows first).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Nudge {
    pub urgent: bool,
}

impl Handler<Nudge> for DispatcherActor {
    type Result = ();

    fn handle(&mut self, nudge: Nudge, ctx: &mut Context<Self>) {
        self.dispatch.nudge(nudge.urgent);
        self.maybe_claim(ctx);
    }
}

/// From the RecordActor: rows it inserted already leased to this instance
/// (the fast lane), their lease begun at `started`. Deleted as a claimed
/// batch; during shutdown given back instead, due now.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Leased {
    pub batch: Vec<Claimed>,
    pub started: Instant,
}

impl Handler<Leased> for DispatcherActor {
    type Result = ();

    fn handle(&mut self, msg: Leased, ctx: &mut Context<Self>) {
        if self.dispatch.stopping() {
            let ids: Vec<String> = msg.batch.into_iter().map(|c| c.id).collect();
            let give_back = self.give_back(ids);
            ctx.spawn(
                async move {
                    give_back.await;
                }
                .into_actor(self),
            );
        } else {
            self.metrics.fast_lane.inc_by(msg.batch.len() as u64);
            // In batches of `batch_size`, one per free executor, as the
            // lane's room was counted.
            let mut batch = msg.batch;
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(self.batch_size));
                self.hand_over(batch, msg.started, ctx);
                batch = rest;
            }
        }
        self.maybe_claim(ctx);
    }
}

/// Stop claiming; resolves once every batch in execution is acked.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;

impl Handler<Shutdown> for DispatcherActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.dispatch.stop();
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
pub(crate) struct ReleaseInFlight;

impl Handler<ReleaseInFlight> for DispatcherActor {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: ReleaseInFlight, _: &mut Context<Self>) -> Self::Result {
        let ids = self.dispatch.release_in_flight();
        Box::pin(self.give_back(ids))
    }
}
