//! What the database's replication promises, as [`Db`] last read it: the
//! readiness check and, with `require_synchronous_replication`, every record
//! look at it (`pipeline::replication` reads it every minute).

use std::sync::atomic::Ordering;

use super::models::Replication;
use super::{Db, DbError};

/// A clock skew between the database server and this instance worth a
/// line in the log.
const CLOCK_SKEW_LOGGED_MS: i64 = 1000;

impl Db {
    /// This handle refusing records while a commit may be lost in a
    /// failover (`require_synchronous_replication`).
    pub fn requiring_synchronous_replication(self, on: bool) -> Db {
        Db {
            require_synchronous: on,
            ..self
        }
    }

    /// Reads the replication from the server and keeps it; says so in the
    /// log when what it promises changes.
    pub fn refresh_replication(&self) -> Result<Replication, DbError> {
        let now = self.probe(super::queries::replication::read)?;
        let mut kept = self.replication.lock().unwrap_or_else(|e| e.into_inner());
        let concern = |r: &Replication| r.blocks_commits().or_else(|| r.may_lose_commits());
        match (concern(&kept), concern(&now)) {
            (was, Some(is)) if was.as_ref() != Some(&is) => log::warn!("replication: {is}"),
            (Some(_), None) => log::info!("replication: {now:?}"),
            _ => {}
        }
        *kept = now.clone();
        Ok(now)
    }

    /// How far the database server's clock is ahead of ours (negative:
    /// behind), in milliseconds, measured against the middle of the round
    /// trip. Acks check leases by the server's clock, claims set them by
    /// ours: a skew of a second or more is logged (once each way).
    pub fn clock_skew_ms(&self) -> Result<i64, DbError> {
        let before = crate::clock::now_ms();
        let server = self.probe(super::queries::replication::clock_ms)?;
        let after = crate::clock::now_ms();
        let skew = server - (before + after) / 2;
        let skewed = skew.abs() >= CLOCK_SKEW_LOGGED_MS;
        if skewed != self.clock_skewed.swap(skewed, Ordering::Relaxed) {
            match skewed {
                true => log::warn!(
                    "the database server's clock is {skew} ms off this instance's: \
                     leases last that much less or more (synchronize the clocks with NTP)"
                ),
                false => log::info!("the database server's clock agrees with ours again"),
            }
        }
        Ok(skew)
    }

    /// The replication as last read.
    pub(crate) fn replication(&self) -> Replication {
        self.replication
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why a record must not be committed now: only with
    /// `require_synchronous_replication`, while the last reading says a
    /// commit may be lost in a failover.
    pub(crate) fn durability_refusal(&self) -> Option<DbError> {
        if !self.require_synchronous {
            return None;
        }
        self.replication()
            .may_lose_commits()
            .map(DbError::Unavailable)
    }
}
