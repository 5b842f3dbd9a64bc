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
#[cfg(feature = "postgres")]
use diesel::sql_types::{Array, Nullable};
use diesel::sql_types::{BigInt, Integer, Text};

use super::models::{
    AckCounts, Claim, Claimed, CountDelta, Deletion, Done, Failure, NewDeletion,
    NewDeletionWithPaths, Source, State, Stats,
};
use super::schema::video_del_rec::dsl as t;
use super::{AnyConnection, Conn};
use crate::video_id::VideoId;

/// The start of every INSERT of receipts, its columns in order (a
/// macro, for `concat!`: prepared statements are `&'static str`).
macro_rules! insert_receipts {
    () => {
        "INSERT INTO video_del_receipt (id, requested_at, completed_at, attempts, deleted, \
           missing, acked_by, source, request_id, targets) "
    };
}

pub mod controls;
pub mod counts;
mod prepared;
pub mod receipts;

use prepared::prepared;

/// Rows per multi-row INSERT: 5 binds each stays below SQLite's 32766 and
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
    /// Where it came from, and its `X-Request-Id`, kept with each row.
    pub source: Source,
    pub request_id: Option<String>,
    /// The paths each id's request named (`items[].paths`), in the order of
    /// `ids`; empty when it named none. Such a request is recorded by
    /// [`record_with_paths`], not in a group commit.
    pub paths: Vec<Vec<String>>,
}

/// What a group commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// Per request: new rows, or `None` for an uncounted request.
    pub new_rows: Vec<Option<usize>>,
    /// New rows in all.
    pub total: usize,
}

/// One row to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewRow<'a> {
    pub id: &'a str,
    pub not_before: i64,
    pub source: Source,
    pub request_id: Option<&'a str>,
}

/// Inserts the rows whose id is not queued yet, in the order given (sorted
/// ids keep lock order consistent between instances), and adds them to the
/// kept count of queued rows. Ids already present, in any state, are left
/// untouched (recording is idempotent). `state` and `attempts` take their
/// column defaults (`pending`, 0). Returns how many rows were new.
fn insert_new(conn: &mut Conn, rows: &[NewRow<'_>], now: i64) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    // "Skip ids that exist" is spelled differently per backend; diesel's
    // MultiBackend has no common form, so each arm uses its own. (SQLite
    // and MySQL both say `INSERT [OR] IGNORE`, on connections of different
    // types: one macro.)
    #[cfg(any(feature = "sqlite", feature = "mysql"))]
    macro_rules! or_ignore {
        ($c:expr) => {{
            let inserted = insert_or_ignore(rows, now, |values| {
                diesel::insert_or_ignore_into(t::video_del_rec)
                    .values(values)
                    .execute($c)
            })?;
            (inserted, false)
        }};
    }
    // `counted`: the statement kept the count itself.
    let (inserted, counted) = match conn {
        // One array parameter per column instead of five binds per row,
        // and the count kept in the same statement: one round trip.
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => {
            #[derive(QueryableByName)]
            struct New {
                #[diesel(sql_type = BigInt)]
                new: i64,
            }
            let inserted: New = prepared(
                "WITH new AS ( \
                   INSERT INTO video_del_rec (id, created_at, not_before, source, request_id) \
                   SELECT id, ?, not_before, source, request_id \
                   FROM unnest(?::varchar[], ?::bigint[], ?::varchar[], ?::varchar[]) \
                     AS row(id, not_before, source, request_id) \
                   ON CONFLICT DO NOTHING RETURNING 1) \
                 UPDATE video_del_counts SET queued = queued + (SELECT count(*) FROM new) \
                 WHERE shard = ? RETURNING (SELECT count(*) FROM new) AS new",
            )
            .bind::<BigInt, _>(now)
            .bind::<Array<Text>, _>(rows.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.not_before).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.request_id).collect::<Vec<_>>())
            .bind::<Integer, _>(counts::shard())
            .get_result(c)?;
            (inserted.new as usize, true)
        }
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => or_ignore!(c),
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => or_ignore!(c),
    };
    if counted {
        return Ok(inserted);
    }
    counts::add(
        conn,
        CountDelta {
            queued: inserted as i64,
            ..CountDelta::default()
        },
    )?;
    Ok(inserted)
}

/// `INSERT OR IGNORE` (SQLite) / `INSERT IGNORE` (MySQL) of `rows` in
/// chunks of [`INSERT_CHUNK`]. Returns how many rows were new.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
fn insert_or_ignore(
    rows: &[NewRow<'_>],
    now: i64,
    mut insert: impl FnMut(&[NewDeletion<'_>]) -> QueryResult<usize>,
) -> QueryResult<usize> {
    let mut inserted = 0;
    for chunk in rows.chunks(INSERT_CHUNK) {
        let values: Vec<NewDeletion<'_>> = chunk
            .iter()
            .map(|row| NewDeletion {
                id: row.id,
                created_at: now,
                not_before: row.not_before,
                source: row.source.as_str(),
                request_id: row.request_id,
            })
            .collect();
        inserted += insert(&values)?;
    }
    Ok(inserted)
}

/// Group commit: the requests of many callers in one transaction (one
/// commit, one fsync). Uncounted requests due now are merged into one
/// statement, sorted, so that a burst of single-id requests costs one round
/// trip; counted requests get a statement each, for their own count.
pub fn record_many(conn: &mut Conn, requests: &[RecordRequest], now: i64) -> QueryResult<Inserted> {
    let mergeable = |r: &RecordRequest| !r.counted && r.not_before <= now;
    let rows = |r| new_rows(r, now);
    let mut merged: Vec<NewRow<'_>> = requests
        .iter()
        .filter(|r| mergeable(r))
        .flat_map(rows)
        .collect();
    // Sorted, one row per id (the first request's wins).
    merged.sort_by(|a, b| a.id.cmp(b.id));
    merged.dedup_by(|a, b| a.id == b.id);
    let run = |conn: &mut Conn| {
        let mut total = insert_new(conn, &merged, now)?;
        let mut new_rows = Vec::with_capacity(requests.len());
        for request in requests {
            if mergeable(request) {
                new_rows.push(None);
            } else {
                let n = insert_new(conn, &rows(request), now)?;
                total += n;
                new_rows.push(Some(n));
            }
        }
        Ok(Inserted { new_rows, total })
    };
    // PostgreSQL keeps the count in the INSERT itself.
    let statements = usize::from(!merged.is_empty())
        + requests
            .iter()
            .filter(|r| !mergeable(r) && !r.ids.is_empty())
            .count();
    atomically(conn, statements <= 1, run)
}

/// Most paths kept with one request, merged over several records of its id.
pub const MAX_ROW_PATHS: usize = 4096;

/// Records a request whose ids name paths of their own, in one
/// transaction of its own (such requests are rare, and one refused for
/// too many paths must not fail a group). A new id is inserted with its
/// paths. An id already queued gets the paths it did not have merged in,
/// whatever its state; a running one is given back too, pending and due
/// now: the batch holding it may have deleted its old paths only, so its
/// ack must not remove the row (it finds the row no longer leased and
/// leaves it), and the next claim deletes every path. Returns the new
/// rows, or why the request was refused (nothing written then).
pub fn record_with_paths(
    conn: &mut Conn,
    request: &RecordRequest,
    now: i64,
) -> QueryResult<Result<usize, String>> {
    let mut refused = None;
    let recorded = conn.transaction(|conn| {
        let mut new = 0;
        for (i, id) in request.ids.iter().enumerate() {
            let paths = request.paths.get(i).map_or(&[][..], Vec::as_slice);
            match record_one_with_paths(conn, request, id.as_str(), paths, now)? {
                Ok(true) => new += 1,
                Ok(false) => {}
                Err(reason) => {
                    refused = Some(reason);
                    return Err(diesel::result::Error::RollbackTransaction);
                }
            }
        }
        counts::add(
            conn,
            CountDelta {
                queued: new as i64,
                ..CountDelta::default()
            },
        )?;
        Ok(new)
    });
    match (recorded, refused) {
        (Err(diesel::result::Error::RollbackTransaction), Some(reason)) => Ok(Err(reason)),
        (recorded, _) => recorded.map(Ok),
    }
}

/// Inserts `id` with `paths` unless it is queued; otherwise merges the
/// paths in. `Ok(true)`: a new row.
fn record_one_with_paths(
    conn: &mut Conn,
    request: &RecordRequest,
    id: &str,
    paths: &[String],
    now: i64,
) -> QueryResult<Result<bool, String>> {
    if paths.len() > MAX_ROW_PATHS {
        return Ok(Err(too_many_paths(id)));
    }
    let stored = (!paths.is_empty()).then(|| paths_json(paths));
    let row = NewDeletionWithPaths {
        id,
        created_at: now,
        not_before: request.not_before.max(now),
        source: request.source.as_str(),
        request_id: request.request_id.as_deref(),
        paths: stored.as_deref(),
    };
    // Twice at most: a row acked between the INSERT and the read is
    // inserted anew.
    for _ in 0..2 {
        if insert_unless_queued(conn, &row)? {
            return Ok(Ok(true));
        }
        if paths.is_empty() {
            return Ok(Ok(false));
        }
        if let Some((state, old)) = queued_for_update(conn, id)? {
            return merge_paths(conn, id, &state, old.as_deref(), paths, now)
                .map(|m| m.map(|()| false));
        }
    }
    Ok(Ok(false))
}

/// Inserts `row` unless its id is queued ("skip ids that exist", spelled
/// per backend). `true`: inserted.
fn insert_unless_queued(conn: &mut Conn, row: &NewDeletionWithPaths<'_>) -> QueryResult<bool> {
    #[cfg(any(feature = "sqlite", feature = "mysql"))]
    macro_rules! or_ignore {
        ($c:expr) => {
            diesel::insert_or_ignore_into(t::video_del_rec)
                .values(row)
                .execute($c)?
        };
    }
    let inserted = match conn {
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => or_ignore!(c),
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => diesel::insert_into(t::video_del_rec)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c)?,
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => or_ignore!(c),
    };
    Ok(inserted > 0)
}

/// The state and stored paths of a queued id, locked until the
/// transaction ends (SQLite has one writer: no lock clause).
fn queued_for_update(conn: &mut Conn, id: &str) -> QueryResult<Option<(String, Option<String>)>> {
    let row = t::video_del_rec.find(id).select((t::state, t::paths));
    match conn {
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => row.first(c).optional(),
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => row.for_update().first(c).optional(),
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => row.for_update().first(c).optional(),
    }
}

/// Adds to the queued `id` (in `state`, with paths `old`) the `paths` it
/// does not have; a running one is given back, due now (see
/// [`record_with_paths`]). Nothing changes when it has them all.
fn merge_paths(
    conn: &mut Conn,
    id: &str,
    state: &str,
    old: Option<&str>,
    paths: &[String],
    now: i64,
) -> QueryResult<Result<(), String>> {
    let mut merged: Vec<String> = old
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let before = merged.len();
    for path in paths {
        if !merged.contains(path) {
            merged.push(path.clone());
        }
    }
    if merged.len() == before {
        return Ok(Ok(()));
    }
    if merged.len() > MAX_ROW_PATHS {
        return Ok(Err(too_many_paths(id)));
    }
    let target = t::video_del_rec.find(id);
    let merged = paths_json(&merged);
    if state == State::Running.as_str() {
        diesel::update(target)
            .set((
                t::paths.eq(&merged),
                t::state.eq(State::Pending.as_str()),
                t::not_before.eq(now),
                t::locked_by.eq(None::<String>),
                t::locked_until.eq(None::<i64>),
            ))
            .execute(conn)?;
    } else {
        diesel::update(target)
            .set(t::paths.eq(&merged))
            .execute(conn)?;
    }
    Ok(Ok(()))
}

fn too_many_paths(id: &str) -> String {
    format!("{id}: its request would name more than {MAX_ROW_PATHS} paths")
}

/// Paths as stored in the `paths` column.
fn paths_json(paths: &[String]) -> String {
    serde_json::to_string(paths).expect("strings serialize")
}

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

/// The rows of one request.
fn new_rows(request: &RecordRequest, now: i64) -> Vec<NewRow<'_>> {
    request
        .ids
        .iter()
        .map(|id| NewRow {
            id: id.as_str(),
            not_before: request.not_before.max(now),
            source: request.source,
            request_id: request.request_id.as_deref(),
        })
        .collect()
}

fn is_postgres(conn: &Conn) -> bool {
    #[cfg(feature = "postgres")]
    if let AnyConnection::Pg(_) = conn {
        return true;
    }
    let _ = conn;
    false
}

/// Claims up to `limit` due rows, oldest due first, leasing them to `owner`
/// until `lease_until`. Rows whose lease expired are due again and are
/// claimed like pending ones. Nothing is claimed while an operator has
/// paused deletions: the pause is checked inside the claim statement, so
/// that every instance stops at its next claim; an empty claim then says
/// whether it was the pause.
pub fn claim(
    conn: &mut Conn,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
) -> QueryResult<Claim> {
    let limit = limit as i64;
    // Raw SQL: diesel's DSL does not take an ordered, limited subselect as
    // an update target. The subselect walks the `not_before` index.
    let claimed: Vec<Claimed> = match conn {
        // One writer per process and an atomic statement: no locking clause.
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => prepared(
            "UPDATE video_del_rec \
             SET state = 'running', locked_by = ?, locked_until = ?, not_before = ? \
             WHERE id IN (SELECT id FROM video_del_rec WHERE not_before <= ? \
                          AND NOT EXISTS (SELECT 1 FROM video_del_control \
                                          WHERE name = 'paused' AND value <> 0) \
                          ORDER BY not_before LIMIT ?) \
             RETURNING id, attempts, created_at, source, request_id, paths",
        )
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(lease_until)
        .bind::<BigInt, _>(lease_until)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(limit)
        .load(c)?,
        // The same statement, with SKIP LOCKED: rows another instance is
        // claiming right now are skipped, not waited for.
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => prepared(
            "UPDATE video_del_rec \
             SET state = 'running', locked_by = ?, locked_until = ?, not_before = ? \
             WHERE id IN (SELECT id FROM video_del_rec WHERE not_before <= ? \
                          AND NOT EXISTS (SELECT 1 FROM video_del_control \
                                          WHERE name = 'paused' AND value <> 0) \
                          ORDER BY not_before LIMIT ? FOR UPDATE SKIP LOCKED) \
             RETURNING id, attempts, created_at, source, request_id, paths",
        )
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(lease_until)
        .bind::<BigInt, _>(lease_until)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(limit)
        .load(c)?,
        // No UPDATE ... RETURNING: lock the due rows, then lease them, in
        // one transaction (READ COMMITTED, see connection.rs). Prepared
        // anew each time (`sql_query`), as it always was here, not kept
        // prepared like the other backends' claims: with it kept, a claim
        // once waited forever in `mysql_stmt_execute` for an answer
        // MariaDB 10.11 never sent (the server showed the connection
        // idle), which stopped every claim of the instance. Not reproduced
        // in 20 runs since, so the cause is not known; the form every
        // earlier test run used stays.
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => c.transaction(|c| {
            let due: Vec<Claimed> = diesel::sql_query(
                "SELECT id, attempts, created_at, source, request_id, paths FROM video_del_rec \
                 WHERE not_before <= ? \
                 AND NOT EXISTS (SELECT 1 FROM video_del_control \
                                 WHERE name = 'paused' AND value <> 0) \
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
            Ok::<_, diesel::result::Error>(due)
        })?,
    };
    if claimed.is_empty() && controls::paused(conn)? {
        return Ok(Claim::Paused);
    }
    Ok(Claim::Batch(claimed))
}

/// Acks one executed batch in one transaction: removes the rows whose files
/// are gone, writes their receipts (completed at `receipts_at`; `None`
/// when receipts are off), reschedules (or fails) the others, all only
/// while `owner` still holds them, and keeps the counts.
///
/// Receipts are written by a plain INSERT: almost every receipt is new, and
/// an upsert costs each of them a second look at the key (PostgreSQL's
/// speculative insertion; about a third of a receipt's cost there). An id
/// deleted again while its earlier receipt is kept makes that INSERT fail on
/// the key; the failed ack left nothing behind (one statement, or a
/// transaction rolled back), and it runs once more replacing receipts.
pub fn ack(
    conn: &mut Conn,
    owner: &str,
    done: &[Done],
    failures: &[Failure],
    receipts_at: Option<i64>,
) -> QueryResult<AckCounts> {
    let receipts = |replace| receipts_at.map(|at| Receipts { at, replace });
    match ack_writing(conn, owner, done, failures, receipts(false)) {
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) if receipts_at.is_some() => ack_writing(conn, owner, done, failures, receipts(true)),
        acked => acked,
    }
}

/// How an ack writes receipts.
#[derive(Debug, Clone, Copy)]
struct Receipts {
    /// Completion time, epoch ms.
    at: i64,
    /// Whether an id may still have an earlier receipt, to be replaced (an
    /// upsert); otherwise such an id fails the INSERT.
    replace: bool,
}

fn ack_writing(
    conn: &mut Conn,
    owner: &str,
    done: &[Done],
    failures: &[Failure],
    receipts: Option<Receipts>,
) -> QueryResult<AckCounts> {
    let groups = by_outcome(done);
    let run = |conn: &mut Conn| {
        let mut counts = AckCounts::default();
        let mut delta = CountDelta::default();
        if !done.is_empty() {
            let removed = remove_done(conn, owner, &groups, receipts, &mut delta)?;
            if receipts.is_some() {
                counts.receipts = removed;
            }
            counts.removed = removed;
            counts.lost_lease += done.len() - removed;
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
                (_, State::Failed) => {
                    counts.failed += 1;
                    delta.queued -= 1;
                    delta.failed += 1;
                }
                _ => counts.retried += 1,
            }
        }
        counts::add(conn, delta)?;
        Ok(counts)
    };
    // PostgreSQL removes, writes receipts and keeps the counts in one
    // statement per group: the usual batch (one group, no failures) is that
    // statement alone.
    atomically(
        conn,
        failures.is_empty() && (receipts.is_none() || groups.len() <= 1),
        run,
    )
}

/// What a group of a batch's ids found, bound once for all of them in
/// their receipts: paths deleted and missing, and the per-target counts
/// (JSON).
type Outcome = (u32, u32, String);

/// The ids of a batch by what their deletion found: a receipt's counts
/// are then bound once per group instead of travelling with each id. A
/// batch usually has one group (every id has the same paths, and they all
/// existed).
type Outcomes<'a> = std::collections::BTreeMap<Outcome, Vec<&'a str>>;

fn by_outcome(done: &[Done]) -> Outcomes<'_> {
    let mut groups = Outcomes::new();
    for d in done {
        groups
            .entry((
                d.removed.deleted,
                d.removed.missing,
                d.removed.targets_json(),
            ))
            .or_default()
            .push(d.claimed.id.as_str());
    }
    groups
}

/// Replaces an earlier receipt of the same id (SQLite and PostgreSQL spell
/// it alike). `completions` counts up, so a receipt returning 1 is new.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! replacing_receipts {
    () => {
        " ON CONFLICT (id) DO UPDATE SET requested_at = excluded.requested_at, \
           completed_at = excluded.completed_at, attempts = excluded.attempts, \
           deleted = excluded.deleted, missing = excluded.missing, \
           acked_by = excluded.acked_by, source = excluded.source, \
           request_id = excluded.request_id, targets = excluded.targets, \
           completions = video_del_receipt.completions + 1"
    };
}

/// Removes the rows of `groups` still leased to `owner` and, when
/// `receipts` is set, writes their receipts, copied from the rows. Returns
/// how many rows went; the change to the kept counts is added to `delta`,
/// unless the statement kept it itself (PostgreSQL).
///
/// On SQLite and PostgreSQL the ids travel as one parameter (a JSON array,
/// an array), so each statement is short and its plan the same whatever the
/// batch size: no statement with thousands of placeholders to parse per ack.
/// (A JSON array of `[id, deleted, missing]` triples made SQLite parse each
/// triple again for every field it read: the receipts cost a third more.)
fn remove_done(
    conn: &mut Conn,
    owner: &str,
    groups: &Outcomes<'_>,
    receipts: Option<Receipts>,
    delta: &mut CountDelta,
) -> QueryResult<usize> {
    #[cfg(feature = "postgres")]
    #[derive(QueryableByName)]
    struct Removed {
        #[diesel(sql_type = BigInt)]
        removed: i64,
    }
    match conn {
        // One writer, no concurrent change: receipts are copied from the
        // rows still leased to us, then the rows go.
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => {
            #[derive(QueryableByName)]
            struct Written {
                #[diesel(sql_type = diesel::sql_types::Integer)]
                completions: i32,
            }
            macro_rules! copy_rows {
                () => {
                    concat!(
                        insert_receipts!(),
                        "SELECT id, created_at, ?, attempts + 1, ?, ?, ?, source, request_id, ? \
                         FROM video_del_rec \
                         WHERE id IN (SELECT value FROM json_each(?)) AND locked_by = ?"
                    )
                };
            }
            let mut removed = 0;
            for ((deleted, missing, targets), ids) in groups {
                let ids = serde_json::to_string(ids)
                    .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
                if let Some(Receipts { at, replace }) = receipts {
                    let sql = match replace {
                        false => copy_rows!(),
                        true => concat!(
                            copy_rows!(),
                            replacing_receipts!(),
                            " RETURNING completions"
                        ),
                    };
                    let insert = prepared(sql)
                        .bind::<BigInt, _>(at)
                        .bind::<Integer, _>(*deleted as i32)
                        .bind::<Integer, _>(*missing as i32)
                        .bind::<Text, _>(owner)
                        .bind::<Text, _>(targets)
                        .bind::<Text, _>(&ids)
                        .bind::<Text, _>(owner);
                    delta.done += match replace {
                        false => insert.execute(c)? as i64,
                        true => insert
                            .load::<Written>(c)?
                            .iter()
                            .filter(|w| w.completions == 1)
                            .count() as i64,
                    };
                }
                removed += prepared(
                    "DELETE FROM video_del_rec \
                     WHERE id IN (SELECT value FROM json_each(?)) AND locked_by = ?",
                )
                .bind::<Text, _>(&ids)
                .bind::<Text, _>(owner)
                .execute(c)?;
            }
            delta.queued -= removed as i64;
            Ok(removed)
        }
        // One statement per group: the rows go, and their receipts are made
        // from what the DELETE returns (so a row re-leased meanwhile by
        // another instance gets none); the kept counts change last.
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => {
            let Some(Receipts { at, replace }) = receipts else {
                let ids: Vec<&str> = groups.values().flatten().copied().collect();
                let gone: Removed = prepared(
                    "WITH gone AS (DELETE FROM video_del_rec \
                       WHERE id = ANY(?) AND locked_by = ? RETURNING 1), \
                     counted AS (UPDATE video_del_counts \
                       SET queued = queued - (SELECT count(*) FROM gone) WHERE shard = ?) \
                     SELECT count(*) AS removed FROM gone",
                )
                .bind::<Array<Text>, _>(&ids)
                .bind::<Text, _>(owner)
                .bind::<Integer, _>(counts::shard())
                .get_result(c)?;
                return Ok(gone.removed as usize);
            };
            macro_rules! gone_and_kept {
                ($($replacing:tt)*) => {
                    concat!(
                        "WITH gone AS ( \
                           DELETE FROM video_del_rec WHERE id = ANY(?) AND locked_by = ? \
                           RETURNING id, created_at, attempts, source, request_id), \
                         kept AS (",
                        insert_receipts!(),
                        "SELECT id, created_at, ?, attempts + 1, ?, ?, ?, source, request_id, ? \
                         FROM gone",
                        $($replacing)*
                        " RETURNING completions), \
                         counted AS ( \
                           UPDATE video_del_counts \
                           SET queued = queued - (SELECT count(*) FROM gone), \
                             done = done + (SELECT count(*) FROM kept WHERE completions = 1) \
                           WHERE shard = ?) \
                         SELECT count(*) AS removed FROM gone"
                    )
                };
            }
            let mut removed = 0;
            for ((deleted, missing, targets), ids) in groups {
                let sql = match replace {
                    false => gone_and_kept!(),
                    true => gone_and_kept!(replacing_receipts!(),),
                };
                let gone: Removed = prepared(sql)
                    .bind::<Array<Text>, _>(ids)
                    .bind::<Text, _>(owner)
                    .bind::<BigInt, _>(at)
                    .bind::<Integer, _>(*deleted as i32)
                    .bind::<Integer, _>(*missing as i32)
                    .bind::<Text, _>(owner)
                    .bind::<Text, _>(targets)
                    .bind::<Integer, _>(counts::shard())
                    .get_result(c)?;
                removed += gone.removed as usize;
            }
            Ok(removed)
        }
        // No DELETE ... RETURNING: lock the rows still ours, write their
        // receipts, then delete them. (A JSON_TABLE join, as SQLite does
        // with json_each, made MariaDB scan the table: four times slower.)
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => {
            let ids: Vec<&str> = groups.values().flatten().copied().collect();
            let ours: Vec<String> = t::video_del_rec
                .filter(t::id.eq_any(&ids))
                .filter(t::locked_by.eq(owner))
                .select(t::id)
                .for_update()
                .load(c)?;
            if ours.is_empty() {
                return Ok(0);
            }
            if let Some(Receipts { at, replace }) = receipts {
                delta.done += receipts::write(c, owner, groups, &ours, at, replace)?;
            }
            let removed =
                diesel::delete(t::video_del_rec.filter(t::id.eq_any(&ours))).execute(c)?;
            delta.queued -= removed as i64;
            Ok(removed)
        }
    }
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
/// the row's exact text (it may not be a valid video id). Each DELETE
/// names the state it removes, so the kept counts follow exactly.
pub fn cancel(conn: &mut Conn, id: &str, now: i64) -> QueryResult<Change> {
    conn.transaction(|conn| {
        let row = t::video_del_rec.find(id);
        let failed =
            diesel::delete(row.filter(t::state.eq(State::Failed.as_str()))).execute(conn)? as i64;
        let queued = diesel::delete(
            row.filter(t::state.ne(State::Failed.as_str())).filter(
                t::state
                    .ne(State::Running.as_str())
                    .or(t::locked_until.le(now)),
            ),
        )
        .execute(conn)? as i64;
        if failed + queued > 0 {
            counts::add(
                conn,
                CountDelta {
                    queued: -queued,
                    failed: -failed,
                    done: 0,
                },
            )?;
            return Ok(Change::Done);
        }
        Ok(match get(conn, id)? {
            None => Change::NotFound,
            Some(_) => Change::Conflict(State::Running),
        })
    })
}

/// Moves a failed request back to pending, due now, with its attempts
/// reset. On success, the row as the same transaction left it.
pub fn retry(conn: &mut Conn, id: &VideoId, now: i64) -> QueryResult<(Change, Option<Deletion>)> {
    conn.transaction(|conn| {
        let moved = retry_ids(conn, &[id.as_str()], now)? > 0;
        let row = get(conn, id.as_str())?;
        Ok(match (moved, row) {
            (true, row) => (Change::Done, row),
            (false, None) => (Change::NotFound, None),
            (false, Some(row)) => (
                Change::Conflict(State::parse(&row.state).unwrap_or(State::Pending)),
                None,
            ),
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

/// Ids of requests in `state` after `after`, in id order: a page for the
/// bulk actions (walks the `(state, id)` index).
pub fn ids_in_state(
    conn: &mut Conn,
    state: State,
    after: Option<&str>,
    limit: usize,
) -> QueryResult<Vec<String>> {
    let mut query = t::video_del_rec
        .select(t::id)
        .filter(t::state.eq(state.as_str()))
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
    let moved = diesel::update(
        t::video_del_rec
            .filter(t::id.eq_any(ids))
            .filter(t::state.eq(State::Failed.as_str())),
    )
    .set(retry_columns(now))
    .execute(conn)?;
    counts::add(
        conn,
        CountDelta {
            queued: moved as i64,
            failed: -(moved as i64),
            done: 0,
        },
    )?;
    Ok(moved)
}

/// Cancels these requests, those of them still in `state` (a pending one
/// being claimed right now is running, and left alone). Returns how many.
pub fn cancel_ids(conn: &mut Conn, ids: &[&str], state: State) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let cancelled = diesel::delete(
        t::video_del_rec
            .filter(t::id.eq_any(ids))
            .filter(t::state.eq(state.as_str())),
    )
    .execute(conn)?;
    let n = cancelled as i64;
    let delta = match state {
        State::Failed => CountDelta {
            failed: -n,
            ..CountDelta::default()
        },
        _ => CountDelta {
            queued: -n,
            ..CountDelta::default()
        },
    };
    counts::add(conn, delta)?;
    Ok(cancelled)
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

/// Counts by state from the kept counts (a sum over 16 rows), the running
/// rows from the `(state, id)` index (at most the rows leased now), the
/// oldest due `not_before` (one probe of the `not_before` index) and the
/// pause switch. A few index probes whatever the size of the table.
pub fn stats(conn: &mut Conn, now: i64) -> QueryResult<Stats> {
    let kept = counts::totals(conn)?;
    let running: i64 = t::video_del_rec
        .filter(t::state.eq(State::Running.as_str()))
        .count()
        .get_result(conn)?;
    let oldest_due: Option<i64> = t::video_del_rec
        .select(diesel::dsl::min(t::not_before))
        .filter(t::not_before.le(now))
        .first(conn)?;
    Ok(Stats {
        pending: kept.queued - running,
        running,
        failed: kept.failed,
        done: kept.done,
        oldest_due_age_ms: oldest_due.map(|due| (now - due).max(0)),
        paused: controls::paused(conn)?,
    })
}

/// Deletes rows by id, whoever holds them, without keeping counts: the
/// benchmark's raw limit (no lease, no fence) measures the cost of the bare
/// statement.
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
