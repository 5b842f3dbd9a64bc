//! What a failed statement means: a lost connection (an outage), a server
//! that takes no writes (an outage only a write ends), a conflict with
//! another writer (contention: run it again), or anything else (an error
//! of the query). [`super::Db`] acts on the answer.

/// Whether `e` may mean the connection is unusable (the server closed it,
/// the network dropped it, the server is shutting down): the connection is
/// then replaced and the failure is an outage (HTTP 503), not an error of
/// the query (HTTP 500). MySQL's client reports these with the generic
/// kind, so its messages are matched too.
pub(super) fn is_connection_lost(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::BrokenTransactionManager => true,
        Error::RollbackErrorOnCommit {
            rollback_error,
            commit_error,
        } => is_connection_lost(rollback_error) || is_connection_lost(commit_error),
        Error::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
            _,
        ) => true,
        Error::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            CONNECTION_LOST.iter().any(|m| message.contains(m))
        }
        _ => false,
    }
}

/// Lower-case fragments of the errors MariaDB/MySQL and PostgreSQL clients
/// give when a connection dies or the server goes away.
const CONNECTION_LOST: &[&str] = &[
    "server has gone away",
    "lost connection",
    "can't connect",
    "connection refused",
    "connection was killed",
    "shutdown in progress",
    "too many connections",
    "server closed the connection",
    "no connection to the server",
    "could not receive data",
    "could not send data",
    "terminating connection",
    "connection to server",
    "the database system is",
    "broken pipe",
    "connection reset",
];

/// Why the server refused a statement because it takes no writes now: a
/// PostgreSQL hot standby or read-only session (SQLSTATE 25006), a
/// MariaDB/MySQL server started `--read-only` (1290, 1836), a Galera node
/// outside the primary component or not synced (1047). `None` for any
/// other error. A fixed text per kind (the server's words name the
/// statement), so that an outage logs it once whatever was refused.
pub(super) fn refuses_writes(e: &diesel::result::Error) -> Option<&'static str> {
    use diesel::result::{DatabaseErrorKind, Error};
    // A commit that failed and the rollback after it (diesel reports both):
    // a Galera node cut off mid-commit refuses both.
    if let Error::RollbackErrorOnCommit {
        rollback_error,
        commit_error,
    } = e
    {
        return refuses_writes(commit_error).or_else(|| refuses_writes(rollback_error));
    }
    let Error::DatabaseError(kind, info) = e else {
        return None;
    };
    let message = info.message().to_ascii_lowercase();
    let what = if matches!(kind, DatabaseErrorKind::ReadOnlyTransaction) {
        "connected to a read-only server (a hot standby or a read-only session: SQLSTATE 25006)"
    } else if message.contains("wsrep has not yet prepared node")
        || message.contains("not connected to primary component")
    {
        "Galera node not synced (WSREP not ready for application use: error 1047)"
    } else if message.contains("--read-only") || message.contains("read-only mode") {
        "connected to a read-only server (--read-only: error 1290)"
    } else {
        return None;
    };
    Some(what)
}

/// A transaction the server rolled back to break a deadlock, a lock wait
/// that timed out, a serialization failure, or a Galera certification
/// failure (MariaDB reports it as a deadlock, 1213): safe to run again.
pub(super) fn is_conflict(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::RollbackErrorOnCommit { commit_error, .. } => is_conflict(commit_error),
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            message.contains("deadlock") || message.contains("lock wait timeout")
        }
        _ => false,
    }
}
