//! Every SQL statement of the scheduler. Plain functions over a connection,
//! called from actors, handlers and the CLI, and testable without them.
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
//!   is one `UPDATE ... WHERE id IN (due ids) RETURNING`; MySQL has no
//!   `UPDATE ... RETURNING`, so it selects then updates in one short
//!   transaction. MySQL and PostgreSQL lock the due rows with
//!   `FOR UPDATE SKIP LOCKED`: concurrent instances skip each other's rows
//!   instead of waiting for them or claiming them twice.
//! - Acks are fenced by `locked_by = owner`: a row re-claimed by someone else
//!   after our lease expired is left to them. Rows are touched by primary
//!   key, ids sorted, in short transactions, so instances do not deadlock.
//!
//! Where the backends differ, the function matches on the connection and
//! each arm says why.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::models::{AckCounts, Claimed, Deletion, Done, Failure, NewDeletion, State, Stats};
use super::schema::video_del_rec::dsl as t;
use super::{AnyConnection, Conn};
use crate::video_id::VideoId;

/// Rows per multi-row INSERT: 3 binds each stays below SQLite's 32766 and
/// MySQL's 65535 placeholders.
const INSERT_CHUNK: usize = 5000;

/// One caller's ids inside a group commit.
#[derive(Debug, Clone)]
pub struct RecordRequest {
    /// Distinct ids.
    pub ids: Vec<VideoId>,
    /// Epoch ms before which they must not be deleted.
    pub not_before: i64,
    /// Whether the caller needs to know how many of its ids were new (the
    /// v1 batch route does; the seed route answers 200 either way).
    pub counted: bool,
}

/// What a group commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// Per request: new rows, or `None` for an uncounted request.
    pub new_rows: Vec<Option<usize>>,
    /// New rows in all.
    pub total: usize,
}

/// Inserts the ids that are not queued yet, in the order given (sorted ids
/// keep lock order consistent between instances). Ids already present, in
/// any state, are left untouched (recording is idempotent). `state` and
/// `attempts` take their column defaults (`pending`, 0). Returns how many
/// rows were new.
pub fn insert_new<I: AsRef<str>>(
    conn: &mut Conn,
    ids: &[I],
    now: i64,
    not_before: i64,
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    // "Skip ids that exist" is spelled differently per backend; diesel's
    // MultiBackend has no common form, so each arm uses its own.
    #[cfg(feature = "postgres")]
    if let AnyConnection::Pg(c) = conn {
        // One array parameter instead of three per row: far less to encode
        // and parse than a multi-row VALUES list.
        let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        return diesel::sql_query(
            "INSERT INTO video_del_rec (id, created_at, not_before) \
             SELECT id, $1, $2 FROM unnest($3::varchar[]) AS new(id) \
             ON CONFLICT DO NOTHING",
        )
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(not_before)
        .bind::<diesel::sql_types::Array<Text>, _>(ids)
        .execute(c);
    }
    let mut inserted = 0;
    for chunk in ids.chunks(INSERT_CHUNK) {
        let rows: Vec<NewDeletion<'_>> = chunk
            .iter()
            .map(|id| NewDeletion {
                id: id.as_ref(),
                created_at: now,
                not_before,
            })
            .collect();
        inserted += match conn {
            #[cfg(feature = "sqlite")]
            AnyConnection::Sqlite(c) => diesel::insert_or_ignore_into(t::video_del_rec)
                .values(&rows)
                .execute(c)?,
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(c) => diesel::insert_or_ignore_into(t::video_del_rec)
                .values(&rows)
                .execute(c)?,
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(_) => unreachable!("handled above"),
        };
    }
    Ok(inserted)
}

/// Group commit: the requests of many callers in one transaction (one
/// commit, one fsync). Uncounted requests due now are merged into one
/// statement, sorted, so that a burst of single-id requests costs one round
/// trip; counted requests get a statement each, for their own count.
pub fn record_many(conn: &mut Conn, requests: &[RecordRequest], now: i64) -> QueryResult<Inserted> {
    let mergeable = |r: &RecordRequest| !r.counted && r.not_before <= now;
    let mut merged: Vec<&VideoId> = requests
        .iter()
        .filter(|r| mergeable(r))
        .flat_map(|r| &r.ids)
        .collect();
    merged.sort_unstable();
    merged.dedup();
    let run = |conn: &mut Conn| {
        let mut total = insert_new(conn, &merged, now, now)?;
        let mut new_rows = Vec::with_capacity(requests.len());
        for request in requests {
            if mergeable(request) {
                new_rows.push(None);
            } else {
                let n = insert_new(conn, &request.ids, now, request.not_before)?;
                total += n;
                new_rows.push(Some(n));
            }
        }
        Ok(Inserted { new_rows, total })
    };
    // INSERT statements `insert_new` will issue (at most: PostgreSQL needs one
    // per call whatever the size).
    let statements = merged.len().div_ceil(INSERT_CHUNK)
        + requests
            .iter()
            .filter(|r| !mergeable(r))
            .map(|r| r.ids.len().div_ceil(INSERT_CHUNK))
            .sum::<usize>();
    if statements <= 1 {
        // One statement commits atomically by itself: no BEGIN/COMMIT
        // round trips.
        run(conn)
    } else {
        conn.transaction(run)
    }
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
    let limit = limit as i64;
    // Raw SQL: diesel's DSL does not take an ordered, limited subselect as
    // an update target. The subselect walks the `not_before` index.
    match conn {
        // One writer per process and an atomic statement: no locking clause.
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => diesel::sql_query(
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
        .bind::<BigInt, _>(limit)
        .load(c),
        // The same statement, with SKIP LOCKED: rows another instance is
        // claiming right now are skipped, not waited for.
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => diesel::sql_query(
            "UPDATE video_del_rec \
             SET state = 'running', locked_by = $1, locked_until = $2, not_before = $2 \
             WHERE id IN (SELECT id FROM video_del_rec WHERE not_before <= $3 \
                          ORDER BY not_before LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id, attempts",
        )
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(lease_until)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(limit)
        .load(c),
        // No UPDATE ... RETURNING: lock the due rows, then lease them, in
        // one transaction (READ COMMITTED, see connection.rs).
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => c.transaction(|c| {
            let due: Vec<Claimed> = diesel::sql_query(
                "SELECT id, attempts FROM video_del_rec WHERE not_before <= ? \
                 ORDER BY not_before LIMIT ? FOR UPDATE SKIP LOCKED",
            )
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(limit)
            .load(c)?;
            if !due.is_empty() {
                let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
                diesel::update(t::video_del_rec.filter(t::id.eq_any(ids)))
                    .set((
                        t::state.eq(State::Running.as_str()),
                        t::locked_by.eq(owner),
                        t::locked_until.eq(lease_until),
                        t::not_before.eq(lease_until),
                    ))
                    .execute(c)?;
            }
            Ok(due)
        }),
    }
}

/// Acks one executed batch in one transaction: removes the rows whose files
/// are gone and reschedules (or fails) the others, all only while `owner`
/// still holds them.
pub fn ack(
    conn: &mut Conn,
    owner: &str,
    done: &[Done],
    failures: &[Failure],
) -> QueryResult<AckCounts> {
    let done: Vec<&str> = done.iter().map(|d| d.claimed.id.as_str()).collect();
    let remove_done = |conn: &mut Conn, counts: &mut AckCounts| -> QueryResult<()> {
        if !done.is_empty() {
            counts.removed = diesel::delete(
                t::video_del_rec
                    .filter(t::id.eq_any(&done))
                    .filter(t::locked_by.eq(owner)),
            )
            .execute(conn)?;
            counts.lost_lease += done.len() - counts.removed;
        }
        Ok(())
    };
    let mut counts = AckCounts::default();
    if failures.is_empty() {
        // The usual batch: one DELETE, atomic by itself.
        remove_done(conn, &mut counts)?;
        return Ok(counts);
    }
    conn.transaction(|conn| {
        remove_done(conn, &mut counts)?;
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

/// Gives claimed rows back, pending and due at `due_at`, for the next claim
/// of any instance: at graceful shutdown (due now), or because the storage
/// could not be used (see [`crate::storage::Unavailable`]), with the reason
/// as `error` for `last_error`. `attempts` is unchanged: no id was at fault.
pub fn release(
    conn: &mut Conn,
    owner: &str,
    ids: &[String],
    due_at: i64,
    error: Option<&str>,
) -> QueryResult<usize> {
    let leased = t::video_del_rec
        .filter(t::id.eq_any(ids))
        .filter(t::locked_by.eq(owner));
    let back = (
        t::state.eq(State::Pending.as_str()),
        t::not_before.eq(due_at),
        t::locked_by.eq(None::<String>),
        t::locked_until.eq(None::<i64>),
    );
    match error {
        None => diesel::update(leased).set(back).execute(conn),
        Some(error) => diesel::update(leased)
            .set((back, t::last_error.eq(error)))
            .execute(conn),
    }
}

/// One request by id (its exact text: rows left by the Go scheduler may
/// hold ids that are not valid video ids).
pub fn get(conn: &mut Conn, id: &str) -> QueryResult<Option<Deletion>> {
    t::video_del_rec
        .find(id)
        .select(Deletion::as_select())
        .first(conn)
        .optional()
}

/// A page of requests in id order, after `after`, optionally of one state.
/// Keyset pagination: served by the primary key or the `(state, id)` index.
pub fn list(
    conn: &mut Conn,
    state: Option<State>,
    after: Option<&str>,
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
        query = query.filter(t::id.gt(after));
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

/// Cancels a request unless an instance holds a live lease on it. `id` is
/// the row's exact text (it may not be a valid video id).
pub fn cancel(conn: &mut Conn, id: &str, now: i64) -> QueryResult<Change> {
    conn.transaction(|conn| {
        let removed = diesel::delete(
            t::video_del_rec.find(id).filter(
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
    conn.transaction(|conn| {
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
        Ok(match get(conn, id.as_str())? {
            None => Change::NotFound,
            Some(row) => Change::Conflict(State::parse(&row.state).unwrap_or(State::Pending)),
        })
    })
}

/// Ids of every request after `after`, in id order (the primary key only).
pub fn ids_after(conn: &mut Conn, after: Option<&str>, limit: usize) -> QueryResult<Vec<String>> {
    let mut query = t::video_del_rec
        .select(t::id)
        .order(t::id.asc())
        .limit(limit as i64)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(t::id.gt(after));
    }
    query.load(conn)
}

/// Ids of failed requests after `after`, in id order: a page for the bulk
/// actions (walks the `(state, id)` index).
pub fn failed_ids(conn: &mut Conn, after: Option<&str>, limit: usize) -> QueryResult<Vec<String>> {
    let mut query = t::video_del_rec
        .select(t::id)
        .filter(t::state.eq(State::Failed.as_str()))
        .order(t::id.asc())
        .limit(limit as i64)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(t::id.gt(after));
    }
    query.load(conn)
}

/// Moves these requests back to pending, due now, those of them still
/// failed. Returns how many moved.
pub fn retry_ids(conn: &mut Conn, ids: &[&str], now: i64) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(
        t::video_del_rec
            .filter(t::id.eq_any(ids))
            .filter(t::state.eq(State::Failed.as_str())),
    )
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

/// Deletes rows by id, whoever holds them: the benchmark's raw limit (no
/// lease, no fence) measures the cost of the bare statement.
pub fn delete_ids(conn: &mut Conn, ids: &[String]) -> QueryResult<usize> {
    diesel::delete(t::video_del_rec.filter(t::id.eq_any(ids))).execute(conn)
}

/// Whether any request is left, in any state: one index probe.
pub fn any_row(conn: &mut Conn) -> QueryResult<bool> {
    Ok(!t::video_del_rec
        .select(t::id)
        .limit(1)
        .load::<String>(conn)?
        .is_empty())
}

/// Cheapest statement proving the table is there and readable.
pub fn ping(conn: &mut Conn) -> QueryResult<()> {
    t::video_del_rec
        .select(t::id)
        .limit(1)
        .load::<String>(conn)
        .map(drop)
}
