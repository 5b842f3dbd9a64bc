//! Claiming due rows (a lease: `locked_by`, `locked_until`, and
//! `not_before` moved to the lease's end, so a dead instance's rows come
//! due again by themselves; `FOR UPDATE SKIP LOCKED` on MySQL and
//! PostgreSQL, so instances never wait for or take each other's rows), and
//! giving claimed rows back (shutdown, an unusable storage). Every claim
//! counts up the row's `claims`, which its receipt keeps: a receipt can
//! then tell that an earlier claim may have deleted what the last one
//! found missing. Giving rows back leaves it. The dispatcher's claim
//! ([`claim_first`]) tries expired leases, urgent rows and the oldest due
//! rows in that order and leases the first it finds: urgent rows first,
//! through the index of urgent rows (README, "Priority").

use diesel::prelude::*;
use diesel::sql_types::BigInt;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use diesel::sql_types::Text;

use super::controls;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::prepared::prepared;
use crate::db::models::{Claim, Claimed, State};
use crate::db::schema::video_del_rec::dsl as t;
use crate::db::{AnyConnection, Conn};

/// Which due rows a claim takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Every due row, oldest due first, starting `offset` rows in on MySQL
    /// (see [`claim_from`]).
    Oldest { offset: usize },
    /// Only rows whose lease expired (`running` and due again), in no
    /// particular order: a dead or cut-off instance's work, taken over
    /// before the backlog. Their `not_before` is their lease's end, so the
    /// oldest-first order would put them behind every row that came due
    /// before it; they are found through the index of running rows
    /// instead (`(state, id)`, partial on PostgreSQL; few rows are
    /// `running`: at most the instances' batches in flight).
    Expired,
    /// Only urgent rows (README, "Priority"), oldest due first, through
    /// the index of urgent rows: a claim takes them before the backlog,
    /// and the dispatcher hands them over past the rate limit.
    Urgent,
}

/// The rows each [`Due`] selects, as SQL (for `concat!`; one `?`: now).
macro_rules! due_rows {
    (oldest) => {
        "not_before <= ? ORDER BY not_before"
    };
    // `not_before + 0`: never through the `not_before` index, which would
    // walk every due pending row to find the few running ones. Planners
    // that believe the table empty (PostgreSQL after autovacuum saw it so)
    // otherwise find both indexes equally cheap.
    (expired) => {
        "state = 'running' AND not_before + 0 <= ?"
    };
    // `priority = 1` spelled as the partial index's WHERE, so that SQLite
    // and PostgreSQL use it.
    (urgent) => {
        "priority = 1 AND not_before <= ? ORDER BY not_before"
    };
}

/// Claims up to `limit` due rows, oldest due first, leasing them to `owner`
/// until `lease_until`. Rows whose lease expired are due again and are
/// claimed like pending ones. Nothing is claimed while an operator has
/// paused deletions: the pause is checked inside the claim statement, so
/// that every instance stops at its next claim; an empty claim then says
/// whether it was the pause.
pub fn claim(
    conn: &mut Conn,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
) -> QueryResult<Claim> {
    claim_from(
        conn,
        owner,
        now,
        lease_until,
        limit,
        Due::Oldest { offset: 0 },
    )
}

/// [`claim`] of the rows `due` selects. With [`Due::Oldest`], `offset`
/// rows into the due rows on MySQL (topped up from the oldest when fewer
/// are due past it): instances on different Galera nodes do not see each
/// other's row locks, so while their claims conflict (the dispatcher's
/// choice) each starts at a different place instead of all fighting for
/// the oldest rows. Other backends never conflict there (`SKIP LOCKED` on
/// one server) and ignore it.
pub fn claim_from(
    conn: &mut Conn,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
    due: Due,
) -> QueryResult<Claim> {
    claim_first(conn, owner, (now, lease_until), limit, &[due]).map(|(claim, _)| claim)
}

/// The first of `order` that finds due rows leases them (the dispatcher's
/// claim: expired leases, then urgent rows, then the oldest due): the
/// claim, and which [`Due`] it came from (the last one when none found
/// rows). The pause is read once, when nothing was found. One statement
/// per [`Due`] tried on SQLite and PostgreSQL (each atomic), one
/// transaction in all on MySQL.
pub fn claim_first(
    conn: &mut Conn,
    owner: &str,
    (now, lease_until): (i64, i64),
    limit: usize,
    order: &[Due],
) -> QueryResult<(Claim, Due)> {
    let limit = limit as i64;
    let (claimed, due): (Vec<Claimed>, Due) = match conn {
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => mysql_lease_first(c, owner, (now, lease_until), limit, order)?,
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        #[allow(unreachable_patterns)]
        _ => {
            let last = *order.last().expect("at least one kind of due rows");
            let mut found = (Vec::new(), last);
            for &due in order {
                let rows = lease_rows(conn, owner, (now, lease_until), limit, due)?;
                if !rows.is_empty() {
                    found = (rows, due);
                    break;
                }
            }
            found
        }
    };
    if claimed.is_empty() && controls::paused(conn)? {
        return Ok((Claim::Paused, due));
    }
    Ok((Claim::Batch(claimed), due))
}

/// The WHERE clause and LIMIT of the claim's subselect (SQLite and
/// PostgreSQL; for `concat!`). Raw SQL: diesel's DSL does not take an
/// ordered, limited subselect as an update target. The subselect walks the
/// `not_before` index (the index of running rows for expired leases, the
/// urgent index for urgent rows). On SQLite the pause is the subselect's
/// LIMIT (0 while paused), read once: as a WHERE term SQLite tested it per
/// row, so a paused claim walked the whole due backlog (600,000 VM steps
/// over 100,000 due rows; 30 this way). PostgreSQL keeps it in the WHERE
/// clause, where its plan already reads it once (a one-time filter), and
/// its planner sees the LIMIT it plans the index walk for. (A soak that
/// stalled was first blamed on the LIMIT form, then on the disk;
/// auto_explain showed plans made on statistics that counted no rows: see
/// [`these!`] and connection.rs.) SQLite has one writer per process and
/// an atomic statement: no locking clause; PostgreSQL skips the rows
/// another instance is claiming right now instead of waiting for them.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! select {
    ($due:ident, sqlite) => {
        concat!(
            "WHERE ",
            due_rows!($due),
            " LIMIT COALESCE((SELECT 0 FROM video_del_control \
                              WHERE name = 'paused' AND value <> 0), ?)"
        )
    };
    ($due:ident, postgres) => {
        concat!(
            "WHERE NOT EXISTS (SELECT 1 FROM video_del_control \
                               WHERE name = 'paused' AND value <> 0) \
             AND ",
            due_rows!($due),
            " LIMIT ? FOR UPDATE SKIP LOCKED"
        )
    };
}

/// The rows to lease, by id, from the subselect `$select`: on PostgreSQL
/// an array the subselect fills once, which the UPDATE then searches the
/// primary key for. As `id IN (subselect)` it was a join, and a planner
/// that believes the table empty (after autovacuum saw it so) may walk the
/// whole primary key and run the subselect again for every row.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! these {
    (sqlite, $select:expr) => {
        concat!("id IN (SELECT id FROM video_del_rec ", $select, ")")
    };
    (postgres, $select:expr) => {
        concat!(
            "id = ANY(ARRAY(SELECT id FROM video_del_rec ",
            $select,
            "))"
        )
    };
}

/// One UPDATE ... RETURNING leasing the rows `due` selects (SQLite,
/// PostgreSQL).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn lease_rows(
    conn: &mut Conn,
    owner: &str,
    (now, lease_until): (i64, i64),
    limit: i64,
    due: Due,
) -> QueryResult<Vec<Claimed>> {
    macro_rules! lease {
        ($c:expr, $due:ident, $backend:ident) => {
            prepared(concat!(
                "UPDATE video_del_rec \
                 SET state = 'running', locked_by = ?, locked_until = ?, not_before = ?, \
                   claims = claims + 1 \
                 WHERE ",
                these!($backend, select!($due, $backend)),
                " RETURNING id, attempts, created_at, source, request_id, paths"
            ))
            .bind::<Text, _>(owner)
            .bind::<BigInt, _>(lease_until)
            .bind::<BigInt, _>(lease_until)
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(limit)
            .load($c)
        };
    }
    macro_rules! lease_due {
        ($c:expr, $backend:ident) => {
            match due {
                Due::Oldest { .. } => lease!($c, oldest, $backend),
                Due::Expired => lease!($c, expired, $backend),
                Due::Urgent => lease!($c, urgent, $backend),
            }
        };
    }
    match conn {
        #[cfg(feature = "sqlite")]
        AnyConnection::Sqlite(c) => lease_due!(c, sqlite),
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(c) => lease_due!(c, postgres),
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(_) => unreachable!("MySQL leases in mysql_lease_first"),
    }
}

/// MySQL has no UPDATE ... RETURNING: lock the due rows, then lease them,
/// in one transaction (READ COMMITTED, see connection.rs). Prepared anew
/// each time (`sql_query`), as it always was here, not kept prepared like
/// the other backends' claims: with it kept, a claim once waited forever
/// in `mysql_stmt_execute` for an answer MariaDB 10.11 never sent (the
/// server showed the connection idle), which stopped every claim of the
/// instance. Not reproduced in 20 runs since, so the cause is not known;
/// the form every earlier test run used stays.
#[cfg(feature = "mysql")]
fn mysql_lease_first(
    c: &mut diesel::MysqlConnection,
    owner: &str,
    (now, lease_until): (i64, i64),
    limit: i64,
    order: &[Due],
) -> QueryResult<(Vec<Claimed>, Due)> {
    let due_rows = |c: &mut diesel::MysqlConnection, due: Due, limit: i64, offset: i64| {
        let rows = match due {
            Due::Oldest { .. } => due_rows!(oldest),
            Due::Expired => due_rows!(expired),
            Due::Urgent => due_rows!(urgent),
        };
        diesel::sql_query(format!(
            "SELECT id, attempts, created_at, source, request_id, paths FROM video_del_rec \
             WHERE NOT EXISTS (SELECT 1 FROM video_del_control \
                               WHERE name = 'paused' AND value <> 0) \
             AND {rows} LIMIT ? OFFSET ? FOR UPDATE SKIP LOCKED"
        ))
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(offset)
        .load::<Claimed>(c)
    };
    let last = *order.last().expect("at least one kind of due rows");
    c.transaction(|c| {
        for &kind in order {
            let offset = match kind {
                Due::Oldest { offset } => offset as i64,
                Due::Expired | Due::Urgent => 0,
            };
            let mut due = due_rows(c, kind, limit, offset)?;
            if offset > 0 && (due.len() as i64) < limit {
                // Fewer due past the offset: the oldest ones too (our own
                // locks are not skipped, so the rows we have come again).
                let have: std::collections::HashSet<String> =
                    due.iter().map(|d| d.id.clone()).collect();
                let oldest = due_rows(c, kind, limit, 0)?;
                let more = oldest.into_iter().filter(|d| !have.contains(&d.id));
                due.extend(more.take(limit as usize - have.len()));
            }
            if due.is_empty() {
                continue;
            }
            let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
            diesel::update(t::video_del_rec.filter(t::id.eq_any(ids)))
                .set((
                    t::state.eq(State::Running.as_str()),
                    t::locked_by.eq(owner),
                    t::locked_until.eq(lease_until),
                    t::not_before.eq(lease_until),
                    t::claims.eq(t::claims + 1),
                ))
                .execute(c)?;
            return Ok((due, kind));
        }
        Ok((Vec::new(), last))
    })
}

/// Gives claimed rows back, pending and due at `due_at`, for the next claim
/// of any instance: at graceful shutdown (due now), or because the storage
/// could not be used (the storage's `Unavailable`), with the reason
/// as `error` for `last_error`. `attempts` is unchanged: no id was at fault.
pub fn release(
    conn: &mut Conn,
    owner: &str,
    ids: &[String],
    due_at: i64,
    error: Option<&str>,
) -> QueryResult<usize> {
    let leased = t::video_del_rec
        .filter(t::id.eq_any(ids))
        .filter(t::locked_by.eq(owner));
    let back = (
        t::state.eq(State::Pending.as_str()),
        t::not_before.eq(due_at),
        t::locked_by.eq(None::<String>),
        t::locked_until.eq(None::<i64>),
    );
    match error {
        None => diesel::update(leased).set(back).execute(conn),
        Some(error) => diesel::update(leased)
            .set((back, t::last_error.eq(error)))
            .execute(conn),
    }
}
