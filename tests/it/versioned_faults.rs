//! Erasure on versioned buckets under faults, against the in-memory S3
//! server (`s3-memory`: versioning, delete markers, the `null` version,
//! MFA Delete, per-entry errors, throttling, delays, the server down and
//! back on the same port), with the real scheduler in this process or as
//! a child process (kill -9), on SQLite.
//!
//! Each test seeds the bucket directly ([`MemoryS3::put`]) and checks it
//! directly ([`MemoryS3::entries`]: every version and delete marker), so
//! "erased" means no entry is left, not that a listing stopped showing it.

use std::time::Duration;

use crate::common::process::{write_config, ServerProcess};
use crate::common::{counts, spawn_app_on, wait_until, Backend, Client, Storage, TestApp};
use s3_memory::{Entry, MemoryS3, Op, Versioning, ACCESS_KEY, BUCKET, SECRET_KEY};
use serde_json::{json, Value};
use video_scheduler::config::{Config, Secret, StorageConfig, StorageKind, Versions};
use video_scheduler::db::Db;

/// One S3 target on `s3`'s bucket with these templates and `versions`.
fn target(s3: &MemoryS3, paths: &[&str], versions: Option<Versions>) -> StorageConfig {
    StorageConfig {
        kind: StorageKind::S3,
        bucket: Some(BUCKET.into()),
        endpoint: Some(s3.endpoint()),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(Secret::new(SECRET_KEY)),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        versions,
        ..Default::default()
    }
}

/// The scheduler in this process on SQLite, deleting from `s3`: fast
/// ticks and retries, attempts enough never to end `failed` unless a test
/// says so.
fn app(
    s3: &MemoryS3,
    paths: &[&str],
    versions: Option<Versions>,
    customize: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_app_on(Backend::Sqlite, Storage::Local, |c| {
        c.tick_ms = 20;
        c.retry_base_ms = 20;
        c.retry_max_ms = 200;
        c.max_attempts = 1000;
        c.storage[0] = target(s3, paths, versions);
        customize(c);
    })
}

fn entry(key: &str, version_id: &str, marker: bool, latest: bool) -> Entry {
    Entry {
        key: key.into(),
        version_id: version_id.into(),
        marker,
        latest,
    }
}

/// Hides `key` behind a delete marker, as a client's plain delete does on
/// a versioned bucket: object_store's DeleteObjects, over HTTP.
fn hide(s3: &MemoryS3, key: &str) {
    use futures_util::StreamExt;
    use object_store::aws::AmazonS3Builder;
    use object_store::path::Path;
    use object_store::ObjectStore;
    let store = AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results: Vec<_> = runtime.block_on(
        store
            .delete_stream(futures_util::stream::iter([Ok(Path::from(key))]).boxed())
            .collect(),
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

fn attempts(client: &Client, id: &str) -> i64 {
    client.request(id)["attempts"].as_i64().unwrap_or(0)
}

fn wait_done(client: &Client, ids: &[&str]) {
    for id in ids {
        wait_until(&format!("{id} is done"), || {
            client.request(id)["state"] == "done"
        });
    }
}

/// Times the receipt of `id` was written (1: once; a second ack of the
/// same deletion would make it 2), read from the database.
fn completions(client: &Client, id: &str) -> Vec<i32> {
    completions_in(&client.db(), id)
}

fn completions_in(db: &Db, id: &str) -> Vec<i32> {
    use diesel::prelude::*;
    use video_scheduler::db::schema::video_del_receipt::dsl as r;
    db.read(|c| {
        r::video_del_receipt
            .filter(r::id.eq(id))
            .select(r::completions)
            .load::<i32>(c)
    })
    .unwrap()
}

/// The ids listed by `GET /v1/deletions?state=done`.
fn done_ids(client: &Client) -> Vec<String> {
    let page = client.get("/v1/deletions?state=done&limit=1000").json();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks `id`'s receipt: done, its paths counts, its target's counts,
/// written once.
fn assert_receipt(client: &Client, id: &str, deleted: i64, missing: i64, targets: Value) {
    let receipt = client.request(id);
    assert_eq!(receipt["state"], "done", "{receipt}");
    assert_eq!(receipt["deleted"], deleted, "{id}: {receipt}");
    assert_eq!(receipt["missing"], missing, "{id}: {receipt}");
    assert_eq!(receipt["targets"], targets, "{id}: {receipt}");
    assert_eq!(
        completions(client, id),
        [1],
        "{id}: one receipt, written once"
    );
}

fn target_health(client: &Client) -> Value {
    let stats = client.get("/v1/stats");
    assert_eq!(stats.status, 200, "{}", stats.body);
    stats.json()["targets"][0].clone()
}

// 1. Suspended versioning.

#[test]
fn purge_on_a_suspended_bucket_erases_the_null_version_every_older_version_and_delete_marker() {
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    s3.put(BUCKET, "videos/a.mp4", b"first");
    s3.put(BUCKET, "videos/a.mp4", b"second");
    s3.put(BUCKET, "hls/a/seg-0.ts", b"enabled");
    s3.put(BUCKET, "hls/a/seg-1.ts", b"enabled");
    hide(&s3, "hls/a/seg-1.ts");
    // Another file whose key the template's key prefixes: not this video's.
    let part_old = s3.put(BUCKET, "videos/a.mp4.part", b"not a's");
    let part_new = s3.put(BUCKET, "videos/a.mp4.part", b"not a's either");
    s3.set_versioning(BUCKET, Versioning::Suspended);
    s3.put(BUCKET, "videos/a.mp4", b"suspended");
    s3.put(BUCKET, "hls/a/seg-0.ts", b"suspended");
    s3.put(BUCKET, "videos/b.mp4", b"only a null version");
    assert_eq!(s3.entries(BUCKET, "videos/a.mp4").len(), 5);
    assert_eq!(s3.entries(BUCKET, "hls/a/").len(), 4);
    assert_eq!(s3.entries(BUCKET, "videos/a.mp4")[0].version_id, "null");

    let app = app(
        &s3,
        &["videos/{id}.mp4", "hls/{id}/"],
        Some(Versions::Purge),
        |_| {},
    );
    app.record_now(&["a", "b"]);
    wait_done(&app, &["a", "b"]);

    assert!(s3.entries(BUCKET, "hls/").is_empty());
    assert_eq!(
        s3.entries(BUCKET, "videos/"),
        [
            entry("videos/a.mp4.part", &part_new, false, true),
            entry("videos/a.mp4.part", &part_old, false, false),
        ],
        "only the other file is left, every version of it"
    );
    // a: videos/a.mp4 (null + 2 Enabled versions), hls/a/seg-0.ts (null +
    // 1), hls/a/seg-1.ts (a version and its delete marker).
    assert_receipt(&app, "a", 2, 0, counts(3, 7, 0, 0));
    // b: its null version; hls/b/ had nothing.
    assert_receipt(&app, "b", 1, 1, counts(1, 1, 1, 0));
    let health = target_health(&app);
    assert_eq!(health["versioning"], "Suspended", "{health}");
    assert_eq!(health["versions"], "purge", "{health}");
}

#[test]
fn markers_on_a_suspended_bucket_hide_the_keys_and_count_kept_versions_without_the_replaced_null_one(
) {
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let v1 = s3.put(BUCKET, "videos/m.mp4", b"first");
    let v2 = s3.put(BUCKET, "videos/m.mp4", b"second");
    let seg0 = s3.put(BUCKET, "hls/m/seg-0.ts", b"enabled");
    // Already hidden before the request: left as it is, its version kept.
    let seg1 = s3.put(BUCKET, "hls/m/seg-1.ts", b"enabled");
    hide(&s3, "hls/m/seg-1.ts");
    let seg1_marker = s3.entries(BUCKET, "hls/m/seg-1.ts")[0].version_id.clone();
    s3.set_versioning(BUCKET, Versioning::Suspended);
    s3.put(BUCKET, "videos/m.mp4", b"suspended");
    s3.put(BUCKET, "hls/m/seg-0.ts", b"suspended");

    let app = app(
        &s3,
        &["videos/{id}.mp4", "hls/{id}/"],
        Some(Versions::Markers),
        |_| {},
    );
    app.record_now(&["m"]);
    wait_done(&app, &["m"]);

    assert!(s3.current_keys(BUCKET, "").is_empty(), "every key hidden");
    // The plain delete replaced each visible key's null version by a null
    // delete marker: those bytes are gone, the Enabled-era versions stay.
    assert_eq!(
        s3.entries(BUCKET, "videos/m.mp4"),
        [
            entry("videos/m.mp4", "null", true, true),
            entry("videos/m.mp4", &v2, false, false),
            entry("videos/m.mp4", &v1, false, false),
        ]
    );
    assert_eq!(
        s3.entries(BUCKET, "hls/m/"),
        [
            entry("hls/m/seg-0.ts", "null", true, true),
            entry("hls/m/seg-0.ts", &seg0, false, false),
            entry("hls/m/seg-1.ts", &seg1_marker, true, true),
            entry("hls/m/seg-1.ts", &seg1, false, false),
        ]
    );
    // Kept: v1, v2, seg0, seg1 (4); not the two null versions replaced.
    assert_receipt(&app, "m", 2, 0, counts(2, 0, 0, 4));
}

// 2. Throttled listings of versions.

#[test]
fn a_few_slow_downs_in_list_object_versions_are_retried_within_the_batch() {
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let ids: Vec<String> = (0..5).map(|i| format!("few-{i}")).collect();
    for id in &ids {
        s3.put(BUCKET, &format!("videos/{id}.mp4"), b"1");
        s3.put(BUCKET, &format!("videos/{id}.mp4"), b"2");
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    s3.faults().slow_down(Op::ListObjectVersions, Some(3));
    // A retry budget (a third of the lease) far above three backoffs.
    let app = app(&s3, &["videos/{id}.mp4"], Some(Versions::Purge), |c| {
        c.lease_secs = 60;
    });
    app.record_now(&refs);
    wait_done(&app, &refs);
    assert!(s3.entries(BUCKET, "").is_empty());
    assert_eq!(
        s3.faults().calls(Op::ListObjectVersions),
        5 + 3,
        "one listing per key, and the three throttled ones again"
    );
    for id in &refs {
        assert_receipt(&app, id, 1, 0, counts(1, 2, 0, 0));
        assert_eq!(app.request(id)["attempts"], 1, "retried inside the batch");
    }
}

#[test]
fn list_object_versions_throttled_until_cleared_acks_nothing_deletes_nothing_then_erases_all() {
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let ids: Vec<String> = (0..40).map(|i| format!("held-{i:02}")).collect();
    for id in &ids {
        s3.put(BUCKET, &format!("hls/{id}/seg-0.ts"), b"1");
        s3.put(BUCKET, &format!("hls/{id}/seg-0.ts"), b"2");
        s3.put(BUCKET, &format!("hls/{id}/seg-1.ts"), b"s");
    }
    let all = s3.entries(BUCKET, "");
    assert_eq!(all.len(), 120);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let faults = s3.faults();
    faults.slow_down(Op::ListObjectVersions, None);
    // One path per id, so that an attempt lists all of an id or none of
    // it, whenever the throttling is lifted: its receipt is exact.
    let app = app(
        &s3,
        &["hls/{id}/"],
        Some(Versions::Purge),
        |c| c.lease_secs = 3, // a retry budget of one second per batch
    );
    app.record_now(&refs);
    wait_until("every id has failed two attempts on the throttling", || {
        assert_eq!(app.row_count(), 40, "no id acked while throttled");
        refs.iter().all(|id| attempts(&app, id) >= 2)
    });
    let held = app.request("held-00");
    let error = held["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("hls/held-00/: ListObjectVersions: 503"),
        "{error}"
    );
    assert!(error.contains("SlowDown"), "{error}");
    assert_eq!(s3.entries(BUCKET, ""), all, "nothing deleted");
    assert_eq!(faults.calls(Op::DeleteObjects), 0);
    assert!(done_ids(&app).is_empty());
    let listings_held = faults.calls(Op::ListObjectVersions);
    assert!(
        listings_held >= 2 * 40,
        "each id's prefix listed in each of two attempts at least: {listings_held}"
    );

    faults.clear();
    wait_done(&app, &refs);
    assert!(s3.entries(BUCKET, "").is_empty());
    assert!(faults.calls(Op::ListObjectVersions) >= listings_held + 40);
    for id in &refs {
        assert_receipt(&app, id, 1, 0, counts(2, 3, 0, 0));
    }
}

// 3. One version refused inside a DeleteObjects answer.

#[test]
fn a_refused_version_fails_only_its_id_naming_key_version_and_code_and_a_retry_erases_it() {
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let mut refused = String::new();
    for id in ["x", "y", "z"] {
        let old = s3.put(BUCKET, &format!("videos/{id}.mp4"), b"old");
        s3.put(BUCKET, &format!("videos/{id}.mp4"), b"new");
        s3.put(BUCKET, &format!("hls/{id}/seg-0.ts"), b"s");
        if id == "x" {
            refused = old;
        }
    }
    let faults = s3.faults();
    faults.fail_entry("videos/x.mp4", Some(&refused), "AccessDenied");
    let app = app(
        &s3,
        &["videos/{id}.mp4", "hls/{id}/"],
        Some(Versions::Purge),
        |c| c.max_attempts = 1, // x stays `failed` until retried by hand
    );
    app.record_now(&["x", "y", "z"]);
    wait_done(&app, &["y", "z"]);
    wait_until("x has failed", || app.request("x")["state"] == "failed");

    assert_eq!(
        faults.delete_entries(),
        [9],
        "one DeleteObjects: the three ids were one batch"
    );
    let x = app.request("x");
    assert_eq!(x["attempts"], 1, "{x}");
    let error = x["last_error"].as_str().unwrap();
    assert!(error.contains("videos/x.mp4"), "{error}");
    assert!(error.contains(&refused), "{error}");
    assert!(error.contains("AccessDenied"), "{error}");
    assert_eq!(
        s3.entries(BUCKET, ""),
        [entry("videos/x.mp4", &refused, false, true)],
        "only the refused version is left"
    );
    for id in ["y", "z"] {
        assert_receipt(&app, id, 2, 0, counts(2, 3, 0, 0));
    }
    assert_eq!(done_ids(&app), ["y", "z"], "no receipt for x");
    assert!(completions(&app, "x").is_empty());
    assert_eq!(app.row_count(), 1, "x keeps its request");

    faults.unfail_entry("videos/x.mp4", Some(&refused));
    assert_eq!(app.post("/v1/deletions/x/retry", json!({})).status, 200);
    wait_done(&app, &["x"]);
    assert!(s3.entries(BUCKET, "").is_empty());
    // What the retry found: the refused version; hls/x/ was already empty.
    assert_receipt(&app, "x", 1, 1, counts(1, 1, 1, 0));
    assert_eq!(
        app.request("x")["attempts"],
        1,
        "retry starts counting anew"
    );
    assert_eq!(done_ids(&app), ["x", "y", "z"]);
}

// 4. The S3 server down in the middle of a purge.

#[test]
fn the_server_going_down_while_versions_are_being_deleted_acks_nothing_and_all_is_erased_when_back()
{
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let ids: Vec<String> = (0..20).map(|i| format!("down-{i:02}")).collect();
    for id in &ids {
        for n in 0..3 {
            s3.put(
                BUCKET,
                &format!("videos/{id}.mp4"),
                format!("{n}").as_bytes(),
            );
        }
    }
    let all = s3.entries(BUCKET, "");
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let faults = s3.faults();
    // Versions are listed; their DeleteObjects waits (doing nothing) until
    // the server goes down under it.
    faults.delay(Op::DeleteObjects, Some(Duration::from_secs(600)));
    let app = app(&s3, &["videos/{id}.mp4"], Some(Versions::Purge), |c| {
        c.lease_secs = 6; // a retry budget of two seconds per batch
    });
    app.record_now(&refs);
    wait_until("the versions' DeleteObjects is in flight", || {
        faults.in_flight(Op::DeleteObjects) >= 1
    });
    assert!(faults.calls(Op::ListObjectVersions) >= 20, "listed first");
    s3.stop();
    let at_stop: Vec<i64> = refs.iter().map(|id| attempts(&app, id)).collect();
    wait_until("the held request is dropped", || {
        faults.in_flight(Op::DeleteObjects) == 0
    });
    // The attempt in flight fails, and then at least one more, which finds
    // nobody to list its versions.
    wait_until(
        "every id failed two attempts since the server went down",
        || {
            assert_eq!(
                app.row_count(),
                20,
                "nothing acked while the server is down"
            );
            refs.iter()
                .zip(&at_stop)
                .all(|(id, &before)| attempts(&app, id) >= before + 2)
        },
    );
    assert!(done_ids(&app).is_empty());
    assert_eq!(s3.entries(BUCKET, ""), all, "nothing deleted");
    let error = app.request("down-00")["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with("videos/down-00.mp4: ListObjectVersions: ")
            && error.contains("Connection refused"),
        "{error}"
    );

    faults.clear();
    s3.restart();
    wait_done(&app, &refs);
    assert!(s3.entries(BUCKET, "").is_empty());
    for id in &refs {
        assert_receipt(&app, id, 1, 0, counts(1, 3, 0, 0));
    }
    assert_eq!(app.get("/v1/stats").json()["done"], 20);
}

// 5. MFA Delete.

#[test]
fn a_bucket_with_mfa_delete_is_refused_at_start_up_for_purge_and_works_with_markers() {
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    s3.set_mfa_delete(BUCKET, true);
    let v1 = s3.put(BUCKET, "videos/m.mp4", b"first");
    let v2 = s3.put(BUCKET, "videos/m.mp4", b"second");

    // In process: `start` says why.
    let (ws, mut config) = crate::common::workspace(Backend::Sqlite);
    config.storage[0] = target(&s3, &["videos/{id}.mp4"], Some(Versions::Purge));
    let started = actix_web::rt::System::new().block_on(video_scheduler::start(config.clone()));
    match started {
        Err(video_scheduler::StartError::Storage(e)) => {
            let message = e.to_string();
            assert!(
                message.contains("bucket videos has MFA Delete enabled"),
                "{message}"
            );
            assert!(message.contains("\"markers\""), "{message}");
            assert_eq!(e.key, "versions");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("started on a bucket with MFA Delete and versions \"purge\""),
    }
    // The binary: exits 2 (a configuration the bucket refuses: systemd does
    // not restart it) with the message on stderr, before listening.
    let file = write_config(&config, ws.dir.path(), "mfa-purge.json");
    let out = crate::common::binary()
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: bucket videos has MFA Delete enabled"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert_eq!(s3.entries(BUCKET, "").len(), 2, "nothing deleted");

    // Markers need no version deleted: it starts, and hides the video.
    let app = app(&s3, &["videos/{id}.mp4"], Some(Versions::Markers), |_| {});
    let health = target_health(&app);
    assert_eq!(health["versioning"], "Enabled, MFA Delete", "{health}");
    assert_eq!(health["ready"], true, "{health}");
    assert_eq!(app.get("/readyz").status, 200);
    app.record_now(&["m"]);
    wait_done(&app, &["m"]);
    assert!(s3.current_keys(BUCKET, "").is_empty());
    let entries = s3.entries(BUCKET, "");
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries[0].marker && entries[0].latest, "{entries:?}");
    assert_eq!(
        entries[1..],
        [
            entry("videos/m.mp4", &v2, false, false),
            entry("videos/m.mp4", &v1, false, false),
        ]
    );
    assert_receipt(&app, "m", 1, 0, counts(1, 0, 0, 2));
}

// 6. GetBucketVersioning not implemented.

#[test]
fn a_bucket_whose_get_bucket_versioning_is_not_implemented_counts_as_unversioned_and_is_erased() {
    let s3 = MemoryS3::start();
    s3.versioning_not_implemented(true);
    s3.put(BUCKET, "videos/r.mp4", b"r");
    s3.put(BUCKET, "hls/r/seg-0.ts", b"0");
    s3.put(BUCKET, "hls/r/seg-1.ts", b"1");
    s3.put(BUCKET, "videos/s.mp4", b"s");
    s3.put(BUCKET, "videos/keep.mp4", b"not requested");

    // No `versions`: an unversioned bucket needs none.
    let app = app(&s3, &["videos/{id}.mp4", "hls/{id}/"], None, |_| {});
    assert_eq!(app.get("/readyz").status, 200);
    let health = target_health(&app);
    assert_eq!(health["versioning"], "unversioned", "{health}");
    assert_eq!(health["ready"], true, "{health}");
    app.record_now(&["r", "s"]);
    wait_done(&app, &["r", "s"]);

    assert_eq!(
        s3.entries(BUCKET, ""),
        [entry("videos/keep.mp4", "null", false, true)]
    );
    let faults = s3.faults();
    assert!(faults.calls(Op::GetBucketVersioning) >= 1);
    assert_eq!(faults.calls(Op::ListObjectVersions), 0, "plain deletion");
    assert_receipt(&app, "r", 2, 0, counts(3, 0, 0, 0));
    // s: its key (S3 cannot tell missing from deleted); hls/s/ was empty.
    assert_receipt(&app, "s", 1, 1, counts(1, 0, 1, 0));
}

// 7. kill -9 in the middle of a purge.

#[test]
fn kill_9_in_the_middle_of_purging_1200_versions_then_a_restart_erases_them_with_one_receipt() {
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let versions: Vec<String> = (0..1200)
        .map(|i| s3.put(BUCKET, "videos/big.mp4", format!("{i}").as_bytes()))
        .collect();
    let (ws, mut config) = crate::common::workspace(Backend::Sqlite);
    // A retry budget (and request timeout) of two seconds: a held
    // DeleteObjects keeps its batch running that long.
    config.lease_secs = 6;
    config.tick_ms = 50;
    config.retry_base_ms = 100;
    config.retry_max_ms = 500;
    config.max_attempts = 1000;
    config.storage[0] = target(&s3, &["videos/{id}.mp4"], Some(Versions::Purge));
    let file = write_config(&config, ws.dir.path(), "conf.json");
    // One version refused: the first attempt deletes every other one and
    // fails; the retries then have that one left to delete.
    let stuck = versions[600].clone();
    let faults = s3.faults();
    faults.fail_entry("videos/big.mp4", Some(&stuck), "AccessDenied");

    let server = ServerProcess::start(&config, &file);
    server.record_now(&["big"]);
    wait_until("an attempt has failed on the refused version", || {
        attempts(&server, "big") >= 1
    });
    assert_eq!(
        s3.entries(BUCKET, ""),
        [entry("videos/big.mp4", &stuck, false, true)],
        "1,199 versions deleted"
    );
    // The next attempt's DeleteObjects is held: killed in the middle of it.
    faults.delay(Op::DeleteObjects, Some(Duration::from_secs(600)));
    wait_until("a retry's DeleteObjects is in flight", || {
        faults.in_flight(Op::DeleteObjects) >= 1
    });
    let row = server.request("big");
    server.kill9();
    assert_eq!(row["state"], "running", "killed while purging: {row}");
    wait_until("the killed server's request is dropped", || {
        faults.in_flight(Op::DeleteObjects) == 0
    });
    let db = Db::connect(&config.database_url, 1).unwrap();
    assert_eq!(crate::common::row_count(&db), 1, "not acked");
    assert!(completions_in(&db, "big").is_empty(), "no receipt");
    assert_eq!(s3.entries(BUCKET, "").len(), 1);

    faults.clear();
    let server = ServerProcess::start(&config, &file);
    wait_done(&server, &["big"]);
    assert!(s3.entries(BUCKET, "videos/").is_empty());
    // What the last attempt found: the one version left.
    assert_receipt(&server, "big", 1, 0, counts(1, 1, 0, 0));
    assert_eq!(done_ids(&server), ["big"]);
    assert_eq!(server.get("/v1/stats").json()["done"], 1);
    assert_eq!(server.row_count(), 0);
}

// 8. The versioning cannot be read at start-up.

#[test]
fn a_server_down_at_start_up_keeps_the_target_unready_deleting_nothing_until_it_is_back() {
    let s3 = MemoryS3::start();
    s3.set_versioning(BUCKET, Versioning::Enabled);
    for id in ["u", "v"] {
        s3.put(BUCKET, &format!("videos/{id}.mp4"), b"1");
        s3.put(BUCKET, &format!("videos/{id}.mp4"), b"2");
    }
    s3.stop();
    let app = app(&s3, &["videos/{id}.mp4"], Some(Versions::Purge), |_| {});

    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let why = ready.json()["error"].as_str().unwrap().to_owned();
    assert!(
        why.contains("bucket videos: cannot read its versioning"),
        "{why}"
    );
    let health = target_health(&app);
    assert_eq!(health["ready"], false, "{health}");
    assert!(
        health["error"]
            .as_str()
            .unwrap()
            .contains("cannot read its versioning"),
        "{health}"
    );
    assert_eq!(health["versioning"], Value::Null, "{health}");
    assert_eq!(health["versions"], "purge", "{health}");

    app.record_now(&["u", "v"]);
    wait_until("the batch is given back, saying why", || {
        app.request("u")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read its versioning"))
    });
    for id in ["u", "v"] {
        let row = app.request(id);
        assert_eq!(row["attempts"], 0, "no attempt used: {row}");
        assert_ne!(row["state"], "done", "{row}");
    }
    assert_eq!(app.row_count(), 2);

    s3.restart();
    wait_until("the target is ready", || app.get("/readyz").status == 200);
    let health = target_health(&app);
    assert_eq!(health["versioning"], "Enabled", "{health}");
    assert_eq!(health["ready"], true, "{health}");
    wait_done(&app, &["u", "v"]);
    assert!(s3.entries(BUCKET, "").is_empty());
    for id in ["u", "v"] {
        assert_receipt(&app, id, 1, 0, counts(1, 2, 0, 0));
        assert_eq!(app.request(id)["attempts"], 1);
    }
}

// Versioning switched on under a running server.

#[test]
fn a_bucket_versioned_under_a_running_server_is_purged_by_the_batch_whose_deletes_made_markers() {
    let s3 = MemoryS3::start();
    s3.put(BUCKET, "videos/w.mp4", b"written while unversioned");
    // Read at start-up as unversioned, not again for a minute.
    let app = app(&s3, &["videos/{id}.mp4"], Some(Versions::Purge), |_| {});
    assert_eq!(target_health(&app)["versioning"], "unversioned");
    s3.set_versioning(BUCKET, Versioning::Enabled);

    app.record_now(&["w"]);
    wait_done(&app, &["w"]);
    // The plain delete only added a delete marker; the batch saw it, read
    // the versioning again and purged the key's null version and the
    // marker.
    assert!(s3.entries(BUCKET, "").is_empty());
    assert_eq!(
        s3.faults().calls(Op::GetBucketVersioning),
        2,
        "read at start-up, and again because of the marker"
    );
    assert_eq!(s3.faults().delete_entries(), [1, 2]);
    assert_receipt(&app, "w", 1, 0, counts(1, 2, 0, 0));
    assert_eq!(target_health(&app)["versioning"], "Enabled");
}

#[test]
fn a_prefix_emptied_after_a_bucket_turned_versioned_is_purged_not_counted_missing() {
    let s3 = MemoryS3::start();
    // Read at start-up as unversioned, not again for a minute.
    let app = app(&s3, &["hls/{id}/"], Some(Versions::Purge), |_| {});
    assert_eq!(target_health(&app)["versioning"], "unversioned");
    // Then the bucket is versioned, and the video's segments are written
    // and deleted by someone else: ListObjectsV2 shows nothing under its
    // prefix, but every version is there.
    s3.set_versioning(BUCKET, Versioning::Enabled);
    s3.put(BUCKET, "hls/e/seg-0.ts", b"segment");
    s3.put(BUCKET, "hls/e/seg-0.ts", b"segment, again");
    hide(&s3, "hls/e/seg-0.ts");
    assert!(s3.current_keys(BUCKET, "hls/e/").is_empty());

    app.record_now(&["e"]);
    wait_done(&app, &["e"]);
    // Not "missing": the empty prefix was looked at for versions, which
    // sent the batch the versioned way.
    assert!(
        s3.entries(BUCKET, "").is_empty(),
        "{:?}",
        s3.entries(BUCKET, "")
    );
    assert_receipt(&app, "e", 1, 0, counts(1, 3, 0, 0));
}

#[test]
fn a_bucket_versioned_under_a_running_server_without_versions_set_deletes_nothing_and_says_what_to_set(
) {
    let s3 = MemoryS3::start();
    let app = app(&s3, &["videos/{id}.mp4"], None, |c| {
        c.storage[0].versioning_check_secs = 1;
    });
    assert_eq!(app.get("/readyz").status, 200);
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let version = s3.put(BUCKET, "videos/e.mp4", b"enabled");
    let advice = "bucket videos has versioning Enabled: set storage.versions to \"purge\" \
                  (erase every version) or \"markers\" (hide; versions stay)";
    wait_until(
        "the target is unready once the versioning is read again",
        || {
            let ready = app.get("/readyz");
            ready.status == 503 && ready.json()["error"] == advice
        },
    );
    assert_eq!(target_health(&app)["versioning"], "Enabled");

    app.record_now(&["e"]);
    wait_until("the batch is given back with the advice", || {
        app.request("e")["last_error"] == advice
    });
    assert_eq!(app.request("e")["attempts"], 0, "no attempt used");
    assert_eq!(
        s3.entries(BUCKET, ""),
        [entry("videos/e.mp4", &version, false, true)],
        "not even a delete marker"
    );
    assert_eq!(s3.faults().calls(Op::DeleteObjects), 0);
}
