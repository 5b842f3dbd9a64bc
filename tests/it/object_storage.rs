//! Object storage against a real S3-compatible server in the test process
//! (s3s over s3s-fs, SigV4 on): prefixes over several pages, missing keys,
//! wrong credentials, an endpoint that goes away, throttling, and two
//! instances sharing a bucket. The behaviour tests shared with local disk
//! run on both kinds in tests/it/pipeline.rs.

use crate::common::s3::{DELETE_OBJECTS, LIST};
use crate::common::{files_under, spawn_app_on, start_in, wait_until, Backend, Storage, TestApp};
use serde_json::json;
use video_scheduler::config::{Config, Secret};

fn app(customize: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(Backend::Sqlite, Storage::S3, |c| {
        c.tick_ms = 20;
        c.retry_base_ms = 20;
        c.retry_max_ms = 50;
        customize(c);
    })
}

fn s3(app: &TestApp) -> &crate::common::s3::TestS3 {
    app.s3.as_ref().unwrap()
}

fn record(app: &TestApp, ids: &[String]) {
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for chunk in refs.chunks(10_000) {
        let reply = app.record(chunk, json!({}));
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
}

fn metric(app: &TestApp, outcome: &str) -> f64 {
    app.metric(&format!(
        "video_scheduler_deletions_total{{outcome=\"{outcome}\"}}"
    ))
}

#[test]
fn a_prefix_of_2500_objects_is_listed_page_by_page_and_deleted_in_batches_of_1000() {
    let app = app(|c| c.storage[0].paths = vec!["videos/{id}.mp4".into(), "hls/{id}/".into()]);
    for i in 0..2500 {
        app.create_file(&format!("hls/big/seg-{i:04}.ts"));
    }
    app.create_file("videos/big.mp4");
    app.create_file("hls/big-neighbour/seg-0000.ts");

    assert_eq!(app.get("/video-delete-record/big").status, 200);
    wait_until("the row is removed", || app.row_count() == 0);
    assert_eq!(files_under(&app.root().join("hls/big")), 0);
    assert!(!app.exists("videos/big.mp4"));
    assert!(
        app.exists("hls/big-neighbour/seg-0000.ts"),
        "another id's prefix"
    );
    let faults = s3(&app).faults();
    assert!(faults.calls(LIST) >= 3, "2,500 keys are three pages");
    let batches = faults.delete_batch_sizes();
    assert_eq!(batches.iter().sum::<usize>(), 2501, "{batches:?}");
    assert!(
        batches.len() >= 3 && batches.iter().all(|&n| n <= 1000),
        "{batches:?}"
    );
}

#[test]
fn missing_keys_count_as_deleted_and_a_mix_is_all_deleted() {
    let app = app(|c| c.storage[0].paths = vec!["videos/{id}.mp4".into(), "hls/{id}/".into()]);
    let ids: Vec<String> = (0..300).map(|i| format!("mix-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        // A third with everything, a third with the key only, a third with nothing.
        if i % 3 != 2 {
            app.create_file(&format!("videos/{id}.mp4"));
        }
        if i % 3 == 0 {
            app.create_file(&format!("hls/{id}/seg-0.ts"));
            app.create_file(&format!("hls/{id}/seg-1.ts"));
        }
    }
    record(&app, &ids);
    wait_until("every row is removed", || app.row_count() == 0);
    assert_eq!(files_under(&app.root()), 0);
    // S3 cannot tell a missing key from a deleted one: only an empty prefix
    // is "missing", and an id is missing when nothing of it was found.
    assert_eq!(metric(&app, "deleted"), 300.0);
    assert_eq!(metric(&app, "missing"), 0.0);
    assert_eq!(metric(&app, "failed"), 0.0);

    let only_prefix = app.record(&["empty-prefix"], json!({}));
    assert_eq!(only_prefix.status, 202);
    wait_until("the row is removed", || app.row_count() == 0);
}

#[test]
fn wrong_credentials_make_the_bucket_unavailable_and_nothing_is_lost_until_fixed() {
    let app = app(|c| c.storage[0].secret_access_key = Some(Secret::new("not-the-secret")));
    app.create_file("locked");
    assert_eq!(app.get("/video-delete-record/locked").status, 200);
    // The bucket's versioning cannot be read with these credentials, so
    // nobody knows what a delete would do there: nothing is deleted, the
    // request keeps every attempt, and the server says why.
    wait_until("the request is given back with the reason", || {
        app.get("/v1/deletions/locked").json()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("SignatureDoesNotMatch"))
    });
    let row = app.get("/v1/deletions/locked").json();
    assert_eq!(
        (row["state"].as_str(), row["attempts"].as_i64()),
        (Some("pending"), Some(0)),
        "{row}"
    );
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains("GetBucketVersioning: 403"),
        "{}",
        ready.body
    );
    assert!(app.exists("locked"));

    // Fixed configuration, restarted: the request goes through.
    let (ws, mut config) = app.stop();
    config.storage[0] = ws
        .s3
        .as_ref()
        .unwrap()
        .storage_config(config.storage[0].paths.clone());
    let app = start_in(ws, config);
    wait_until("the object is deleted", || !app.exists("locked"));
    wait_until("the row is removed", || app.row_count() == 0);
    assert_eq!(app.get("/v1/deletions/locked").json()["state"], "done");
}

#[test]
fn an_endpoint_that_is_down_loses_nothing_and_everything_is_deleted_when_it_is_back() {
    let app = app(|c| {
        c.max_attempts = 1000;
        c.lease_secs = 3; // a retry budget of one second per batch
        c.storage[0].paths = vec!["{id}".into(), "hls/{id}/".into()];
    });
    let ids: Vec<String> = (0..200).map(|i| format!("down-{i:03}")).collect();
    for id in &ids {
        app.create_file(id);
    }
    for id in &ids[..100] {
        app.create_file(&format!("hls/{id}/seg-0000.ts"));
    }
    s3(&app).stop();
    record(&app, &ids);
    wait_until("attempts fail while the endpoint is down", || {
        app.get("/v1/deletions/down-000").json()["attempts"]
            .as_i64()
            .is_some_and(|n| n >= 2)
    });
    let row = app.get("/v1/deletions/down-000").json();
    let error = row["last_error"].as_str().unwrap();
    assert!(error.contains("Connection refused"), "{error}");
    assert_eq!(app.row_count(), 200, "nothing acked");
    assert_eq!(files_under(&app.root()), 300, "nothing deleted");

    s3(&app).restart();
    wait_until("every row is removed", || app.row_count() == 0);
    assert_eq!(files_under(&app.root()), 0);
}

#[test]
fn throttling_is_retried_and_no_id_is_acked_before_its_objects_are_gone() {
    let app = app(|c| c.max_attempts = 1000);
    let ids: Vec<String> = (0..500).map(|i| format!("slow-{i:03}")).collect();
    for id in &ids {
        app.create_file(id);
    }
    let faults = s3(&app).faults();
    faults.slow_down(DELETE_OBJECTS, None);
    nothing_acked_while_held_then_all_deleted(&app, &ids, DELETE_OBJECTS, 5);
    assert_eq!(metric(&app, "deleted"), 500.0);
}

#[test]
fn throttled_listings_are_retried_and_no_id_is_acked_before_its_objects_are_gone() {
    let app = app(|c| {
        c.max_attempts = 1000;
        c.storage[0].paths = vec!["hls/{id}/".into()];
    });
    let ids: Vec<String> = (0..300).map(|i| format!("slow-list-{i:03}")).collect();
    for id in &ids {
        app.create_file(&format!("hls/{id}/seg-0000.ts"));
    }
    s3(&app).faults().slow_down(LIST, None);
    nothing_acked_while_held_then_all_deleted(&app, &ids, LIST, 5);
    assert_eq!(metric(&app, "deleted"), 300.0);
}

#[test]
fn a_listing_refused_by_the_server_fails_clearly_and_keeps_the_objects() {
    let app = app(|c| {
        c.max_attempts = 2;
        c.storage[0].paths = vec!["hls/{id}/".into()];
    });
    app.create_file("hls/locked/seg-0000.ts");
    // The credentials lack s3:ListBucket: a 4xx, not retried within the
    // batch; the attempts run out.
    s3(&app).faults().deny(LIST);
    let error = last_error_once_failed(&app, "locked", 2);
    assert!(
        error.starts_with("hls/locked/: ListObjectsV2: 403"),
        "{error}"
    );
    assert!(error.contains("AccessDenied"), "{error}");
    assert!(app.exists("hls/locked/seg-0000.ts"));
}

#[test]
fn throttling_longer_than_the_retry_budget_goes_through_the_failure_path() {
    let app = app(|c| {
        c.max_attempts = 1000;
        c.lease_secs = 3; // a retry budget of one second per batch
    });
    app.create_file("throttled");
    let faults = s3(&app).faults();
    faults.slow_down(LIST, None);
    faults.slow_down(DELETE_OBJECTS, None);
    app.record(&["throttled"], json!({}));
    wait_until("the attempt failed with the server's answer", || {
        app.get("/v1/deletions/throttled").json()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("SlowDown"))
    });
    assert!(app.exists("throttled"));
    faults.clear();
    wait_until("the object is deleted", || !app.exists("throttled"));
    wait_until("the row is removed", || app.row_count() == 0);
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
mod shared_bucket {
    use super::*;

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql() {
        two_instances_drain_one_bucket_and_each_id_is_acked_once(Backend::Mysql);
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres() {
        two_instances_drain_one_bucket_and_each_id_is_acked_once(Backend::Postgres);
    }
}

/// Every execution of an id counts in `deleted` (S3 cannot tell a second
/// deletion of a key from the first): the sum over both instances is the
/// number of ids only if each was handled once. (Keys rather than prefixes:
/// s3s-fs lists by walking the whole bucket.)
#[cfg(any(feature = "mysql", feature = "postgres"))]
fn two_instances_drain_one_bucket_and_each_id_is_acked_once(backend: Backend) {
    let settings = |c: &mut Config| {
        c.batch_size = 100;
        c.executors = 2;
        c.tick_ms = 50;
        c.storage[0].paths = vec!["videos/{id}.mp4".into()];
    };
    let a = spawn_app_on(backend, Storage::S3, settings);
    let b = crate::common::start_more(&a, settings);
    let ids: Vec<String> = (0..2000).map(|i| format!("shared-{i:04}")).collect();
    for id in &ids {
        a.create_file(&format!("videos/{id}.mp4"));
    }
    let at = chrono::DateTime::from_timestamp_millis(crate::common::now_ms() + 500)
        .unwrap()
        .to_rfc3339();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        a.record(&refs[..1000], json!({ "not_before": at })).status,
        202
    );
    assert_eq!(
        b.record(&refs[1000..], json!({ "not_before": at })).status,
        202
    );

    wait_until("every row is gone", || a.row_count() == 0);
    assert_eq!(files_under(&a.root()), 0);
    let (deleted_a, deleted_b) = (metric(&a, "deleted"), metric(&b, "deleted"));
    eprintln!("{backend:?}: instance a deleted {deleted_a}, instance b {deleted_b}");
    assert_eq!(
        deleted_a + deleted_b,
        2000.0,
        "every id deleted once, none twice"
    );
}

/// Records `ids` in one batch and waits until their rows are gone; returns
/// the ListObjectsV2 requests it took.
fn lists_to_delete(app: &TestApp, ids: &[String]) -> u64 {
    let before = s3(app).faults().calls(LIST);
    record(app, ids);
    wait_until("every row is removed", || app.row_count() == 0);
    s3(app).faults().calls(LIST) - before
}

#[test]
fn dense_prefixes_are_listed_in_one_walk_and_others_objects_stay() {
    let app = app(|c| {
        c.tick_ms = 3_600_000; // one batch: recorded together, claimed together
        c.storage[0].paths = vec!["hls/{id}/".into()];
    });
    let ids: Vec<String> = (0..50).map(|i| format!("dense-{i:02}")).collect();
    for id in &ids {
        for s in 0..3 {
            app.create_file(&format!("hls/{id}/seg-{s}.ts"));
        }
        // A few keys of another video between each pair.
        for s in 0..5 {
            app.create_file(&format!("hls/{id}x/seg-{s}.ts"));
        }
    }
    let lists = lists_to_delete(&app, &ids);
    assert!(lists <= 2, "one walk, not one listing per prefix: {lists}");
    assert!(ids.iter().all(|id| !app.exists(&format!("hls/{id}"))));
    assert_eq!(
        files_under(&app.root()),
        50 * 5,
        "the other video's keys stay"
    );
}

#[test]
fn sparse_prefixes_fall_back_to_one_listing_each_and_others_objects_stay() {
    let app = app(|c| {
        c.tick_ms = 3_600_000;
        c.storage[0].paths = vec!["hls/{id}/".into()];
    });
    let ids: Vec<String> = (0..20).map(|i| format!("sparse-{i:02}")).collect();
    for id in &ids {
        app.create_file(&format!("hls/{id}/seg-0.ts"));
        // More keys of another video between each pair than a walk reads.
        for s in 0..120 {
            app.create_file(&format!("hls/{id}x/seg-{s:03}.ts"));
        }
    }
    let lists = lists_to_delete(&app, &ids);
    assert!(
        (20..=24).contains(&lists),
        "two gaps walked, then one listing per prefix left: {lists}"
    );
    assert!(ids.iter().all(|id| !app.exists(&format!("hls/{id}"))));
    assert_eq!(
        files_under(&app.root()),
        20 * 120,
        "the other video's keys stay"
    );
}

#[test]
fn credentials_come_from_the_aws_variables_when_the_config_has_none() {
    let (ws, mut config) = crate::common::workspace_on(Backend::Sqlite, Storage::S3);
    config.storage[0].access_key_id = None;
    config.storage[0].secret_access_key = None;
    let config_file = crate::common::process::write_config(&config, ws.dir.path(), "conf.json");
    let server = crate::common::process::ServerProcess::start_in(
        &ws,
        &config,
        &config_file,
        &[
            ("AWS_ACCESS_KEY_ID", crate::common::s3::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", crate::common::s3::SECRET_KEY),
        ],
    );
    server.create_file("from-env");
    assert_eq!(server.get("/video-delete-record/from-env").status, 200);
    wait_until("deleted with the variables' keys", || {
        !server.exists("from-env")
    });
    wait_until("done", || {
        server.get("/v1/deletions/from-env").json()["state"] == "done"
    });
    assert!(
        !server.log().contains(crate::common::s3::SECRET_KEY),
        "the secret is never logged"
    );
}

#[test]
fn a_delete_that_times_out_is_tried_again_and_nothing_is_acked_early() {
    let app = app(|c| {
        c.max_attempts = 1000;
        c.lease_secs = 6; // a retry budget of 2 s: requests time out after 2 s
    });
    let ids: Vec<String> = (0..20).map(|i| format!("slow-answer-{i:02}")).collect();
    for id in &ids {
        app.create_file(id);
    }
    s3(&app)
        .faults()
        .delay_deletes(Some(std::time::Duration::from_secs(3)));
    nothing_acked_while_held_then_all_deleted(&app, &ids, DELETE_OBJECTS, 3);
}

/// Records `id` through the seed route, waits until it has failed for good
/// after `attempts` attempts, and returns its `last_error`.
fn last_error_once_failed(app: &TestApp, id: &str, attempts: i64) -> String {
    assert_eq!(app.get(&format!("/video-delete-record/{id}")).status, 200);
    let path = format!("/v1/deletions/{id}");
    wait_until("the request fails for good", || {
        app.get(&path).json()["state"] == "failed"
    });
    let row = app.get(&path).json();
    assert_eq!(row["attempts"], attempts, "{row}");
    row["last_error"].as_str().unwrap().to_owned()
}

/// Records `ids` (their files made) while a fault holds the S3 operation
/// `op` back: once it has been tried `tries` times, no id is acked and
/// every object stays; after the fault clears, every row and object is gone.
fn nothing_acked_while_held_then_all_deleted(
    app: &TestApp,
    ids: &[String],
    op: &'static str,
    tries: u64,
) {
    let faults = s3(app).faults();
    record(app, ids);
    wait_until("the operation is tried again", || faults.calls(op) >= tries);
    assert_eq!(
        app.row_count(),
        ids.len() as i64,
        "no id acked while its objects stay"
    );
    assert_eq!(files_under(&app.root()), ids.len());

    faults.clear();
    wait_until("every row is removed", || app.row_count() == 0);
    assert_eq!(files_under(&app.root()), 0);
}
