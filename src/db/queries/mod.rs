//! Every SQL statement of the scheduler, one file per job. Plain functions
//! over a connection, called from actors, handlers and the CLI, and
//! testable without them:
//! - [`record`]: new requests (group commit, idempotent), and requests
//!   naming paths of their own (merged when recorded again).
//! - [`claim`]: leasing due rows to an instance, and giving them back.
//! - [`ack`]: after a batch ran: done rows removed with their receipts,
//!   failed ones rescheduled or failed for good, the kept counts.
//! - [`manage`]: what operators do: look up, list, cancel, retry, in bulk.
//! - [`counts`]: the kept counts and the stats read from them.
//! - [`receipts`], [`controls`]: receipts read, exported and pruned; the
//!   pause switch and the pruner's lease.
//! - [`replication`]: what the server's replication promises (standbys,
//!   a Galera node's cluster).
//! - [`vacuum`]: PostgreSQL's queue table vacuumed as fast as it churns.
//! - `prepared`: hand-written statements kept prepared per connection.
//!
//! Locking, in one place:
//! - SQLite: all writes of one process go through a single writer connection
//!   ([`super::Db::write`]). Every write transaction here starts with a
//!   write, so it takes SQLite's write lock first and never has to upgrade a
//!   read lock (the case that needs `BEGIN IMMEDIATE`); a second process
//!   (the CLI) waits on `busy_timeout`.
//! - A claim moves `not_before` to the lease expiry, so a row whose owner
//!   died becomes due again by itself, and the claim query needs a single
//!   condition served by one index range scan. On SQLite and PostgreSQL it
//!   is one `UPDATE ... WHERE id IN (due ids) RETURNING` (PostgreSQL:
//!   `id = ANY(ARRAY(due ids))`, never a join); MySQL has no
//!   `UPDATE ... RETURNING`, so it selects then updates in one short
//!   transaction. MySQL and PostgreSQL lock the due rows with
//!   `FOR UPDATE SKIP LOCKED`: concurrent instances skip each other's rows
//!   instead of waiting for them or claiming them twice.
//! - Acks are fenced by `locked_by = owner` and by a lease that has not
//!   expired by the database's clock (`leased!`): a row re-claimed by
//!   someone else after our lease expired is left to them, and so is one
//!   whose lease ran out while nobody took it yet (it is due again). Rows
//!   are touched by primary key, ids sorted, in short transactions, so
//!   instances do not deadlock.
//!
//! Where the backends differ, one function matches on the connection (or a
//! macro spells the statement once for several backends) and each arm says
//! why.

use diesel::prelude::*;

use super::Conn;

/// The start of every INSERT of receipts, its columns in order (a
/// macro, for `concat!`: prepared statements are `&'static str`). Each
/// copies the row's `claims` last.
macro_rules! insert_receipts {
    () => {
        "INSERT INTO video_del_receipt (id, requested_at, completed_at, attempts, deleted, \
           missing, acked_by, source, request_id, targets, claims) "
    };
}

/// The database's clock in epoch milliseconds, as SQL (one spelling per
/// backend, for `concat!`).
macro_rules! db_now_ms {
    (sqlite) => {
        "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
    };
    (postgres) => {
        "CAST(extract(epoch FROM statement_timestamp()) * 1000 AS BIGINT)"
    };
    (mysql) => {
        "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"
    };
}

/// [`db_now_ms!`] for `conn`'s backend, for statements built at run time.
pub(crate) fn db_now_ms(conn: &Conn) -> &'static str {
    match conn {
        #[cfg(feature = "sqlite")]
        super::AnyConnection::Sqlite(_) => db_now_ms!(sqlite),
        #[cfg(feature = "postgres")]
        super::AnyConnection::Pg(_) => db_now_ms!(postgres),
        #[cfg(feature = "mysql")]
        super::AnyConnection::Mysql(_) => db_now_ms!(mysql),
    }
}

/// The condition of every ack's statement on a row: still leased to the
/// acker (`locked_by = ?`) and the lease not expired by the database's
/// clock, whatever the instance's own clock says. The lease's end was set
/// by the claiming instance's clock: a skew between the two shortens or
/// lengthens the lease by as much (`video_scheduler_db_clock_skew_seconds`
/// shows it, and a skew of a second or more is logged). MySQL's acks,
/// written with diesel's DSL, compare with `db_now_ms!` themselves.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! leased {
    ($backend:tt) => {
        concat!("locked_by = ? AND locked_until > ", db_now_ms!($backend))
    };
}

/// A page of a boxed `query` in `id` order after `after`, at most `limit`
/// rows: keyset pagination, served by the primary key or an index ending
/// in the id.
macro_rules! keyset_page {
    ($conn:expr, $query:expr, $id:expr, $after:expr, $limit:expr) => {{
        let mut query = $query.order($id.asc()).limit($limit as i64);
        if let Some(after) = $after {
            query = query.filter($id.gt(after));
        }
        query.load($conn)
    }};
}

pub mod ack;
pub mod announce;
pub mod claim;
pub mod controls;
pub mod counts;
pub mod events;
pub mod manage;
// MySQL's statements are prepared anew each time (see `claim`).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod prepared;
pub mod receipts;
pub mod record;
pub mod replication;
pub mod vacuum;

/// Runs `run` in a transaction, except on PostgreSQL when it is a single
/// statement (`one_statement`), which commits atomically by itself: no
/// BEGIN/COMMIT round trips. (On SQLite a transaction costs no round trip,
/// and MySQL's statements here are never one.)
fn atomically<T>(
    conn: &mut Conn,
    one_statement: bool,
    run: impl FnOnce(&mut Conn) -> QueryResult<T>,
) -> QueryResult<T> {
    if one_statement && is_postgres(conn) {
        run(conn)
    } else {
        conn.transaction(run)
    }
}

fn is_postgres(conn: &Conn) -> bool {
    conn.backend() == crate::db::Backend::Postgres
}
