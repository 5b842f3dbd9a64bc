//! Receipts (`video_del_receipt`): written by the ack that removes a
//! request's row, read by the API and the export, pruned after the
//! retention. One per id: a later deletion of the same id replaces it.

use std::collections::HashSet;

use diesel::prelude::*;

use super::super::models::{CountDelta, Done, Receipt};
use super::super::schema::video_del_receipt::dsl as r;
use super::super::{AnyConnection, Conn};
use super::counts;

/// Receipts per multi-row INSERT: 9 binds each stays below SQLite's and
/// MySQL's placeholder limits.
const INSERT_CHUNK: usize = 3000;

/// Writes the receipts of the `removed` ids among `done`, acked by `owner`
/// at `completed_at`, replacing earlier receipts of the same ids. Returns
/// how many more receipts there are now (for the kept count).
pub fn write(
    conn: &mut Conn,
    owner: &str,
    done: &[Done],
    removed: &[String],
    completed_at: i64,
) -> QueryResult<i64> {
    if removed.is_empty() {
        return Ok(0);
    }
    let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
    let receipts: Vec<Receipt> = done
        .iter()
        .filter(|d| removed.contains(d.claimed.id.as_str()))
        .map(|d| Receipt {
            id: d.claimed.id.clone(),
            requested_at: d.claimed.created_at,
            completed_at,
            attempts: d.claimed.attempts.saturating_add(1),
            deleted: d.removed.deleted as i32,
            missing: d.removed.missing as i32,
            acked_by: owner.to_owned(),
            source: d.claimed.source.clone(),
            request_id: d.claimed.request_id.clone(),
        })
        .collect();
    let ids: Vec<&str> = receipts.iter().map(|r| r.id.as_str()).collect();
    let replaced = diesel::delete(r::video_del_receipt.filter(r::id.eq_any(&ids))).execute(conn)?;
    for chunk in receipts.chunks(INSERT_CHUNK) {
        // A multi-row INSERT is a different statement per backend in
        // diesel: each arm builds its own.
        let insert = diesel::insert_into(r::video_del_receipt).values(chunk);
        match conn {
            #[cfg(feature = "sqlite")]
            AnyConnection::Sqlite(c) => insert.execute(c)?,
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(c) => insert.execute(c)?,
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(c) => insert.execute(c)?,
        };
    }
    Ok(receipts.len() as i64 - replaced as i64)
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
    let mut query = r::video_del_receipt
        .select(Receipt::as_select())
        .order(r::id.asc())
        .limit(limit as i64)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(r::id.gt(after));
    }
    query.load(conn)
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
pub fn prune(conn: &mut Conn, before: i64, limit: usize) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let pruned = match conn {
            // MySQL cannot delete from a table it selects from in a
            // subquery, but takes ORDER BY and LIMIT in a DELETE.
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(c) => diesel::sql_query(
                "DELETE FROM video_del_receipt WHERE completed_at < ? \
                 ORDER BY completed_at LIMIT ?",
            )
            .bind::<diesel::sql_types::BigInt, _>(before)
            .bind::<diesel::sql_types::BigInt, _>(limit as i64)
            .execute(c)?,
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
