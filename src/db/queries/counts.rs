//! The kept counts (`video_del_counts`): queued (pending and running) and
//! failed requests, and receipts. Every transaction that changes them adds
//! its changes to one of 16 rows, chosen at random, in the same
//! transaction: a count is always exact, and concurrent instances rarely
//! wait for each other on the same row. The row is the last thing such a
//! transaction locks, so it cannot take part in a lock cycle.

use diesel::prelude::*;

use super::super::models::{CountDelta, State, Stats};
use super::super::schema::video_del_counts::dsl as c;
use super::super::schema::video_del_rec::dsl as t;
use super::super::schema::{video_del_rec, video_del_receipt};
use super::super::{AnyConnection, Conn};
use super::controls;

/// Rows of `video_del_counts` (as the migration creates them).
pub(crate) const SHARDS: i32 = 16;

/// The row a transaction adds its changes to.
pub(crate) fn shard() -> i32 {
    fastrand::i32(0..SHARDS)
}

/// Adds `delta` to the kept counts (nothing when there is nothing to add).
pub(crate) fn add(conn: &mut Conn, delta: CountDelta) -> QueryResult<()> {
    if delta == CountDelta::default() {
        return Ok(());
    }
    diesel::update(c::video_del_counts.find(shard()))
        .set((
            c::queued.eq(c::queued + delta.queued),
            c::failed.eq(c::failed + delta.failed),
            c::done.eq(c::done + delta.done),
        ))
        .execute(conn)
        .map(drop)
}

/// The counts: the sum of the 16 rows.
pub fn totals(conn: &mut Conn) -> QueryResult<CountDelta> {
    let rows: Vec<(i64, i64, i64)> = c::video_del_counts
        .select((c::queued, c::failed, c::done))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .fold(CountDelta::default(), |sum, row| CountDelta {
            queued: sum.queued + row.0,
            failed: sum.failed + row.1,
            done: sum.done + row.2,
        }))
}

/// Counts the tables again and sets the kept counts to the result, for
/// rows written by hand (outside the scheduler). The count rows are locked
/// first: a transaction changing the tables meanwhile waits to add its
/// changes until the new counts are in place, so none is lost or counted
/// twice. Scans the tables: meant for an operator, now and then.
pub fn recount(conn: &mut Conn) -> QueryResult<CountDelta> {
    conn.transaction(|conn| {
        match conn {
            #[cfg(feature = "sqlite")]
            // The single writer: starting with a write takes the lock.
            AnyConnection::Sqlite(_) => {}
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(pg) => {
                diesel::sql_query("LOCK TABLE video_del_counts IN EXCLUSIVE MODE").execute(pg)?;
            }
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(my) => {
                c::video_del_counts
                    .select(c::shard)
                    .for_update()
                    .load::<i32>(my)?;
            }
        }
        diesel::update(c::video_del_counts)
            .set((c::queued.eq(0), c::failed.eq(0), c::done.eq(0)))
            .execute(conn)?;
        let failed: i64 = video_del_rec::table
            .filter(video_del_rec::state.eq("failed"))
            .count()
            .get_result(conn)?;
        let all: i64 = video_del_rec::table.count().get_result(conn)?;
        let done: i64 = video_del_receipt::table.count().get_result(conn)?;
        let counted = CountDelta {
            queued: all - failed,
            failed,
            done,
        };
        diesel::update(c::video_del_counts.find(0))
            .set((
                c::queued.eq(counted.queued),
                c::failed.eq(counted.failed),
                c::done.eq(counted.done),
            ))
            .execute(conn)?;
        Ok(counted)
    })
}

/// The rows in the index of urgent rows, as its migration spells it.
const URGENT: &str = "priority = 1";

/// Counts by state from the kept counts (a sum over 16 rows), the running
/// rows from the index of running rows (at most the rows leased now), the
/// oldest due `not_before` (one probe of the `not_before` index), the
/// urgent due rows and the pause switch. A few index probes whatever the size of the table.
pub fn stats(conn: &mut Conn, now: i64) -> QueryResult<Stats> {
    let kept = totals(conn)?;
    let running: i64 = t::video_del_rec
        .filter(t::state.eq(State::Running.as_str()))
        .count()
        .get_result(conn)?;
    let oldest_due: Option<i64> = t::video_del_rec
        .select(diesel::dsl::min(t::not_before))
        .filter(t::not_before.le(now))
        .first(conn)?;
    // Through the index of urgent rows (partial on SQLite and PostgreSQL):
    // as many entries as urgent rows are due, few unless a takedown
    // backlog waits. `priority = 1` is spelled out as the partial index's
    // WHERE: SQLite uses such an index only for a literal, not a bind.
    let urgent_due = t::video_del_rec
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(URGENT))
        .filter(t::not_before.le(now));
    let (urgent_due, oldest_urgent): (i64, Option<i64>) = urgent_due
        .select((diesel::dsl::count_star(), diesel::dsl::min(t::not_before)))
        .first(conn)?;
    Ok(Stats {
        pending: kept.queued - running,
        running,
        failed: kept.failed,
        done: kept.done,
        oldest_due_age_ms: oldest_due.map(|due| (now - due).max(0)),
        urgent_due,
        oldest_urgent_due_age_ms: oldest_urgent.map(|due| (now - due).max(0)),
        paused: controls::paused(conn)?,
    })
}
