//! Actions on many requests at once, in bounded batches: each batch is its
//! own short transaction, so a bulk action over millions of rows never holds
//! locks long enough to stall claims and acks of running instances. Each
//! action is logged with its count.

use super::models::State;
use super::queries;
use super::queries::events::Sinks;
use super::{Db, DbError};
use crate::clock::now_ms;
use crate::video_id::VideoId;

/// Rows per transaction of a bulk action.
pub(crate) const BATCH: usize = 1000;

/// Failed requests back to pending, due now: those of `ids` (exact text),
/// or every one. Rows whose id is not a valid video id (left by the Go
/// scheduler) stay failed: retrying cannot make them deletable. Returns how
/// many moved.
pub(crate) fn retry(db: &Db, ids: Option<Vec<String>>, now: i64) -> Result<usize, DbError> {
    let valid = |page: &[String]| -> Vec<String> {
        page.iter()
            .filter(|id| VideoId::parse(id).is_ok())
            .cloned()
            .collect()
    };
    let moved = for_each_page(db, State::Failed, ids, |page| {
        let ids = valid(page);
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        db.write(|c| queries::manage::retry_ids(c, &ids, now))
    })?;
    log::info!("bulk retry: {moved} failed requests moved back to pending");
    Ok(moved)
}

/// Every failed request whose id is valid back to pending (`retry --failed`).
pub(crate) fn retry_failed(db: &Db, now: i64) -> Result<usize, DbError> {
    retry(db, None, now)
}

/// Cancels requests in `state` (`failed` or `pending`): those of `ids`, or
/// every one. A request claimed meanwhile is running and left alone.
/// Returns how many were cancelled.
pub(crate) fn cancel(
    db: &Db,
    state: State,
    ids: Option<Vec<String>>,
    sinks: &Sinks,
) -> Result<usize, DbError> {
    let cancelled = for_each_page(db, state, ids, |page| {
        let ids: Vec<&str> = page.iter().map(String::as_str).collect();
        db.write(|c| queries::manage::cancel_ids(c, &ids, state, now_ms(), sinks))
    })?;
    log::info!(
        "bulk cancel: {cancelled} {} requests cancelled",
        state.as_str()
    );
    Ok(cancelled)
}

/// Runs `act` on `ids` in batches, or, without ids, on every request in
/// `state`, page by page; sums what it returns.
fn for_each_page(
    db: &Db,
    state: State,
    ids: Option<Vec<String>>,
    mut act: impl FnMut(&[String]) -> Result<usize, DbError>,
) -> Result<usize, DbError> {
    let mut total = 0;
    if let Some(mut ids) = ids {
        // Sorted: rows are touched in key order, like every other writer.
        ids.sort_unstable();
        ids.dedup();
        for page in ids.chunks(BATCH) {
            total += act(page)?;
        }
        return Ok(total);
    }
    let mut after: Option<String> = None;
    loop {
        let page = db.read(|c| queries::manage::ids_in_state(c, state, after.as_deref(), BATCH))?;
        total += act(&page)?;
        match page.last() {
            Some(last) if page.len() == BATCH => after = Some(last.clone()),
            _ => return Ok(total),
        }
    }
}

/// Cancels every request whose id is not a valid video id (rows left by the
/// Go scheduler, which did not check ids), whatever its state, unless an
/// instance holds a live lease on it. Walks the whole table by id, reading
/// only ids. Returns the ids cancelled.
pub(crate) fn cancel_invalid(db: &Db, now: i64, sinks: &Sinks) -> Result<Vec<String>, DbError> {
    let mut cancelled = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db.read(|c| queries::manage::ids_after(c, after.as_deref(), BATCH))?;
        for id in page.iter().filter(|id| VideoId::parse(id).is_err()) {
            if db.write(|c| queries::manage::cancel(c, id, now, sinks))?
                == queries::manage::Change::Done
            {
                cancelled.push(id.clone());
            }
        }
        match page.last() {
            Some(last) if page.len() == BATCH => after = Some(last.clone()),
            _ => break,
        }
    }
    log::info!("cancelled {} requests with an invalid id", cancelled.len());
    Ok(cancelled)
}
