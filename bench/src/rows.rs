//! Rows made by the database itself, and what they take: the `INSERT ...
//! SELECT` that fills a table with millions of requests in minutes instead
//! of hours of HTTP, and the table's and its indexes' bytes as each
//! database reports them.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_numbers_cross_as_many_digits_as_the_chunk_needs() {
        let sql = insert_select(Backend::Mysql, "p", 1_000, 1_100, 5);
        // 100 numbers: two digit tables, not three.
        assert!(sql.contains("10 * t1.d") && !sql.contains("t2"), "{sql}");
        assert!(sql.contains("WHERE n < 100"), "{sql}");
        assert!(sql.contains("LPAD(1000 + n, 9, '0')"), "{sql}");
    }
}
