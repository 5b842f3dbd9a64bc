//! ReplicationActor: reads what the database's replication promises (a
//! PostgreSQL primary's standbys, a Galera node's cluster) at start-up and
//! every minute, into `Db`'s reading (which `require_synchronous_replication`
//! checks on every record) and `/metrics`; and the database server's clock
//! against ours (acks check leases by the server's clock).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::db::Db;
use crate::metrics::Metrics;

/// How often the replication is read.
const EVERY: Duration = Duration::from_secs(60);

/// Reads the replication periodically.
pub(crate) struct ReplicationActor {
    db: Db,
    metrics: Arc<Metrics>,
    /// A reading is under way: the next tick skips (a slow server must not
    /// pile readings up).
    reading: bool,
}

impl ReplicationActor {
    pub(crate) fn new(db: Db, metrics: Arc<Metrics>) -> ReplicationActor {
        ReplicationActor {
            db,
            metrics,
            reading: false,
        }
    }

    fn read(&mut self, ctx: &mut Context<Self>) {
        if self.reading {
            return;
        }
        self.reading = true;
        let db = self.db.clone();
        let reading = actix_web::rt::task::spawn_blocking(move || {
            (db.refresh_replication(), db.clock_skew_ms())
        });
        ctx.spawn(reading.into_actor(self).map(|result, act, _| {
            act.reading = false;
            let (replication, skew) = match result {
                Ok((replication, skew)) => (Ok(replication), skew.ok()),
                Err(e) => (Err(e), None),
            };
            if let Some(skew) = skew {
                act.metrics.db.clock_skew.set(skew as f64 / 1000.0);
            }
            match replication {
                Ok(Ok(replication)) => act.metrics.set_replication(&replication),
                // An outage is logged once by `Db`; the last reading stays.
                Ok(Err(e)) => log::debug!("replication not read: {e}"),
                Err(e) => log::error!("reading the replication failed: {e}"),
            }
        }));
    }
}

impl Actor for ReplicationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.read(ctx);
        ctx.run_interval(EVERY, |act, ctx| act.read(ctx));
    }
}

/// Stops the readings (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopReplication;

impl Handler<StopReplication> for ReplicationActor {
    type Result = ();

    fn handle(&mut self, _: StopReplication, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
