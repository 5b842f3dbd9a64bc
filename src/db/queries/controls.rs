//! Switches shared by every instance on the database (`video_del_control`):
//! the pause, and the leases that make one instance do a shared chore (the
//! receipt pruner) at a time.

use diesel::prelude::*;

use super::super::schema::video_del_control::dsl as c;
use super::super::Conn;

/// The name of the pause switch.
const PAUSED: &str = "paused";

/// Whether an operator paused deletions (one primary-key read).
pub fn paused(conn: &mut Conn) -> QueryResult<bool> {
    let value: Option<i64> = c::video_del_control
        .find(PAUSED)
        .select(c::value)
        .first(conn)
        .optional()?;
    Ok(value.unwrap_or(0) != 0)
}

/// Pauses or resumes deletions for every instance.
pub(crate) fn set_paused(conn: &mut Conn, paused: bool, now: i64) -> QueryResult<()> {
    diesel::update(c::video_del_control.find(PAUSED))
        .set((c::value.eq(i64::from(paused)), c::updated_at.eq(now)))
        .execute(conn)
        .map(drop)
}

/// Takes (or renews) the lease `name` for `owner` until `until`, unless
/// another instance holds it unexpired. Whether `owner` holds it now.
pub(crate) fn take_lease(
    conn: &mut Conn,
    name: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> QueryResult<bool> {
    let taken = diesel::update(
        c::video_del_control.find(name).filter(
            c::locked_until
                .is_null()
                .or(c::locked_until.le(now))
                .or(c::locked_by.eq(owner)),
        ),
    )
    .set((
        c::locked_by.eq(owner),
        c::locked_until.eq(until),
        c::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(taken == 1)
}
