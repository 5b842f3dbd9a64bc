//! PrunerActor: removes receipts older than `receipts.retention_days`.
//!
//! Every `receipts.prune_every_secs` an instance tries to take the `pruner`
//! lease in `video_del_control`; the one that holds it prunes, the others
//! skip the round, so several instances do not race over the same rows.
//! (A holder that dies loses the lease when it expires, after two rounds.)
//! Pruning deletes [`PRUNE_BATCH`] receipts per transaction, oldest first,
//! with a pause between transactions, like River's cleaner: a backlog of
//! millions never holds the writer (SQLite) or locks (MySQL/PostgreSQL)
//! long enough to stall claims and acks. An error ends the round; the next
//! round starts over.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::clock::now_ms;
use crate::db::queries::{controls, events, receipts};
use crate::db::{Db, DbError};

/// Receipts deleted per transaction.
pub(crate) const PRUNE_BATCH: usize = 10_000;
/// Pause between two pruning transactions of one round.
const PRUNE_PAUSE: Duration = Duration::from_millis(100);
/// The name of the lease in `video_del_control`.
const LEASE: &str = "pruner";

/// Prunes expired receipts, one instance at a time.
pub(crate) struct PrunerActor {
    db: Db,
    owner: Arc<str>,
    retention: Duration,
    every: Duration,
    /// A round is running: the next interval skips.
    pruning: bool,
    /// The last round failed: logged once until a round succeeds.
    failing: bool,
}

impl PrunerActor {
    pub(crate) fn new(
        db: Db,
        owner: Arc<str>,
        retention_days: u32,
        every: Duration,
    ) -> PrunerActor {
        PrunerActor {
            db,
            owner,
            retention: Duration::from_secs(u64::from(retention_days) * 86_400),
            every,
            pruning: false,
            failing: false,
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.pruning {
            return;
        }
        self.pruning = true;
        let (db, owner) = (self.db.clone(), self.owner.clone());
        let (retention_ms, lease_ms) = (
            self.retention.as_millis() as i64,
            2 * self.every.as_millis() as i64,
        );
        let round = async move {
            let owner2 = owner.clone();
            let ours = db
                .write_relaxed_async(move |c| {
                    let now = now_ms();
                    controls::take_lease(c, LEASE, &owner2, now, now + lease_ms)
                })
                .await?;
            if !ours {
                return Ok::<_, DbError>(None);
            }
            let cutoff = now_ms() - retention_ms;
            let mut pruned = 0;
            loop {
                let n = db
                    .write_relaxed_async(move |c| receipts::prune(c, cutoff, PRUNE_BATCH))
                    .await?;
                pruned += n;
                if n < PRUNE_BATCH {
                    break;
                }
                actix_web::rt::time::sleep(PRUNE_PAUSE).await;
            }
            // Delivered events go with the receipts; pending and dead ones
            // stay until delivered.
            loop {
                let n = db
                    .write_relaxed_async(move |c| events::prune(c, cutoff, PRUNE_BATCH))
                    .await?;
                if n < PRUNE_BATCH {
                    return Ok(Some(pruned));
                }
                actix_web::rt::time::sleep(PRUNE_PAUSE).await;
            }
        };
        ctx.spawn(round.into_actor(self).map(|result, act, _| {
            act.pruning = false;
            let pruned = super::round_ended(&mut act.failing, result, "pruning receipts");
            if let Some(n) = pruned.flatten().filter(|&n| n > 0) {
                log::info!(
                    "pruned {n} receipts completed more than {} days ago",
                    act.retention.as_secs() / 86_400
                );
            }
        }));
    }
}

impl Actor for PrunerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.round(ctx);
        ctx.run_interval(self.every, |act, ctx| act.round(ctx));
    }
}

/// Stops pruning (shutdown); a round in progress ends with its transaction.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopPruner;

impl Handler<StopPruner> for PrunerActor {
    type Result = ();

    fn handle(&mut self, _: StopPruner, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
