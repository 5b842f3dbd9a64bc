//! Acking an executed batch in one transaction (or one PostgreSQL
//! statement): rows whose files are gone are deleted with their receipts,
//! failed ones rescheduled or failed for good, and the kept counts follow;
//! all only for rows still leased to the acking instance (`locked_by`), so
//! a row another instance took over after the lease expired is left to it.

use diesel::dsl::sql;
use diesel::prelude::*;
#[cfg(feature = "postgres")]
use diesel::sql_types::Array;
use diesel::sql_types::{BigInt, Nullable};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use diesel::sql_types::{Integer, Text};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::prepared::prepared;
#[cfg(feature = "mysql")]
use super::receipts;
use super::{atomically, counts};
use crate::db::models::{AckCounts, CountDelta, Done, Failure, State};
use crate::db::schema::video_del_rec::dsl as t;
use crate::db::{AnyConnection, Conn};

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
            let gone = remove_done(conn, owner, &groups, receipts)?;
            if receipts.is_some() {
                counts.receipts = gone.removed;
            }
            counts.removed = gone.removed;
            counts.lost_lease += done.len() - gone.removed;
            delta = gone.delta;
        }
        reschedule(conn, owner, failures, &mut counts, &mut delta)?;
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

/// Reschedules (or fails for good) the ids whose deletion failed, those
/// still leased to `owner`, adding to `counts` and to the kept counts'
/// `delta`.
fn reschedule(
    conn: &mut Conn,
    owner: &str,
    failures: &[Failure],
    counts: &mut AckCounts,
    delta: &mut CountDelta,
) -> QueryResult<()> {
    let db_now = super::db_now_ms(conn);
    for failure in failures {
        let state = match failure.retry_at {
            Some(_) => State::Pending,
            None => State::Failed,
        };
        let updated = diesel::update(
            t::video_del_rec
                .filter(t::id.eq(&failure.id))
                .filter(t::locked_by.eq(owner))
                .filter(t::locked_until.gt(sql::<Nullable<BigInt>>(db_now))),
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
    Ok(())
}

/// What a group of a batch's ids found, bound once for all of them in
/// their receipts: paths deleted and missing, and the per-target counts
/// (JSON).
type Outcome = (u32, u32, String);

/// The ids of a batch by what their deletion found: a receipt's counts
/// are then bound once per group instead of travelling with each id. A
/// batch usually has one group (every id has the same paths, and they all
/// existed).
pub(super) type Outcomes<'a> = std::collections::BTreeMap<Outcome, Vec<&'a str>>;

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
           claims = excluded.claims, completions = video_del_receipt.completions + 1"
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
) -> QueryResult<Gone> {
    let removal = Removal {
        owner,
        groups,
        receipts,
    };
    match conn {
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => sqlite_remove_done(c, &removal),
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => pg_remove_done(c, &removal),
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => mysql_remove_done(c, &removal),
    }
}

/// What to remove: the done ids of a batch still leased to `owner`, by
/// outcome, and how their receipts are written (none when off).
struct Removal<'a> {
    owner: &'a str,
    groups: &'a Outcomes<'a>,
    receipts: Option<Receipts>,
}

/// Binds a receipt's values in the order its INSERT ... SELECT takes them:
/// completed at, paths deleted and missing, acked by, per-target counts.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! receipt_values {
    ($query:expr, $at:expr, $deleted:expr, $missing:expr, $owner:expr, $targets:expr) => {
        $query
            .bind::<BigInt, _>($at)
            .bind::<Integer, _>(*$deleted as i32)
            .bind::<Integer, _>(*$missing as i32)
            .bind::<Text, _>($owner)
            .bind::<Text, _>($targets)
    };
}

/// What removing a batch's done rows did: rows removed, and the change to
/// the kept counts still to be added (none when the statement kept them).
struct Gone {
    removed: usize,
    delta: CountDelta,
}

/// SQLite, one writer, no concurrent change: receipts are copied from the
/// rows still leased to us, then the rows go.
#[cfg(feature = "sqlite")]
fn sqlite_remove_done(
    c: &mut diesel::SqliteConnection,
    removal: &Removal<'_>,
) -> QueryResult<Gone> {
    let (owner, groups, receipts) = (removal.owner, removal.groups, removal.receipts);
    #[derive(QueryableByName)]
    struct Written {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        completions: i32,
    }
    macro_rules! copy_rows {
        () => {
            concat!(
                insert_receipts!(),
                "SELECT id, created_at, ?, attempts + 1, ?, ?, ?, source, request_id, ?, \
                   claims \
                 FROM video_del_rec \
                 WHERE id IN (SELECT value FROM json_each(?)) AND ",
                leased!(sqlite)
            )
        };
    }
    let mut gone = Gone {
        removed: 0,
        delta: CountDelta::default(),
    };
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
            let insert = receipt_values!(prepared(sql), at, deleted, missing, owner, targets)
                .bind::<Text, _>(&ids)
                .bind::<Text, _>(owner);
            gone.delta.done += match replace {
                false => insert.execute(c)? as i64,
                true => insert
                    .load::<Written>(c)?
                    .iter()
                    .filter(|w| w.completions == 1)
                    .count() as i64,
            };
        }
        gone.removed += prepared(concat!(
            "DELETE FROM video_del_rec WHERE id IN (SELECT value FROM json_each(?)) AND ",
            leased!(sqlite)
        ))
        .bind::<Text, _>(&ids)
        .bind::<Text, _>(owner)
        .execute(c)?;
    }
    gone.delta.queued -= gone.removed as i64;
    Ok(gone)
}

/// How many rows a PostgreSQL removal returned.
#[cfg(feature = "postgres")]
#[derive(QueryableByName)]
struct Removed {
    #[diesel(sql_type = BigInt)]
    removed: i64,
}

/// PostgreSQL, one statement per group: the rows go, their receipts are
/// made from what the DELETE returns (so a row re-leased meanwhile by
/// another instance gets none), and the kept counts change in the same
/// statement.
#[cfg(feature = "postgres")]
fn pg_remove_done(c: &mut diesel::PgConnection, removal: &Removal<'_>) -> QueryResult<Gone> {
    let (owner, groups, receipts) = (removal.owner, removal.groups, removal.receipts);
    let Some(Receipts { at, replace }) = receipts else {
        let ids: Vec<&str> = groups.values().flatten().copied().collect();
        let gone: Removed = prepared(concat!(
            "WITH gone AS (DELETE FROM video_del_rec WHERE id = ANY(?) AND ",
            leased!(postgres),
            " RETURNING 1), \
             counted AS (UPDATE video_del_counts \
               SET queued = queued - (SELECT count(*) FROM gone) WHERE shard = ?) \
             SELECT count(*) AS removed FROM gone",
        ))
        .bind::<Array<Text>, _>(&ids)
        .bind::<Text, _>(owner)
        .bind::<Integer, _>(counts::shard())
        .get_result(c)?;
        return Ok(Gone {
            removed: gone.removed as usize,
            delta: CountDelta::default(),
        });
    };
    macro_rules! gone_and_kept {
        ($($replacing:tt)*) => {
            concat!(
                "WITH gone AS ( \
                   DELETE FROM video_del_rec WHERE id = ANY(?) AND ",
                leased!(postgres),
                " RETURNING id, created_at, attempts, source, request_id, claims), \
                 kept AS (",
                insert_receipts!(),
                "SELECT id, created_at, ?, attempts + 1, ?, ?, ?, source, request_id, ?, \
                   claims \
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
        let leased = prepared(sql)
            .bind::<Array<Text>, _>(ids)
            .bind::<Text, _>(owner);
        let gone: Removed = receipt_values!(leased, at, deleted, missing, owner, targets)
            .bind::<Integer, _>(counts::shard())
            .get_result(c)?;
        removed += gone.removed as usize;
    }
    Ok(Gone {
        removed,
        delta: CountDelta::default(),
    })
}

/// MySQL, no DELETE ... RETURNING: lock the rows still ours, write their
/// receipts, then delete them. (A JSON_TABLE join, as SQLite does with
/// json_each, made MariaDB scan the table: four times slower.)
#[cfg(feature = "mysql")]
fn mysql_remove_done(c: &mut diesel::MysqlConnection, removal: &Removal<'_>) -> QueryResult<Gone> {
    let (owner, groups, receipts) = (removal.owner, removal.groups, removal.receipts);
    let mut delta = CountDelta::default();
    let ids: Vec<&str> = groups.values().flatten().copied().collect();
    let ours: Vec<String> = t::video_del_rec
        .filter(t::id.eq_any(&ids))
        .filter(t::locked_by.eq(owner))
        .filter(t::locked_until.gt(sql::<Nullable<BigInt>>(db_now_ms!(mysql))))
        .select(t::id)
        .for_update()
        .load(c)?;
    if ours.is_empty() {
        return Ok(Gone { removed: 0, delta });
    }
    if let Some(Receipts { at, replace }) = receipts {
        delta.done += receipts::write(c, owner, groups, &ours, at, replace)?;
    }
    let removed = diesel::delete(t::video_del_rec.filter(t::id.eq_any(&ours))).execute(c)?;
    delta.queued -= removed as i64;
    Ok(Gone { removed, delta })
}
