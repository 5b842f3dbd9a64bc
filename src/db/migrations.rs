//! The schema: migrations per backend, compiled into the binary, run at
//! start-up (or by `video-scheduler migrate`), and the check that the
//! schema is current (`/readyz`, commands that must not change it).

use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{queries, AnyConnection, Db, DbError};

#[cfg(feature = "sqlite")]
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "mysql")]
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
#[cfg(feature = "postgres")]
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

impl Db {
    /// Runs the pending migrations; returns their names.
    ///
    /// A server that takes no writes (a hot standby during a failover,
    /// reached by a URL without `target_session_attrs=read-write`) cannot
    /// migrate: if it already has every migration, nothing is to be done
    /// and the server starts unready (records 503, `/readyz` naming the
    /// read-only server) until it takes writes, instead of exiting and
    /// being restarted in a loop; with migrations pending it is an error
    /// that says so.
    pub fn migrate(&self) -> Result<Vec<String>, DbError> {
        if let Some(why) = self.probe(queries::manage::read_only)? {
            return match self.migrated_read_only()? {
                true => {
                    log::warn!(
                        "{why}: every migration is applied; starting, unready until the \
                         server takes writes"
                    );
                    Ok(Vec::new())
                }
                false => Err(DbError::Migration(format!(
                    "{why}: migrations are pending and cannot be applied there"
                ))),
            };
        }
        let mut conn = self.get(&self.write, true)?;
        let applied = match &mut **conn {
            #[cfg(feature = "sqlite")]
            AnyConnection::Sqlite(c) => names(c.run_pending_migrations(SQLITE_MIGRATIONS)),
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(c) => names(c.run_pending_migrations(MYSQL_MIGRATIONS)),
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(c) => names(c.run_pending_migrations(POSTGRES_MIGRATIONS)),
        };
        applied.map_err(|e| DbError::Migration(e.to_string()))
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

    /// Whether every migration of this binary is applied, read from a
    /// server that takes no writes (a hot standby): without diesel's set-up
    /// statement (a `CREATE TABLE IF NOT EXISTS`, which a standby refuses
    /// even when the table exists). Only PostgreSQL's probe finds a server
    /// read-only before writing; other backends answer `false`.
    pub(super) fn migrated_read_only(&self) -> Result<bool, DbError> {
        self.probe(|conn| match conn {
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(c) => {
                use diesel::migration::MigrationSource;
                use diesel::RunQueryDsl;
                #[derive(diesel::QueryableByName)]
                struct Applied {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    version: String,
                }
                let applied: std::collections::HashSet<String> =
                    diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
                        .load::<Applied>(c)?
                        .into_iter()
                        .map(|a| a.version)
                        .collect();
                let embedded = MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS)
                    .map_err(diesel::result::Error::QueryBuilderError)?;
                Ok(embedded
                    .iter()
                    .all(|m| applied.contains(&m.name().version().to_string())))
            }
            #[allow(unreachable_patterns)]
            _ => Ok(false),
        })
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

type MigrationResult<'a> = diesel::migration::Result<Vec<diesel::migration::MigrationVersion<'a>>>;

fn names(applied: MigrationResult<'_>) -> diesel::migration::Result<Vec<String>> {
    applied.map(|versions| versions.iter().map(ToString::to_string).collect())
}
