//! DispatcherActor: claims due ids in batches and hands them to executors.
//!
//! Flow control: at most one claim is in flight, and at most `capacity`
//! batches (one per executor thread) are being executed, so claimed rows
//! never wait in a queue while their lease runs out. While claims come back
//! full the dispatcher claims again as soon as an executor is free, without
//! waiting for the next tick.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::executor::{DeleteBatch, ExecutorActor};
use crate::db::models::Claimed;
use crate::db::{now_ms, queries, Db};
use crate::metrics::Metrics;

/// Claims batches for one process.
pub struct DispatcherActor {
    db: Db,
    executors: Addr<ExecutorActor>,
    /// `locked_by` of our claims: unique per process start.
    owner: Arc<str>,
    batch_size: usize,
    lease: Duration,
    /// Batches allowed in execution at once: the number of executors.
    capacity: usize,
    metrics: Arc<Metrics>,
    in_flight: usize,
    claiming: bool,
    /// Work may be due: set by ticks, nudges and full batches.
    more: bool,
    stopping: bool,
    /// Set during a database outage so that it is logged once, not per tick.
    outage: bool,
    /// Callers of [`Shutdown`] waiting for the last batch.
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl DispatcherActor {
    pub fn new(
        db: Db,
        executors: Addr<ExecutorActor>,
        owner: Arc<str>,
        batch_size: usize,
        lease: Duration,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> DispatcherActor {
        DispatcherActor {
            db,
            executors,
            owner,
            batch_size,
            lease,
            capacity,
            metrics,
            in_flight: 0,
            claiming: false,
            more: false,
            stopping: false,
            outage: false,
            idle_waiters: Vec::new(),
        }
    }

    /// Starts a claim if one is useful and allowed.
    fn maybe_claim(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.claiming || !self.more || self.in_flight >= self.capacity {
            return;
        }
        self.claiming = true;
        self.more = false;
        let (db, owner, limit) = (self.db.clone(), self.owner.clone(), self.batch_size);
        let lease_ms = self.lease.as_millis() as i64;
        let claim = async move {
            db.write_async(move |conn| {
                let now = now_ms();
                queries::claim(conn, &owner, now, now + lease_ms, limit)
            })
            .await
        };
        ctx.spawn(claim.into_actor(self).map(|result, act, ctx| {
            act.claiming = false;
            match result {
                Ok(batch) => {
                    if act.outage {
                        act.outage = false;
                        log::info!("database is back; dispatching again");
                    }
                    if batch.len() == act.batch_size {
                        act.more = true;
                    }
                    if !batch.is_empty() {
                        act.execute(batch, ctx);
                    }
                }
                Err(e) => {
                    act.metrics.claim_errors.inc();
                    if !act.outage {
                        act.outage = true;
                        log::warn!("claim failed, retrying every tick until it works: {e}");
                    }
                }
            }
            act.maybe_claim(ctx);
            act.notify_if_idle();
        }));
    }

    fn execute(&mut self, batch: Vec<Claimed>, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        let run = self.executors.send(DeleteBatch(batch));
        ctx.spawn(run.into_actor(self).map(|result, act, ctx| {
            act.in_flight -= 1;
            if let Err(e) = result {
                // The executor is gone (shutdown): the lease will expire.
                log::error!("executor did not run a batch: {e}");
            }
            act.maybe_claim(ctx);
            act.notify_if_idle();
        }));
    }

    fn notify_if_idle(&mut self) {
        if self.stopping && self.in_flight == 0 && !self.claiming {
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
