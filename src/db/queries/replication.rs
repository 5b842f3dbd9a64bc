//! What the database's replication promises for a commit, read from the
//! server: a PostgreSQL primary's standbys (`pg_stat_replication`) and
//! `synchronous_standby_names`, a Galera node's cluster (`SHOW STATUS`).
//! Read at start-up, every minute and by `/readyz`; no locks.

use diesel::prelude::*;

use crate::db::models::Replication;
use crate::db::Conn;

/// The replication seen from this connection's server.
pub fn read(conn: &mut Conn) -> QueryResult<Replication> {
    match conn {
        #[cfg(feature = "postgres")]
        crate::db::AnyConnection::Pg(c) => postgres(c),
        #[cfg(feature = "mysql")]
        crate::db::AnyConnection::Mysql(c) => galera(c),
        #[allow(unreachable_patterns)]
        _ => Ok(Replication::None),
    }
}

/// The database server's clock, epoch milliseconds.
pub fn clock_ms(conn: &mut Conn) -> QueryResult<i64> {
    use diesel::dsl::sql;
    use diesel::sql_types::BigInt;
    let now = super::db_now_ms(conn);
    diesel::select(sql::<BigInt>(now)).get_result(conn)
}

/// The standbys streaming from a primary, and how many of them a commit
/// waits for. `sync_state` is hidden from roles without
/// `pg_read_all_stats`: such standbys count as `unknown`, never as
/// asynchronous.
#[cfg(feature = "postgres")]
fn postgres(c: &mut diesel::PgConnection) -> QueryResult<Replication> {
    use diesel::dsl::sql;
    use diesel::sql_types::{BigInt, Bool};
    let (commits_wait, standbys, synchronous, unknown): (bool, i64, i64, i64) = diesel::select((
        sql::<Bool>(
            "current_setting('synchronous_standby_names') <> '' \
                 AND current_setting('synchronous_commit') NOT IN ('off', 'local')",
        ),
        sql::<BigInt>("(SELECT count(*) FROM pg_stat_replication)"),
        sql::<BigInt>(
            "(SELECT count(*) FROM pg_stat_replication \
                  WHERE sync_state IN ('sync', 'quorum'))",
        ),
        sql::<BigInt>("(SELECT count(*) FROM pg_stat_replication WHERE sync_state IS NULL)"),
    ))
    .get_result(c)?;
    if standbys == 0 && !commits_wait {
        return Ok(Replication::None);
    }
    Ok(Replication::Postgres {
        standbys,
        synchronous,
        unknown,
        commits_wait,
    })
}

/// A Galera node's view of its cluster; `None` on a server without Galera.
#[cfg(feature = "mysql")]
fn galera(c: &mut diesel::MysqlConnection) -> QueryResult<Replication> {
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Status {
        #[diesel(sql_type = Text, column_name = Variable_name)]
        name: String,
        #[diesel(sql_type = Text, column_name = Value)]
        value: String,
    }
    let status: Vec<Status> = diesel::sql_query(
        "SHOW STATUS WHERE Variable_name IN \
         ('wsrep_cluster_size', 'wsrep_cluster_status', 'wsrep_local_state_comment')",
    )
    .load(c)?;
    let value = |name: &str| {
        status
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.value.clone())
    };
    let Some(size) = value("wsrep_cluster_size") else {
        return Ok(Replication::None);
    };
    // A server with the variables but no provider says size 0.
    let cluster_size = size.parse().unwrap_or(0);
    if cluster_size == 0 {
        return Ok(Replication::None);
    }
    Ok(Replication::Galera {
        cluster_size,
        primary: value("wsrep_cluster_status").as_deref() == Some("Primary"),
        state: value("wsrep_local_state_comment").unwrap_or_default(),
    })
}
