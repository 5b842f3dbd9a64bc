//! PostgreSQL's plans for the claim and the ack when its statistics say the
//! queue table is empty: what autovacuum records whenever the drain keeps
//! up, until the next ANALYZE. A plan that then looks ids up through an
//! index that does not lead with `id`, or reads every due row and sorts
//! them for a claim of a few, turns each statement into a walk of the
//! backlog (a ten-minute soak stalled so; BENCHMARKS.md). Checked by the
//! work PostgreSQL counted (index entries and rows of sequential scans
//! read), not by time: a plan that searches reads a few entries per
//! deletion, one that walks reads the backlog per statement.

use diesel::sql_types::BigInt;
use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::json;

use crate::common::{spawn_app, wait_until, Backend};

/// Ids drained with the statistics saying the table is empty.
const IDS: usize = 20_000;
/// Rows per claim: a plan that reads the whole backlog per claim reads
/// about `IDS * IDS / (2 * BATCH)` entries, 2,000,000 here.
const BATCH: usize = 100;

#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn number(db: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Number>(db).unwrap().n
}

fn execute(db: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql).execute(db).unwrap();
}

/// `video_del_rec`'s vacuums other than autovacuum's: the instance's own.
const VACUUMS: &str = "SELECT vacuum_count AS n FROM pg_stat_user_tables \
                       WHERE relname = 'video_del_rec'";

#[test]
fn an_instance_vacuums_its_queue_table_when_it_has_dead_rows() {
    let app = spawn_app(Backend::Postgres, |_| {});
    let db = &mut PgConnection::establish(&app.config.database_url).unwrap();
    assert_eq!(number(db, VACUUMS), 0);
    // 25,000 dead rows: past the 20,000 that call for a vacuum.
    execute(
        db,
        "INSERT INTO video_del_rec (id, created_at, not_before, source, request_id) \
         SELECT 'gone-' || g, 0, 9000000000000, 'seed', '' FROM generate_series(1, 25000) g",
    );
    execute(db, "DELETE FROM video_del_rec WHERE id LIKE 'gone-%'");
    // Counted by the server's statistics a second or so later, looked at
    // by the instance every 5 s.
    wait_until("the instance vacuums video_del_rec", || {
        number(db, VACUUMS) > 0
    });
    // What a vacuum of a table emptied by its drain records: no rows.
    let estimate = number(
        db,
        "SELECT reltuples::bigint AS n FROM pg_class WHERE relname = 'video_del_rec'",
    );
    assert_eq!(estimate, 0);
}

#[test]
fn claims_and_acks_search_their_indexes_when_the_table_looks_empty() {
    let app = spawn_app(Backend::Postgres, |c| c.batch_size = BATCH);
    // One session of the test's own, beside the server's.
    let db = &mut PgConnection::establish(&app.config.database_url).unwrap();
    // What autovacuum leaves after a drain: pages the table keeps (one
    // live row, never due, at the end) and statistics that count no rows.
    execute(
        db,
        "INSERT INTO video_del_rec (id, created_at, not_before, source, request_id) \
         SELECT 'gone-' || g, 0, 0, 'seed', '' FROM generate_series(1, 5000) g",
    );
    execute(
        db,
        "INSERT INTO video_del_rec (id, created_at, not_before, source, request_id) \
         VALUES ('later', 0, 9000000000000, 'seed', '')",
    );
    execute(db, "DELETE FROM video_del_rec WHERE id LIKE 'gone-%'");
    execute(db, "VACUUM ANALYZE video_del_rec");
    let estimate = number(
        db,
        "SELECT reltuples::bigint AS n FROM pg_class WHERE relname = 'video_del_rec'",
    );
    assert!(estimate <= 1, "the statistics count {estimate} rows");

    // The backlog, recorded while paused (no fast lane), then drained by
    // claims and acks planned on those statistics (until the instance's
    // own vacuum, which may come during the drain, counts the rows left).
    assert_eq!(app.post("/v1/pause", json!({})).status, 200);
    let ids: Vec<String> = (0..IDS).map(|i| format!("due-{i:06}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for chunk in refs.chunks(10_000) {
        app.record_now(chunk);
    }
    assert_eq!(app.post("/v1/resume", json!({})).status, 200);
    wait_until("the backlog is erased", || {
        app.get("/v1/stats").json()["done"].as_i64().unwrap() == IDS as i64
    });
    // The workspace keeps the database until the end of the test.
    let _workspace = app.stop();

    // A backend writes its counters out as it exits.
    wait_until("the server's sessions have ended", || {
        number(
            db,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ) == 0
    });
    let entries = number(
        db,
        "SELECT sum(idx_tup_read)::bigint AS n FROM pg_stat_user_indexes \
         WHERE relname = 'video_del_rec'",
    );
    let scanned = number(
        db,
        "SELECT seq_tup_read::bigint AS n FROM pg_stat_user_tables \
         WHERE relname = 'video_del_rec'",
    );
    // Searching: each id is claimed, looked up and deleted, a few entries
    // each (and the dead versions a claim steps over: 7 an id, measured).
    // Walking: the backlog per claim, or an index or the table per id or
    // per statement (the set-up's DELETE reads its 5,001 rows once).
    assert!(
        entries < 20 * IDS as i64 && scanned < IDS as i64,
        "{entries} index entries and {scanned} rows of sequential scans \
         read for {IDS} deletions"
    );
}
