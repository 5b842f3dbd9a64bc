//! The backend, chosen from `database_url` at run time, and how its
//! connections are made.
//!
//! One binary built with several backend features serves all of them through
//! diesel's derived `MultiConnection`. Its own `establish` tries each backend
//! in turn and reports only the last error, so we pick the variant from the
//! URL scheme ourselves and report the real error (a wrong password says so).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{Error, ManageConnection, R2D2Connection};
use diesel::Connection;

use super::url::Backend;

/// Every backend compiled into this binary, behind one connection type.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    #[cfg(feature = "postgres")]
    Pg(diesel::PgConnection),
    #[cfg(feature = "mysql")]
    Mysql(diesel::MysqlConnection),
    #[cfg(feature = "sqlite")]
    Sqlite(diesel::SqliteConnection),
}

impl AnyConnection {
    /// The backend this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(_) => Backend::Postgres,
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(_) => Backend::Mysql,
            #[cfg(feature = "sqlite")]
            AnyConnection::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// r2d2 manager that opens the variant of [`AnyConnection`] named by the URL
/// and applies its session settings.
#[derive(Debug, Clone)]
pub(crate) struct Manager {
    pub backend: Backend,
    /// What the driver takes: a path for SQLite, the URL otherwise.
    pub driver_url: String,
    /// Bumped by [`super::Db`] whenever a connection is found lost: every
    /// connection made before is checked once before its next use.
    pub generation: Arc<AtomicU64>,
}

impl Manager {
    fn open(&self) -> diesel::ConnectionResult<AnyConnection> {
        let conn = match self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let mut conn = diesel::SqliteConnection::establish(&self.driver_url)?;
                // busy_timeout first: another connection or process (the
                // CLI, a second instance, a predecessor still closing) may
                // hold a lock for a moment, even while we switch to WAL.
                // WAL: readers never block the writer. synchronous=FULL: a
                // commit is on disk before it returns, so an acknowledged
                // request survives a power loss too. temp_store=MEMORY: the
                // statement journal a multi-row statement inside a
                // transaction needs (the ack's receipts) is kept in memory,
                // not created as a temporary file on every ack.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 10000;
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = FULL;
                     PRAGMA temp_store = MEMORY;",
                )
                .map_err(setup_failed)?;
                AnyConnection::Sqlite(conn)
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => AnyConnection::Mysql(open_mysql(&self.driver_url)?),
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let mut conn = diesel::PgConnection::establish(&self.driver_url)?;
                // Our statements stay prepared (queries/prepared.rs), and
                // PostgreSQL would switch a prepared statement to a generic
                // plan after five runs: for the claim (`not_before <= $n
                // ORDER BY not_before LIMIT $m`) that plan was slower than one
                // made for the actual values (a drain 15% slower). Planning
                // each run is what one-shot statements did anyway; the
                // parse round trip stays saved.
                conn.batch_execute("SET plan_cache_mode = force_custom_plan")
                    .map_err(setup_failed)?;
                // Index scans only (where an index serves; PostgreSQL
                // still scans a table no index serves). A queue table is
                // nearly empty whenever the drain keeps up, autovacuum (and
                // our own vacuum, pipeline/vacuum.rs) then records it as
                // holding a few rows, and until the next ANALYZE the
                // planner believes every statement on it reads a few rows,
                // however many a burst has brought since. On such figures
                // it chose a bitmap scan of every due row and a sort for a
                // claim (550 ms for a claim of 500 behind a million due
                // rows, against 11 ms through the index in order), and a
                // sequential scan with a sort for claims and acks (a
                // second each in a soak). Every statement here is meant to
                // search or walk an index, in order where it pages
                // (BENCHMARKS.md, the soak's PostgreSQL stall). Operator
                // commands over the whole table (`stats --recount`,
                // `cancel --invalid`) walk an index instead of the table.
                conn.batch_execute("SET enable_bitmapscan = off; SET enable_seqscan = off")
                    .map_err(setup_failed)?;
                // As on MariaDB: a transaction whose client went silent
                // does not hold its locks for longer than this.
                conn.batch_execute(IDLE_TRANSACTION_POSTGRES)
                    .map_err(setup_failed)?;
                AnyConnection::Pg(conn)
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(diesel::ConnectionError::BadConnection(format!(
                    "backend {other:?} is not compiled in"
                )))
            }
        };
        Ok(conn)
    }
}

/// A MariaDB/MySQL connection with its session settings.
#[cfg(feature = "mysql")]
fn open_mysql(url: &str) -> diesel::ConnectionResult<diesel::MysqlConnection> {
    let mut conn = diesel::MysqlConnection::establish(url)?;
    // READ COMMITTED: locking reads (the claim) take no gap
    // locks, so concurrent inserts and claims do not block or
    // deadlock each other on InnoDB's next-key locks.
    conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .map_err(setup_failed)?;
    // A transaction left open by a client that stopped talking
    // (cut off between a claim's SELECT ... FOR UPDATE and its
    // COMMIT) would keep its rows locked, and every other
    // instance's `SKIP LOCKED` would skip them, for as long as
    // the server keeps the connection (`wait_timeout`, 8 h).
    // MariaDB ends such a transaction after this many idle
    // seconds; ours never pause between statements. MySQL has
    // no such setting: the error is ignored there.
    let _ = conn.batch_execute(IDLE_TRANSACTION_MARIADB);
    // On a Galera node a read may run before the node has
    // applied what another node committed: a record made
    // through one instance would be missing from a read
    // through another (404), and a claim would see rows
    // already leased elsewhere (a certification conflict at
    // commit). `wsrep_sync_wait = 1`: every read first waits
    // until the node has applied every write the cluster had
    // committed when it began (causal reads).
    if super::queries::manage::galera_node(&mut conn).map_err(setup_failed)? {
        conn.batch_execute("SET SESSION wsrep_sync_wait = 1")
            .map_err(setup_failed)?;
    }
    Ok(conn)
}

/// How long a transaction may sit idle between two statements before the
/// server ends it: our transactions never pause, so only a client that
/// stopped answering (a partition) reaches it, and its locks are freed
/// well before its leases end (`lease_secs`, 60 s by default).
#[cfg(feature = "mysql")]
const IDLE_TRANSACTION_MARIADB: &str = "SET SESSION idle_transaction_timeout = 5";
#[cfg(feature = "postgres")]
const IDLE_TRANSACTION_POSTGRES: &str = "SET idle_in_transaction_session_timeout = '5s'";

fn setup_failed(e: diesel::result::Error) -> diesel::ConnectionError {
    diesel::ConnectionError::BadConnection(format!("session setup failed: {e}"))
}

/// A pooled connection that remembers a failure which may have left it
/// unusable (the server closed it, the network dropped it). r2d2 then drops
/// it on return instead of handing it out again. With the generation check
/// of [`super::Db`] this replaces a `SELECT 1` before every use: one round
/// trip saved per checkout, and after an outage each old connection is
/// checked once instead of failing a request.
pub(crate) struct Tracked {
    conn: AnyConnection,
    broken: bool,
    /// The [`Manager::generation`] this connection is known good for.
    pub generation: u64,
    /// SQLite only: the connection runs with `synchronous = NORMAL`.
    #[cfg(feature = "sqlite")]
    relaxed_sync: bool,
}

impl Tracked {
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// A round trip proving the connection still works.
    pub(crate) fn ping(&mut self) -> bool {
        self.conn.ping().is_ok()
    }

    /// SQLite's one writer serves durable and relaxed writes: switch its
    /// `synchronous` setting when the kind of write changes. In WAL mode,
    /// NORMAL survives a crash of the process but may lose the last commits
    /// on a power loss; FULL survives both. A no-op on other backends.
    pub(crate) fn set_relaxed_sync(&mut self, relaxed: bool) -> diesel::QueryResult<()> {
        #[cfg(feature = "sqlite")]
        #[allow(irrefutable_let_patterns)]
        if let AnyConnection::Sqlite(c) = &mut self.conn {
            if self.relaxed_sync != relaxed {
                c.batch_execute(if relaxed {
                    "PRAGMA synchronous = NORMAL"
                } else {
                    "PRAGMA synchronous = FULL"
                })?;
                self.relaxed_sync = relaxed;
            }
        }
        let _ = relaxed;
        Ok(())
    }
}

impl std::ops::Deref for Tracked {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl ManageConnection for Manager {
    type Connection = Tracked;
    type Error = Error;

    fn connect(&self) -> Result<Tracked, Error> {
        // A driver's words may quote what it was given: no password in
        // them goes further (logs, `/readyz`, the start-up error).
        let conn = self.open().map_err(|e| {
            Error::ConnectionError(diesel::ConnectionError::BadConnection(super::url::scrub(
                &e.to_string(),
                &self.driver_url,
            )))
        })?;
        Ok(Tracked {
            conn,
            broken: false,
            generation: self.generation.load(Ordering::Relaxed),
            #[cfg(feature = "sqlite")]
            relaxed_sync: false,
        })
    }

    fn is_valid(&self, conn: &mut Tracked) -> Result<(), Error> {
        conn.conn.ping().map_err(Error::QueryError)
    }

    fn has_broken(&self, conn: &mut Tracked) -> bool {
        std::thread::panicking() || conn.broken || conn.conn.is_broken()
    }
}
