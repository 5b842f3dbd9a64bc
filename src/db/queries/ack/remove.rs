//! Removing an acked batch's done rows with their receipts and their
//! announcement (the outbox's `video_del_announce`: one row per group of
//! removed rows, made from the rows themselves), one function per backend.

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
#[cfg(feature = "mysql")]
use super::announce::{mysql_announce, Item};
#[cfg(feature = "sqlite")]
use super::announce::{sqlite_delete, Announcing};
use super::{Announce, Outcomes, Receipts};
use crate::db::models::CountDelta;
#[cfg(feature = "sqlite")]
use crate::db::models::Done;
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
    groups: &Outcomes<'_>,
    receipts: Option<Receipts>,
    announce: &Announce<'_>,
) -> QueryResult<Gone> {
    let removal = Removal {
        #[cfg(feature = "sqlite")]
        prebuilt: announce.prebuilt.as_ref().map(|p| (p, announce.done)),
        owner,
        groups,
        receipts,
        announces: !announce
            .sinks
            .wanting(crate::db::models::COMPLETED)
            .is_empty(),
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
    /// Whether a sink wants `deletion.completed`: each group's removed rows
    /// are then announced (SQLite: `prebuilt` is set).
    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
    announces: bool,
    /// When the announced events occurred.
    at: i64,
    /// SQLite: each group's announcement items made before the transaction
    /// ([`super::announce::prebuilt`]), and the batch.
    #[cfg(feature = "sqlite")]
    prebuilt: Option<(
        &'a std::collections::BTreeMap<super::Outcome, String>,
        &'a [Done],
    )>,
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
}

/// The announcement's values after those of its rows, in the order its
/// INSERT ... SELECT takes them: when, acked by, paths deleted and missing,
/// per-target counts.
#[cfg(feature = "postgres")]
macro_rules! announcement_values {
    ($query:expr, $at:expr, $owner:expr, $deleted:expr, $missing:expr, $targets:expr) => {
        $query
            .bind::<BigInt, _>($at)
            .bind::<Text, _>($owner)
            .bind::<Integer, _>(*$deleted as i32)
            .bind::<Integer, _>(*$missing as i32)
            .bind::<Text, _>($targets)
    };
}

/// The start of an announcement's INSERT ... SELECT: its values are
/// [`announcement_values!`], then the count and the items of its rows.
#[cfg(feature = "postgres")]
macro_rules! insert_announcement {
    () => {
        "INSERT INTO video_del_announce \
           (occurred_at, acked_by, deleted, missing, targets, size, items) \
         SELECT ?, ?, ?, ?, ?, count(*), "
    };
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
    for ((deleted, missing, targets), group) in groups {
        let ids = serde_json::to_string(group)
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
        let outcome = (*deleted, *missing, targets.clone());
        let announcing = removal.prebuilt.map(|(prebuilt, done)| Announcing {
            at: removal.at,
            found: (*deleted, *missing, targets.as_str()),
            items: prebuilt.get(&outcome).map(String::as_str),
            size: group.len(),
            done,
        });
        gone.removed += sqlite_delete(c, &ids, owner, announcing)?;
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

// The announcement of what the DELETE returned (none when nothing went);
// its binds come after the statement's others.
#[cfg(feature = "postgres")]
macro_rules! announced {
    () => {
        concat!(
            ", announced AS (",
            insert_announcement!(),
            "json_agg(json_build_array(id, created_at, attempts + 1, source, request_id)) \
               ::text \
             FROM gone HAVING count(*) > 0)"
        )
    };
}

#[cfg(feature = "postgres")]
macro_rules! removed {
    () => {
        " SELECT count(*) AS removed FROM gone"
    };
}

/// PostgreSQL without receipts: the rows go and the counts follow in one
/// statement for the whole batch, or, when announced, one per group (an
/// announcement is per group).
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
                " RETURNING id, created_at, attempts, source, request_id), \
                 counted AS (UPDATE video_del_counts \
                   SET queued = queued - (SELECT count(*) FROM gone) WHERE shard = ?)",
                $($announced)*
                removed!()
            )
        };
    }
    macro_rules! statement {
        ($ids:expr) => {
            prepared(match removal.announces {
                false => gone!(),
                true => gone!(announced!(),),
            })
            .bind::<Array<Text>, _>($ids)
            .bind::<Text, _>(removal.owner)
            .bind::<Integer, _>(counts::shard())
        };
    }
    let removed = match removal.announces {
        false => {
            let ids: Vec<&str> = removal.groups.values().flatten().copied().collect();
            statement!(&ids).get_result::<Removed>(c)?.removed
        }
        true => {
            let mut removed = 0;
            for ((deleted, missing, targets), ids) in removal.groups {
                let query = statement!(ids);
                let (at, owner) = (removal.at, removal.owner);
                removed += announcement_values!(query, at, owner, deleted, missing, targets)
                    .get_result::<Removed>(c)?
                    .removed;
            }
            removed
        }
    };
    Ok(Gone {
        removed: removed as usize,
        delta: CountDelta::default(),
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
        let sql = match (replace, removal.announces) {
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
        let gone: Removed = match removal.announces {
            true => announcement_values!(query, removal.at, owner, deleted, missing, targets)
                .get_result(c)?,
            false => query.get_result(c)?,
        };
        removed += gone.removed as usize;
    }
    Ok(Gone {
        removed,
        delta: CountDelta::default(),
    })
}

/// MySQL, no DELETE ... RETURNING: lock the rows still ours, write their
/// receipts and their announcements, then delete them. (A JSON_TABLE
/// join, as SQLite does with json_each, made MariaDB scan the table: four
/// times slower.)
#[cfg(feature = "mysql")]
fn mysql_remove_done(c: &mut diesel::MysqlConnection, removal: &Removal<'_>) -> QueryResult<Gone> {
    let (owner, groups, receipts) = (removal.owner, removal.groups, removal.receipts);
    let mut delta = CountDelta::default();
    let ids: Vec<&str> = groups.values().flatten().copied().collect();
    let leased = t::video_del_rec
        .filter(t::id.eq_any(&ids))
        .filter(t::locked_by.eq(owner))
        .filter(t::locked_until.gt(sql::<Nullable<BigInt>>(db_now_ms!(mysql))))
        .for_update();
    // What an announcement keeps of each row (MariaDB's JSON_ARRAYAGG is
    // cut at `group_concat_max_len`: the items are made here).
    let rows: Vec<Item> = match removal.announces {
        true => leased
            .select((t::id, t::created_at, t::attempts, t::source, t::request_id))
            .load(c)?,
        false => leased
            .select(t::id)
            .load::<String>(c)?
            .into_iter()
            .map(|id| (id, 0, 0, String::new(), None))
            .collect(),
    };
    if rows.is_empty() {
        return Ok(Gone { removed: 0, delta });
    }
    let ours: Vec<String> = rows.iter().map(|row| row.0.clone()).collect();
    if let Some(Receipts { at, replace }) = receipts {
        delta.done += receipts::write(c, owner, groups, &ours, at, replace)?;
    }
    if removal.announces {
        mysql_announce(c, (removal.at, owner), groups, rows)?;
    }
    let removed = diesel::delete(t::video_del_rec.filter(t::id.eq_any(&ours))).execute(c)?;
    delta.queued -= removed as i64;
    Ok(Gone { removed, delta })
}
