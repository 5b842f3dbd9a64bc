//! Several storage targets (`storage` as a list): the origin bucket and a
//! local cache. A request is done only when every target has nothing of it
//! left; a failing target fails the id naming the target, an unusable one
//! stops the work of all; `/readyz`, `/v1/stats`, `/metrics` and the
//! receipt show each target.

use crate::common::{spawn_app_on, wait_until, Backend, Storage, TestApp};
use serde_json::json;
use video_scheduler::config::{StorageConfig, Targets};

/// An app deleting from the test's bucket (`origin`) and from a local
/// directory (`cache`).
fn app(customize: impl FnOnce(&mut StorageConfig)) -> TestApp {
    spawn_app_on(Backend::Sqlite, Storage::S3, |c| {
        c.tick_ms = 20;
        c.retry_base_ms = 20;
        c.retry_max_ms = 50;
        let mut origin = c.storage[0].clone();
        origin.name = Some("origin".into());
        origin.paths = vec!["videos/{id}.mp4".into(), "hls/{id}/".into()];
        // Next to the test's database, in its temp directory.
        let database = std::path::Path::new(c.database_url.trim_start_matches("sqlite://"));
        let mut cache = StorageConfig {
            name: Some("cache".into()),
            root: database.with_file_name("cache"),
            paths: vec!["{id}/".into()],
            ..StorageConfig::default()
        };
        customize(&mut cache);
        c.storage = Targets::list(vec![origin, cache]);
    })
}

fn cache(app: &TestApp) -> std::path::PathBuf {
    app.config.storage[1].root.clone()
}

fn put_cache(app: &TestApp, rel: &str) {
    let path = cache(app).join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"cached bytes").unwrap();
}

#[test]
fn a_request_is_done_only_when_every_target_is_clean_then_one_receipt_names_each() {
    let app = app(|_| {});
    for id in ["v1", "v2"] {
        app.create_file(&format!("videos/{id}.mp4"));
        app.create_file(&format!("hls/{id}/seg-0.ts"));
        put_cache(&app, &format!("{id}/seg-0.ts"));
        put_cache(&app, &format!("{id}/seg-1.ts"));
    }
    // The cache cannot delete v2 for now, in a way root cannot bypass: a
    // file where its directory template expects a directory.
    std::fs::remove_dir_all(cache(&app).join("v2")).unwrap();
    std::fs::write(cache(&app).join("v2"), b"not a directory").unwrap();

    assert_eq!(app.record(&["v1", "v2"], json!({})).status, 202);
    wait_until("v1 is done", || {
        app.get("/v1/deletions/v1").json()["state"] == "done"
    });
    wait_until("v2 failed its first attempt", || {
        app.get("/v1/deletions/v2").json()["attempts"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let v2 = app.get("/v1/deletions/v2").json();
    let error = v2["last_error"].as_str().unwrap();
    assert!(error.starts_with("target cache: v2: "), "{error}");
    assert!(error.contains("the template names a directory"), "{error}");
    assert_ne!(v2["state"], "done", "no receipt while the cache keeps it");
    assert!(!app.exists("videos/v2.mp4"), "the origin erased it already");

    // The cache heals: the retry deletes everywhere again (what is gone is
    // a success) and writes one receipt naming both targets.
    std::fs::remove_file(cache(&app).join("v2")).unwrap();
    wait_until("v2 is done", || {
        app.get("/v1/deletions/v2").json()["state"] == "done"
    });
    let receipt = app.get("/v1/deletions/v2").json();
    // On the origin its prefix is empty now; its key counts as an object
    // (S3 cannot tell a missing key from a deleted one).
    assert_eq!(
        receipt["targets"],
        json!([
            { "name": "origin", "objects": 1, "versions": 0, "missing": 1, "versions_kept": 0 },
            { "name": "cache", "objects": 0, "versions": 0, "missing": 1, "versions_kept": 0 }
        ]),
        "{receipt}"
    );
    let v1 = app.get("/v1/deletions/v1").json();
    assert_eq!(
        v1["targets"],
        json!([
            { "name": "origin", "objects": 2, "versions": 0, "missing": 0, "versions_kept": 0 },
            { "name": "cache", "objects": 2, "versions": 0, "missing": 0, "versions_kept": 0 }
        ]),
        "{v1}"
    );
    assert!(!cache(&app).join("v1").exists());
    assert_eq!(
        app.metric("video_scheduler_erased_total{target=\"cache\",what=\"objects\"}"),
        2.0
    );
    // The list of receipts and the export carry the targets too.
    let page = app.get("/v1/deletions?state=done").json();
    assert_eq!(page["items"][0]["targets"], v1["targets"]);
    let dir = cache(&app).parent().unwrap().to_owned();
    let config_file = crate::common::process::write_config(&app.config, &dir, "export.json");
    let out = crate::common::binary()
        .arg("--config")
        .arg(&config_file)
        .arg("receipts")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let v1_line = exported.iter().find(|r| r["id"] == "v1").unwrap();
    assert_eq!(v1_line["targets"], v1["targets"]);
}

#[test]
fn an_unusable_target_stops_the_work_everywhere_and_says_which() {
    let app = app(|cache| cache.marker = Some(".cache-root".into()));
    app.create_file("videos/v1.mp4");
    put_cache(&app, "v1/seg-0.ts");

    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503);
    let error = ready.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("target cache: storage.marker .cache-root"),
        "{error}"
    );
    let stats = app.get("/v1/stats").json();
    assert_eq!(stats["targets"][0]["ready"], true, "{stats}");
    assert_eq!(stats["targets"][0]["versioning"], "unversioned", "{stats}");
    assert_eq!(stats["targets"][1]["ready"], false, "{stats}");
    assert_eq!(
        app.metric("video_scheduler_storage_ready{target=\"cache\"}"),
        0.0
    );
    assert_eq!(
        app.metric("video_scheduler_storage_ready{target=\"origin\"}"),
        1.0
    );

    assert_eq!(app.record(&["v1"], json!({})).status, 202);
    wait_until("the batch is given back with the reason", || {
        app.get("/v1/deletions/v1").json()["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("target cache: storage.marker"))
    });
    let row = app.get("/v1/deletions/v1").json();
    assert_eq!(row["attempts"], 0, "{row}");
    assert!(
        app.exists("videos/v1.mp4"),
        "nothing deleted on the origin either"
    );
    assert!(cache(&app).join("v1/seg-0.ts").exists());

    put_cache(&app, ".cache-root");
    wait_until("done once the cache is usable", || {
        app.get("/v1/deletions/v1").json()["state"] == "done"
    });
    assert!(!app.exists("videos/v1.mp4"));
    assert!(!cache(&app).join("v1").exists());
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 200);
    let names: Vec<String> = ready.json()["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["origin", "cache"]);
}
