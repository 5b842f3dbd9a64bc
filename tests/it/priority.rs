//! Priority (README, "Priority"): urgent requests are recorded, shown,
//! counted, claimed before the backlog and not held back by the rate
//! limit; an urgent request for a queued id moves it to the front.

use serde_json::{json, Value};

use crate::common::{claim_as, fail_all_for_good, spawn_app, wait_until, Backend, TestApp};

backend_tests!(
    an_urgent_id_is_erased_long_before_a_throttled_backlog_could_reach_it,
    an_urgent_id_recorded_by_another_instance_is_found_by_a_tick,
    priority_is_recorded_shown_counted_and_moves_a_queued_id_to_the_front,
);

/// `priority` of the live request `id`.
fn priority(app: &TestApp, id: &str) -> Value {
    app.request(id)["priority"].clone()
}

/// A server throttled to 200 deletions a second (ticking every 100 ms)
/// with `bulk` ids due now.
fn throttled_backlog(backend: Backend, bulk: usize) -> TestApp {
    let app = spawn_app(backend, |c| {
        c.max_deletions_per_sec = 200;
        c.tick_ms = 100;
    });
    let ids: Vec<String> = (0..bulk).map(|i| format!("bulk-{i:06}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for chunk in refs.chunks(10_000) {
        app.record_now(chunk);
    }
    app
}

fn an_urgent_id_is_erased_long_before_a_throttled_backlog_could_reach_it(backend: Backend) {
    const BULK: usize = 100_000;
    let app = throttled_backlog(backend, BULK);
    // Behind all of them (recorded last, due last), with a file to erase.
    app.create_file("takedown");
    let reply = app.record(&["takedown"], json!({ "priority": "urgent" }));
    assert_eq!(reply.json(), json!({ "accepted": 1, "already_queued": 0 }));
    wait_until("the takedown is erased", || {
        app.request("takedown")["state"] == "done"
    });
    assert!(!app.exists("takedown"));
    // In its turn it would have waited for 100,000 deletions at 200/s:
    // most of the bulk is still there.
    let stats = app.get("/v1/stats").json();
    let done = stats["done"].as_i64().unwrap();
    assert!(
        done < (BULK / 2) as i64,
        "the takedown waited for the backlog: {done} done before it ({stats})"
    );
}

/// No nudge tells this instance of an urgent row another instance
/// recorded: its claims, which look for urgent rows only when some may be
/// due, find it at the next tick, long before the throttled backlog.
fn an_urgent_id_recorded_by_another_instance_is_found_by_a_tick(backend: Backend) {
    use video_scheduler::clock::now_ms;
    use video_scheduler::db::{models::Source, queries::record, queries::record::RecordRequest};
    use video_scheduler::video_id::VideoId;
    const BULK: usize = 20_000;
    let app = throttled_backlog(backend, BULK);
    wait_until("the throttled drain has begun", || {
        app.get("/v1/stats").json()["done"].as_i64().unwrap() > 0
    });
    app.create_file("takedown");
    let id = VideoId::parse("takedown").unwrap();
    let request = RecordRequest {
        ids: vec![id.clone()],
        not_before: now_ms(),
        counted: true,
        source: Source::Cli,
        request_id: None,
        paths: Vec::new(),
        urgent: vec![id],
    };
    app.db()
        .write(|c| record::record_many(c, std::slice::from_ref(&request), now_ms()))
        .unwrap();
    wait_until("the takedown is erased", || {
        app.request("takedown")["state"] == "done"
    });
    assert!(!app.exists("takedown"));
    let done = app.get("/v1/stats").json()["done"].as_i64().unwrap();
    assert!(
        done < (BULK / 2) as i64,
        "the takedown waited for the backlog: {done} done before it"
    );
}

fn priority_is_recorded_shown_counted_and_moves_a_queued_id_to_the_front(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    // A failed request is left as it is by an urgent one.
    app.record(&["failed"], json!({ "delay_secs": 3600 }));
    let db = app.db();
    fail_all_for_good(&db, "test", &claim_as(&db, "test", 10));
    assert_eq!(app.post("/v1/pause", json!({})).status, 200);

    let reply = app.record(&["u1", "u2"], json!({ "priority": "urgent" }));
    assert_eq!(reply.json(), json!({ "accepted": 2, "already_queued": 0 }));
    app.record_now(&["n1"]);
    let mixed = json!({
        "ids": ["n2"],
        "items": [{ "id": "u3", "priority": "urgent" }, { "id": "n3" }]
    });
    assert_eq!(app.post("/v1/deletions", mixed).status, 202);
    let overridden = json!({
        "priority": "urgent",
        "ids": ["u4"],
        "items": [{ "id": "n4", "priority": "normal", "paths": ["web/n4.mp4"] }]
    });
    assert_eq!(app.post("/v1/deletions", overridden).status, 202);
    for (id, expected) in [
        ("u1", "urgent"),
        ("u2", "urgent"),
        ("u3", "urgent"),
        ("u4", "urgent"),
        ("n1", "normal"),
        ("n2", "normal"),
        ("n3", "normal"),
        ("n4", "normal"),
    ] {
        assert_eq!(priority(&app, id), expected, "{id}");
    }

    // Scheduled for later, then a takedown of it: urgent and due now.
    app.record(&["later"], json!({ "delay_secs": 3600 }));
    assert_eq!(app.get("/v1/stats").json()["urgent_due"], 4);
    let again = app.record(&["later", "failed"], json!({ "priority": "urgent" }));
    assert_eq!(again.json(), json!({ "accepted": 0, "already_queued": 2 }));
    assert_eq!(priority(&app, "later"), "urgent");
    assert_eq!(priority(&app, "failed"), "normal");
    assert_eq!(app.request("failed")["state"], "failed");

    let stats = app.get("/v1/stats").json();
    assert_eq!(stats["urgent_due"], 5, "{stats}");
    assert!(stats["oldest_urgent_due_age_ms"].as_i64().unwrap() >= 0);
    let metrics = app.get("/metrics").body;
    assert!(
        metrics.contains("video_scheduler_urgent_due 5"),
        "{metrics}"
    );

    for bad in [
        json!({ "ids": ["x"], "priority": "high" }),
        json!({ "ids": ["x"], "priority": 1 }),
        json!({ "items": [{ "id": "x", "priority": "URGENT" }] }),
    ] {
        let reply = app.post("/v1/deletions", bad.clone());
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }

    // Resumed: the urgent ones go, and the normal ones after them.
    assert_eq!(app.post("/v1/resume", json!({})).status, 200);
    wait_until("every due request is erased", || {
        app.get("/v1/stats").json()["pending"] == 0
    });
    let stats = app.get("/v1/stats").json();
    assert_eq!(
        (&stats["urgent_due"], &stats["failed"]),
        (&json!(0), &json!(1))
    );
}
