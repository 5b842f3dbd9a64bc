//! What `/readyz` asks of the database: reachable, taking writes, its
//! replication able to commit, migrated.

use super::{queries, Db, DbError};

impl Db {
    /// Reachable, taking writes, and migrated: what `/readyz` reports. A
    /// server that refused a write stays unready until a write succeeds
    /// (reads prove nothing); a hot standby is asked directly, and so is
    /// the replication (commits waiting for a missing synchronous standby,
    /// a Galera node cut off or not synced, and with
    /// `require_synchronous_replication` no synchronous standby).
    pub fn ready(&self) -> Result<(), DbError> {
        // What the server says first (it names the cause best: a hot
        // standby, a missing synchronous standby), then whether a write
        // was refused or went unanswered since the last that succeeded.
        // The probes ask even while callers fail fast: a readiness check
        // must see the server's own state.
        let refusing = self.outage.refusing_writes();
        if let Some(what) = self.probe(queries::manage::read_only)? {
            return Err(DbError::Unavailable(what.to_owned()));
        }
        if let Some(why) = self.refresh_replication()?.blocks_commits() {
            return Err(DbError::Unavailable(why));
        }
        if let Some(refused) = self.durability_refusal() {
            return Err(refused);
        }
        if let Some(cause) = refusing {
            return Err(DbError::Unavailable(cause));
        }
        if !self.migrated(false)? {
            return Err(DbError::NotMigrated);
        }
        self.probe(queries::manage::ping)
    }
}
