//! VacuumActor (PostgreSQL only): vacuums `video_del_rec` as fast as it
//! churns.
//!
//! Every id is inserted, updated by its claim and deleted by its ack: at
//! 30,000 deletions a second the queue table gains some 60,000 dead row
//! versions a second while holding a few thousand live ones. Autovacuum
//! looks at a database once a minute (`autovacuum_naptime`), so between
//! two of its rounds the table grew by hundreds of megabytes, and once it
//! had run, new rows went into the freed space all over those pages: the
//! pages in use outgrew the server's buffers, and a soak at 80% of
//! capacity fell behind after three minutes (BENCHMARKS.md, the soak).
//!
//! So every [`EVERY`] each instance reads the table's dead rows from the
//! server's statistics and, past [`DEAD_ROWS`], vacuums it, `SKIP_LOCKED`:
//! when a vacuum of it runs already (autovacuum's, another instance's),
//! this round does nothing. Vacuuming a table kept this small takes a
//! fraction of a second and takes no lock that claims, acks or records
//! wait for. A role that does not own the table may not vacuum it: the
//! actor then stops at start, saying so once, and the table is left to
//! autovacuum (tune `autovacuum_naptime` then, docs/SCALING.md).

use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::db::queries::vacuum;
use crate::db::{Db, DbError};

/// How often the dead rows are looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Dead row versions worth a vacuum: a few megabytes of table.
const DEAD_ROWS: i64 = 20_000;

/// Vacuums the queue table when it has enough dead rows.
pub(crate) struct VacuumActor {
    db: Db,
    /// A round is running: the next interval skips.
    busy: bool,
    /// The last round failed: logged once until a round succeeds.
    failing: bool,
}

impl VacuumActor {
    /// Started on PostgreSQL; nothing to vacuum elsewhere.
    pub(crate) fn start_for(db: &Db) -> Option<Addr<VacuumActor>> {
        let db = db.labeled("vacuum");
        (db.backend() == crate::db::Backend::Postgres).then(|| {
            VacuumActor {
                db,
                busy: false,
                failing: false,
            }
            .start()
        })
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let db = self.db.clone();
        let round = async move {
            let dead = db.read_async(vacuum::dead_rows).await?;
            if dead < DEAD_ROWS {
                return Ok::<_, DbError>(None);
            }
            // Not `write_async`: its deadline would call a long vacuum (the
            // first one of a bloated table) an outage.
            let started = Instant::now();
            actix_web::rt::task::spawn_blocking(move || db.write(vacuum::vacuum))
                .await
                .map_err(|e| DbError::Query(format!("the vacuum's thread: {e}")))??;
            Ok(Some((dead, started.elapsed())))
        };
        ctx.spawn(round.into_actor(self).map(|result, act, _| {
            act.busy = false;
            let done = super::round_ended(&mut act.failing, result, "vacuuming video_del_rec");
            if let Some((dead, took)) = done.flatten() {
                log::debug!("vacuumed video_del_rec ({dead} dead rows) in {took:?}");
            }
        }));
    }
}

impl Actor for VacuumActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let db = self.db.clone();
        let allowed = async move { db.read_async(vacuum::may_vacuum).await };
        ctx.wait(
            allowed
                .into_actor(self)
                .map(|allowed, _, ctx| match allowed {
                    Ok(true) => {
                        ctx.run_interval(EVERY, |act, ctx| act.round(ctx));
                    }
                    Ok(false) => {
                        log::info!(
                            "this role does not own video_del_rec and may not vacuum it: \
                     that is left to autovacuum (docs/SCALING.md)"
                        );
                        ctx.stop();
                    }
                    // Not known now (an outage at start): try as if allowed; a
                    // refused vacuum is logged once.
                    Err(_) => {
                        ctx.run_interval(EVERY, |act, ctx| act.round(ctx));
                    }
                }),
        );
    }
}

/// Stops vacuuming (shutdown); a vacuum in progress runs to its end.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopVacuum;

impl Handler<StopVacuum> for VacuumActor {
    type Result = ();

    fn handle(&mut self, _: StopVacuum, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
