//! The outbox, `video_del_event`: one row per sink and event of a
//! request's end, written by the transaction that ends it ([`insert`],
//! from the ack, the cancels and the last failed attempt), claimed by the
//! notifier with the deletions' lease rule (`not_before` moved to the
//! lease's end, `SKIP LOCKED` where the server has it), marked delivered,
//! retried or dead, listed, redelivered, and pruned with the receipts.

use diesel::prelude::*;

use super::Conn;
use crate::db::models::{Event, EventState};
use crate::db::schema::video_del_event::dsl as e;
use crate::db::AnyConnection;

/// Which configured sinks want each kind of event (webhooks filter by
/// `events`; purges want only `deletion.completed`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sinks {
    /// Every sink, in the configuration's order.
    pub names: Vec<String>,
    completed: Vec<String>,
    failed: Vec<String>,
    cancelled: Vec<String>,
}

impl Sinks {
    /// The sinks of `webhooks` (each a name and the events it wants) and of
    /// `purges` (names: they want completions only), in this order.
    pub fn new(webhooks: &[(String, Vec<String>)], purges: &[String]) -> Sinks {
        use crate::db::models::{CANCELLED, COMPLETED, FAILED};
        let hooks = |kind: &str| -> Vec<String> {
            webhooks
                .iter()
                .filter(|(_, events)| events.iter().any(|e| e == kind))
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut completed = hooks(COMPLETED);
        completed.extend(purges.iter().cloned());
        Sinks {
            names: webhooks
                .iter()
                .map(|(name, _)| name.clone())
                .chain(purges.iter().cloned())
                .collect(),
            completed,
            failed: hooks(FAILED),
            cancelled: hooks(CANCELLED),
        }
    }

    /// The sinks wanting `kind` (one of [`crate::db::models::EVENT_TYPES`]).
    pub fn wanting(&self, kind: &str) -> &[String] {
        use crate::db::models::{CANCELLED, COMPLETED};
        match kind {
            COMPLETED => &self.completed,
            CANCELLED => &self.cancelled,
            _ => &self.failed,
        }
    }
}

/// One event of a request's end, before it is written once per sink.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: &'static str,
    pub subject: &'a str,
    pub occurred_at: i64,
    /// The webhook body's `data`, a JSON object.
    pub data: String,
}

/// `deletion.completed`'s data: the receipt of `done`, completed at `at`
/// by `owner`.
pub(crate) fn completed_data(done: &crate::db::models::Done, at: i64, owner: &str) -> String {
    use crate::schedule::rfc3339;
    let (claimed, removed) = (&done.claimed, &done.removed);
    serde_json::json!({
        "id": claimed.id,
        "requested_at": rfc3339(claimed.created_at),
        "completed_at": rfc3339(at),
        "attempts": claimed.attempts + 1,
        "deleted": removed.deleted,
        "missing": removed.missing,
        "targets": removed.targets,
        "acked_by": owner,
        "source": claimed.source,
        "request_id": claimed.request_id,
    })
    .to_string()
}

/// `deletion.failed`'s data: given up after `attempts`, with the last
/// error.
pub(crate) fn failed_data(failure: &crate::db::models::Failure, at: i64) -> String {
    serde_json::json!({
        "id": failure.id,
        "failed_at": crate::schedule::rfc3339(at),
        "attempts": failure.attempts,
        "last_error": failure.error,
    })
    .to_string()
}

/// `deletion.cancelled`'s data. `by` names who cancelled once tokens have
/// names; `null` until then.
pub(crate) fn cancelled_data(id: &str, at: i64, by: Option<&str>) -> String {
    serde_json::json!({
        "id": id,
        "cancelled_at": crate::schedule::rfc3339(at),
        "by": by,
    })
    .to_string()
}

#[derive(Insertable)]
#[diesel(table_name = crate::db::schema::video_del_event)]
struct Row<'a> {
    sink: &'a str,
    kind: &'a str,
    subject: &'a str,
    occurred_at: i64,
    data: &'a str,
    not_before: i64,
}

/// Rows per INSERT: six values each, far below every server's limit on
/// bound parameters (SQLite's 32,766).
const INSERT_CHUNK: usize = 1000;

/// Writes `events` once per sink of `sinks`, due at once. Returns the rows
/// written. Part of the caller's transaction: an event exists only if
/// what it tells of commits.
pub(crate) fn insert(
    conn: &mut Conn,
    sinks: &[String],
    events: &[NewEvent<'_>],
) -> QueryResult<usize> {
    let rows: Vec<Row<'_>> = events
        .iter()
        .flat_map(|event| {
            sinks.iter().map(move |sink| Row {
                sink,
                kind: event.kind,
                subject: event.subject,
                occurred_at: event.occurred_at,
                data: &event.data,
                not_before: event.occurred_at,
            })
        })
        .collect();
    let mut written = 0;
    for chunk in rows.chunks(INSERT_CHUNK) {
        written += match conn {
            #[cfg(feature = "sqlite")]
            AnyConnection::Sqlite(c) => diesel::insert_into(e::video_del_event)
                .values(chunk)
                .execute(c)?,
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(c) => diesel::insert_into(e::video_del_event)
                .values(chunk)
                .execute(c)?,
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(c) => diesel::insert_into(e::video_del_event)
                .values(chunk)
                .execute(c)?,
        };
    }
    Ok(written)
}

/// Leases up to `limit` due events of `sink` to `owner` until
/// `lease_until`, oldest due first. An event whose lease ran out (its
/// instance died or was cut off mid-delivery) is due again by itself.
pub(crate) fn claim(
    conn: &mut Conn,
    owner: &str,
    sink: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
) -> QueryResult<Vec<Event>> {
    conn.transaction(|conn| {
        let due = e::video_del_event
            .select(e::id)
            .filter(e::sink.eq(sink))
            .filter(e::state.eq(EventState::Pending.as_str()))
            .filter(e::not_before.le(now))
            .order(e::not_before.asc())
            .limit(limit as i64);
        // SQLite: one writer, nothing to skip.
        let ids: Vec<i64> = match conn {
            #[cfg(feature = "sqlite")]
            AnyConnection::Sqlite(c) => due.load(c)?,
            #[cfg(feature = "postgres")]
            AnyConnection::Pg(c) => due.for_update().skip_locked().load(c)?,
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(c) => due.for_update().skip_locked().load(c)?,
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        diesel::update(e::video_del_event.filter(e::id.eq_any(&ids)))
            .set((
                e::locked_by.eq(owner),
                e::locked_until.eq(lease_until),
                e::not_before.eq(lease_until),
            ))
            .execute(conn)?;
        e::video_del_event
            .filter(e::id.eq_any(&ids))
            .select(Event::as_select())
            .load(conn)
    })
}

/// Marks events delivered (answered `status`), those still leased to
/// `owner`; returns how many.
pub(crate) fn delivered(
    conn: &mut Conn,
    owner: &str,
    ids: &[i64],
    status: Option<i32>,
    now: i64,
) -> QueryResult<usize> {
    diesel::update(
        e::video_del_event
            .filter(e::id.eq_any(ids))
            .filter(e::locked_by.eq(owner)),
    )
    .set((
        e::state.eq(EventState::Delivered.as_str()),
        e::tries.eq(e::tries + 1),
        e::last_status.eq(status),
        e::last_error.eq(None::<String>),
        e::delivered_at.eq(now),
        e::locked_by.eq(None::<String>),
        e::locked_until.eq(None::<i64>),
    ))
    .execute(conn)
}

/// Records a failed delivery of events still leased to `owner`: due again
/// at `retry_at`, or dead (`None`), with the answer's status and error.
pub(crate) fn failed(
    conn: &mut Conn,
    owner: &str,
    ids: &[i64],
    status: Option<i32>,
    error: &str,
    retry_at: Option<i64>,
) -> QueryResult<usize> {
    let (state, not_before) = match retry_at {
        Some(at) => (EventState::Pending, at),
        None => (EventState::Dead, 0),
    };
    diesel::update(
        e::video_del_event
            .filter(e::id.eq_any(ids))
            .filter(e::locked_by.eq(owner)),
    )
    .set((
        e::state.eq(state.as_str()),
        e::tries.eq(e::tries + 1),
        e::last_status.eq(status),
        e::last_error.eq(error),
        e::not_before.eq(not_before),
        e::locked_by.eq(None::<String>),
        e::locked_until.eq(None::<i64>),
    ))
    .execute(conn)
}

/// A page of events in id order after `after`, of `state` and `sink` when
/// given.
pub fn list(
    conn: &mut Conn,
    state: Option<EventState>,
    sink: Option<&str>,
    after: Option<i64>,
    limit: usize,
) -> QueryResult<Vec<Event>> {
    let mut query = e::video_del_event.select(Event::as_select()).into_boxed();
    if let Some(state) = state {
        query = query.filter(e::state.eq(state.as_str()));
    }
    if let Some(sink) = sink {
        query = query.filter(e::sink.eq(sink.to_owned()));
    }
    keyset_page!(conn, query, e::id, after, limit)
}

/// One event.
pub(crate) fn get(conn: &mut Conn, id: i64) -> QueryResult<Option<Event>> {
    e::video_del_event
        .find(id)
        .select(Event::as_select())
        .first(conn)
        .optional()
}

/// Makes one event due now for another round of tries (a dead or
/// delivered one, or a pending one waiting for its retry); one being
/// delivered right now is left to its lease. Returns the event as it is
/// afterwards, `None` when there is no such event.
pub(crate) fn redeliver(conn: &mut Conn, id: i64, now: i64) -> QueryResult<Option<Event>> {
    conn.transaction(|conn| {
        diesel::update(
            e::video_del_event
                .find(id)
                .filter(e::locked_until.is_null().or(e::locked_until.le(now))),
        )
        .set(again(now))
        .execute(conn)?;
        get(conn, id)
    })
}

/// Makes every dead event (of `sink`, when given) due now; returns how
/// many.
pub(crate) fn redeliver_dead(conn: &mut Conn, sink: Option<&str>, now: i64) -> QueryResult<usize> {
    let mut dead = e::video_del_event
        .filter(e::state.eq(EventState::Dead.as_str()))
        .into_boxed();
    if let Some(sink) = sink {
        dead = dead.filter(e::sink.eq(sink.to_owned()));
    }
    let ids: Vec<i64> = dead.select(e::id).load(conn)?;
    let mut moved = 0;
    for chunk in ids.chunks(INSERT_CHUNK) {
        moved += diesel::update(
            e::video_del_event
                .filter(e::id.eq_any(chunk))
                .filter(e::state.eq(EventState::Dead.as_str())),
        )
        .set(again(now))
        .execute(conn)?;
    }
    Ok(moved)
}

#[allow(clippy::type_complexity)]
fn again(
    now: i64,
) -> (
    diesel::dsl::Eq<e::state, &'static str>,
    diesel::dsl::Eq<e::tries, i32>,
    diesel::dsl::Eq<e::not_before, i64>,
    diesel::dsl::Eq<e::locked_by, Option<String>>,
    diesel::dsl::Eq<e::locked_until, Option<i64>>,
) {
    (
        e::state.eq(EventState::Pending.as_str()),
        e::tries.eq(0),
        e::not_before.eq(now),
        e::locked_by.eq(None::<String>),
        e::locked_until.eq(None::<i64>),
    )
}

/// Per sink: events pending and dead, and the last error of one not yet
/// delivered (the newest such event that has one).
pub(crate) fn summary(conn: &mut Conn) -> QueryResult<Vec<SinkSummary>> {
    let counts: Vec<(String, String, i64)> = e::video_del_event
        .filter(e::state.ne(EventState::Delivered.as_str()))
        .group_by((e::sink, e::state))
        .select((e::sink, e::state, diesel::dsl::count_star()))
        .load(conn)?;
    let mut sinks: Vec<SinkSummary> = Vec::new();
    for (sink, state, n) in counts {
        let i = match sinks.iter().position(|s| s.sink == sink) {
            Some(i) => i,
            None => {
                sinks.push(SinkSummary {
                    sink,
                    ..SinkSummary::default()
                });
                sinks.len() - 1
            }
        };
        match EventState::parse(&state) {
            Some(EventState::Dead) => sinks[i].dead += n,
            _ => sinks[i].pending += n,
        }
    }
    for summary in &mut sinks {
        summary.last_error = e::video_del_event
            .filter(e::sink.eq(&summary.sink))
            .filter(e::state.ne(EventState::Delivered.as_str()))
            .filter(e::last_error.is_not_null())
            .order(e::id.desc())
            .select(e::last_error)
            .first::<Option<String>>(conn)
            .optional()?
            .flatten();
    }
    Ok(sinks)
}

/// [`summary`]'s line for one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSummary {
    pub sink: String,
    pub pending: i64,
    pub dead: i64,
    pub last_error: Option<String>,
}

/// Deletes up to `limit` events delivered before `before`, oldest first;
/// returns how many went. Pending and dead events are kept.
pub(crate) fn prune(conn: &mut Conn, before: i64, limit: usize) -> QueryResult<usize> {
    let old = e::video_del_event
        .select(e::id)
        .filter(e::delivered_at.lt(before))
        .filter(e::state.eq(EventState::Delivered.as_str()))
        .order(e::delivered_at.asc())
        .limit(limit as i64);
    let ids: Vec<i64> = old.load(conn)?;
    diesel::delete(e::video_del_event.filter(e::id.eq_any(&ids))).execute(conn)
}
