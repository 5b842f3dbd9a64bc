//! The fast lane (README, "Fast lane"): an id recorded due now while
//! executors are free is inserted already leased and deleted without a
//! claim; its lease fences it as a claimed row's does. SQLite and
//! PostgreSQL; MySQL has no lane and claims as before.

use serde_json::json;
use video_scheduler::db::queries::receipts;

use crate::common::process::{slow_deletion, write_config, ServerProcess};
use crate::common::{files_under, spawn_app, start_more, wait_until, Backend, TestApp};

backend_tests!(
    an_id_recorded_due_now_skips_the_claim_unless_deletions_are_paused,
    a_kill_9_between_insert_and_delete_leaves_the_id_to_any_instance_after_the_lease,
    two_instances_recording_the_same_ids_at_once_delete_each_once,
);

/// Ids this instance deleted through the fast lane.
fn lane(app: &TestApp) -> f64 {
    app.metric("video_scheduler_fast_lane_total")
}

/// Whether `backend` has the lane.
fn has_lane(backend: Backend) -> bool {
    backend != Backend::Mysql
}

fn an_id_recorded_due_now_skips_the_claim_unless_deletions_are_paused(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 50);
    app.create_file("fast");
    assert_eq!(app.get("/video-delete-record/fast").status, 200);
    wait_until("the id is erased", || {
        app.request("fast")["state"] == "done"
    });
    assert!(!app.exists("fast"));
    let receipt = app.request("fast");
    assert_eq!(
        (&receipt["state"], &receipt["claims"]),
        (&json!("done"), &json!(1))
    );
    let expected = if has_lane(backend) { 1.0 } else { 0.0 };
    assert_eq!(lane(&app), expected, "the lane took it (not on MySQL)");
    app.create_file("batch-a");
    app.create_file("batch-b");
    app.record_now(&["batch-a", "batch-b"]);
    wait_until("the batch is erased", || app.row_count() == 0);
    assert_eq!(lane(&app), 3.0 * expected);

    // Paused: recorded pending, not leased, not deleted, until the resume.
    assert_eq!(app.post("/v1/pause", json!({})).status, 200);
    app.create_file("held");
    assert_eq!(app.get("/video-delete-record/held").status, 200);
    let held = app.request("held");
    assert_eq!(
        (&held["state"], &held["locked_by"]),
        (&json!("pending"), &json!(null))
    );
    let claims = app.metric("video_scheduler_claim_seconds_count");
    wait_until("claims see the pause", || {
        app.metric("video_scheduler_claim_seconds_count") >= claims + 3.0
    });
    assert!(app.exists("held"), "nothing is deleted while paused");
    assert_eq!(
        lane(&app),
        3.0 * expected,
        "the lane is closed while paused"
    );
    assert_eq!(app.post("/v1/resume", json!({})).status, 200);
    wait_until("deleted after the resume", || !app.exists("held"));
}

fn a_kill_9_between_insert_and_delete_leaves_the_id_to_any_instance_after_the_lease(
    backend: Backend,
) {
    let (ws, config, dir, files) = slow_deletion(backend);
    let config_file = write_config(&config, ws.dir.path(), "conf.json");
    let first = ServerProcess::start(&config, &config_file);
    assert_eq!(first.get("/video-delete-record/slow").status, 200);
    wait_until("the deletion is under way", || files_under(&dir) < files);
    let row = first.get("/v1/deletions/slow").json();
    assert_eq!(row["state"], "running", "{row}");
    let expected = if has_lane(backend) { 1.0 } else { 0.0 };
    assert_eq!(
        first.metric("video_scheduler_fast_lane_total"),
        expected,
        "inserted leased, deleted without a claim (not on MySQL)"
    );
    first.kill9();
    assert!(
        files_under(&dir) > 0,
        "killed before the directory was gone"
    );

    // Another instance (a new process: a new `locked_by`) takes it over
    // once the lease has run out, and completes it.
    let second = ServerProcess::start(&config, &config_file);
    wait_until("the request completes after the lease", || {
        second.get("/v1/deletions/slow").json()["state"] == "done"
    });
    assert!(!dir.exists());
    let receipt = second.get("/v1/deletions/slow").json();
    assert_eq!(
        receipt["claims"], 2,
        "the lane's lease and the takeover: {receipt}"
    );
    assert_ne!(receipt["acked_by"], row["locked_by"], "{receipt}");
    assert_eq!(
        second.get("/v1/stats").json()["done"],
        1,
        "exactly one receipt"
    );
}

/// Two instances recording the same 300 ids, each id by both at once:
/// the database lets one insert it (and lease it, or not: a lane closed
/// for a moment leaves it to a claim); an id recorded again after it was
/// erased is a new request. Every row inserted is deleted by one
/// instance, once: each receipt counts one claim (the lane's lease, or a
/// claim, never both), and the lanes took no more ids than were inserted.
fn two_instances_recording_the_same_ids_at_once_delete_each_once(backend: Backend) {
    let a = spawn_app(backend, |c| c.tick_ms = 50);
    let b = start_more(&a, |c| c.tick_ms = 50);
    let ids: Vec<String> = (0..300).map(|i| format!("both-{i:03}")).collect();
    for id in &ids {
        a.create_file(id);
    }
    let together = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for app in [&a, &b] {
            let (ids, together) = (&ids, &together);
            scope.spawn(move || {
                for id in ids {
                    together.wait();
                    let reply = app.get(&format!("/video-delete-record/{id}"));
                    assert_eq!(reply.status, 200, "{id}: {}", reply.body);
                }
            });
        }
    });
    wait_until("every row is gone", || a.row_count() == 0);
    let recorded =
        a.metric("video_scheduler_recorded_total") + b.metric("video_scheduler_recorded_total");
    let taken = lane(&a) + lane(&b);
    assert_eq!(
        taken > 0.0,
        has_lane(backend),
        "the lane was taken (not on MySQL)"
    );
    assert!(
        taken <= recorded,
        "{taken} taken by the lanes, {recorded} rows inserted"
    );
    assert!(recorded < 2.0 * ids.len() as f64, "some records met");
    assert_eq!(files_under(&a.root()), 0);
    let db = a.db();
    for id in &ids {
        let receipt = db.read(|c| receipts::get(c, id)).unwrap().expect(id);
        assert_eq!(receipt.claims, 1, "{id}: leased or claimed once");
    }
}
