//! The fast lane's INSERT (README, "Fast lane"): new rows due now
//! inserted already leased, as a claim would leave them.

use diesel::prelude::*;
#[cfg(feature = "postgres")]
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};

#[cfg(feature = "postgres")]
use super::super::prepared::prepared;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::counts;
use super::NewRow;
#[cfg(feature = "sqlite")]
use crate::db::models::CountDelta;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::db::models::State;
#[cfg(feature = "sqlite")]
use crate::db::schema::video_del_rec::dsl as t;
use crate::db::{AnyConnection, Conn};

/// The fast lane (README, "Fast lane"): new rows due now are inserted
/// already leased to `owner` until `until` (`running`, one claim counted,
/// `not_before` at the lease's end), exactly as a claim would leave them,
/// so the lease fences them as it fences claimed rows: if the instance
/// dies, any instance claims them once the lease ends. SQLite and
/// PostgreSQL (an INSERT that returns the ids it inserted); MySQL has no
/// such INSERT, and its rows are claimed as before.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub owner: &'a str,
    pub until: i64,
}

/// Inserts `rows` (due now) already leased, skipping ids already queued,
/// and adds them to the kept count: how many rows were new, and the ids
/// leased. While deletions are paused (read in the same statement or
/// transaction) the rows are left pending, as without a lease: a request
/// recorded after a pause is never deleted before the resume.
pub(super) fn insert_leased(
    conn: &mut Conn,
    rows: &[NewRow<'_>],
    now: i64,
    lease: Lease<'_>,
) -> QueryResult<(usize, Vec<String>)> {
    if rows.is_empty() {
        return Ok((0, Vec::new()));
    }
    #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
    let _ = lease;
    match conn {
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => postgres(c, rows, now, lease),
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(_) => sqlite(conn, rows, now, lease),
        #[cfg(feature = "mysql")]
        // No INSERT that says which rows it inserted: recorded as without
        // a lease (the pipeline opens no lane on MySQL anyway).
        AnyConnection::Mysql(_) => super::insert_new(conn, rows, now).map(|n| (n, Vec::new())),
    }
}

/// One statement: the pause read, the INSERT (leased unless paused) and
/// the kept count.
#[cfg(feature = "postgres")]
fn postgres(
    c: &mut diesel::PgConnection,
    rows: &[NewRow<'_>],
    now: i64,
    lease: Lease<'_>,
) -> QueryResult<(usize, Vec<String>)> {
    #[derive(QueryableByName)]
    struct New {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Text)]
        state: String,
    }
    let new: Vec<New> = prepared(
        "WITH paused AS MATERIALIZED ( \
           SELECT EXISTS (SELECT 1 FROM video_del_control \
                          WHERE name = 'paused' AND value <> 0) AS stop), \
         leased AS MATERIALIZED (SELECT NOT stop AS go, ?::bigint AS now, \
           ?::varchar AS owner, ?::bigint AS until FROM paused), \
         new AS ( \
           INSERT INTO video_del_rec (id, created_at, not_before, source, request_id, \
             state, locked_by, locked_until, claims) \
           SELECT id, now, CASE WHEN l.go THEN until ELSE now END, source, request_id, \
             CASE WHEN l.go THEN 'running' ELSE 'pending' END, \
             CASE WHEN l.go THEN owner END, CASE WHEN l.go THEN until END, \
             CASE WHEN l.go THEN 1 ELSE 0 END \
           FROM unnest(?::varchar[], ?::varchar[], ?::varchar[]) \
             AS row(id, source, request_id), leased l \
           ON CONFLICT DO NOTHING RETURNING id, state), \
         counted AS ( \
           UPDATE video_del_counts SET queued = queued + (SELECT count(*) FROM new) \
           WHERE shard = ?) \
         SELECT id, state::text AS state FROM new",
    )
    .bind::<BigInt, _>(now)
    .bind::<Text, _>(lease.owner)
    .bind::<BigInt, _>(lease.until)
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.request_id).collect::<Vec<_>>())
    .bind::<Integer, _>(counts::shard())
    .load(c)?;
    let inserted = new.len();
    let leased = new
        .into_iter()
        .filter(|n| n.state == State::Running.as_str());
    Ok((inserted, leased.map(|n| n.id).collect()))
}

/// A prepared INSERT per row (diesel's multi-row INSERT on SQLite cannot
/// say which rows it skipped), in the group commit's transaction. The
/// pause is read after the first write (a read first would make the
/// write an upgrade, which another instance's writer refuses at once as
/// "database is locked"); if paused, the rows are given back, pending.
#[cfg(feature = "sqlite")]
fn sqlite(
    conn: &mut Conn,
    rows: &[NewRow<'_>],
    now: i64,
    lease: Lease<'_>,
) -> QueryResult<(usize, Vec<String>)> {
    #[allow(irrefutable_let_patterns)]
    let AnyConnection::Sqlite(c) = conn
    else {
        unreachable!("called for SQLite only");
    };
    let mut ids = Vec::new();
    for row in rows {
        let leased = LeasedDeletion {
            id: row.id,
            created_at: now,
            not_before: lease.until,
            source: row.source.as_str(),
            request_id: row.request_id,
            state: State::Running.as_str(),
            locked_by: lease.owner,
            locked_until: lease.until,
            claims: 1,
        };
        let new: Option<String> = diesel::insert_into(t::video_del_rec)
            .values(leased)
            .on_conflict_do_nothing()
            .returning(t::id)
            .get_result(c)
            .optional()?;
        ids.extend(new);
    }
    let delta = CountDelta {
        queued: ids.len() as i64,
        ..CountDelta::default()
    };
    counts::add(conn, delta)?;
    if !ids.is_empty() && super::super::controls::paused(conn)? {
        for chunk in ids.chunks(5000) {
            diesel::update(t::video_del_rec.filter(t::id.eq_any(chunk)))
                .set((
                    t::state.eq(State::Pending.as_str()),
                    t::not_before.eq(now),
                    t::locked_by.eq(None::<String>),
                    t::locked_until.eq(None::<i64>),
                    t::claims.eq(0),
                ))
                .execute(conn)?;
        }
        return Ok((ids.len(), Vec::new()));
    }
    Ok((ids.len(), ids))
}

/// A new row inserted leased ([`Lease`]), as a claim would leave it.
#[cfg(feature = "sqlite")]
#[derive(Insertable)]
#[diesel(table_name = crate::db::schema::video_del_rec)]
struct LeasedDeletion<'a> {
    id: &'a str,
    created_at: i64,
    not_before: i64,
    source: &'a str,
    request_id: Option<&'a str>,
    state: &'a str,
    locked_by: &'a str,
    locked_until: i64,
    claims: i32,
}
