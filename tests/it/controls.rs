//! The operator's controls: pause and resume (every instance, across
//! restarts), the rate limit, and bulk retry and cancel.

use crate::common::{files_under, spawn_app, start_in, start_more, wait_until, Backend, TestApp};
use serde_json::json;
use video_scheduler::db::queries::receipts;

backend_tests!(
    pause_on_one_instance_stops_another_within_a_tick_and_survives_a_restart,
    a_rate_limited_drain_takes_the_time_the_limit_implies_and_loses_nothing,
    bulk_retry_and_cancel_act_on_5000_failed_requests,
);

/// Claims this instance has made so far.
fn claims(app: &TestApp) -> f64 {
    app.metric("video_scheduler_claim_seconds_count")
}

/// Waits until `app` has made `n` more claims: each of them saw the pause.
fn wait_for_claims(app: &TestApp, n: f64) {
    let start = claims(app);
    wait_until("claims happen", || claims(app) >= start + n);
}

fn pause_on_one_instance_stops_another_within_a_tick_and_survives_a_restart(backend: Backend) {
    let quick = |c: &mut video_scheduler::config::Config| c.tick_ms = 20;
    let a = spawn_app(backend, quick);
    let b = start_more(&a, quick);
    let paused = a.post("/v1/pause", json!({}));
    assert_eq!(
        (paused.status, paused.json()),
        (200, json!({ "paused": true }))
    );

    // Recorded on the other instance, which nudges its own dispatcher.
    let ids: Vec<String> = (0..100).map(|i| format!("paused-{i:03}")).collect();
    for id in &ids {
        b.create_file(id);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(b.record(&refs, json!({})).status, 202, "recording goes on");
    wait_for_claims(&b, 3.0);
    wait_for_claims(&a, 3.0);
    assert_eq!(files_under(&b.root()), 100, "nothing deleted while paused");
    let stats = b.get("/v1/stats").json();
    assert_eq!(
        (stats["pending"].as_i64(), stats["paused"].as_bool()),
        (Some(100), Some(true))
    );
    assert_eq!(b.get("/readyz").json()["paused"], true);
    assert!(b.get("/metrics").body.contains("video_scheduler_paused 1"));

    // A restart keeps the pause.
    drop(b);
    let (ws, config) = a.stop();
    let a = start_in(ws, config);
    wait_for_claims(&a, 3.0);
    assert_eq!(files_under(&a.root()), 100, "still paused after a restart");

    let resumed = a.post("/v1/resume", json!({}));
    assert_eq!(resumed.json(), json!({ "paused": false }));
    wait_until("everything is deleted", || a.row_count() == 0);
    assert_eq!(files_under(&a.root()), 0);
    assert!(a.get("/metrics").body.contains("video_scheduler_paused 0"));
}

fn a_rate_limited_drain_takes_the_time_the_limit_implies_and_loses_nothing(backend: Backend) {
    let app = spawn_app(backend, |c| {
        c.max_deletions_per_sec = 200;
        c.tick_ms = 20;
    });
    let ids: Vec<String> = (0..1000).map(|i| format!("limited-{i:04}")).collect();
    for id in &ids {
        app.create_file(id);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(app.record(&refs, json!({})).status, 202);
    wait_until("every row is gone", || app.row_count() == 0);
    assert_eq!(files_under(&app.root()), 0, "none lost");

    // The server's own clock: the receipts' completion times. 1,000 ids at
    // 200/s (a burst of 200 first) take 4 s; allow for a slow machine.
    let db = app.db();
    let all = db
        .read(|c| receipts::completed_between(c, 0, i64::MAX, None, 2000))
        .unwrap();
    assert_eq!(all.len(), 1000);
    let span = all.last().unwrap().completed_at - all.first().unwrap().completed_at;
    assert!(span >= 3000, "1,000 deletions at 200/s took only {span} ms");
}

/// Records `n` requests not yet due and fails them all for good.
fn failed_requests(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for chunk in refs.chunks(5000) {
        assert_eq!(app.record(chunk, json!({ "delay_secs": 3600 })).status, 202);
    }
    let db = app.db();
    let claimed = crate::common::claim_as(&db, "test", n);
    assert_eq!(claimed.len(), n);
    crate::common::fail_all_for_good(&db, "test", &claimed);
    ids
}

fn bulk_retry_and_cancel_act_on_5000_failed_requests(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 3_600_000);
    failed_requests(&app, "retried", 5000);
    assert_eq!(app.get("/v1/stats").json()["failed"], 5000);

    for bad in [
        json!({ "state": "pending" }),
        json!({ "state": "done" }),
        json!({}),
        json!({ "state": "failed", "colour": "red" }),
    ] {
        let reply = app.post("/v1/deletions/retry", bad.clone());
        assert_eq!(reply.status, 400, "{bad}");
    }
    // Some by id first, then all the others.
    let some = app.post(
        "/v1/deletions/retry",
        json!({ "state": "failed", "ids": ["retried-00000", "retried-00001", "not-there"] }),
    );
    assert_eq!(some.json(), json!({ "count": 2 }));
    let rest = app.post("/v1/deletions/retry", json!({ "state": "failed" }));
    assert_eq!(rest.json(), json!({ "count": 4998 }));
    let stats = app.get("/v1/stats").json();
    assert_eq!(
        (stats["failed"].as_i64(), stats["pending"].as_i64()),
        (Some(0), Some(5000))
    );

    // Cancel: all the pending ones, then 5,000 failed ones.
    let cancelled = app.post("/v1/deletions/cancel", json!({ "state": "pending" }));
    assert_eq!(cancelled.json(), json!({ "count": 5000 }));
    failed_requests(&app, "cancelled", 5000);
    let cancelled = app.post("/v1/deletions/cancel", json!({ "state": "failed" }));
    assert_eq!(cancelled.json(), json!({ "count": 5000 }));
    assert_eq!(app.row_count(), 0);
    let stats = app.get("/v1/stats").json();
    assert_eq!(
        (stats["pending"].as_i64(), stats["failed"].as_i64()),
        (Some(0), Some(0)),
        "the kept counts follow"
    );

    // The ids `retry` and `cancel` are still ids on GET and DELETE.
    app.record(&["retry", "cancel"], json!({ "delay_secs": 3600 }));
    assert_eq!(app.get("/v1/deletions/retry").json()["id"], "retry");
    assert_eq!(app.delete("/v1/deletions/cancel").status, 204);
}

#[test]
fn the_cli_pauses_resumes_and_cancels_failed_requests() {
    let app = spawn_app(Backend::Sqlite, |c| c.tick_ms = 20);
    let config_file =
        crate::common::process::write_config(&app.config, app.root().parent().unwrap(), "cli.json");
    let cli = |args: &[&str]| {
        let out = crate::common::binary()
            .arg("--config")
            .arg(&config_file)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["pause"]).trim(), r#"{"paused":true}"#);
    assert_eq!(app.get("/v1/stats").json()["paused"], true);
    app.create_file("held");
    assert_eq!(app.get("/video-delete-record/held").status, 200);
    wait_for_claims(&app, 3.0);
    assert!(app.exists("held"));
    assert_eq!(cli(&["resume"]).trim(), r#"{"paused":false}"#);
    wait_until("deleted after resume", || !app.exists("held"));

    failed_requests(&app, "cli-failed", 30);
    assert_eq!(
        cli(&["cancel", "--failed"]).trim(),
        "30 failed requests cancelled"
    );
    assert_eq!(app.get("/v1/stats").json()["failed"], 0);
}
