//! Erasure on versioned and Object Lock buckets, against moto's S3 server
//! (tests/it/common/moto.rs): what the scheduler deletes is checked by listing
//! every version and delete marker left in the bucket, and what it claims
//! by the receipt (`GET /v1/deletions/{id}`).
//!
//! - `storage.versions` absent on a versioned bucket: nothing is deleted,
//!   the target is unavailable (`/readyz` 503, `last_error`), no attempt is
//!   used; choosing `"purge"` and restarting erases everything.
//! - `"purge"`: every version and delete marker of a key (exact match) or
//!   under a prefix is deleted by version id, past one page of
//!   ListObjectVersions and one DeleteObjects.
//! - `"markers"`: the keys are hidden, the versions stay and are counted.
//! - A bucket switched to versioning under a running server is seen, by the
//!   periodic GetBucketVersioning or by a delete that made a marker.
//! - Object Lock: governance retention (with and without
//!   `bypass_governance`), compliance retention and legal holds.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::common::moto::{moto, Entry, Lock, MotoBucket};
use crate::common::{counts, spawn_app_on, start_in, wait_until, Backend, Storage, TestApp};
use serde_json::{json, Value};
use video_scheduler::config::{Config, Versions};

/// The scheduler on SQLite, erasing in `bucket` by `paths`, quick to claim
/// and to retry.
fn app_on(bucket: &MotoBucket, paths: &[&str], customize: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(Backend::Sqlite, Storage::Local, |c| {
        c.tick_ms = 20;
        c.retry_base_ms = 20;
        c.retry_max_ms = 50;
        c.storage[0] = bucket.storage_config(paths.iter().map(|p| p.to_string()).collect());
        customize(c);
    })
}

/// The contract's words for a versioned bucket without `storage.versions`.
fn choose_a_mode(bucket: &MotoBucket) -> String {
    format!(
        "bucket {} has versioning Enabled: set storage.versions to \"purge\" (erase every \
         version) or \"markers\" (hide; versions stay)",
        bucket.name
    )
}

/// Polls `id` until `done` holds of it; returns what was seen last. Each
/// change of state, attempts or error goes to stderr, shown if the test
/// fails.
fn wait_for(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let mut shown = String::new();
    wait_until(&format!("{id}: {what}"), || {
        last = app.request(id);
        let now = format!(
            "{} attempts {} last_error {}",
            last["state"], last["attempts"], last["last_error"]
        );
        if now != shown {
            eprintln!("{id}: {now}");
            shown = now;
        }
        done(&last)
    });
    last
}

/// The receipt of `id`, once it is done.
fn receipt(app: &TestApp, id: &str) -> Value {
    wait_for(app, id, "a receipt", |r| r["state"] == "done")
}

/// `id` given back because the bucket needs a versions mode: pending,
/// with the contract's message.
fn given_back(app: &TestApp, id: &str, bucket: &MotoBucket) -> Value {
    let message = choose_a_mode(bucket);
    wait_for(app, id, "given back for want of a versions mode", |r| {
        r["state"] == "pending" && r["last_error"] == message.as_str()
    })
}

/// `id` failed for good (every attempt used).
fn failed(app: &TestApp, id: &str) -> Value {
    wait_for(app, id, "failed", |r| r["state"] == "failed")
}

/// Puts `n` versions of `key`; returns their version ids.
fn put_versions(bucket: &MotoBucket, key: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| bucket.put(key, format!("{key} #{i}").as_bytes()))
        .collect()
}

/// The version ids of the object versions (not markers) in `entries`.
fn version_ids(entries: &[Entry]) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| !e.marker)
        .map(|e| e.version_id.clone())
        .collect()
}

fn as_set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

#[test]
fn a_versioned_bucket_without_a_versions_mode_keeps_everything_until_purge_is_chosen() {
    let bucket = moto().bucket(true, false);
    let a = put_versions(&bucket, "videos/a.mp4", 2);
    let b = put_versions(&bucket, "videos/b.mp4", 3);
    let app = app_on(&bucket, &["videos/{id}.mp4"], |_| {});
    let message = choose_a_mode(&bucket);

    // Once the versioning is read (at start-up, or by the next reading
    // when moto was too slow for the start-up's 5 s).
    wait_until("/readyz asks for a versions mode", || {
        app.get("/readyz").json()["error"] == message.as_str()
    });
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["code"], "unavailable");

    app.record_now(&["a", "b"]);
    for id in ["a", "b"] {
        let row = given_back(&app, id, &bucket);
        assert_eq!(row["attempts"], 0, "no attempt used: {row}");
    }
    let stats = app.get("/v1/stats").json();
    let target = &stats["targets"][0];
    assert_eq!(target["ready"], false, "{stats}");
    assert_eq!(target["error"], message.as_str(), "{stats}");
    assert_eq!(target["versioning"], "Enabled", "{stats}");
    assert!(target.get("versions").is_none(), "{stats}");

    let entries = bucket.entries("videos/");
    assert!(entries.iter().all(|e| !e.marker), "{entries:#?}");
    assert_eq!(
        version_ids(&entries),
        as_set(&[a, b].concat()),
        "every version is still there"
    );

    // The operator chooses, and restarts.
    let (workspace, mut config) = app.stop();
    config.storage[0].versions = Some(Versions::Purge);
    let app = start_in(workspace, config);
    for (id, versions) in [("a", 2), ("b", 3)] {
        let receipt = receipt(&app, id);
        assert_eq!(receipt["targets"], counts(1, versions, 0, 0), "{receipt}");
        assert_eq!(receipt["deleted"], 1, "{receipt}");
        assert_eq!(receipt["missing"], 0, "{receipt}");
        assert_eq!(
            receipt["attempts"], 1,
            "the batches given back used no attempt: {receipt}"
        );
    }
    assert_eq!(bucket.entries(""), []);
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["targets"][0]["versions"], "purge");
}

#[test]
fn purge_deletes_one_three_and_1200_versions_and_delete_markers_by_version_id() {
    let bucket = moto().bucket(true, false);
    put_versions(&bucket, "videos/one.mp4", 1);
    put_versions(&bucket, "videos/three.mp4", 3);
    // More than a page of ListObjectVersions and a DeleteObjects request.
    put_versions(&bucket, "videos/many.mp4", 1200);
    // A delete marker between two versions, and one on top.
    bucket.put("videos/hidden.mp4", b"first");
    bucket.delete("videos/hidden.mp4");
    bucket.put("videos/hidden.mp4", b"second");
    bucket.delete("videos/hidden.mp4");
    let hidden = bucket.entries("videos/hidden.mp4");
    assert_eq!(hidden.iter().filter(|e| e.marker).count(), 2, "{hidden:#?}");
    // Another key that the exact key `videos/one.mp4` prefixes.
    let neighbour = put_versions(&bucket, "videos/one.mp4.part", 2);

    let app = app_on(&bucket, &["videos/{id}.mp4"], |c| {
        c.storage[0].versions = Some(Versions::Purge)
    });
    app.record_now(&["one", "three", "many", "hidden"]);

    for (id, versions) in [("one", 1), ("three", 3), ("many", 1200), ("hidden", 4)] {
        let receipt = receipt(&app, id);
        assert_eq!(receipt["targets"], counts(1, versions, 0, 0), "{receipt}");
        assert_eq!(receipt["deleted"], 1, "{receipt}");
    }
    let left = bucket.entries("videos/");
    assert!(
        left.iter().all(|e| e.key == "videos/one.mp4.part"),
        "only the neighbour is left, not {} entries: {:#?}",
        left.len(),
        &left[..left.len().min(5)]
    );
    assert_eq!(version_ids(&left), as_set(&neighbour));
}

#[test]
fn purge_deletes_every_version_under_a_prefix_and_nothing_under_a_longer_one() {
    let bucket = moto().bucket(true, false);
    put_versions(&bucket, "hls/p1/a.ts", 2);
    put_versions(&bucket, "hls/p1/b.ts", 3);
    put_versions(&bucket, "hls/p1/sub/c.ts", 1);
    bucket.put("hls/p1/gone.ts", b"deleted before");
    bucket.delete("hls/p1/gone.ts");
    put_versions(&bucket, "hls/p2/x.ts", 1);
    // Another video, whose prefix `hls/p1` also starts.
    put_versions(&bucket, "hls/p10/a.ts", 2);
    bucket.put("hls/p10/b.ts", b"hidden");
    bucket.delete("hls/p10/b.ts");
    let other = bucket.entries("hls/p10/");
    assert_eq!(other.len(), 4, "{other:#?}");

    let app = app_on(&bucket, &["hls/{id}/"], |c| {
        c.storage[0].versions = Some(Versions::Purge)
    });
    app.record_now(&["p1", "p2", "empty"]);

    let p1 = receipt(&app, "p1");
    assert_eq!(p1["targets"], counts(4, 8, 0, 0), "{p1}");
    let p2 = receipt(&app, "p2");
    assert_eq!(p2["targets"], counts(1, 1, 0, 0), "{p2}");
    let empty = receipt(&app, "empty");
    assert_eq!(empty["targets"], counts(0, 0, 1, 0), "{empty}");
    assert_eq!(
        (&empty["deleted"], &empty["missing"]),
        (&json!(0), &json!(1))
    );

    assert_eq!(bucket.entries("hls/p1/"), []);
    assert_eq!(bucket.entries("hls/p2/"), []);
    assert_eq!(bucket.entries("hls/p10/"), other, "untouched");
}

#[test]
fn markers_hide_every_key_and_the_receipt_counts_the_versions_kept() {
    let bucket = moto().bucket(true, false);
    let mut kept = put_versions(&bucket, "videos/m.mp4", 3);
    kept.extend(put_versions(&bucket, "hls/m/a.ts", 2));
    kept.extend(put_versions(&bucket, "hls/m/b.ts", 1));
    // Already hidden: left as it is, its version counted as kept.
    kept.push(bucket.put("hls/m/old.ts", b"old"));
    bucket.delete("hls/m/old.ts");
    let other = put_versions(&bucket, "videos/other.mp4", 1);

    let app = app_on(&bucket, &["videos/{id}.mp4", "hls/{id}/"], |c| {
        c.storage[0].versions = Some(Versions::Markers)
    });
    app.record_now(&["m"]);

    let receipt = receipt(&app, "m");
    assert_eq!(receipt["targets"], counts(3, 0, 0, 7), "{receipt}");
    assert_eq!(receipt["deleted"], 2, "{receipt}");
    assert!(bucket.current_keys("videos/m").is_empty());
    assert!(bucket.current_keys("hls/m/").is_empty());
    assert_eq!(bucket.current_keys("videos/other"), ["videos/other.mp4"]);

    let mut entries = bucket.entries("videos/m");
    entries.extend(bucket.entries("hls/m/"));
    assert_eq!(version_ids(&entries), as_set(&kept), "every version stays");
    for key in ["videos/m.mp4", "hls/m/a.ts", "hls/m/b.ts", "hls/m/old.ts"] {
        let markers: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.key == key && e.marker)
            .collect();
        assert!(
            markers.len() == 1 && markers[0].latest,
            "{key}: one delete marker, on top: {entries:#?}"
        );
    }
    assert_eq!(version_ids(&bucket.entries("videos/other")), as_set(&other));
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["targets"][0]["versions"], "markers");
}

#[test]
fn versioning_switched_on_under_a_running_server_is_seen_and_nothing_more_is_deleted() {
    let bucket = moto().bucket(false, false);
    bucket.put("videos/before.mp4", b"unversioned");
    let app = app_on(&bucket, &["videos/{id}.mp4"], |c| {
        c.storage[0].versioning_check_secs = 1;
    });
    // Ready once the versioning is read: at start-up, or (when moto, on a
    // busy machine, did not answer the start-up's reading within its 5 s)
    // by the next reading.
    wait_until("/readyz is 200", || app.get("/readyz").status == 200);
    let ready = app.get("/readyz");
    assert_eq!(ready.json()["targets"][0]["versioning"], "unversioned");

    app.record_now(&["before"]);
    let before = receipt(&app, "before");
    assert_eq!(before["targets"], counts(1, 0, 0, 0), "{before}");
    assert_eq!(bucket.entries("videos/before"), []);

    bucket.enable_versioning();
    let mut put = put_versions(&bucket, "videos/after.mp4", 2);
    put.extend(put_versions(&bucket, "videos/later.mp4", 1));
    app.record_now(&["after", "later"]);

    let message = choose_a_mode(&bucket);
    wait_until("/readyz says the bucket needs a versions mode", || {
        let ready = app.get("/readyz");
        ready.status == 503 && ready.json()["error"] == message.as_str()
    });
    for id in ["after", "later"] {
        let row = given_back(&app, id, &bucket);
        assert_eq!(row["attempts"], 0, "{row}");
    }
    let entries = bucket.entries("videos/");
    assert_eq!(version_ids(&entries), as_set(&put), "every version stays");
}

#[test]
fn a_delete_marker_in_the_answer_shows_versioning_switched_on_before_the_next_check() {
    let bucket = moto().bucket(false, false);
    bucket.put("videos/before.mp4", b"unversioned");
    // No periodic check within the test: only the DeleteObjects answer can
    // tell the scheduler.
    let app = app_on(&bucket, &["videos/{id}.mp4"], |c| {
        c.storage[0].versioning_check_secs = 86_400;
    });
    app.record_now(&["before"]);
    assert_eq!(receipt(&app, "before")["targets"], counts(1, 0, 0, 0));

    bucket.enable_versioning();
    let put = put_versions(&bucket, "videos/caught.mp4", 2);
    let ready = app.get("/readyz");
    assert_eq!(
        ready.status, 200,
        "the scheduler has not read the versioning again yet: {}",
        ready.body
    );
    app.record_now(&["caught"]);

    let row = given_back(&app, "caught", &bucket);
    assert_eq!(row["attempts"], 0, "{row}");
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["error"], choose_a_mode(&bucket).as_str());
    // The plain delete that revealed it left a marker; the bytes stay.
    let entries = bucket.entries("videos/caught.mp4");
    assert_eq!(version_ids(&entries), as_set(&put), "{entries:#?}");

    // Purge chosen: the versions and that marker go, and only then is
    // there a receipt.
    let (workspace, mut config) = app.stop();
    config.storage[0].versions = Some(Versions::Purge);
    let app = start_in(workspace, config);
    let markers = entries.iter().filter(|e| e.marker).count() as u32;
    let caught = receipt(&app, "caught");
    assert_eq!(caught["targets"], counts(1, 2 + markers, 0, 0), "{caught}");
    assert_eq!(bucket.entries(""), []);
}

/// A retention date an hour from now.
fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

/// Asserts that `id` failed on `key` with the server's Object Lock refusal.
fn refused_by_lock(app: &TestApp, id: &str, key: &str) {
    let row = failed(app, id);
    let error = row["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("{key}: ")), "{row}");
    assert!(error.contains("AccessDenied"), "{row}");
}

#[test]
fn a_governance_lock_fails_only_its_id_and_is_erased_with_bypass_governance() {
    let bucket = moto().bucket(true, true);
    let locked = bucket.put_locked(
        "videos/gov.mp4",
        b"governed",
        Lock::Governance {
            until: in_an_hour(),
        },
    );
    put_versions(&bucket, "videos/free.mp4", 2);
    let app = app_on(&bucket, &["videos/{id}.mp4"], |c| {
        c.max_attempts = 2;
        c.storage[0].versions = Some(Versions::Purge);
    });
    app.record_now(&["gov", "free"]);

    let free = receipt(&app, "free");
    assert_eq!(free["targets"], counts(1, 2, 0, 0), "{free}");
    assert_eq!(bucket.entries("videos/free"), []);
    refused_by_lock(&app, "gov", "videos/gov.mp4");
    let entries = bucket.entries("videos/gov");
    assert_eq!(version_ids(&entries), as_set(&[locked]), "{entries:#?}");

    let (workspace, mut config) = app.stop();
    config.storage[0].bypass_governance = true;
    let app = start_in(workspace, config);
    let retried = app.post("/v1/deletions/gov/retry", json!({}));
    assert_eq!(retried.status, 200, "{}", retried.body);
    let gov = receipt(&app, "gov");
    assert_eq!(gov["targets"], counts(1, 1, 0, 0), "{gov}");
    assert_eq!(bucket.entries("videos/gov"), []);
}

#[test]
fn compliance_retention_and_a_legal_hold_are_refused_even_with_bypass_governance() {
    let bucket = moto().bucket(true, true);
    let complied = bucket.put_locked(
        "videos/comp.mp4",
        b"complied",
        Lock::Compliance {
            until: in_an_hour(),
        },
    );
    let held = bucket.put_locked("videos/hold.mp4", b"held", Lock::LegalHold);
    put_versions(&bucket, "videos/free.mp4", 1);
    let app = app_on(&bucket, &["videos/{id}.mp4"], |c| {
        c.max_attempts = 2;
        c.storage[0].versions = Some(Versions::Purge);
        c.storage[0].bypass_governance = true;
    });
    app.record_now(&["comp", "hold", "free"]);

    let free = receipt(&app, "free");
    assert_eq!(free["targets"], counts(1, 1, 0, 0), "{free}");
    refused_by_lock(&app, "comp", "videos/comp.mp4");
    refused_by_lock(&app, "hold", "videos/hold.mp4");
    let entries = bucket.entries("videos/");
    assert_eq!(
        version_ids(&entries),
        as_set(&[complied, held.clone()]),
        "{entries:#?}"
    );
    bucket.remove_legal_hold("videos/hold.mp4", &held);
}
