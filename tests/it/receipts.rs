//! Receipts: the proof of each completed deletion, written by the ack that
//! removes its row, shown and listed by the API, pruned after the
//! retention, never written for work that was not acked.

use crate::common::process::{slow_deletion, write_config, ServerProcess};
use crate::common::{files_under, spawn_app, wait_until, workspace, Backend, TestApp};
use diesel::RunQueryDsl;
use serde_json::{json, Value};
use video_scheduler::db::queries::{self, counts, receipts};
use video_scheduler::db::Db;

backend_tests!(
    a_drained_id_shows_done_with_its_receipt_and_receipts_page_in_id_order,
    an_id_recorded_again_after_done_is_deleted_again_and_gets_a_new_receipt,
    an_ack_mixing_new_and_replaced_receipts_and_outcomes_writes_each_once,
    expired_receipts_are_pruned_while_a_drain_of_20000_ids_runs,
    with_retention_0_no_receipt_is_written,
    a_kill_9_between_deleting_and_acking_leaves_no_receipt_and_loses_nothing,
    a_receipt_counts_the_claims_of_its_request_a_taken_over_one_more_than_once,
);

fn record_with_request_id(app: &TestApp, ids: &[String], request_id: &str) {
    for chunk in ids.chunks(10_000) {
        let response = ureq::post(&app.url("/v1/deletions"))
            .set("X-Request-Id", request_id)
            .send_json(json!({ "ids": chunk }))
            .unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(response.header("x-request-id"), Some(request_id));
    }
}

fn a_drained_id_shows_done_with_its_receipt_and_receipts_page_in_id_order(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    let ids: Vec<String> = (0..2500).map(|i| format!("receipt-{i:04}")).collect();
    for id in &ids {
        app.create_file(id);
    }
    let before = crate::common::now_ms();
    record_with_request_id(&app, &ids, "req-2500");
    wait_until("every row is gone", || app.row_count() == 0);
    assert_eq!(files_under(&app.root()), 0);

    let receipt = app.get("/v1/deletions/receipt-0042").json();
    assert_eq!(receipt["state"], "done", "{receipt}");
    assert_eq!(receipt["attempts"], 1);
    assert_eq!(
        (receipt["deleted"].as_i64(), receipt["missing"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(receipt["claims"], 1, "claimed once: {receipt}");
    assert_eq!(receipt["source"], "v1");
    assert_eq!(receipt["request_id"], "req-2500");
    assert!(
        receipt["acked_by"].as_str().unwrap().contains('-'),
        "{receipt}"
    );
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(receipt[field].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    assert!(before - 1000 <= at("requested_at"), "{receipt}");
    assert!(at("requested_at") <= at("completed_at"), "{receipt}");
    assert_eq!(app.get("/v1/stats").json()["done"], 2500);

    // Keyset pages of receipts, in id order.
    let mut seen: Vec<String> = Vec::new();
    let mut path = "/v1/deletions?state=done&limit=1000".to_owned();
    loop {
        let page = app.get(&path).json();
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["state"], "done");
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/deletions?state=done&limit=1000&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every receipt once, in id order");
    assert_eq!(app.get("/v1/deletions/never-requested").status, 404);
}

fn an_id_recorded_again_after_done_is_deleted_again_and_gets_a_new_receipt(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    app.create_file("again");
    assert_eq!(app.get("/video-delete-record/again").status, 200);
    wait_until("done once", || {
        app.get("/v1/deletions/again").json()["state"] == "done"
    });
    let first = app.get("/v1/deletions/again").json();
    assert_eq!(first["source"], "seed");

    // The file is back (uploaded again); the same id is deleted again.
    app.create_file("again");
    let reply = app.record(&["again"], json!({ "delay_secs": 1 }));
    assert_eq!(
        reply.json(),
        json!({ "accepted": 1, "already_queued": 0 }),
        "a receipt does not make an id queued"
    );
    let live = app.get("/v1/deletions/again").json();
    assert_eq!(live["state"], "pending", "the live request is what shows");
    wait_until("deleted again", || !app.exists("again"));
    wait_until("done again", || {
        app.get("/v1/deletions/again").json()["state"] == "done"
    });
    let second = app.get("/v1/deletions/again").json();
    assert_eq!(second["source"], "v1");
    assert_eq!(second["deleted"], 1);
    assert_ne!(
        second["completed_at"], first["completed_at"],
        "a new receipt"
    );
    assert_eq!(
        app.get("/v1/stats").json()["done"],
        1,
        "the new receipt replaced the old one"
    );
}

/// The ack writes receipts with a plain INSERT and, when an id still has an
/// earlier receipt, runs again replacing them: one batch with both kinds of
/// id, two outcomes (so two groups of receipts) and a failure (so a
/// transaction) leaves one receipt per id, each with its own counts, and
/// the kept count right.
fn an_ack_mixing_new_and_replaced_receipts_and_outcomes_writes_each_once(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 3_600_000);
    let ids: Vec<String> = (0..12).map(|i| format!("mix-{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reply = app.record(&refs, json!({ "delay_secs": 3600 }));
    assert_eq!(reply.json()["accepted"], 12);
    let db = app.db();
    // Four of them were deleted once before and their receipts are kept.
    crate::common::insert_receipts(
        &db,
        (0..4).map(|i| format!("('mix-{i:02}', 1, 2, 3, 9, 9, 'earlier', 'seed', NULL)")),
    );
    assert_eq!(db.read(counts::totals).unwrap().done, 4);

    let mut claimed = crate::common::claim_as(&db, "acker", 12);
    assert_eq!(claimed.len(), 12);
    // mix-00..09 done (00..03 with earlier receipts), mix-10 and 11 failed.
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut done = crate::common::done(&claimed[..10]);
    for (i, d) in done.iter_mut().enumerate() {
        d.removed = match i % 2 {
            0 => video_scheduler::erasure::Removed {
                deleted: 2,
                missing: 1,
                targets: vec![target("origin", 5, 7, 1, 0), target("cache", 1, 0, 0, 0)],
            },
            _ => video_scheduler::erasure::Removed {
                deleted: 0,
                missing: 3,
                targets: vec![target("origin", 0, 0, 3, 4)],
            },
        };
    }
    let failures: Vec<_> = claimed[10..]
        .iter()
        .map(|c| video_scheduler::db::models::Failure {
            id: c.id.clone(),
            attempts: 1,
            error: "kept for later".into(),
            retry_at: Some(crate::common::now_ms() + 3_600_000),
        })
        .collect();
    let completed_at = crate::common::now_ms();
    let acked = db
        .write(|c| queries::ack::ack(c, "acker", &done, &failures, Some(completed_at)))
        .unwrap();
    assert_eq!(
        (
            acked.removed,
            acked.receipts,
            acked.retried,
            acked.lost_lease
        ),
        (10, 10, 2, 0)
    );
    for d in &done {
        let receipt = db
            .read(|c| receipts::get(c, &d.claimed.id))
            .unwrap()
            .unwrap_or_else(|| panic!("no receipt for {}", d.claimed.id));
        assert_eq!(
            (
                receipt.completed_at,
                receipt.deleted,
                receipt.missing,
                receipt.acked_by.as_str(),
                receipt.source.as_str(),
                receipt.targets.clone(),
                receipt.claims
            ),
            (
                completed_at,
                d.removed.deleted as i32,
                d.removed.missing as i32,
                "acker",
                "v1",
                Some(d.removed.targets_json()),
                1
            ),
            "{receipt:?}"
        );
    }
    for failed in &failures {
        assert_eq!(db.read(|c| receipts::get(c, &failed.id)).unwrap(), None);
    }
    let totals = db.read(counts::totals).unwrap();
    assert_eq!((totals.done, totals.queued), (10, 2), "4 replaced, 6 new");
    assert_eq!(
        totals,
        db.write(counts::recount).unwrap(),
        "the kept counts are what the tables hold"
    );
}

/// Inserts `n` receipts completed `days_ago`, as a long-running instance
/// would have left them, and recounts.
fn old_receipts(db: &Db, n: usize, days_ago: i64) {
    let at = crate::common::now_ms() - days_ago * 86_400_000;
    crate::common::insert_receipts(
        db,
        (0..n).map(|i| format!("('old-{i:06}', {at}, {at}, 1, 1, 0, 'old-instance', 'v1', NULL)")),
    );
}

fn expired_receipts_are_pruned_while_a_drain_of_20000_ids_runs(backend: Backend) {
    let (ws, mut config) = workspace(backend);
    config.receipts.retention_days = 30;
    config.receipts.prune_every_secs = 1;
    let db = Db::connect(&config.database_url, 2).unwrap();
    db.migrate().unwrap();
    old_receipts(&db, 30_000, 40);
    old_receipts_kept_young(&db);
    let app = crate::common::start_in(ws, config);
    let ids: Vec<String> = (0..20_000).map(|i| format!("drain-{i:05}")).collect();
    for id in &ids {
        std::fs::write(app.root().join(id), b"").unwrap();
    }
    record_with_request_id(&app, &ids, "drain");

    wait_until("the drain finishes", || app.row_count() == 0);
    wait_until("the expired receipts are pruned", || {
        db.read(|c| receipts::get(c, "old-029999"))
            .unwrap()
            .is_none()
    });
    assert_eq!(files_under(&app.root()), 0);
    let stats = app.get("/v1/stats").json();
    assert_eq!(stats["done"], 20_000 + 10, "{stats}");
    assert!(db.read(|c| receipts::get(c, "young-0")).unwrap().is_some());
}

/// Ten receipts ten days old: within a retention of 30 days, they stay.
fn old_receipts_kept_young(db: &Db) {
    let at = crate::common::now_ms() - 10 * 86_400_000;
    for i in 0..10 {
        let sql = format!(
            "INSERT INTO video_del_receipt \
             (id, requested_at, completed_at, attempts, deleted, missing, acked_by, source, request_id) \
             VALUES ('young-{i}', {at}, {at}, 1, 1, 0, 'old-instance', 'v1', NULL)"
        );
        db.write(|c| diesel::sql_query(&sql).execute(c)).unwrap();
    }
    db.write(counts::recount).unwrap();
}

fn with_retention_0_no_receipt_is_written(backend: Backend) {
    let app = spawn_app(backend, |c| c.receipts.retention_days = 0);
    let ids: Vec<String> = (0..100).map(|i| format!("no-receipt-{i}")).collect();
    for id in &ids {
        app.create_file(id);
    }
    record_with_request_id(&app, &ids, "none");
    wait_until("every row is gone", || app.row_count() == 0);
    assert_eq!(files_under(&app.root()), 0);
    assert_eq!(app.get("/v1/deletions/no-receipt-1").status, 404);
    assert_eq!(app.get("/v1/stats").json()["done"], 0);
    let page = app.get("/v1/deletions?state=done").json();
    assert_eq!(page["items"], json!([]));
}

fn a_kill_9_between_deleting_and_acking_leaves_no_receipt_and_loses_nothing(backend: Backend) {
    let (ws, config, dir, files) = slow_deletion(backend);
    let config_file = write_config(&config, ws.dir.path(), "conf.json");
    let server = ServerProcess::start(&config, &config_file);
    assert_eq!(server.get("/video-delete-record/slow").status, 200);
    wait_until("the deletion is under way", || files_under(&dir) < files);
    server.kill9();

    let db = Db::connect(&config.database_url, 1).unwrap();
    assert!(
        files_under(&dir) > 0,
        "killed before the directory was gone"
    );
    assert!(
        db.read(|c| queries::manage::get(c, "slow"))
            .unwrap()
            .is_some(),
        "the request was not acked, and is not lost"
    );
    assert!(db.read(|c| receipts::get(c, "slow")).unwrap().is_none());

    let server = ServerProcess::start(&config, &config_file);
    wait_until("the request completes after the lease", || {
        server.get("/v1/deletions/slow").json()["state"] == "done"
    });
    assert!(!dir.exists());
    let receipt: Value = server.get("/v1/deletions/slow").json();
    assert_eq!(receipt["deleted"], 1, "{receipt}");
    assert_eq!(
        server.get("/v1/stats").json()["done"],
        1,
        "exactly one receipt"
    );
}

/// Instance A claims three requests: it acks `once`, gives `given-back`
/// back (shutdown), and is cut off holding `taken-over`. Once A's lease
/// ran out, B claims the two left and acks them, having found
/// `taken-over`'s file missing (A had deleted it). The receipts count the
/// claims: 1 for `once`, 2 for the others (giving back does not count, the
/// claim after it does), so `missing: 1` with `claims: 2` says an earlier
/// claim may have deleted the file. A's late ack, before and after B's, is
/// refused and changes nothing.
fn a_receipt_counts_the_claims_of_its_request_a_taken_over_one_more_than_once(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 3_600_000);
    let ids = ["given-back", "once", "taken-over"];
    let reply = app.record(&ids, json!({ "delay_secs": 3600 }));
    assert_eq!(reply.json()["accepted"], 3);
    let db = app.db();
    let later = crate::common::two_hours_ahead();
    let mut by_a = crate::common::claim_at(&db, "instance-a", later, later + 60_000, 10);
    by_a.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(by_a.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ids);
    let receipts_at = Some(crate::common::now_ms());
    let acked = db
        .write(|c| {
            let once = crate::common::done(&by_a[1..2]);
            queries::ack::ack(c, "instance-a", &once, &[], receipts_at)
        })
        .unwrap();
    assert_eq!((acked.removed, acked.receipts), (1, 1));
    let back = vec!["given-back".to_owned()];
    let released = db.write(|c| queries::claim::release(c, "instance-a", &back, later, None));
    assert_eq!(released.unwrap(), 1);
    assert_eq!(
        row_claims(&db, "given-back"),
        1,
        "giving back does not count"
    );

    // A is cut off; past its lease, B takes the rest over.
    let past_lease = later + 120_000;
    let mut by_b = crate::common::claim_at(&db, "instance-b", past_lease, past_lease + 60_000, 10);
    by_b.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(by_b.len(), 2, "{by_b:?}");
    assert_eq!(row_claims(&db, "taken-over"), 2);
    let late_ack = || {
        let taken_over = crate::common::done(&by_a[2..]);
        let acked = db
            .write(|c| queries::ack::ack(c, "instance-a", &taken_over, &[], receipts_at))
            .unwrap();
        assert_eq!((acked.removed, acked.receipts, acked.lost_lease), (0, 0, 1));
    };
    late_ack();
    let row = db.read(|c| queries::manage::get(c, "taken-over")).unwrap();
    assert_eq!(row.unwrap().locked_by.as_deref(), Some("instance-b"));
    assert_eq!(db.read(|c| receipts::get(c, "taken-over")).unwrap(), None);

    let mut done = crate::common::done(&by_b);
    done[1].removed.missing = 1;
    let acked = db
        .write(|c| queries::ack::ack(c, "instance-b", &done, &[], receipts_at))
        .unwrap();
    assert_eq!((acked.removed, acked.receipts), (2, 2));
    let receipt = |id: &str| db.read(|c| receipts::get(c, id)).unwrap().unwrap();
    let taken_over = receipt("taken-over");
    late_ack();
    assert_eq!(
        receipt("taken-over"),
        taken_over,
        "the late ack changed nothing"
    );
    let summary = |id: &str| {
        let r = receipt(id);
        (r.claims, r.attempts, r.deleted, r.missing, r.acked_by)
    };
    assert_eq!(summary("once"), (1, 1, 0, 0, "instance-a".to_owned()));
    assert_eq!(summary("given-back"), (2, 1, 0, 0, "instance-b".to_owned()));
    assert_eq!(summary("taken-over"), (2, 1, 0, 1, "instance-b".to_owned()));
    let shown = app.get("/v1/deletions/taken-over").json();
    assert_eq!(
        (shown["claims"].as_i64(), shown["missing"].as_i64()),
        (Some(2), Some(1)),
        "{shown}"
    );
    assert_eq!(app.get("/v1/deletions/once").json()["claims"], 1);
    assert_eq!(db.read(counts::totals).unwrap().done, 3);
}

/// `claims` of a request's row.
fn row_claims(db: &Db, id: &str) -> i32 {
    use diesel::prelude::*;
    use video_scheduler::db::schema::video_del_rec::dsl as t;
    db.read(|c| t::video_del_rec.find(id).select(t::claims).first(c))
        .unwrap()
}

/// One target's counts in a receipt.
fn target(
    name: &str,
    objects: u32,
    versions: u32,
    missing: u32,
    versions_kept: u32,
) -> video_scheduler::erasure::TargetErased {
    video_scheduler::erasure::TargetErased {
        name: name.into(),
        objects,
        versions,
        missing,
        versions_kept,
    }
}
