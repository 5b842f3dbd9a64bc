//! The outbox, `video_del_event`: one row per sink and event of a
//! request's end, written by the transaction that ends it ([`insert`],
//! from the cancels and the ack of the last failed attempt; completions
//! come from the ack's announcements, [`super::announce`]), claimed by the
//! notifier with the deletions' lease rule (`not_before` moved to the
//! lease's end, `SKIP LOCKED` where the server has it), marked delivered,
//! retried or dead, listed, redelivered, and pruned with the receipts.

use diesel::prelude::*;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::prepared::prepared;
use super::Conn;
use crate::db::models::{Event, EventState};
use crate::db::schema::video_del_event::dsl as e;
use crate::db::AnyConnection;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use diesel::sql_types::{BigInt, Text};

/// Which configured sinks want each kind of event (webhooks filter by
/// `events`; purges want only `deletion.completed`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sinks {
    /// Every sink, in the configuration's order.
    pub names: Vec<String>,
    completed: Vec<String>,
    failed: Vec<String>,
    cancelled: Vec<String>,
    purges: Vec<String>,
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
            purges: purges.to_vec(),
        }
    }

    /// Whether `sink` is a purge (its events need no data).
    pub fn is_purge(&self, sink: &str) -> bool {
        self.purges.iter().any(|p| p == sink)
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

#[cfg(any(feature = "postgres", feature = "mysql"))]
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

/// Writes `events` once per sink of `sinks` that wants its kind, due at
/// once. Returns the rows written. Part of the caller's transaction: an
/// event exists only if what it tells of commits. A purge's rows keep no
/// data (`{}`): a purge needs only the video id.
pub(crate) fn insert(
    conn: &mut Conn,
    sinks: &Sinks,
    events: &[NewEvent<'_>],
) -> QueryResult<usize> {
    // PostgreSQL and MySQL: rows of six values, a thousand an INSERT.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    macro_rules! in_chunks {
        ($c:expr) => {{
            let rows = rows(sinks, events);
            let mut written = 0;
            for chunk in rows.chunks(INSERT_CHUNK) {
                written += diesel::insert_into(e::video_del_event)
                    .values(chunk)
                    .execute($c)?;
            }
            Ok(written)
        }};
    }
    match conn {
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => sqlite_insert(c, sinks, events),
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => in_chunks!(c),
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => in_chunks!(c),
    }
}

/// One row per event and sink that wants it.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn rows<'a>(sinks: &'a Sinks, events: &'a [NewEvent<'a>]) -> Vec<Row<'a>> {
    events
        .iter()
        .flat_map(|event| {
            sinks.wanting(event.kind).iter().map(move |sink| Row {
                sink,
                kind: event.kind,
                subject: event.subject,
                occurred_at: event.occurred_at,
                data: match sinks.is_purge(sink) {
                    true => NO_DATA,
                    false => &event.data,
                },
                not_before: event.occurred_at,
            })
        })
        .collect()
}

/// SQLite: one cached statement per kind and time of the events (one, in
/// practice), the events and the sinks as two JSON objects (`{id: data}`,
/// `{sink: keeps data}`) instead of six parameters per row: a statement
/// with thousands of parameters is parsed anew at each ack.
#[cfg(feature = "sqlite")]
fn sqlite_insert(
    c: &mut diesel::SqliteConnection,
    sinks: &Sinks,
    events: &[NewEvent<'_>],
) -> QueryResult<usize> {
    use std::fmt::Write;
    let mut groups: std::collections::BTreeMap<(&str, i64), String> = Default::default();
    for event in events {
        let object = groups.entry((event.kind, event.occurred_at)).or_default();
        let key = serde_json::to_string(event.subject)
            .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
        let _ = write!(object, ",{key}:{}", event.data);
    }
    let mut written = 0;
    for ((kind, at), object) in groups {
        let wanting: serde_json::Map<String, serde_json::Value> = sinks
            .wanting(kind)
            .iter()
            .map(|s| (s.clone(), (!sinks.is_purge(s)).into()))
            .collect();
        written += prepared(
            "INSERT INTO video_del_event (sink, kind, subject, occurred_at, data, not_before) \
             SELECT s.key, ?, d.key, ?, CASE WHEN s.value THEN d.value ELSE '{}' END, ? \
             FROM json_each(?) AS d, json_each(?) AS s",
        )
        .bind::<Text, _>(kind)
        .bind::<BigInt, _>(at)
        .bind::<BigInt, _>(at)
        .bind::<Text, _>(format!("{{{}}}", object.trim_start_matches(',')))
        .bind::<Text, _>(serde_json::Value::Object(wanting).to_string())
        .execute(c)?;
    }
    Ok(written)
}

/// The data of a purge's events.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const NO_DATA: &str = "{}";

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
    // One statement on SQLite (one writer: nothing to skip) and
    // PostgreSQL; MySQL has no UPDATE ... RETURNING.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    macro_rules! claim {
        ($($skip_locked:tt)*) => {
            concat!(
                "UPDATE video_del_event SET locked_by = ?, locked_until = ?, not_before = ? \
                 WHERE id IN (SELECT id FROM video_del_event \
                   WHERE sink = ? AND state = 'pending' AND not_before <= ? \
                   ORDER BY not_before LIMIT ?", $($skip_locked,)* ") \
                 RETURNING id, sink, kind, subject, occurred_at, data, state, tries, \
                   not_before, locked_by, locked_until, last_status, last_error, delivered_at"
            )
        };
    }
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    macro_rules! leasing {
        ($sql:expr) => {
            prepared($sql)
                .bind::<Text, _>(owner)
                .bind::<BigInt, _>(lease_until)
                .bind::<BigInt, _>(lease_until)
                .bind::<Text, _>(sink)
                .bind::<BigInt, _>(now)
                .bind::<BigInt, _>(limit as i64)
        };
    }
    match conn {
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => leasing!(claim!()).load(c),
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => leasing!(claim!(" FOR UPDATE SKIP LOCKED")).load(c),
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => c.transaction(|c| {
            let ids: Vec<i64> = e::video_del_event
                .select(e::id)
                .filter(e::sink.eq(sink))
                .filter(e::state.eq(EventState::Pending.as_str()))
                .filter(e::not_before.le(now))
                .order(e::not_before.asc())
                .limit(limit as i64)
                .for_update()
                .skip_locked()
                .load(c)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            diesel::update(e::video_del_event.filter(e::id.eq_any(&ids)))
                .set((
                    e::locked_by.eq(owner),
                    e::locked_until.eq(lease_until),
                    e::not_before.eq(lease_until),
                ))
                .execute(c)?;
            e::video_del_event
                .filter(e::id.eq_any(&ids))
                .select(Event::as_select())
                .load(c)
        }),
    }
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

/// Per sink of `sinks`: events pending and dead, and the last error of
/// one not yet delivered (a dead one's first, the newest by its due time).
/// Each count is a range of the `(sink, state, not_before)` index: delivered
/// events, kept for the receipts' retention, are never read. Removed rows
/// announced and not yet made into events count as pending for each sink
/// wanting `deletion.completed`.
pub(crate) fn summary(conn: &mut Conn, sinks: &Sinks) -> QueryResult<Vec<SinkSummary>> {
    let announced = match sinks.completed.is_empty() {
        true => 0,
        false => super::announce::pending(conn)?,
    };
    let mut summaries = Vec::with_capacity(sinks.names.len());
    for sink in &sinks.names {
        let in_state = |state: EventState| {
            e::video_del_event
                .filter(e::sink.eq(sink))
                .filter(e::state.eq(state.as_str()))
        };
        let mut last_error = None;
        for state in [EventState::Dead, EventState::Pending] {
            if last_error.is_none() {
                last_error = in_state(state)
                    .filter(e::last_error.is_not_null())
                    .order(e::not_before.desc())
                    .select(e::last_error)
                    .first::<Option<String>>(conn)
                    .optional()?
                    .flatten();
            }
        }
        summaries.push(SinkSummary {
            sink: sink.clone(),
            pending: in_state(EventState::Pending)
                .count()
                .get_result::<i64>(conn)?
                + announced * i64::from(sinks.completed.contains(sink)),
            dead: in_state(EventState::Dead).count().get_result(conn)?,
            last_error,
        });
    }
    Ok(summaries)
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
