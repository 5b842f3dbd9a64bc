//! Many instances on one database: exclusive claims, lease takeover, and
//! idempotent concurrent recording, on every backend.

use std::collections::HashSet;

use crate::common::{claim_as, now_ms, spawn_app, start_more, wait_until, Backend, TestApp};
use serde_json::json;
use video_scheduler::db::queries;

backend_tests!(
    two_instances_drain_10000_ids_and_each_id_is_deleted_by_exactly_one,
    a_dead_instance_s_claims_are_taken_over_once_its_lease_expires,
    acks_only_touch_rows_still_leased_to_the_acker,
    an_ack_after_the_lease_ended_is_refused_even_if_nobody_took_the_rows,
    the_database_server_s_clock_is_read_in_epoch_milliseconds,
    concurrent_claims_never_hand_out_a_row_twice,
    recording_the_same_1000_ids_from_8_concurrent_clients_gives_1000_rows,
);

fn create_files(app: &TestApp, ids: &[String]) {
    for id in ids {
        std::fs::write(app.root().join(id), b"").unwrap();
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

fn record_in_chunks(
    app: &TestApp,
    ids: &[String],
    chunk: usize,
    extra: serde_json::Value,
) -> usize {
    let mut accepted = 0;
    for part in ids.chunks(chunk) {
        let refs: Vec<&str> = part.iter().map(String::as_str).collect();
        let reply = app.record(&refs, extra.clone());
        assert_eq!(reply.status, 202, "{}", reply.body);
        accepted += reply.json()["accepted"].as_u64().unwrap() as usize;
    }
    accepted
}

fn two_instances_drain_10000_ids_and_each_id_is_deleted_by_exactly_one(backend: Backend) {
    let small_batches = |c: &mut video_scheduler::config::Config| {
        c.batch_size = 100;
        c.executors = 2;
        c.tick_ms = 50;
    };
    let a = spawn_app(backend, small_batches);
    let b = start_more(&a, small_batches);
    let ids = ids("drain", 10_000);
    create_files(&a, &ids);
    // Due in a moment, so that both instances find the work on their ticks.
    let at = chrono::DateTime::from_timestamp_millis(now_ms() + 500)
        .unwrap()
        .to_rfc3339();
    let half = ids.len() / 2;
    assert_eq!(
        record_in_chunks(&a, &ids[..half], 5000, json!({ "not_before": at })),
        half
    );
    assert_eq!(
        record_in_chunks(&b, &ids[half..], 5000, json!({ "not_before": at })),
        half
    );

    wait_until("every row is gone", || a.row_count() == 0);
    let left = std::fs::read_dir(a.root()).unwrap().count();
    assert_eq!(left, 0, "files left behind");

    let deleted =
        |app: &TestApp| app.metric("video_scheduler_deletions_total{outcome=\"deleted\"}");
    let missing =
        |app: &TestApp| app.metric("video_scheduler_deletions_total{outcome=\"missing\"}");
    let (deleted_a, deleted_b) = (deleted(&a), deleted(&b));
    eprintln!("{backend:?}: instance a deleted {deleted_a}, instance b {deleted_b}");
    assert_eq!(deleted_a + deleted_b, 10_000.0, "every id deleted once");
    assert_eq!(missing(&a) + missing(&b), 0.0, "no id was deleted twice");
}

fn a_dead_instance_s_claims_are_taken_over_once_its_lease_expires(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 50);
    let ids = ids("orphan", 1000);
    create_files(&app, &ids);
    record_in_chunks(&app, &ids, 1000, json!({ "delay_secs": 3600 }));

    // An instance claims everything and dies before acking: its lease runs
    // until `expiry`. The claim is made "two hours ahead" so it can take the
    // delayed rows; its lease is set in real time.
    let expiry = now_ms() + 1500;
    let later = crate::common::two_hours_ahead();
    let claimed = crate::common::claim_at(&app.db(), "dead-instance", later, expiry, 1000);
    assert_eq!(claimed.len(), 1000);

    wait_until("the live instance deleted the orphaned work", || {
        let gone = ids
            .iter()
            .filter(|id| !app.root().join(id).exists())
            .count();
        assert!(
            gone == 0 || now_ms() >= expiry,
            "a live lease was not respected"
        );
        gone == ids.len()
    });
    wait_until("every row is gone", || app.row_count() == 0);
    assert_eq!(
        app.metric("video_scheduler_deletions_total{outcome=\"missing\"}"),
        0.0
    );
    // The dead instance's late ack changes nothing.
    let owned = crate::common::done(&claimed);
    let counts = app
        .db()
        .write(|c| queries::ack::ack(c, "dead-instance", &owned, &[], None))
        .unwrap();
    assert_eq!((counts.removed, counts.lost_lease), (0, 1000));
}

fn acks_only_touch_rows_still_leased_to_the_acker(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 3_600_000);
    record_in_chunks(&app, &ids("fenced", 10), 10, json!({ "delay_secs": 3600 }));
    let db = app.db();
    let claimed = claim_as(&db, "owner-a", 10);
    assert_eq!(claimed.len(), 10);
    let done = crate::common::done(&claimed);
    let ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();

    let by_b = db
        .write(|c| queries::ack::ack(c, "owner-b", &done, &[], None))
        .unwrap();
    assert_eq!((by_b.removed, by_b.lost_lease), (0, 10));
    assert_eq!(app.row_count(), 10);
    let by_a = db
        .write(|c| queries::ack::ack(c, "owner-a", &done[..4], &[], None))
        .unwrap();
    assert_eq!((by_a.removed, by_a.lost_lease), (4, 0));
    assert_eq!(app.row_count(), 6);
    let released = db
        .write(|c| queries::claim::release(c, "owner-a", &ids, now_ms(), None))
        .unwrap();
    assert_eq!(released, 6);
    let stats = db.read(|c| queries::counts::stats(c, now_ms())).unwrap();
    assert_eq!((stats.pending, stats.running), (6, 0));
}

/// A lease that ran out by the database's clock fences the ack even while
/// nobody took the rows over yet (`locked_by` still names the acker): the
/// rows are due again, and whoever claims them next does them.
fn an_ack_after_the_lease_ended_is_refused_even_if_nobody_took_the_rows(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 3_600_000);
    // The start-up tick's claim is made before the rows' lease ends (on a
    // busy machine it could come after, and take them over).
    wait_until("the start-up claim", || {
        app.metric("video_scheduler_claim_seconds_count") >= 1.0
    });
    record_in_chunks(&app, &ids("late", 6), 6, json!({ "delay_secs": 3600 }));
    let db = app.db();
    let later = crate::common::two_hours_ahead();
    // Leased until a second ago, by the database's clock as by ours.
    let ended = now_ms() - 1000;
    let claimed = crate::common::claim_at(&db, "owner-a", later, ended, 6);
    assert_eq!(claimed.len(), 6);
    let done = crate::common::done(&claimed[..3]);
    let policy = video_scheduler::pipeline::retry::RetryPolicy {
        max_attempts: 5,
        base_ms: 1,
        max_ms: 1,
    };
    let failures: Vec<_> = claimed[3..]
        .iter()
        .map(|c| policy.failure(c, "boom".into(), now_ms()))
        .collect();
    let late = db
        .write(|c| queries::ack::ack(c, "owner-a", &done, &failures, Some(now_ms())))
        .unwrap();
    assert_eq!(
        (late.removed, late.retried, late.receipts, late.lost_lease),
        (0, 0, 0, 6)
    );
    assert_eq!(app.row_count(), 6);
    let stats = db.read(|c| queries::counts::stats(c, now_ms())).unwrap();
    assert_eq!((stats.running, stats.done), (6, 0));
    // Due again: the next claim takes them, first of all the expired ones.
    let again = db
        .write(|c| {
            queries::claim::claim_from(
                c,
                "owner-b",
                now_ms(),
                now_ms() + 60_000,
                10,
                queries::claim::Due::Expired,
            )
        })
        .unwrap();
    match again {
        video_scheduler::db::models::Claim::Batch(batch) => assert_eq!(batch.len(), 6),
        paused => panic!("{paused:?}"),
    }
}

/// Leases are checked by the server's clock: its reading must be the same
/// unit and epoch as ours (a server on this machine agrees within a
/// second), and `/metrics` shows the skew.
fn the_database_server_s_clock_is_read_in_epoch_milliseconds(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    let skew = app.db().clock_skew_ms().unwrap();
    assert!(skew.abs() < 1000, "{skew} ms");
    let shown = app.metric("video_scheduler_db_clock_skew_seconds");
    assert!(shown.abs() < 1.0, "{shown} s");
}

fn concurrent_claims_never_hand_out_a_row_twice(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 3_600_000);
    record_in_chunks(
        &app,
        &ids("claim", 2000),
        2000,
        json!({ "delay_secs": 3600 }),
    );
    let later = crate::common::two_hours_ahead();
    let claims: Vec<Vec<String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let db = app.db();
                s.spawn(move || {
                    let owner = format!("claimer-{w}");
                    let mut mine = Vec::new();
                    loop {
                        let batch =
                            crate::common::claim_at(&db, &owner, later, later + 600_000, 50);
                        if batch.is_empty() {
                            return mine;
                        }
                        mine.extend(batch.into_iter().map(|c| c.id));
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let total: usize = claims.iter().map(Vec::len).sum();
    let distinct: HashSet<&String> = claims.iter().flatten().collect();
    eprintln!(
        "{backend:?}: claims per worker {:?}",
        claims.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(distinct.len(), 2000, "every row claimed");
    assert_eq!(total, 2000, "no row claimed twice");
}

fn recording_the_same_1000_ids_from_8_concurrent_clients_gives_1000_rows(backend: Backend) {
    let a = spawn_app(backend, |_| {});
    let b = start_more(&a, |_| {});
    let ids = ids("same", 1000);
    let accepted: usize = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|client| {
                let (app, mut mine) = (if client % 2 == 0 { &a } else { &b }, ids.clone());
                s.spawn(move || {
                    fastrand::shuffle(&mut mine);
                    let chunk = [1, 7, 100, 1000][client % 4];
                    record_in_chunks(app, &mine, chunk, json!({ "delay_secs": 3600 }))
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    });
    assert_eq!(
        accepted, 1000,
        "each id accepted exactly once across all clients"
    );
    assert_eq!(a.row_count(), 1000);
}
