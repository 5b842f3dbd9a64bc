//! Database access: the backend chosen from `database_url`, r2d2 pools,
//! embedded migrations. SQL itself lives in [`queries`].
//!
//! SQLite allows one writer at a time, and its busy handler sleeps in steps
//! of milliseconds when writers collide. So every write of the process goes
//! through a pool of exactly one connection (callers queue on r2d2's
//! condition variable, not on SQLite's lock), while reads use a separate
//! pool and, thanks to WAL, never wait for the writer.

pub mod models;
pub mod queries;
pub mod schema;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::QueryResult;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The connection every query takes.
pub type Conn = diesel::SqliteConnection;

type Manager = ConnectionManager<Conn>;

/// Migrations of the SQLite backend, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Milliseconds since the Unix epoch: the time unit of every column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A database failure, split by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had: the caller should retry later (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The schema is behind the binary: run `video-scheduler migrate`.
    #[error("database schema is not migrated")]
    NotMigrated,
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
}

/// Handle on the database: cheap to clone, shared by actors and handlers.
#[derive(Clone)]
pub struct Db {
    read: Pool<Manager>,
    write: Pool<Manager>,
}

/// Per-connection settings applied when r2d2 opens a connection.
#[derive(Debug)]
struct SqliteSettings;

impl CustomizeConnection<Conn, diesel::r2d2::Error> for SqliteSettings {
    fn on_acquire(&self, conn: &mut Conn) -> Result<(), diesel::r2d2::Error> {
        // WAL: readers never block the writer. synchronous=FULL: a commit is
        // on disk before it returns, so an acknowledged request survives a
        // power loss too. busy_timeout: another process (the CLI) may hold
        // the write lock for a moment.
        conn.batch_execute(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 10000;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl Db {
    /// Opens pools for `url` (`sqlite://PATH`). Creates the database file
    /// when missing; does not migrate.
    pub fn connect(url: &str, read_connections: u32) -> Result<Db, DbError> {
        let path = url.strip_prefix("sqlite://").ok_or_else(|| {
            DbError::Unavailable(format!(
                "unsupported database_url {url:?}: expected sqlite://PATH"
            ))
        })?;
        if path.is_empty() || path == ":memory:" {
            return Err(DbError::Unavailable(
                "database_url needs a file path: sqlite://PATH".into(),
            ));
        }
        let build = |size: u32| {
            Pool::builder()
                .max_size(size)
                .connection_timeout(Duration::from_secs(10))
                .connection_customizer(Box::new(SqliteSettings))
                .build(Manager::new(path))
                .map_err(|e| DbError::Unavailable(format!("cannot open {path}: {e}")))
        };
        let write = build(1)?;
        let read = build(read_connections)?;
        Ok(Db { read, write })
    }

    /// Runs the pending migrations; returns their names.
    pub fn migrate(&self) -> Result<Vec<String>, DbError> {
        let mut conn = self.write.get().map_err(unavailable)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| DbError::Migration(e.to_string()))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    }

    /// Reachable and migrated: what `/readyz` reports.
    pub fn ready(&self) -> Result<(), DbError> {
        let mut conn = self.read.get().map_err(unavailable)?;
        let pending = conn
            .has_pending_migration(MIGRATIONS)
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        if pending {
            return Err(DbError::NotMigrated);
        }
        queries::ping(&mut conn)?;
        Ok(())
    }

    /// Runs `f` on a read connection (blocking).
    pub fn read<T>(&self, f: impl FnOnce(&mut Conn) -> QueryResult<T>) -> Result<T, DbError> {
        let mut conn = self.read.get().map_err(unavailable)?;
        Ok(f(&mut conn)?)
    }

    /// Runs `f` on the writer connection (blocking).
    pub fn write<T>(&self, f: impl FnOnce(&mut Conn) -> QueryResult<T>) -> Result<T, DbError> {
        let mut conn = self.write.get().map_err(unavailable)?;
        Ok(f(&mut conn)?)
    }

    /// [`Db::read`] on the blocking thread pool, for async callers.
    pub async fn read_async<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut Conn) -> QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.clone();
        blocking(move || db.read(f)).await
    }

    /// [`Db::write`] on the blocking thread pool, for async callers.
    pub async fn write_async<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut Conn) -> QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.clone();
        blocking(move || db.write(f)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    actix_web::rt::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(DbError::Unavailable(format!("database task failed: {e}"))))
}

fn unavailable(e: diesel::r2d2::PoolError) -> DbError {
    DbError::Unavailable(e.to_string())
}
