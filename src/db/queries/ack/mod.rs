//! Acking an executed batch in one transaction (or one PostgreSQL
//! statement): rows whose files are gone are deleted with their receipts,
//! failed ones rescheduled or failed for good, and the kept counts follow;
//! all only for rows still leased to the acking instance (`locked_by`), so
//! a row another instance took over after the lease expired is left to it.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};

mod announce;
mod remove;

use super::events::{self, NewEvent, Sinks};
use super::{atomically, counts};
use crate::db::models::{AckCounts, CountDelta, Done, Failure, State, COMPLETED};
use crate::db::schema::video_del_rec::dsl as t;
use crate::db::Conn;
use remove::remove_done;

/// Acks one executed batch in one transaction: removes the rows whose files
/// are gone, writes their receipts (completed at `receipts_at`; `None`
/// when receipts are off), reschedules (or fails) the others, all only
/// while `owner` still holds them, and keeps the counts.
///
/// Receipts are written by a plain INSERT: almost every receipt is new, and
/// an upsert costs each of them a second look at the key (PostgreSQL's
/// speculative insertion; about a third of a receipt's cost there). An id
/// deleted again while its earlier receipt is kept makes that INSERT fail on
/// the key; the failed ack left nothing behind (one statement, or a
/// transaction rolled back), and it runs once more replacing receipts.
pub fn ack(
    conn: &mut Conn,
    owner: &str,
    done: &[Done],
    failures: &[Failure],
    receipts_at: Option<i64>,
) -> QueryResult<AckCounts> {
    let now = receipts_at.unwrap_or_else(crate::clock::now_ms);
    let sinks = Sinks::default();
    ack_announcing(conn, owner, (done, failures), receipts_at, now, &sinks)
}

/// [`ack`], writing the outbox in the same transaction (`sinks`): the
/// removed rows' announcement (their `deletion.completed` events, completed
/// at `now`, made into one event per sink by the notifier: see
/// [`super::announce::fan_out`]) and a `deletion.failed` event per request failed
/// for good and sink that wants it; a row another instance holds now gives
/// none.
pub fn ack_announcing(
    conn: &mut Conn,
    owner: &str,
    batch: (&[Done], &[Failure]),
    receipts_at: Option<i64>,
    now: i64,
    sinks: &Sinks,
) -> QueryResult<AckCounts> {
    let receipts = |replace| receipts_at.map(|at| Receipts { at, replace });
    let announce = Announce {
        sinks,
        at: now,
        done: batch.0,
        #[cfg(feature = "sqlite")]
        prebuilt: match conn.backend() == crate::db::Backend::Sqlite
            && !sinks.wanting(COMPLETED).is_empty()
        {
            true => Some(announce::prebuilt(batch.0)?),
            false => None,
        },
    };
    let (done, failures) = batch;
    match ack_writing(conn, owner, (done, failures), receipts(false), &announce) {
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) if receipts_at.is_some() => {
            ack_writing(conn, owner, (done, failures), receipts(true), &announce)
        }
        acked => acked,
    }
}

/// What an ack announces: to which sinks, when its events occurred, and
/// (SQLite) the items of its announcements, made before the transaction.
struct Announce<'a> {
    sinks: &'a Sinks,
    at: i64,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    done: &'a [Done],
    #[cfg(feature = "sqlite")]
    prebuilt: Option<std::collections::BTreeMap<Outcome, String>>,
}

/// How an ack writes receipts.
#[derive(Debug, Clone, Copy)]
struct Receipts {
    /// Completion time, epoch ms.
    at: i64,
    /// Whether an id may still have an earlier receipt, to be replaced (an
    /// upsert); otherwise such an id fails the INSERT.
    replace: bool,
}

fn ack_writing(
    conn: &mut Conn,
    owner: &str,
    (done, failures): (&[Done], &[Failure]),
    receipts: Option<Receipts>,
    announce: &Announce<'_>,
) -> QueryResult<AckCounts> {
    let groups = by_outcome(done);
    let run = |conn: &mut Conn| {
        let mut counts = AckCounts::default();
        let mut delta = CountDelta::default();
        if !done.is_empty() {
            let gone = remove_done(conn, owner, &groups, receipts, announce)?;
            if receipts.is_some() {
                counts.receipts = gone.removed;
            }
            counts.removed = gone.removed;
            counts.lost_lease += done.len() - gone.removed;
            delta = gone.delta;
        }
        reschedule(conn, owner, failures, &mut counts, &mut delta, announce)?;
        counts::add(conn, delta)?;
        Ok(counts)
    };
    // PostgreSQL removes, writes receipts and keeps the counts in one
    // statement per group: the usual batch (one group, no failures) is that
    // statement alone.
    atomically(
        conn,
        failures.is_empty()
            && (groups.len() <= 1
                || (receipts.is_none() && announce.sinks.wanting(COMPLETED).is_empty())),
        run,
    )
}

/// Reschedules (or fails for good) the ids whose deletion failed, those
/// still leased to `owner`, adding to `counts` and to the kept counts'
/// `delta`.
fn reschedule(
    conn: &mut Conn,
    owner: &str,
    failures: &[Failure],
    counts: &mut AckCounts,
    delta: &mut CountDelta,
    announce: &Announce<'_>,
) -> QueryResult<()> {
    let db_now = super::db_now_ms(conn);
    let mut given_up = Vec::new();
    for failure in failures {
        let state = match failure.retry_at {
            Some(_) => State::Pending,
            None => State::Failed,
        };
        let updated = diesel::update(
            t::video_del_rec
                .filter(t::id.eq(&failure.id))
                .filter(t::locked_by.eq(owner))
                .filter(t::locked_until.gt(sql::<Nullable<BigInt>>(db_now))),
        )
        .set((
            t::state.eq(state.as_str()),
            t::attempts.eq(failure.attempts),
            t::last_error.eq(&failure.error),
            t::not_before.eq(failure.retry_at),
            t::locked_by.eq(None::<String>),
            t::locked_until.eq(None::<i64>),
        ))
        .execute(conn)?;
        match (updated, state) {
            (0, _) => counts.lost_lease += 1,
            (_, State::Failed) => {
                counts.failed += 1;
                delta.queued -= 1;
                delta.failed += 1;
                given_up.push(NewEvent {
                    kind: crate::db::models::FAILED,
                    subject: &failure.id,
                    occurred_at: announce.at,
                    data: crate::db::models::failed_data(failure, announce.at),
                });
            }
            _ => counts.retried += 1,
        }
    }
    if !given_up.is_empty() {
        events::insert(conn, announce.sinks, &given_up)?;
    }
    Ok(())
}

/// What a group of a batch's ids found, bound once for all of them in
/// their receipts: paths deleted and missing, and the per-target counts
/// (JSON).
type Outcome = (u32, u32, String);

/// The ids of a batch by what their deletion found: a receipt's counts
/// are then bound once per group instead of travelling with each id. A
/// batch usually has one group (every id has the same paths, and they all
/// existed).
pub(super) type Outcomes<'a> = std::collections::BTreeMap<Outcome, Vec<&'a str>>;

/// The ids by outcome.
fn by_outcome(done: &[Done]) -> Outcomes<'_> {
    let mut groups = Outcomes::default();
    for d in done {
        let outcome = (
            d.removed.deleted,
            d.removed.missing,
            d.removed.targets_json(),
        );
        groups
            .entry(outcome)
            .or_default()
            .push(d.claimed.id.as_str());
    }
    groups
}
