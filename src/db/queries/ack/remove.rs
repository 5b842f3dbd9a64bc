//! Removing an acked batch's done rows with their receipts (and, on
//! PostgreSQL, their outbox events), one function per backend.

#[cfg(feature = "mysql")]
use diesel::dsl::sql;
use diesel::prelude::*;
#[cfg(feature = "postgres")]
use diesel::sql_types::Array;
use diesel::sql_types::BigInt;
#[cfg(feature = "mysql")]
use diesel::sql_types::Nullable;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use diesel::sql_types::{Integer, Text};

#[cfg(feature = "postgres")]
use super::super::counts;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::super::prepared::prepared;
#[cfg(feature = "mysql")]
use super::super::receipts;
use super::{Announce, Grouped, Outcome, Outcomes, Receipts};
use crate::db::models::CountDelta;
#[cfg(feature = "mysql")]
use crate::db::schema::video_del_rec::dsl as t;
use crate::db::{AnyConnection, Conn};

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
pub(super) fn remove_done(
    conn: &mut Conn,
    owner: &str,
    grouped: &Grouped<'_>,
    receipts: Option<Receipts>,
    announce: &Announce<'_>,
) -> QueryResult<Gone> {
    let removal = Removal {
        owner,
        groups: &grouped.ids,
        receipts,
        data: &grouped.data,
        sinks: announce.sinks.wanting(crate::db::models::COMPLETED),
        signed: announce
            .sinks
            .wanting(crate::db::models::COMPLETED)
            .iter()
            .map(|sink| !announce.sinks.is_purge(sink))
            .collect(),
        at: announce.at,
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
    /// Per group, its ids' `deletion.completed` data (PostgreSQL).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    data: &'a std::collections::BTreeMap<Outcome, Vec<&'a String>>,
    /// The sinks wanting `deletion.completed` (none: no events).
    sinks: &'a [String],
    /// For each of `sinks`, whether its events keep their data (webhooks;
    /// purges need only the id): PostgreSQL.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    signed: Vec<bool>,
    /// When the events occurred (PostgreSQL).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    at: i64,
}

impl Removal<'_> {
    fn announces(&self) -> bool {
        !self.sinks.is_empty()
    }
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
pub(super) struct Gone {
    pub removed: usize,
    pub delta: CountDelta,
    /// The ids removed, when their events are still to be written (SQLite,
    /// MySQL: PostgreSQL writes them in its statement).
    pub ids: Option<Vec<String>>,
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
        ids: removal.announces().then(Vec::new),
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
        gone.removed += sqlite_delete(c, &ids, owner, gone.ids.as_mut())?;
    }
    gone.delta.queued -= gone.removed as i64;
    Ok(gone)
}

/// Deletes the rows of `ids` (a JSON array) still leased to `owner`;
/// returns how many went, and adds their ids to `removed` when given.
#[cfg(feature = "sqlite")]
fn sqlite_delete(
    c: &mut diesel::SqliteConnection,
    ids: &str,
    owner: &str,
    removed: Option<&mut Vec<String>>,
) -> QueryResult<usize> {
    macro_rules! delete {
        () => {
            concat!(
                "DELETE FROM video_del_rec WHERE id IN (SELECT value FROM json_each(?)) AND ",
                leased!(sqlite)
            )
        };
    }
    let Some(removed) = removed else {
        return prepared(delete!())
            .bind::<Text, _>(ids)
            .bind::<Text, _>(owner)
            .execute(c);
    };
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let gone: Vec<Id> = prepared(concat!(delete!(), " RETURNING id"))
        .bind::<Text, _>(ids)
        .bind::<Text, _>(owner)
        .load(c)?;
    let n = gone.len();
    removed.extend(gone.into_iter().map(|i| i.id));
    Ok(n)
}

/// How many rows a PostgreSQL removal returned.
#[cfg(feature = "postgres")]
#[derive(QueryableByName)]
struct Removed {
    #[diesel(sql_type = BigInt)]
    removed: i64,
}

// The outbox's rows, made from what the DELETE returned (so only for rows
// that went), one per sink; its binds come last.
#[cfg(feature = "postgres")]
macro_rules! announced {
    () => {
        ", announced AS ( \
           INSERT INTO video_del_event (sink, kind, subject, occurred_at, data, not_before) \
           SELECT s.sink, 'deletion.completed', gone.id, ?, \
             CASE WHEN s.signed THEN d.data ELSE '{}' END, ? \
           FROM gone JOIN unnest(?::text[], ?::text[]) AS d(id, data) ON d.id = gone.id \
           CROSS JOIN unnest(?::text[], ?::bool[]) AS s(sink, signed))"
    };
}

#[cfg(feature = "postgres")]
macro_rules! removed {
    () => {
        " SELECT count(*) AS removed FROM gone"
    };
}

// Binds the values of `announced!`: when, the ids with their data, the
// sinks.
#[cfg(feature = "postgres")]
macro_rules! announced_values {
    ($query:expr, $removal:expr, $ids:expr, $data:expr) => {
        $query
            .bind::<BigInt, _>($removal.at)
            .bind::<BigInt, _>($removal.at)
            .bind::<Array<Text>, _>($ids)
            .bind::<Array<Text>, _>($data)
            .bind::<Array<Text>, _>($removal.sinks)
            .bind::<Array<diesel::sql_types::Bool>, _>(&$removal.signed)
    };
}

/// PostgreSQL without receipts: the rows go, the counts follow, and the
/// events are written, in one statement for the whole batch.
#[cfg(feature = "postgres")]
fn pg_remove_without_receipts(
    c: &mut diesel::PgConnection,
    removal: &Removal<'_>,
) -> QueryResult<Gone> {
    macro_rules! gone {
        ($($announced:tt)*) => {
            concat!(
                "WITH gone AS (DELETE FROM video_del_rec WHERE id = ANY(?) AND ",
                leased!(postgres),
                " RETURNING id), \
                 counted AS (UPDATE video_del_counts \
                   SET queued = queued - (SELECT count(*) FROM gone) WHERE shard = ?)",
                $($announced)*
                removed!()
            )
        };
    }
    let ids: Vec<&str> = removal.groups.values().flatten().copied().collect();
    let sql = match removal.announces() {
        false => gone!(),
        true => gone!(announced!(),),
    };
    let query = prepared(sql)
        .bind::<Array<Text>, _>(&ids)
        .bind::<Text, _>(removal.owner)
        .bind::<Integer, _>(counts::shard());
    let data: Vec<&String> = removal.data.values().flatten().copied().collect();
    let gone: Removed = match removal.announces() {
        false => query.get_result(c)?,
        true => announced_values!(query, removal, &ids, &data).get_result(c)?,
    };
    Ok(Gone {
        removed: gone.removed as usize,
        delta: CountDelta::default(),
        ids: None,
    })
}

/// PostgreSQL, one statement per group: the rows go, their receipts are
/// made from what the DELETE returns (so a row re-leased meanwhile by
/// another instance gets none), and the kept counts change in the same
/// statement.
#[cfg(feature = "postgres")]
fn pg_remove_done(c: &mut diesel::PgConnection, removal: &Removal<'_>) -> QueryResult<Gone> {
    let (owner, groups) = (removal.owner, removal.groups);
    let Some(Receipts { at, replace }) = removal.receipts else {
        return pg_remove_without_receipts(c, removal);
    };
    macro_rules! gone_and_kept {
        ([$($replacing:tt)*] [$($announced:tt)*]) => {
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
                   WHERE shard = ?)",
                $($announced)*
                removed!()
            )
        };
    }
    let mut removed = 0;
    for (outcome, ids) in groups {
        let (deleted, missing, targets) = outcome;
        let sql = match (replace, removal.announces()) {
            (false, false) => gone_and_kept!([][]),
            (true, false) => gone_and_kept!([replacing_receipts!(),][]),
            (false, true) => gone_and_kept!([][announced!(),]),
            (true, true) => gone_and_kept!([replacing_receipts!(),][announced!(),]),
        };
        let leased = prepared(sql)
            .bind::<Array<Text>, _>(ids)
            .bind::<Text, _>(owner);
        let query = receipt_values!(leased, at, deleted, missing, owner, targets)
            .bind::<Integer, _>(counts::shard());
        let gone: Removed = match removal.data.get(outcome) {
            Some(data) if removal.announces() => {
                announced_values!(query, removal, ids, data).get_result(c)?
            }
            _ => query.get_result(c)?,
        };
        removed += gone.removed as usize;
    }
    Ok(Gone {
        removed,
        delta: CountDelta::default(),
        ids: None,
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
        return Ok(Gone {
            removed: 0,
            delta,
            ids: None,
        });
    }
    if let Some(Receipts { at, replace }) = receipts {
        delta.done += receipts::write(c, owner, groups, &ours, at, replace)?;
    }
    let removed = diesel::delete(t::video_del_rec.filter(t::id.eq_any(&ours))).execute(c)?;
    delta.queued -= removed as i64;
    let ids = removal.announces().then_some(ours);
    Ok(Gone {
        removed,
        delta,
        ids,
    })
}
