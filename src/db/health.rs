//! What `/readyz` asks of the database: reachable, taking writes, its
//! replication able to commit, migrated.

#[cfg(feature = "mysql")]
use super::MYSQL_MIGRATIONS;
#[cfg(feature = "postgres")]
use super::POSTGRES_MIGRATIONS;
#[cfg(feature = "sqlite")]
use super::SQLITE_MIGRATIONS;
use super::{queries, AnyConnection, Db, DbError};
use diesel_migrations::MigrationHarness;

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

    /// Whether every migration of this binary is applied.
    pub fn is_migrated(&self) -> Result<bool, DbError> {
        self.migrated(true)
    }

    /// [`Db::is_migrated`], failing fast during an outage or not.
    pub(super) fn migrated(&self, fail_fast: bool) -> Result<bool, DbError> {
        let mut conn = self.get(&self.read, fail_fast)?;
        let pending = match &mut **conn {
            #[cfg(feature = "sqlite")]
            AnyConnection::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(c) => c.has_pending_migration(MYSQL_MIGRATIONS),
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
        };
        pending
            .map(|pending| !pending)
            .map_err(|e| DbError::Query(format!("reading the applied migrations: {e}")))
    }

    /// Fails with [`DbError::NotMigrated`] unless the schema is current: for
    /// commands that must not change a schema that running instances share.
    pub(crate) fn require_migrated(&self) -> Result<(), DbError> {
        match self.is_migrated()? {
            true => Ok(()),
            false => Err(DbError::NotMigrated),
        }
    }
}
