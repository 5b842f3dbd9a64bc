//! Leases fence the work, not only the ack: an instance whose claim does
//! not answer in time (a quarter of the lease) gives it up and deletes
//! nothing of it, even once the claim commits on the database; the rows
//! come due again, and the receipt counts every claim. The slow claim is
//! made by a PostgreSQL trigger that sleeps in that instance's claims.

use crate::common::process::{write_config, ServerProcess};
use crate::common::{wait_until, workspace, Backend};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde_json::json;

#[cfg(feature = "postgres")]
#[test]
fn postgres_a_claim_that_answers_too_late_deletes_nothing() {
    late_claim_answer(Backend::Postgres);
}

/// Instance A claims a due id, but its claim's answer comes 3 s later, past
/// the 2 s lease: A gives the claim up after 0.5 s (an outage, logged),
/// deleting nothing and counting nothing. Instance B, started once A is gone, takes the row
/// over and finds the file still there: its receipt says `deleted: 1`, and
/// counts A's claims with B's (`claims` at least 2).
fn late_claim_answer(backend: Backend) {
    let (ws, mut config) = workspace(backend);
    config.tick_ms = 50;
    config.lease_secs = 2;
    // A claim, not the fast lane's insert, is what must answer late.
    config.fast_lane = false;
    let root = config.storage[0].root.clone();
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("late"), b"x").unwrap();
    let a = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "a.json"));
    // Every claim of A's commits 3 s after it leased its rows: its answer
    // comes after the lease has run out.
    let mut conn = diesel::PgConnection::establish(&ws.db.url).unwrap();
    conn.batch_execute(&format!(
        "CREATE FUNCTION slow_claim() RETURNS trigger AS $$ \
           BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER slow_claim BEFORE UPDATE ON video_del_rec FOR EACH ROW \
           WHEN (NEW.locked_by = '{}') EXECUTE FUNCTION slow_claim()",
        owner(&a)
    ))
    .unwrap();
    assert_eq!(
        a.post("/v1/deletions", json!({ "ids": ["late"] })).status,
        202
    );
    wait_until("A gave its claim up", || {
        a.log().contains("no answer from the database within")
    });
    let metric = |server: &ServerProcess, outcome: &str| {
        server.metric(&format!(
            "video_scheduler_deletions_total{{outcome=\"{outcome}\"}}"
        ))
    };
    assert!(root.join("late").exists(), "A deleted on a late claim");
    assert_eq!(metric(&a, "deleted") + metric(&a, "missing"), 0.0);
    // A keeps claiming the row (and giving the claim up): B takes over once
    // A is gone, and finds the file still there.
    drop(a);
    let b = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "b.json"));
    wait_until("B took the row over and deleted it", || {
        b.get("/v1/deletions/late").json()["state"] == "done"
    });
    assert!(!root.join("late").exists());
    assert_eq!(metric(&b, "deleted"), 1.0);
    let receipt = b.get("/v1/deletions/late").json();
    assert_eq!(receipt["deleted"], 1, "{receipt}");
    assert_eq!(receipt["acked_by"], owner(&b), "{receipt}");
    assert!(
        receipt["claims"].as_i64().unwrap() >= 2,
        "A's dropped claims count: {receipt}"
    );
}

/// The instance id a server logged at start-up.
fn owner(server: &ServerProcess) -> String {
    let log = server.log();
    let (_, after) = log
        .split_once("pipeline started as ")
        .expect("the start-up line");
    after.split(':').next().unwrap().to_owned()
}
