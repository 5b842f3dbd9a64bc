//! Receipts (`video_del_receipt`): written by the ack that removes a
//! request's row, read by the API and the export, pruned after the
//! retention. One per id: a later deletion of the same id replaces it.

use diesel::prelude::*;

use super::super::models::{CountDelta, Receipt};
use super::super::schema::video_del_receipt::dsl as r;
use super::super::Conn;
use super::counts;

/// Writes the receipts of the `removed` ids among `groups` (rows still in
/// `video_del_rec`, locked by the caller's transaction), acked by `owner`
/// at `completed_at`; with `replace`, replacing earlier receipts of the
/// same ids, else failing on such an id (see [`super::ack`]). Returns how
/// many more receipts there are now (for the kept count). Used where the
/// ack cannot make them in the DELETE itself (MySQL has no `DELETE ...
/// RETURNING`): the receipts are copied from the rows by `INSERT ...
/// SELECT`, one statement per group, so only ids are bound, not nine values
/// a row. `ON DUPLICATE KEY UPDATE` counts 1 affected row for a new receipt
/// and 2 for a replaced one (`completions` always changes), which tells
/// them apart.
#[cfg(feature = "mysql")]
pub fn write(
    conn: &mut diesel::MysqlConnection,
    owner: &str,
    groups: &super::ack::Outcomes<'_>,
    removed: &[String],
    completed_at: i64,
    replace: bool,
) -> QueryResult<i64> {
    use diesel::sql_types::{BigInt, Integer, Text};
    use std::collections::HashSet;
    let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
    let mut affected = 0;
    for ((deleted, missing, targets), ids) in groups {
        let ids: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| removed.contains(id))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let list = vec!["?"; ids.len()].join(", ");
        let upsert = match replace {
            false => "",
            true => {
                " ON DUPLICATE KEY UPDATE requested_at = VALUES(requested_at), \
                   completed_at = VALUES(completed_at), attempts = VALUES(attempts), \
                   deleted = VALUES(deleted), missing = VALUES(missing), \
                   acked_by = VALUES(acked_by), source = VALUES(source), \
                   request_id = VALUES(request_id), targets = VALUES(targets), \
                   claims = VALUES(claims), completions = completions + 1"
            }
        };
        let mut insert = diesel::sql_query(format!(
            "{}SELECT id, created_at, ?, attempts + 1, ?, ?, ?, source, request_id, ?, \
               claims \
             FROM video_del_rec WHERE id IN ({list}){upsert}",
            insert_receipts!()
        ))
        .into_boxed()
        .bind::<BigInt, _>(completed_at)
        .bind::<Integer, _>(*deleted as i32)
        .bind::<Integer, _>(*missing as i32)
        .bind::<Text, _>(owner)
        .bind::<Text, _>(targets.as_str());
        for id in ids {
            insert = insert.bind::<Text, _>(id);
        }
        affected += insert.execute(conn)? as i64;
    }
    Ok(2 * removed.len() as i64 - affected)
}

/// The receipt of `id`, if kept.
pub fn get(conn: &mut Conn, id: &str) -> QueryResult<Option<Receipt>> {
    r::video_del_receipt
        .find(id)
        .select(Receipt::as_select())
        .first(conn)
        .optional()
}

/// A page of receipts in id order, after `after` (keyset pagination on the
/// primary key).
pub fn list(conn: &mut Conn, after: Option<&str>, limit: usize) -> QueryResult<Vec<Receipt>> {
    let query = r::video_del_receipt
        .select(Receipt::as_select())
        .into_boxed();
    keyset_page!(conn, query, r::id, after, limit)
}

/// A page of receipts completed in `[since, until)`, in completion order
/// (then id), after the receipt `after` (its completion time and id): the
/// export walks the `(completed_at, id)` index page by page.
pub fn completed_between(
    conn: &mut Conn,
    since: i64,
    until: i64,
    after: Option<(i64, &str)>,
    limit: usize,
) -> QueryResult<Vec<Receipt>> {
    let mut query = r::video_del_receipt
        .select(Receipt::as_select())
        .filter(r::completed_at.ge(since))
        .filter(r::completed_at.lt(until))
        .order((r::completed_at.asc(), r::id.asc()))
        .limit(limit as i64)
        .into_boxed();
    if let Some((at, id)) = after {
        query = query.filter(
            r::completed_at
                .gt(at)
                .or(r::completed_at.eq(at).and(r::id.gt(id))),
        );
    }
    query.load(conn)
}

/// Deletes up to `limit` receipts completed before `before`, oldest first,
/// and keeps the count. Returns how many went.
pub(crate) fn prune(conn: &mut Conn, before: i64, limit: usize) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let pruned = match conn.backend() {
            // MySQL cannot delete from a table it selects from in a
            // subquery, but takes ORDER BY and LIMIT in a DELETE.
            #[cfg(feature = "mysql")]
            crate::db::Backend::Mysql => diesel::sql_query(
                "DELETE FROM video_del_receipt WHERE completed_at < ? \
                 ORDER BY completed_at LIMIT ?",
            )
            .bind::<diesel::sql_types::BigInt, _>(before)
            .bind::<diesel::sql_types::BigInt, _>(limit as i64)
            .execute(conn)?,
            _ => {
                let oldest = r::video_del_receipt
                    .select(r::id)
                    .filter(r::completed_at.lt(before))
                    .order(r::completed_at.asc())
                    .limit(limit as i64);
                let ids: Vec<String> = oldest.load(conn)?;
                diesel::delete(r::video_del_receipt.filter(r::id.eq_any(&ids))).execute(conn)?
            }
        };
        counts::add(
            conn,
            CountDelta {
                done: -(pruned as i64),
                ..CountDelta::default()
            },
        )?;
        Ok(pruned)
    })
}
