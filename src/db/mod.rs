//! Database access: the backend chosen from `database_url`, r2d2 pools,
//! embedded migrations. SQL itself lives in [`queries`].
//!
//! SQLite allows one writer at a time, and its busy handler sleeps in steps
//! of milliseconds when writers collide. So every write of the process goes
//! through a pool of exactly one connection (callers queue on r2d2's
//! condition variable, not on SQLite's lock), while reads use a separate
//! pool and, thanks to WAL, never wait for the writer.

pub(crate) mod bulk;
mod conflicts;
pub(crate) mod connection;
mod failure;
mod health;
mod migrations;
pub mod models;
mod outage;
pub mod queries;
mod replication;
pub mod schema;
pub mod url;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::r2d2::{ManageConnection, Pool, PooledConnection};
use diesel::QueryResult;

use crate::clock::now_ms;
pub use connection::AnyConnection;
use connection::Manager;
use failure::{is_conflict, is_connection_lost, refuses_writes};
use url::redact;
pub use url::Backend;

/// The connection every query takes.
pub type Conn = AnyConnection;

/// A database failure, split by what the caller can do about it. Cheap to
/// clone: one failed group commit answers every caller in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// No connection could be had, or it was lost, or the server was too
    /// busy (a deadlock or lock wait that outlived its retries): the caller
    /// should retry later (HTTP 503). The text is the server's own words.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The transaction kept conflicting with other writers (deadlocks,
    /// Galera certification failures) through all its reruns: contention,
    /// not an outage. Retry later (HTTP 503); a claim is simply made again.
    #[error("database busy: the write kept conflicting with other writers ({0})")]
    Busy(String),
    /// The schema is behind the binary.
    #[error("database schema is behind, run `video-scheduler migrate`")]
    NotMigrated,
    #[error("migration failed: {0}")]
    Migration(String),
    /// The database answered with an error that retrying will not fix (a
    /// missing table, a constraint, a bug in a query): HTTP 500.
    #[error("database error: {0}")]
    Query(String),
}

impl DbError {
    /// Whether retrying later may succeed (answered 503, not 500).
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DbError::Unavailable(_) | DbError::Busy(_) | DbError::NotMigrated
        )
    }
}

/// Async forms of the blocking accessors: each runs its accessor on the
/// blocking thread pool, never on the reactor.
macro_rules! on_the_blocking_pool {
    ($($(#[$doc:meta])* $name:ident => $sync:ident, $closure:ident, $what:literal, $wrote:literal;)*) => {$(
        $(#[$doc])*
        pub async fn $name<T, F>(&self, f: F) -> Result<T, DbError>
        where
            F: $closure(&mut Conn) -> QueryResult<T> + Send + 'static,
            T: Send + 'static,
        {
            let db = self.clone();
            let call = blocking(move || db.$sync(f));
            match actix_web::rt::time::timeout(ANSWER_WITHIN, call).await {
                Ok(result) => result,
                Err(_) => Err(self.no_answer($what, ANSWER_WITHIN, $wrote)),
            }
        }
    )*};
}

/// Handle on the database: cheap to clone, shared by actors and handlers.
#[derive(Clone)]
pub struct Db {
    backend: Backend,
    /// When getting a connection last failed (epoch ms), 0 once one was had
    /// again. Shared by all clones: during an outage callers fail at once
    /// for [`FAST_FAIL_MS`] instead of each waiting for the pool's timeout.
    last_failure: Arc<AtomicI64>,
    /// The current outage, logged once when it starts (with its cause) and
    /// once when it ends, whoever (dispatcher, recorder, handler) meets it.
    outage: Arc<outage::Tracker>,
    /// Bumped when a connection is found lost (see [`connection::Tracked`]).
    generation: Arc<AtomicU64>,
    /// Write conflicts by statement (see [`Db::labeled`]), shared by all
    /// clones.
    conflicts: Arc<conflicts::Conflicts>,
    /// What this handle's writes are called in conflict counts and logs.
    label: &'static str,
    /// The replication as last read, shared by all clones.
    replication: Arc<Mutex<models::Replication>>,
    /// The last clock reading found the server's clock a second or more off
    /// ours (logged once each way).
    clock_skewed: Arc<std::sync::atomic::AtomicBool>,
    /// `require_synchronous_replication`: records are refused while a
    /// commit may be lost in a failover.
    require_synchronous: bool,
    read: Pool<Manager>,
    /// On SQLite a pool of one connection: the single writer. Elsewhere the
    /// same pool as `read`: the server arbitrates concurrent writers.
    write: Pool<Manager>,
    /// For [`Db::write_relaxed`]: on SQLite the same single writer (switched
    /// to `synchronous = NORMAL`); on PostgreSQL a pool of its own, so that
    /// records cannot starve the pipeline, committing durably: an ack holds
    /// a receipt, and one undone by a server crash would be redone as
    /// `missing` (README, "Guarantees").
    relaxed: Pool<Manager>,
}

impl Db {
    /// Opens pools for `url` (`sqlite://PATH`, `mysql://...`,
    /// `postgres://...`). Creates a missing SQLite file; does not migrate.
    pub fn connect(url: &str, connections: u32) -> Result<Db, DbError> {
        let (backend, driver_url) = Backend::from_url(url).map_err(DbError::Unavailable)?;
        let generation = Arc::new(AtomicU64::new(0));
        let manager = Manager {
            backend,
            driver_url,
            generation: generation.clone(),
        };
        // One connection first, so that a wrong password or host is reported
        // at once with the server's own words, not after the pool's timeout.
        manager
            .connect()
            .map_err(|e| DbError::Unavailable(format!("cannot connect to {}: {e}", redact(url))))?;
        let build = |size: u32, manager: Manager| {
            Pool::builder()
                .max_size(size)
                .min_idle(Some(1))
                .connection_timeout(CONNECTION_TIMEOUT)
                // No `SELECT 1` before each use: a connection that failed
                // is marked and dropped instead (see `Tracked`).
                .test_on_check_out(false)
                // Failures surface as errors of the caller, which logs them
                // once per outage; r2d2 would log every retry.
                .error_handler(Box::new(diesel::r2d2::NopErrorHandler))
                .build(manager)
                .map_err(|e| {
                    DbError::Unavailable(format!("cannot connect to {}: {e}", redact(url)))
                })
        };
        let read = build(connections, manager.clone())?;
        let (write, relaxed) = match backend {
            Backend::Sqlite => {
                let writer = build(1, manager)?;
                (writer.clone(), writer)
            }
            Backend::Postgres => {
                let relaxed = build(connections, manager)?;
                (read.clone(), relaxed)
            }
            Backend::Mysql => (read.clone(), read.clone()),
        };
        Ok(Db {
            backend,
            last_failure: Arc::new(AtomicI64::new(0)),
            outage: Arc::new(outage::Tracker::default()),
            generation,
            conflicts: Arc::default(),
            label: "other",
            replication: Arc::default(),
            clock_skewed: Arc::default(),
            require_synchronous: false,
            read,
            write,
            relaxed,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This handle with its writes called `statement` (`claim`, `ack`,
    /// `record`) where conflicts are counted and logged.
    pub fn labeled(&self, statement: &'static str) -> Db {
        Db {
            label: statement,
            ..self.clone()
        }
    }

    /// Write conflicts so far, by statement (for `/metrics`).
    pub(crate) fn conflicts(&self) -> Vec<(&'static str, u64)> {
        self.conflicts.totals()
    }

    /// Whether writes conflicted with other writers in the last minute.
    pub(crate) fn contended(&self) -> bool {
        self.conflicts.recent()
    }

    /// A call (`what`: a record, a claim, a read) got no answer within
    /// `after`: the server or the network stopped answering (a partition,
    /// a lost synchronous standby). An outage like a lost connection,
    /// logged once, callers failing fast meanwhile; after a write (`wrote`)
    /// only a write that succeeds ends it. The call may still complete.
    pub(crate) fn no_answer(&self, what: &str, after: Duration, wrote: bool) -> DbError {
        let cause = format!("no answer from the database within {after:?} ({what})");
        self.last_failure.store(now_ms(), Ordering::Relaxed);
        let started = Instant::now()
            .checked_sub(after)
            .unwrap_or_else(Instant::now);
        match wrote {
            true => self.outage.refused_write(&cause, started),
            false => self.outage.failed(&cause, started),
        }
        DbError::Unavailable(cause)
    }

    /// [`Db::write_relaxed`] on a thread of its own, waited for until
    /// `deadline`: a blocking caller (an executor's ack) whose server or
    /// network stopped answering gets an outage (`Db::no_answer`) by then, instead of
    /// waiting as long as the partition lasts (a connection whose bytes are
    /// taken but never answered is not dropped by TCP). The call may still
    /// complete later, and is then fenced like any late write.
    pub fn write_relaxed_by<T, F>(&self, what: &str, deadline: Instant, f: F) -> Result<T, DbError>
    where
        F: FnMut(&mut Conn) -> QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.clone();
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let started = Instant::now();
        std::thread::Builder::new()
            .name("db-call".into())
            .spawn(move || {
                let _ = answer.send(db.write_relaxed(f));
            })
            .map_err(|e| DbError::Unavailable(format!("no thread for {what}: {e}")))?;
        match answered.recv_timeout(deadline.saturating_duration_since(started)) {
            Ok(result) => result,
            Err(_) => Err(self.no_answer(what, started.elapsed(), true)),
        }
    }

    /// Why the database is unavailable, in the server's words, while an
    /// outage is known; `None` otherwise. Answers at once.
    pub(crate) fn outage_cause(&self) -> Option<String> {
        self.outage.current_cause()
    }

    /// Runs `f` on a read connection (blocking).
    pub fn read<T>(&self, f: impl FnOnce(&mut Conn) -> QueryResult<T>) -> Result<T, DbError> {
        self.read_with(true, f)
    }

    /// [`Db::read`] that asks the server even while callers fail fast (a
    /// readiness check, the replication's reading).
    fn probe<T>(&self, f: impl FnOnce(&mut Conn) -> QueryResult<T>) -> Result<T, DbError> {
        self.read_with(false, f)
    }

    fn read_with<T>(
        &self,
        fail_fast: bool,
        f: impl FnOnce(&mut Conn) -> QueryResult<T>,
    ) -> Result<T, DbError> {
        let started = Instant::now();
        let mut conn = self.get(&self.read, fail_fast)?;
        let result = f(&mut conn);
        self.settle(&mut conn, started, false, result)
    }

    /// Runs `f`, a whole transaction, on a writer connection (blocking).
    ///
    /// MySQL and PostgreSQL abort one of two transactions that deadlock
    /// (instances inserting overlapping ids), and Galera one of two that
    /// changed the same rows on different nodes; the aborted one changed
    /// nothing, so it is run again after a random, growing pause, up to 10
    /// times in all; then [`DbError::Busy`].
    pub fn write<T>(&self, f: impl FnMut(&mut Conn) -> QueryResult<T>) -> Result<T, DbError> {
        self.write_on(&self.write, false, f)
    }

    /// [`Db::write`] for writes whose loss in a crash is harmless because
    /// the work they record is redone safely: claims (the row becomes due
    /// again), acks (the files are already gone: found missing), releases.
    /// On SQLite their commits do not wait for the disk (`synchronous =
    /// NORMAL`): a process crash loses none of them; a power loss may lose
    /// the last few. Elsewhere they commit durably (README, "Guarantees").
    pub fn write_relaxed<T>(
        &self,
        f: impl FnMut(&mut Conn) -> QueryResult<T>,
    ) -> Result<T, DbError> {
        self.write_on(&self.relaxed, true, f)
    }

    fn write_on<T>(
        &self,
        pool: &Pool<Manager>,
        relaxed: bool,
        mut f: impl FnMut(&mut Conn) -> QueryResult<T>,
    ) -> Result<T, DbError> {
        let started = Instant::now();
        let mut conn = self.get(pool, true)?;
        if let Err(e) = conn.set_relaxed_sync(relaxed) {
            return self.settle(&mut conn, started, true, Err(e));
        }
        let mut attempt = 1;
        loop {
            match f(&mut conn) {
                Err(e) if attempt < WRITE_ATTEMPTS && is_conflict(&e) => {
                    self.conflicts.seen(self.label, &e.to_string());
                    std::thread::sleep(conflicts::pause(attempt));
                    attempt += 1;
                }
                result => return self.settle(&mut conn, started, true, result),
            }
        }
    }

    /// A connection from `pool`, failing fast (if `fail_fast`) while the
    /// database is known to be unreachable.
    fn get(
        &self,
        pool: &Pool<Manager>,
        fail_fast: bool,
    ) -> Result<PooledConnection<Manager>, DbError> {
        let started = Instant::now();
        let failed_at = self.last_failure.load(Ordering::Relaxed);
        if fail_fast && failed_at != 0 && now_ms() - failed_at < FAST_FAIL_MS {
            self.outage.failed_again();
            return Err(DbError::Unavailable(format!(
                "{}; retrying shortly",
                self.outage.cause()
            )));
        }
        let mut checked = 0;
        loop {
            let mut conn = match pool.get() {
                Ok(conn) => conn,
                Err(e) => {
                    self.last_failure.store(now_ms(), Ordering::Relaxed);
                    // r2d2 shows the last connection error: the server's words
                    // (a wrong password, an unknown database, refused).
                    let cause = e.to_string();
                    self.outage.failed(&cause, started);
                    return Err(DbError::Unavailable(cause));
                }
            };
            // A connection older than the last loss may be dead too: check it
            // once. Fresh ones are used without a round trip.
            let generation = self.generation.load(Ordering::Relaxed);
            if conn.generation < generation {
                if !conn.ping() {
                    conn.mark_broken();
                    checked += 1;
                    if checked > pool.max_size() {
                        self.last_failure.store(now_ms(), Ordering::Relaxed);
                        let cause = "no working connection in the pool".to_owned();
                        self.outage.failed(&cause, started);
                        return Err(DbError::Unavailable(cause));
                    }
                    continue;
                }
                conn.generation = generation;
            }
            if failed_at != 0 {
                self.last_failure.store(0, Ordering::Relaxed);
            }
            return Ok(conn);
        }
    }

    /// Turns the result of work on `conn` into ours: a lost connection is
    /// marked for disposal (and every older connection for a check) and is
    /// an outage; so is a server that takes no writes (its connection is
    /// dropped, so that the next one may reach a promoted or healed
    /// server). A success of work `started` after an outage began ends it;
    /// the second kind only a write (`wrote`) ends.
    fn settle<T>(
        &self,
        conn: &mut connection::Tracked,
        started: Instant,
        wrote: bool,
        result: QueryResult<T>,
    ) -> Result<T, DbError> {
        match result {
            Ok(value) => {
                self.outage.succeeded(started, wrote);
                Ok(value)
            }
            Err(e) => Err(self.failed(conn, started, e)),
        }
    }

    /// [`Db::settle`]'s failures: which of them are outages, and what the
    /// connection that met one is worth.
    fn failed(
        &self,
        conn: &mut connection::Tracked,
        started: Instant,
        e: diesel::result::Error,
    ) -> DbError {
        if let Some(cause) = refuses_writes(&e) {
            conn.mark_broken();
            self.outage.refused_write(cause, started);
            DbError::Unavailable(cause.to_owned())
        } else if is_connection_lost(&e) {
            conn.mark_broken();
            self.generation.fetch_add(1, Ordering::Relaxed);
            let cause = e.to_string();
            self.outage.failed(&cause, started);
            DbError::Unavailable(cause)
        } else if is_conflict(&e) {
            self.conflicts.seen(self.label, &e.to_string());
            DbError::Busy(e.to_string())
        } else {
            DbError::Query(e.to_string())
        }
    }

    on_the_blocking_pool! {
        /// [`Db::read`] on the blocking thread pool, for async callers,
        /// answered within [`ANSWER_WITHIN`].
        read_async => read, FnOnce, "a read", false;
        /// [`Db::write_relaxed`] on the blocking thread pool, for async
        /// callers, answered within [`ANSWER_WITHIN`].
        write_relaxed_async => write_relaxed, FnMut, "a write", true;
        /// [`Db::write`] on the blocking thread pool, for async callers,
        /// answered within [`ANSWER_WITHIN`].
        write_async => write, FnMut, "a write", true;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    actix_web::rt::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(DbError::Query(format!("database task failed: {e}"))))
}

/// How long a caller waits for a connection before the database counts as
/// unavailable (HTTP 503).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an async caller waits for any database call (a connection, the
/// statements, the commit) before it counts as an outage: the pool's own
/// wait is 3 s, a PostgreSQL connection found dead takes about 10 s
/// (keepalives, `tcp_user_timeout`), and nothing bounds a MariaDB
/// statement caught by a partition but this. Well below the default
/// lease (60 s); records (`record_timeout_ms`) and claims (a quarter of
/// the lease) have shorter bounds of their own.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// After a failed attempt to connect, how long other callers fail at once.
const FAST_FAIL_MS: i64 = 500;

/// Runs of a write transaction that the server rolled back because of a
/// conflict, the first included.
const WRITE_ATTEMPTS: u32 = 10;
