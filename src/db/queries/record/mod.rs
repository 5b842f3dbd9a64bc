//! Recording new requests: the group commit of the seed and batch routes
//! (`INSERT ... ON CONFLICT DO NOTHING` or `INSERT [OR] IGNORE`: an id
//! already queued, in any state, is left as it is), and requests naming
//! paths of their own, merged into a queued row (`SELECT ... FOR UPDATE` of
//! that row on MySQL and PostgreSQL, then an UPDATE). Ids are inserted in
//! sorted order, so concurrent instances take row locks in the same order.

use diesel::prelude::*;
#[cfg(feature = "postgres")]
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};

#[cfg(feature = "postgres")]
use super::prepared::prepared;
use super::{atomically, counts};

mod lane;

use crate::db::models::{CountDelta, NewDeletion, Priority, Source, State};
use crate::db::schema::video_del_rec::dsl as t;
use crate::db::{AnyConnection, Conn};
use crate::video_id::VideoId;
use lane::insert_leased;
pub use lane::Lease;

/// Rows per multi-row INSERT: 5 binds each stays below SQLite's 32766 and
/// MySQL's 65535 placeholders.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
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
    /// `record_with_paths`, not in a group commit.
    pub paths: Vec<Vec<String>>,
    /// The ids of `ids` whose request is urgent (README, "Priority"),
    /// sorted; empty when none is. Such a request is never merged.
    pub urgent: Vec<VideoId>,
}

/// What a group commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// Per request: new rows, or `None` for an uncounted request.
    pub new_rows: Vec<Option<usize>>,
    /// New rows in all.
    pub total: usize,
    /// The new rows inserted already leased ([`Lease`]), for the caller
    /// to delete without a claim.
    pub leased: Vec<String>,
}

/// One row to insert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRow<'a> {
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
    // (The fast lane's leased rows are inserted by `insert_leased`.)
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
                paths: None,
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
    record_many_leased(conn, requests, now, None)
}

/// [`record_many`], with the new rows due now inserted already leased
/// when a `lease` is given and the backend can (see [`Lease`]).
pub fn record_many_leased(
    conn: &mut Conn,
    requests: &[RecordRequest],
    now: i64,
    lease: Option<Lease<'_>>,
) -> QueryResult<Inserted> {
    let mergeable = |r: &RecordRequest| !r.counted && r.not_before <= now && r.urgent.is_empty();
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
        let mut leased = Vec::new();
        // Due now, leased if asked; else as usual.
        let mut insert = |conn: &mut Conn, rows: &[NewRow<'_>], due_now: bool| match lease {
            Some(lease) if due_now => {
                let (n, ids) = insert_leased(conn, rows, now, lease)?;
                leased.extend(ids);
                Ok(n)
            }
            _ => insert_new(conn, rows, now),
        };
        let mut total = insert(conn, &merged, true)?;
        let mut new_rows = Vec::with_capacity(requests.len());
        for request in requests {
            if mergeable(request) {
                new_rows.push(None);
            } else {
                let n = insert(conn, &rows(request), request.not_before <= now)?;
                promote(conn, &request.urgent, request.not_before.max(now))?;
                total += n;
                new_rows.push(Some(n));
            }
        }
        Ok(Inserted {
            new_rows,
            total,
            leased,
        })
    };
    // PostgreSQL keeps the count in the INSERT itself; an urgent request
    // adds its promotion.
    let statements = usize::from(!merged.is_empty())
        + requests
            .iter()
            .filter(|r| !mergeable(r) && !r.ids.is_empty())
            .map(|r| 1 + usize::from(!r.urgent.is_empty()))
            .sum::<usize>();
    atomically(conn, statements <= 1, run)
}

/// Ids per promoting UPDATE (one bind each on SQLite and MySQL).
const PROMOTE_CHUNK: usize = 5000;

/// Makes the `urgent` ids urgent, in the transaction that recorded them:
/// the rows it inserted (as normal, the column's default), and rows
/// already pending, which also become due no later than `due` (a takedown
/// of a video already queued behind a bulk purge, or scheduled for later,
/// moves it to the front). Running and failed rows are left as they are:
/// the one is being deleted, the other waits for an operator. Costs
/// nothing when no id is urgent.
fn promote(conn: &mut Conn, urgent: &[VideoId], due: i64) -> QueryResult<()> {
    let urgent_now = Priority::Urgent.stored();
    for chunk in urgent.chunks(PROMOTE_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(VideoId::as_str).collect();
        let pending = || {
            t::video_del_rec
                .filter(t::id.eq_any(ids.clone()))
                .filter(t::state.eq(State::Pending.as_str()))
        };
        diesel::update(pending().filter(t::not_before.gt(due)))
            .set((t::priority.eq(urgent_now), t::not_before.eq(due)))
            .execute(conn)?;
        // Running too: a fast-lane row inserted just now, or one whose
        // attempt fails and is retried, stays a takedown.
        let live = t::video_del_rec
            .filter(t::id.eq_any(ids.clone()))
            .filter(t::state.ne(State::Failed.as_str()))
            .filter(t::priority.ne(urgent_now));
        diesel::update(live)
            .set(t::priority.eq(urgent_now))
            .execute(conn)?;
    }
    Ok(())
}

/// Most paths kept with one request, merged over several records of its id.
pub(crate) const MAX_ROW_PATHS: usize = 4096;

/// Records a request whose ids name paths of their own, in one
/// transaction of its own (such requests are rare, and one refused for
/// too many paths must not fail a group). A new id is inserted with its
/// paths. An id already queued gets the paths it did not have merged in,
/// whatever its state; a running one is given back too, pending and due
/// now: the batch holding it may have deleted its old paths only, so its
/// ack must not remove the row (it finds the row no longer leased and
/// leaves it), and the next claim deletes every path. Returns the new
/// rows, or why the request was refused (nothing written then).
pub(crate) fn record_with_paths(
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
        promote(conn, &request.urgent, request.not_before.max(now))?;
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
    let row = NewDeletion {
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
fn insert_unless_queued(conn: &mut Conn, row: &NewDeletion<'_>) -> QueryResult<bool> {
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
