//! Actions on many requests at once, in bounded batches: each batch is its
//! own short transaction, so a bulk action over millions of rows never holds
//! locks long enough to stall claims and acks of running instances.

use super::queries;
use super::{Db, DbError};
use crate::video_id::VideoId;

/// Rows per transaction of a bulk action.
pub const BATCH: usize = 1000;

/// Every failed request whose id is a valid video id back to pending, due
/// now. Rows whose id is not valid (left by the Go scheduler) stay failed:
/// retrying cannot make them deletable. Returns how many moved.
pub fn retry_failed(db: &Db, now: i64) -> Result<usize, DbError> {
    let mut moved = 0;
    let mut after: Option<String> = None;
    loop {
        let page = db.read(|c| queries::failed_ids(c, after.as_deref(), BATCH))?;
        let valid: Vec<&str> = page
            .iter()
            .map(String::as_str)
            .filter(|id| VideoId::parse(id).is_ok())
            .collect();
        moved += db.write(|c| queries::retry_ids(c, &valid, now))?;
        match page.last() {
            Some(last) if page.len() == BATCH => after = Some(last.clone()),
            _ => return Ok(moved),
        }
    }
}

/// Cancels every request whose id is not a valid video id (rows left by the
/// Go scheduler, which did not check ids), whatever its state, unless an
/// instance holds a live lease on it. Walks the whole table by id, reading
/// only ids. Returns the ids cancelled.
pub fn cancel_invalid(db: &Db, now: i64) -> Result<Vec<String>, DbError> {
    let mut cancelled = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db.read(|c| queries::ids_after(c, after.as_deref(), BATCH))?;
        for id in page.iter().filter(|id| VideoId::parse(id).is_err()) {
            if db.write(|c| queries::cancel(c, id, now))? == queries::Change::Done {
                cancelled.push(id.clone());
            }
        }
        match page.last() {
            Some(last) if page.len() == BATCH => after = Some(last.clone()),
            _ => return Ok(cancelled),
        }
    }
}
