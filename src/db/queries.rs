//! Every SQL statement of the scheduler. Plain functions over a connection,
//! called from actors, handlers and the CLI, and testable without them.
//!
//! Locking, in one place:
//! - All writes of one process go through a single writer connection on
//!   SQLite ([`super::Db::write`]), inside `BEGIN IMMEDIATE` transactions, so
//!   the writer never upgrades a read lock and never meets "database is
//!   locked" from its own process.
//! - A claim is one `UPDATE ... WHERE id IN (due ids) RETURNING`: atomic, so
//!   two claims never take the same row. It moves `not_before` to the lease
//!   expiry, so a row whose owner died becomes due again by itself and the
//!   claim query needs no second condition (one index range scan).
//! - Acks are fenced by `locked_by = owner`: a row re-claimed by someone else
//!   after our lease expired is left to them.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::models::{AckCounts, Claimed, Deletion, Failure, NewDeletion, State, Stats};
use super::schema::video_del_rec::dsl as t;
use super::Conn;
use crate::video_id::VideoId;

/// Rows per INSERT: 5 binds each stays far below SQLite's 32766 limit.
const INSERT_CHUNK: usize = 1000;

/// One caller's ids inside a group commit.
#[derive(Debug, Clone)]
pub struct RecordRequest {
    /// Distinct ids.
    pub ids: Vec<VideoId>,
    /// Epoch ms before which they must not be deleted.
    pub not_before: i64,
}

/// Inserts the ids that are not queued yet. Ids already present, in any
/// state, are left untouched (recording is idempotent). Returns how many
/// rows were new.
pub fn insert_new(
    conn: &mut Conn,
    ids: &[VideoId],
    now: i64,
    not_before: i64,
) -> QueryResult<usize> {
    let mut inserted = 0;
    for chunk in ids.chunks(INSERT_CHUNK) {
        let rows: Vec<NewDeletion<'_>> = chunk
            .iter()
            .map(|id| NewDeletion {
                id: id.as_str(),
                state: State::Pending.as_str(),
                attempts: 0,
                created_at: now,
                not_before,
            })
            .collect();
        inserted += diesel::insert_or_ignore_into(t::video_del_rec)
            .values(&rows)
            .execute(conn)?;
    }
    Ok(inserted)
}

/// Group commit: the requests of many callers in one transaction (one
/// fsync). Returns, per request, how many of its ids were new.
pub fn record_many(
    conn: &mut Conn,
    requests: &[RecordRequest],
    now: i64,
) -> QueryResult<Vec<usize>> {
    conn.immediate_transaction(|conn| {
        requests
            .iter()
            .map(|r| insert_new(conn, &r.ids, now, r.not_before))
            .collect()
    })
}

/// Claims up to `limit` due rows, oldest due first, leasing them to `owner`
/// until `lease_until`. Rows whose lease expired are due again and are
/// claimed like pending ones.
pub fn claim(
    conn: &mut Conn,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
) -> QueryResult<Vec<Claimed>> {
    // Raw SQL: diesel's DSL does not take an ordered, limited subselect as
    // an update target. The subselect walks the `not_before` index.
    diesel::sql_query(
        "UPDATE video_del_rec \
         SET state = 'running', locked_by = ?, locked_until = ?, not_before = ? \
         WHERE id IN (SELECT id FROM video_del_rec WHERE not_before <= ? \
                      ORDER BY not_before LIMIT ?) \
         RETURNING id, attempts",
    )
    .bind::<Text, _>(owner)
    .bind::<BigInt, _>(lease_until)
    .bind::<BigInt, _>(lease_until)
    .bind::<BigInt, _>(now)
    .bind::<BigInt, _>(limit as i64)
    .load(conn)
}

/// Acks one executed batch in one transaction: removes the rows whose files
/// are gone and reschedules (or fails) the others, all only while `owner`
/// still holds them.
pub fn ack(
    conn: &mut Conn,
    owner: &str,
    done: &[String],
    failures: &[Failure],
) -> QueryResult<AckCounts> {
    conn.immediate_transaction(|conn| {
        let mut counts = AckCounts::default();
        if !done.is_empty() {
            counts.removed = diesel::delete(
                t::video_del_rec
                    .filter(t::id.eq_any(done))
                    .filter(t::locked_by.eq(owner)),
            )
            .execute(conn)?;
            counts.lost_lease += done.len() - counts.removed;
        }
        for failure in failures {
            let state = match failure.retry_at {
                Some(_) => State::Pending,
                None => State::Failed,
            };
            let updated = diesel::update(
                t::video_del_rec
                    .filter(t::id.eq(&failure.id))
                    .filter(t::locked_by.eq(owner)),
            )
            .set((
                t::state.eq(state.as_str()),
                t::attempts.eq(failure.attempts),
                t::last_error.eq(&failure.error),
                t::not_before.eq(failure.retry_at),
                t::locked_by.eq(None::<String>),
                t::locked_until.eq(None::<i64>),
            ))
            .execute(conn)?;
            match (updated, state) {
                (0, _) => counts.lost_lease += 1,
                (_, State::Failed) => counts.failed += 1,
                _ => counts.retried += 1,
            }
        }
        Ok(counts)
    })
}

/// Gives claimed rows back (graceful shutdown): pending and due now, for the
/// next claim of any instance.
pub fn release(conn: &mut Conn, owner: &str, ids: &[String], now: i64) -> QueryResult<usize> {
    diesel::update(
        t::video_del_rec
            .filter(t::id.eq_any(ids))
            .filter(t::locked_by.eq(owner)),
    )
    .set((
        t::state.eq(State::Pending.as_str()),
        t::not_before.eq(now),
        t::locked_by.eq(None::<String>),
        t::locked_until.eq(None::<i64>),
    ))
    .execute(conn)
}

/// One request by id.
pub fn get(conn: &mut Conn, id: &VideoId) -> QueryResult<Option<Deletion>> {
    t::video_del_rec
        .find(id.as_str())
        .select(Deletion::as_select())
        .first(conn)
        .optional()
}

/// A page of requests in id order, after `after`, optionally of one state.
/// Keyset pagination: served by the primary key or the `(state, id)` index.
pub fn list(
    conn: &mut Conn,
    state: Option<State>,
    after: Option<&VideoId>,
    limit: usize,
) -> QueryResult<Vec<Deletion>> {
    let mut query = t::video_del_rec
        .select(Deletion::as_select())
        .order(t::id.asc())
        .limit(limit as i64)
        .into_boxed();
    if let Some(state) = state {
        query = query.filter(t::state.eq(state.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(t::id.gt(after.as_str()));
    }
    query.load(conn)
}

/// What a cancel or a retry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Done,
    NotFound,
    /// The row is in a state that forbids the change.
    Conflict(State),
}

/// Cancels a request unless an instance holds a live lease on it.
pub fn cancel(conn: &mut Conn, id: &VideoId, now: i64) -> QueryResult<Change> {
    conn.immediate_transaction(|conn| {
        let removed = diesel::delete(
            t::video_del_rec.find(id.as_str()).filter(
                t::state
                    .ne(State::Running.as_str())
                    .or(t::locked_until.le(now)),
            ),
        )
        .execute(conn)?;
        if removed > 0 {
            return Ok(Change::Done);
        }
        Ok(match get(conn, id)? {
            None => Change::NotFound,
            Some(_) => Change::Conflict(State::Running),
        })
    })
}

/// Moves a failed request back to pending, due now, with its attempts reset.
pub fn retry(conn: &mut Conn, id: &VideoId, now: i64) -> QueryResult<Change> {
    conn.immediate_transaction(|conn| {
        let updated = diesel::update(
            t::video_del_rec
                .find(id.as_str())
                .filter(t::state.eq(State::Failed.as_str())),
        )
        .set(retry_columns(now))
        .execute(conn)?;
        if updated > 0 {
            return Ok(Change::Done);
        }
        Ok(match get(conn, id)? {
            None => Change::NotFound,
            Some(row) => Change::Conflict(State::parse(&row.state).unwrap_or(State::Pending)),
        })
    })
}

/// `retry --failed`: every failed request back to pending. Returns the count.
pub fn retry_all_failed(conn: &mut Conn, now: i64) -> QueryResult<usize> {
    diesel::update(t::video_del_rec.filter(t::state.eq(State::Failed.as_str())))
        .set(retry_columns(now))
        .execute(conn)
}

#[allow(clippy::type_complexity)]
fn retry_columns(
    now: i64,
) -> (
    diesel::dsl::Eq<t::state, &'static str>,
    diesel::dsl::Eq<t::attempts, i32>,
    diesel::dsl::Eq<t::not_before, i64>,
) {
    (
        t::state.eq(State::Pending.as_str()),
        t::attempts.eq(0),
        t::not_before.eq(now),
    )
}

/// Counts by state (an index-only scan of `(state, id)`) and the oldest due
/// `not_before` (one probe of the `not_before` index).
pub fn stats(conn: &mut Conn, now: i64) -> QueryResult<Stats> {
    let counts: Vec<(String, i64)> = t::video_del_rec
        .group_by(t::state)
        .select((t::state, diesel::dsl::count_star()))
        .load(conn)?;
    let oldest_due: Option<i64> = t::video_del_rec
        .select(diesel::dsl::min(t::not_before))
        .filter(t::not_before.le(now))
        .first(conn)?;
    let mut stats = Stats {
        oldest_due_age_ms: oldest_due.map(|due| (now - due).max(0)),
        ..Stats::default()
    };
    for (state, count) in counts {
        match State::parse(&state) {
            Some(State::Pending) => stats.pending += count,
            Some(State::Running) => stats.running += count,
            Some(State::Failed) => stats.failed += count,
            None => {}
        }
    }
    Ok(stats)
}

/// Cheapest statement proving the table is there and readable.
pub fn ping(conn: &mut Conn) -> QueryResult<()> {
    t::video_del_rec
        .select(t::id)
        .limit(1)
        .load::<String>(conn)
        .map(drop)
}
