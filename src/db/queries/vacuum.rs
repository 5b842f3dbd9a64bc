//! Vacuuming the queue table on PostgreSQL, for the VacuumActor
//! (`pipeline/vacuum.rs` says why and when). Other backends have nothing
//! to vacuum here: SQLite reuses a deleted row's pages at once, InnoDB
//! purges them in the background.

use diesel::prelude::*;
#[cfg(feature = "postgres")]
use diesel::sql_types::{BigInt, Bool};

#[cfg(feature = "postgres")]
use crate::db::AnyConnection;
use crate::db::Conn;

#[cfg(feature = "postgres")]
#[derive(QueryableByName)]
struct Dead {
    #[diesel(sql_type = BigInt)]
    dead: i64,
}

#[cfg(feature = "postgres")]
#[derive(QueryableByName)]
struct Allowed {
    #[diesel(sql_type = Bool)]
    allowed: bool,
}

/// Whether this session may vacuum `video_del_rec`: it owns it (or is a
/// member of its owner, or a superuser). PostgreSQL 15 lets no one else;
/// for them VACUUM only warns and does nothing. False on other backends.
pub fn may_vacuum(conn: &mut Conn) -> QueryResult<bool> {
    match conn {
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(pg) => diesel::sql_query(
            "SELECT pg_has_role(relowner, 'USAGE') AS allowed FROM pg_class \
             WHERE oid = 'video_del_rec'::regclass",
        )
        .get_result::<Allowed>(pg)
        .map(|row| row.allowed),
        #[allow(unreachable_patterns)]
        _ => Ok(false),
    }
}

/// Dead row versions in `video_del_rec`, as the server's statistics count
/// them (a second or so behind): what a vacuum would reclaim.
pub fn dead_rows(conn: &mut Conn) -> QueryResult<i64> {
    match conn {
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(pg) => diesel::sql_query(
            "SELECT coalesce(n_dead_tup, 0) AS dead FROM pg_stat_user_tables \
             WHERE relid = 'video_del_rec'::regclass",
        )
        .get_result::<Dead>(pg)
        .map(|row| row.dead),
        #[allow(unreachable_patterns)]
        _ => Ok(0),
    }
}

/// Vacuums `video_del_rec`, unless a vacuum of it (autovacuum's, another
/// instance's) runs already: that one is enough. Not in a transaction.
pub fn vacuum(conn: &mut Conn) -> QueryResult<()> {
    match conn {
        #[cfg(feature = "postgres")]
        AnyConnection::Pg(pg) => diesel::sql_query("VACUUM (SKIP_LOCKED) video_del_rec")
            .execute(pg)
            .map(drop),
        #[allow(unreachable_patterns)]
        _ => Ok(()),
    }
}
