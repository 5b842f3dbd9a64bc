//! An ack's announcement (`video_del_announce`, see
//! [`crate::db::queries::announce`]) on SQLite and MySQL: the removed rows
//! of a group, as they go, made into one row. (PostgreSQL writes it in its
//! removal's statement, `remove.rs`.)

#[cfg(any(feature = "sqlite", feature = "mysql"))]
use diesel::prelude::*;
#[cfg(feature = "sqlite")]
use diesel::sql_types::{BigInt, Integer, Text};

#[cfg(feature = "sqlite")]
use super::super::prepared::prepared;
#[cfg(feature = "sqlite")]
use super::Outcome;
#[cfg(feature = "sqlite")]
use crate::db::models::Done;

/// What a group of removed rows found: paths deleted and missing, the
/// per-target counts (JSON).
#[cfg(feature = "sqlite")]
pub(super) type Found<'a> = (u32, u32, &'a str);

/// SQLite: what a group's announcement needs besides the rows that go.
#[cfg(feature = "sqlite")]
pub(super) struct Announcing<'a> {
    /// When the events occurred.
    pub at: i64,
    /// What the group's deletions found.
    pub found: Found<'a>,
    /// The items of every id of the group ([`prebuilt`]; made from `done`
    /// when missing).
    pub items: Option<&'a str>,
    /// How many ids the group has.
    pub size: usize,
    /// The batch, for a group of which some rows did not go.
    pub done: &'a [Done],
}

/// SQLite: each group's announcement items, by what the deletions found,
/// made from what the claim read before the ack's transaction begins: the
/// one writer's lock is not held meanwhile. (Made in the transaction, from
/// the rows it deleted, they cost the drain about 6%.)
#[cfg(feature = "sqlite")]
pub(super) fn prebuilt(done: &[Done]) -> QueryResult<std::collections::BTreeMap<Outcome, String>> {
    let mut groups: std::collections::BTreeMap<Outcome, Vec<&Done>> = Default::default();
    for d in done {
        let found = (
            d.removed.deleted,
            d.removed.missing,
            d.removed.targets_json(),
        );
        groups.entry(found).or_default().push(d);
    }
    groups
        .into_iter()
        .map(|(found, done)| Ok((found, claimed_items(done.into_iter())?)))
        .collect()
}

/// The items of `done`'s rows, from what their claim read.
#[cfg(feature = "sqlite")]
fn claimed_items<'a>(done: impl Iterator<Item = &'a Done>) -> QueryResult<String> {
    items_json(done.map(|d| {
        let c = &d.claimed;
        (
            &*c.id,
            c.created_at,
            c.attempts + 1,
            &*c.source,
            c.request_id.as_deref(),
        )
    }))
}

/// SQLite: deletes the rows of `ids` (a JSON array) still leased to
/// `owner` and, when `announcing`, writes their announcement: the prebuilt
/// items when every row of the group went (the usual case), else those of
/// the rows that did. Returns how many rows went.
#[cfg(feature = "sqlite")]
pub(super) fn sqlite_delete(
    c: &mut diesel::SqliteConnection,
    ids: &str,
    owner: &str,
    announcing: Option<Announcing<'_>>,
) -> QueryResult<usize> {
    macro_rules! delete {
        ($($returning:tt)*) => {
            prepared(concat!(
                "DELETE FROM video_del_rec WHERE id IN (SELECT value FROM json_each(?)) AND ",
                leased!(sqlite),
                $($returning)*
            ))
            .bind::<Text, _>(ids)
            .bind::<Text, _>(owner)
        };
    }
    let Some(announcing) = announcing else {
        return delete!().execute(c);
    };
    #[derive(QueryableByName)]
    struct Gone {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let gone: Vec<Gone> = delete!(" RETURNING id").load(c)?;
    if gone.is_empty() {
        return Ok(0);
    }
    let items = match announcing.items.filter(|_| gone.len() == announcing.size) {
        Some(items) => std::borrow::Cow::Borrowed(items),
        None => {
            let gone: std::collections::HashSet<&str> = gone.iter().map(|g| &*g.id).collect();
            let done = announcing
                .done
                .iter()
                .filter(|d| gone.contains(&*d.claimed.id));
            std::borrow::Cow::Owned(claimed_items(done)?)
        }
    };
    let (deleted, missing, targets) = announcing.found;
    prepared(
        "INSERT INTO video_del_announce \
           (occurred_at, acked_by, deleted, missing, targets, size, items) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind::<BigInt, _>(announcing.at)
    .bind::<Text, _>(owner)
    .bind::<Integer, _>(deleted as i32)
    .bind::<Integer, _>(missing as i32)
    .bind::<Text, _>(targets)
    .bind::<Integer, _>(gone.len() as i32)
    .bind::<Text, _>(&*items)
    .execute(c)?;
    Ok(gone.len())
}

/// An announcement's items: a JSON array of `[id, requested_at, attempts,
/// source, request_id]` (see [`crate::db::models::AnnouncedItem`]).
#[cfg(any(feature = "sqlite", feature = "mysql"))]
fn items_json<'a>(
    rows: impl Iterator<Item = (&'a str, i64, i32, &'a str, Option<&'a str>)>,
) -> QueryResult<String> {
    serde_json::to_string(&rows.collect::<Vec<_>>())
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))
}

/// A row about to be removed, as MySQL's locking read gives it: id,
/// requested at, attempts (before this one), source, request id.
#[cfg(feature = "mysql")]
pub(super) type Item = (String, i64, i32, String, Option<String>);

/// MySQL: one announcement per group of `groups` for the removed `rows`
/// (MariaDB's JSON_ARRAYAGG is cut at `group_concat_max_len`: the items are
/// made here).
#[cfg(feature = "mysql")]
pub(super) fn mysql_announce(
    c: &mut diesel::MysqlConnection,
    (at, owner): (i64, &str),
    groups: &super::Outcomes<'_>,
    rows: Vec<Item>,
) -> QueryResult<()> {
    use crate::db::schema::video_del_announce::dsl as a;
    let mut rows: std::collections::HashMap<String, Item> =
        rows.into_iter().map(|row| (row.0.clone(), row)).collect();
    for ((deleted, missing, targets), ids) in groups {
        let taken: Vec<Item> = ids.iter().filter_map(|id| rows.remove(*id)).collect();
        if taken.is_empty() {
            continue;
        }
        let items = items_json(
            taken
                .iter()
                .map(|(id, requested, attempts, source, request)| {
                    (
                        &**id,
                        *requested,
                        attempts + 1,
                        &**source,
                        request.as_deref(),
                    )
                }),
        )?;
        diesel::insert_into(a::video_del_announce)
            .values((
                a::occurred_at.eq(at),
                a::acked_by.eq(owner),
                a::deleted.eq(*deleted as i32),
                a::missing.eq(*missing as i32),
                a::targets.eq(targets),
                a::size.eq(taken.len() as i32),
                a::items.eq(items),
            ))
            .execute(c)?;
    }
    Ok(())
}
