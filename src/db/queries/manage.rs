//! What operators do to requests: look one up, list them (keyset pages),
//! cancel and retry one or many (the bulk actions call these in batches of
//! 1,000). Each write touches rows by primary key and names the state it
//! changes, so the kept counts follow exactly; a running row whose lease is
//! live is never cancelled.

use diesel::prelude::*;

use super::counts;
use super::events::{self, NewEvent, Sinks};
use crate::db::models::CANCELLED;
use crate::db::models::{CountDelta, Deletion, State};
use crate::db::schema::video_del_rec::dsl as t;
use crate::db::Conn;
use crate::video_id::VideoId;

/// One request by id (its exact text: rows left by the Go scheduler may
/// hold ids that are not valid video ids).
pub fn get(conn: &mut Conn, id: &str) -> QueryResult<Option<Deletion>> {
    t::video_del_rec
        .find(id)
        .select(Deletion::as_select())
        .first(conn)
        .optional()
}

/// A page of requests in id order, after `after`, optionally of one state.
/// Keyset pagination: served by the primary key or the index of the
/// state's rows (`(state, id)`; on PostgreSQL partial indexes of the failed
/// and of the running rows, and the primary key for pending ones).
pub fn list(
    conn: &mut Conn,
    state: Option<State>,
    after: Option<&str>,
    limit: usize,
) -> QueryResult<Vec<Deletion>> {
    let mut query = t::video_del_rec.select(Deletion::as_select()).into_boxed();
    if let Some(state) = state {
        query = query.filter(t::state.eq(state.as_str()));
    }
    keyset_page!(conn, query, t::id, after, limit)
}

/// What a cancel or a retry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Done,
    NotFound,
    /// The row is in a state that forbids the change.
    Conflict(State),
}

/// Cancels a request unless an instance holds a live lease on it. `id` is
/// the row's exact text (it may not be a valid video id). Each DELETE
/// names the state it removes, so the kept counts follow exactly.
///
/// A cancel writes its `deletion.cancelled` events (`sinks`) in the same
/// transaction.
pub(crate) fn cancel(conn: &mut Conn, id: &str, now: i64, sinks: &Sinks) -> QueryResult<Change> {
    conn.transaction(|conn| {
        let row = t::video_del_rec.find(id);
        let failed =
            diesel::delete(row.filter(t::state.eq(State::Failed.as_str()))).execute(conn)? as i64;
        let queued = diesel::delete(
            row.filter(t::state.ne(State::Failed.as_str())).filter(
                t::state
                    .ne(State::Running.as_str())
                    .or(t::locked_until.le(now)),
            ),
        )
        .execute(conn)? as i64;
        if failed + queued > 0 {
            counts::add(
                conn,
                CountDelta {
                    queued: -queued,
                    failed: -failed,
                    done: 0,
                },
            )?;
            announce_cancelled(conn, sinks, &[id], now)?;
            return Ok(Change::Done);
        }
        Ok(match get(conn, id)? {
            None => Change::NotFound,
            Some(_) => Change::Conflict(State::Running),
        })
    })
}

/// Moves a failed request back to pending, due now, with its attempts
/// reset. On success, the row as the same transaction left it.
pub(crate) fn retry(
    conn: &mut Conn,
    id: &VideoId,
    now: i64,
) -> QueryResult<(Change, Option<Deletion>)> {
    conn.transaction(|conn| {
        let moved = retry_ids(conn, &[id.as_str()], now)? > 0;
        let row = get(conn, id.as_str())?;
        Ok(match (moved, row) {
            (true, row) => (Change::Done, row),
            (false, None) => (Change::NotFound, None),
            (false, Some(row)) => (
                Change::Conflict(State::parse(&row.state).unwrap_or(State::Pending)),
                None,
            ),
        })
    })
}

/// Ids of every request after `after`, in id order (the primary key only).
pub(crate) fn ids_after(
    conn: &mut Conn,
    after: Option<&str>,
    limit: usize,
) -> QueryResult<Vec<String>> {
    keyset_page!(
        conn,
        t::video_del_rec.select(t::id).into_boxed(),
        t::id,
        after,
        limit
    )
}

/// Ids of requests in `state` after `after`, in id order: a page for the
/// bulk actions (walks the index of the state's rows, as [`list`]).
pub(crate) fn ids_in_state(
    conn: &mut Conn,
    state: State,
    after: Option<&str>,
    limit: usize,
) -> QueryResult<Vec<String>> {
    let query = t::video_del_rec
        .select(t::id)
        .filter(t::state.eq(state.as_str()))
        .into_boxed();
    keyset_page!(conn, query, t::id, after, limit)
}

/// `video_del_rec` filtered to some ids.
type TheseIds<'a> = diesel::dsl::Filter<t::video_del_rec, diesel::dsl::EqAny<t::id, &'a [&'a str]>>;

/// The rows of `ids` that are in `state`, by primary key (no id: no row).
fn these_in<'a>(
    ids: &'a [&'a str],
    state: State,
) -> diesel::dsl::Filter<TheseIds<'a>, diesel::dsl::Eq<t::state, &'static str>> {
    t::video_del_rec
        .filter(t::id.eq_any(ids))
        .filter(t::state.eq(state.as_str()))
}

/// Moves these requests back to pending, due now, those of them still
/// failed. Returns how many moved.
pub(crate) fn retry_ids(conn: &mut Conn, ids: &[&str], now: i64) -> QueryResult<usize> {
    let moved = diesel::update(these_in(ids, State::Failed))
        .set(retry_columns(now))
        .execute(conn)?;
    counts::add(
        conn,
        CountDelta {
            queued: moved as i64,
            failed: -(moved as i64),
            done: 0,
        },
    )?;
    Ok(moved)
}

/// Cancels these requests, those of them still in `state` (a pending one
/// being claimed right now is running, and left alone), with their
/// `deletion.cancelled` events (`sinks`) in the same transaction. Returns
/// how many.
pub(crate) fn cancel_ids(
    conn: &mut Conn,
    ids: &[&str],
    state: State,
    now: i64,
    sinks: &Sinks,
) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let cancelled = match sinks.wanting(CANCELLED).is_empty() {
            true => diesel::delete(these_in(ids, state)).execute(conn)?,
            false => {
                let gone = delete_returning_ids(conn, ids, state)?;
                let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
                announce_cancelled(conn, sinks, &gone, now)?;
                gone.len()
            }
        };
        keep_cancelled_count(conn, cancelled, state)
    })
}

/// Deletes the rows of `ids` in `state`; returns the ids deleted.
fn delete_returning_ids(conn: &mut Conn, ids: &[&str], state: State) -> QueryResult<Vec<String>> {
    match conn {
        #[cfg(feature = "sqlite")]
        crate::db::AnyConnection::Sqlite(c) => diesel::delete(these_in(ids, state))
            .returning(t::id)
            .load(c),
        #[cfg(feature = "postgres")]
        crate::db::AnyConnection::Pg(c) => diesel::delete(these_in(ids, state))
            .returning(t::id)
            .load(c),
        // No DELETE ... RETURNING: the rows are locked first.
        #[cfg(feature = "mysql")]
        crate::db::AnyConnection::Mysql(c) => {
            let ours: Vec<String> = these_in(ids, state).select(t::id).for_update().load(c)?;
            diesel::delete(t::video_del_rec.filter(t::id.eq_any(&ours))).execute(c)?;
            Ok(ours)
        }
    }
}

/// Writes a `deletion.cancelled` event per id for each sink that wants it.
fn announce_cancelled(conn: &mut Conn, sinks: &Sinks, ids: &[&str], now: i64) -> QueryResult<()> {
    let wanting = sinks.wanting(CANCELLED);
    if wanting.is_empty() || ids.is_empty() {
        return Ok(());
    }
    let cancelled: Vec<NewEvent<'_>> = ids
        .iter()
        .map(|id| NewEvent {
            kind: CANCELLED,
            subject: id,
            occurred_at: now,
            data: crate::db::models::cancelled_data(id, now, None),
        })
        .collect();
    events::insert(conn, sinks, &cancelled).map(drop)
}

/// Takes `cancelled` rows in `state` off the kept counts.
fn keep_cancelled_count(conn: &mut Conn, cancelled: usize, state: State) -> QueryResult<usize> {
    let n = cancelled as i64;
    let delta = match state {
        State::Failed => CountDelta {
            failed: -n,
            ..CountDelta::default()
        },
        _ => CountDelta {
            queued: -n,
            ..CountDelta::default()
        },
    };
    counts::add(conn, delta)?;
    Ok(cancelled)
}

#[allow(clippy::type_complexity)]
fn retry_columns(
    now: i64,
) -> (
    diesel::dsl::Eq<t::state, &'static str>,
    diesel::dsl::Eq<t::attempts, i32>,
    diesel::dsl::Eq<t::not_before, i64>,
) {
    (
        t::state.eq(State::Pending.as_str()),
        t::attempts.eq(0),
        t::not_before.eq(now),
    )
}

/// Deletes rows by id, whoever holds them, without keeping counts: the
/// benchmark's raw limit (no lease, no fence) measures the cost of the bare
/// statement.
pub fn delete_ids(conn: &mut Conn, ids: &[String]) -> QueryResult<usize> {
    diesel::delete(t::video_del_rec.filter(t::id.eq_any(ids))).execute(conn)
}

/// Whether any request is left, in any state: one index probe.
pub fn any_row(conn: &mut Conn) -> QueryResult<bool> {
    Ok(!t::video_del_rec
        .select(t::id)
        .limit(1)
        .load::<String>(conn)?
        .is_empty())
}

/// Why this connection's server takes no writes now, or `None`: on
/// PostgreSQL a hot standby (`pg_is_in_recovery()`) or a read-only session.
pub(crate) fn read_only(conn: &mut Conn) -> QueryResult<Option<&'static str>> {
    match conn {
        #[cfg(feature = "postgres")]
        crate::db::AnyConnection::Pg(c) => {
            use diesel::dsl::sql;
            use diesel::sql_types::Bool;
            let (standby, read_only): (bool, bool) = diesel::select((
                sql::<Bool>("pg_is_in_recovery()"),
                sql::<Bool>("current_setting('transaction_read_only')::boolean"),
            ))
            .get_result(c)?;
            Ok(match (standby, read_only) {
                (true, _) => Some("connected to a read-only server (hot standby)"),
                (false, true) => Some("connected to a read-only server (read-only session)"),
                (false, false) => None,
            })
        }
        // MariaDB's `read_only` does not stop a user with READ ONLY ADMIN
        // (root): a refused write, not this probe, tells (`Db::ready`).
        #[allow(unreachable_patterns)]
        _ => Ok(None),
    }
}

/// Whether a MariaDB connection is to a Galera node (`wsrep_on` with a
/// provider loaded): MySQL and plain MariaDB say no.
#[cfg(feature = "mysql")]
pub(crate) fn galera_node(c: &mut diesel::MysqlConnection) -> QueryResult<bool> {
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Variable {
        #[diesel(sql_type = Text, column_name = Variable_name)]
        name: String,
        #[diesel(sql_type = Text, column_name = Value)]
        value: String,
    }
    let variables: Vec<Variable> =
        diesel::sql_query("SHOW VARIABLES WHERE Variable_name IN ('wsrep_on', 'wsrep_provider')")
            .load(c)?;
    let value = |name: &str| {
        variables
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case(name))
            .map(|v| v.value.to_ascii_lowercase())
    };
    Ok(value("wsrep_on").as_deref() == Some("on")
        && value("wsrep_provider").is_some_and(|p| !p.is_empty() && p != "none"))
}

/// Cheapest statement proving the table is there and readable.
pub(crate) fn ping(conn: &mut Conn) -> QueryResult<()> {
    t::video_del_rec
        .select(t::id)
        .limit(1)
        .load::<String>(conn)
        .map(drop)
}
