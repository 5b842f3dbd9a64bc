//! The ack's side of the outbox, `video_del_announce`: one row per group
//! of an ack's removed rows, written by the ack (see `ack::remove`), made
//! into `deletion.completed` events, one per row and sink that wants them,
//! by [`fan_out`] in a transaction that deletes it.
//!
//! Why not events straight from the ack: one event row per id and sink
//! (and its data, the receipt, made per id) cost a drain about half its
//! speed on SQLite (BENCHMARKS.md, "notifications"); one row per group,
//! made by the database from the rows it removes, costs it a few per cent.
//! The guarantee is the same: an announcement exists if and only if its
//! ack committed, and each becomes its events exactly once.

use diesel::prelude::*;

use super::events::{self, NewEvent, Sinks};
use super::Conn;
use crate::db::models::{completed_data, AnnouncedItem, Announcement, COMPLETED};
use crate::db::schema::video_del_announce::dsl as a;
use crate::db::AnyConnection;

/// Makes up to `limit` announcements, oldest first, into their events
/// (one per removed row and sink of `sinks` wanting `deletion.completed`;
/// none when no sink wants them any more) and deletes them, in one
/// transaction; another instance doing the same at once skips them
/// (`SKIP LOCKED`). Returns (announcements made, events written).
pub(crate) fn fan_out(conn: &mut Conn, sinks: &Sinks, limit: usize) -> QueryResult<(usize, usize)> {
    conn.transaction(|c| {
        let oldest = a::video_del_announce.order(a::id.asc()).limit(limit as i64);
        let taken: Vec<Announcement> = match c {
            #[cfg(feature = "sqlite")]
            AnyConnection::Sqlite(c) => oldest.load(c)?,
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(c) => oldest.for_update().skip_locked().load(c)?,
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(c) => oldest.for_update().skip_locked().load(c)?,
        };
        if taken.is_empty() {
            return Ok((0, 0));
        }
        let mut written = 0;
        if !sinks.wanting(COMPLETED).is_empty() {
            let mut made = Vec::new();
            for announced in &taken {
                let items: Vec<AnnouncedItem> = serde_json::from_str(&announced.items)
                    .map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))?;
                made.extend(items.into_iter().map(|item| {
                    let data = completed_data(announced, &item);
                    (item.0, announced.occurred_at, data)
                }));
            }
            let new: Vec<NewEvent<'_>> = made
                .iter()
                .map(|(subject, occurred_at, data)| NewEvent {
                    kind: COMPLETED,
                    subject,
                    occurred_at: *occurred_at,
                    data: data.clone(),
                })
                .collect();
            written = events::insert(c, sinks, &new)?;
        }
        let ids: Vec<i64> = taken.iter().map(|t| t.id).collect();
        diesel::delete(a::video_del_announce.filter(a::id.eq_any(&ids))).execute(c)?;
        Ok((taken.len(), written))
    })
}

/// Removed rows announced whose events are not made yet: each is one
/// pending event for every sink wanting `deletion.completed`.
pub(crate) fn pending(conn: &mut Conn) -> QueryResult<i64> {
    // A few rows (one per ack's group): summed here, as SUM's type differs
    // by backend.
    let sizes: Vec<i32> = a::video_del_announce.select(a::size).load(conn)?;
    Ok(sizes.into_iter().map(i64::from).sum())
}

/// The ids of every announced row whose events are not made yet (tests:
/// no announcement for a row still in the table).
pub fn announced_ids(conn: &mut Conn) -> QueryResult<Vec<String>> {
    let all: Vec<String> = a::video_del_announce.select(a::items).load(conn)?;
    let mut ids = Vec::new();
    for items in all {
        let items: Vec<AnnouncedItem> = serde_json::from_str(&items)
            .map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))?;
        ids.extend(items.into_iter().map(|item| item.0));
    }
    Ok(ids)
}
