//! Rows made by the database itself, and what they cost: the `INSERT ...
//! SELECT` that fills a table with millions of requests in minutes instead
//! of hours of HTTP, the table's and its indexes' bytes as each database
//! reports them, and the CPU time of the database's own processes.

use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl};
use video_scheduler::db::{Backend, Db};

/// Rows generated per statement: one transaction never holds more, so
/// MariaDB's undo log and SQLite's WAL stay a size a laptop has.
const CHUNK: u64 = 1_000_000;

/// Inserts the ids `{prefix}-{i:09}` for `i` in `0..rows`, pending and due
/// at `not_before + i` (ms: distinct times, as requests recorded one after
/// another have, so no index holds runs of equal keys that it could
/// compress), in statements of a million rows. The kept counts
/// are not touched: call `queries::counts::recount` afterwards.
pub fn generate(
    db: &Db,
    backend: Backend,
    prefix: &str,
    rows: u64,
    not_before: i64,
) -> anyhow::Result<()> {
    let mut start = 0;
    while start < rows {
        let end = (start + CHUNK).min(rows);
        let sql = insert_select(backend, prefix, start, end, not_before);
        db.write(|c| diesel::sql_query(&sql).execute(c))
            .with_context(|| format!("generating rows {start}..{end}"))?;
        start = end;
    }
    Ok(())
}

/// One `INSERT ... SELECT` of the ids `start..end`, in each dialect.
fn insert_select(backend: Backend, prefix: &str, start: u64, end: u64, not_before: i64) -> String {
    let columns = "INSERT INTO video_del_rec (id, created_at, not_before)";
    match backend {
        Backend::Sqlite => format!(
            "{columns} WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n \
             WHERE i < {last}) SELECT printf('{prefix}-%09d', i), {not_before} + i, {not_before} + i FROM n",
            last = end - 1
        ),
        Backend::Postgres => format!(
            "{columns} SELECT '{prefix}-' || lpad(i::text, 9, '0'), {not_before} + i, {not_before} + i \
             FROM generate_series({start}, {last}) AS i",
            last = end - 1
        ),
        // Decimal digits crossed, as many as `end - start` needs: no
        // recursion limit to meet, and no more combinations than rows.
        Backend::Mysql => {
            let count = end - start;
            let places = (count.max(2) - 1).to_string().len();
            let digits = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                          UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 \
                          UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
            let sum = (0..places)
                .map(|p| format!("{} * t{p}.d", 10u64.pow(p as u32)))
                .collect::<Vec<_>>()
                .join(" + ");
            let tables = (0..places)
                .map(|p| format!("{digits} t{p}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "{columns} SELECT CONCAT('{prefix}-', LPAD({start} + n, 9, '0')), \
                 {not_before} + {start} + n, {not_before} + {start} + n FROM (SELECT {sum} AS n FROM {tables}) AS numbers \
                 WHERE n < {count}"
            )
        }
    }
}

/// Bytes of a table: its rows (with PostgreSQL's TOAST and MariaDB's
/// clustered primary key) and its secondary indexes (PostgreSQL's and
/// SQLite's primary key index counted here too).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sizes {
    pub table: u64,
    pub indexes: u64,
}

#[derive(QueryableByName)]
struct SizesRow {
    #[diesel(sql_type = BigInt)]
    table_bytes: i64,
    #[diesel(sql_type = BigInt)]
    index_bytes: i64,
}

/// The sizes of `video_del_rec` as the database reports them now.
pub fn sizes(db: &Db, backend: Backend) -> anyhow::Result<Sizes> {
    sizes_of(db, backend, "video_del_rec")
}

/// The sizes of `table` (a name of ours, not an input) as the database
/// reports them now. MariaDB's come from its statistics, refreshed first
/// (`ANALYZE TABLE`); SQLite's from `dbstat` (pages of the table and of
/// each of its indexes).
pub fn sizes_of(db: &Db, backend: Backend, table: &str) -> anyhow::Result<Sizes> {
    let sql = match backend {
        Backend::Postgres => format!(
            "SELECT pg_table_size('{table}')::bigint AS table_bytes, \
             pg_indexes_size('{table}')::bigint AS index_bytes"
        ),
        Backend::Mysql => {
            let analyze = format!("ANALYZE TABLE {table}");
            db.write(|c| diesel::sql_query(&analyze).execute(c))?;
            format!(
                "SELECT CAST(data_length AS SIGNED) AS table_bytes, \
                 CAST(index_length AS SIGNED) AS index_bytes FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '{table}'"
            )
        }
        Backend::Sqlite => format!(
            "SELECT COALESCE(SUM(CASE WHEN name = '{table}' THEN pgsize END), 0) \
             AS table_bytes, \
             COALESCE(SUM(CASE WHEN name <> '{table}' THEN pgsize END), 0) AS index_bytes \
             FROM dbstat WHERE name = '{table}' OR name IN \
             (SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = '{table}')"
        ),
    };
    let row: SizesRow = db.read(|c| diesel::sql_query(&sql).get_result(c))?;
    Ok(Sizes {
        table: row.table_bytes.max(0) as u64,
        indexes: row.index_bytes.max(0) as u64,
    })
}

/// CPU time (user + system) of the database server's processes on this
/// machine: every `postgres` process for PostgreSQL, `mariadbd`/`mysqld`
/// for MariaDB; zero for SQLite, whose work is in the server's own process.
/// Processes that ended meanwhile are not counted: the server's pooled
/// connections live as long as it does.
pub fn database_cpu(backend: Backend) -> Duration {
    let names: &[&str] = match backend {
        Backend::Postgres => &["postgres"],
        Backend::Mysql => &["mariadbd", "mysqld"],
        Backend::Sqlite => return Duration::ZERO,
    };
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((name, used)) = process_ticks(&stat) {
            if names.contains(&name) {
                ticks += used;
            }
        }
    }
    ticks_to_duration(ticks)
}

/// The command name and its user + system clock ticks, from a
/// `/proc/<pid>/stat` line.
pub fn process_ticks(stat: &str) -> Option<(&str, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((name, user + system))
}

pub fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_stat_line_gives_its_name_and_ticks() {
        let line = "42 (postgres: x) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(process_ticks(line), Some(("postgres: x", 12)));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn mariadb_numbers_cross_as_many_digits_as_the_chunk_needs() {
        let sql = insert_select(Backend::Mysql, "p", 1_000, 1_100, 5);
        // 100 numbers: two digit tables, not three.
        assert!(sql.contains("10 * t1.d") && !sql.contains("t2"), "{sql}");
        assert!(sql.contains("WHERE n < 100"), "{sql}");
        assert!(sql.contains("LPAD(1000 + n, 9, '0')"), "{sql}");
    }
}
