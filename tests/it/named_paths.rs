//! Files the templates cannot name: `POST /v1/deletions` with
//! `items: [{"id", "paths"}]` (and `enqueue` with JSON lines). The paths
//! are stored with the request, shown by `GET /v1/deletions/{id}`, deleted
//! besides the templates on local disk and in buckets, merged when the id
//! is recorded again, and never lead outside the root.

use crate::common::{claim_as, spawn_app, spawn_app_on, wait_until, Backend, Storage, TestApp};
use serde_json::{json, Value};

fn app(backend: Backend, storage: Storage) -> TestApp {
    spawn_app_on(backend, storage, |c| {
        c.tick_ms = 20;
        c.retry_base_ms = 20;
        c.retry_max_ms = 50;
        c.storage[0].paths = vec!["videos/{id}.mp4".into()];
    })
}

fn items(app: &TestApp, items: Value, extra: Value) -> crate::common::Reply {
    let mut body = json!({ "items": items });
    if let Value::Object(fields) = extra {
        body.as_object_mut().unwrap().extend(fields);
    }
    app.post("/v1/deletions", body)
}

storage_tests!(
    named_files_and_directories_are_deleted_besides_the_templates,
    a_named_path_is_shown_with_its_request_until_it_is_done,
);

fn named_files_and_directories_are_deleted_besides_the_templates(
    backend: Backend,
    storage: Storage,
) {
    let app = app(backend, storage);
    for file in [
        "videos/v1.mp4",
        "web/3f2a-720.mp4",
        "web/3f2a-1080.mp4",
        "hls/3f2a/master.m3u8",
        "hls/3f2a/720/seg-0.ts",
        "hls/3f2a-other/seg-0.ts",
        "web/other.mp4",
    ] {
        app.create_file(file);
    }
    let reply = items(
        &app,
        json!([{ "id": "v1",
                 "paths": ["web/3f2a-720.mp4", "web/3f2a-1080.mp4", "hls/3f2a/", "web/gone.mp4"] }]),
        json!({ "ids": ["plain"] }),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json(), json!({ "accepted": 2, "already_queued": 0 }));
    wait_until("both are done", || app.row_count() == 0);
    for gone in [
        "videos/v1.mp4",
        "web/3f2a-720.mp4",
        "web/3f2a-1080.mp4",
        "hls/3f2a",
    ] {
        assert!(!app.exists(gone), "{gone}");
    }
    assert!(app.exists("hls/3f2a-other/seg-0.ts"), "a neighbour prefix");
    assert!(app.exists("web/other.mp4"), "a file nobody named");
    let receipt = app.get("/v1/deletions/v1").json();
    assert_eq!(receipt["state"], "done", "{receipt}");
    let target = &receipt["targets"][0];
    match storage {
        // The template, two renditions and the directory; nothing at
        // `web/gone.mp4`. Files: the three and the directory's two.
        Storage::Local => {
            assert_eq!(
                (receipt["deleted"].as_i64(), receipt["missing"].as_i64()),
                (Some(4), Some(1))
            );
            assert_eq!(
                (target["objects"].as_i64(), target["missing"].as_i64()),
                (Some(5), Some(1))
            );
        }
        // S3 cannot tell a missing key from a deleted one.
        Storage::S3 => {
            assert_eq!(
                (receipt["deleted"].as_i64(), receipt["missing"].as_i64()),
                (Some(5), Some(0))
            );
            assert_eq!(target["objects"].as_i64(), Some(6), "{receipt}");
        }
    }
}

fn a_named_path_is_shown_with_its_request_until_it_is_done(backend: Backend, storage: Storage) {
    let app = app(backend, storage);
    let reply = items(
        &app,
        json!([{ "id": "later", "paths": ["web/a-720.mp4", "hls/a/"] }]),
        json!({ "delay_secs": 3600 }),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let shown = app.get("/v1/deletions/later").json();
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["paths"], json!(["web/a-720.mp4", "hls/a/"]));
    // A request without named paths shows an empty list.
    app.record(&["bare"], json!({ "delay_secs": 3600 }));
    assert_eq!(app.get("/v1/deletions/bare").json()["paths"], json!([]));
}

/// Recording an id again, in each state, on every backend.
mod again {
    use super::*;

    backend_tests!(
        recording_a_queued_id_again_merges_its_paths,
        new_paths_for_a_running_id_give_it_back_so_they_are_deleted_too,
    );

    fn recording_a_queued_id_again_merges_its_paths(backend: Backend) {
        let app = spawn_app(backend, |c| c.tick_ms = 20);
        let later = json!({ "delay_secs": 3600 });
        let first = items(
            &app,
            json!([{ "id": "v1", "paths": ["a.mp4", "hls/a/"] }]),
            later.clone(),
        );
        assert_eq!(first.json()["accepted"], 1);
        let again = items(
            &app,
            json!([{ "id": "v1", "paths": ["hls/a/", "b.mp4"] }, { "id": "v1", "paths": ["c.mp4"] }]),
            later.clone(),
        );
        assert_eq!(again.json(), json!({ "accepted": 0, "already_queued": 1 }));
        let row = app.get("/v1/deletions/v1").json();
        assert_eq!(row["paths"], json!(["a.mp4", "hls/a/", "b.mp4", "c.mp4"]));
        assert_eq!(row["state"], "pending", "merging leaves the schedule alone");
        // A plain record of the id changes nothing.
        assert_eq!(app.record(&["v1"], later).json()["already_queued"], 1);
        assert_eq!(app.get("/v1/deletions/v1").json()["paths"], row["paths"]);
    }

    fn new_paths_for_a_running_id_give_it_back_so_they_are_deleted_too(backend: Backend) {
        let app = spawn_app(backend, |c| {
            c.tick_ms = 3_600_000;
            c.fast_lane = false;
        });
        app.create_file("v1");
        app.create_file("late-rendition.mp4");
        assert_eq!(
            items(&app, json!([{ "id": "v1" }]), json!({ "delay_secs": 3600 })).status,
            202
        );
        // Another instance holds it and deletes its (templated) file.
        let db = app.db();
        let claimed = claim_as(&db, "other-instance", 10);
        assert_eq!(claimed.len(), 1);
        std::fs::remove_file(app.root().join("v1")).unwrap();

        // Meanwhile the caller learns of another file of the video.
        let reply = items(
            &app,
            json!([{ "id": "v1", "paths": ["late-rendition.mp4"] }]),
            json!({}),
        );
        assert_eq!(reply.json()["already_queued"], 1, "{}", reply.body);
        let row = app.get("/v1/deletions/v1").json();
        assert_eq!(
            (row["state"].as_str(), row["locked_by"].as_str()),
            (Some("pending"), None),
            "{row}"
        );

        // The holder's ack no longer applies: no receipt for a deletion that
        // did not include the new path.
        let acked = db
            .write(|c| {
                video_scheduler::db::queries::ack::ack(
                    c,
                    "other-instance",
                    &crate::common::done(&claimed),
                    &[],
                    Some(crate::common::now_ms()),
                )
            })
            .unwrap();
        assert_eq!((acked.removed, acked.receipts, acked.lost_lease), (0, 0, 1));
        assert_eq!(app.get("/v1/deletions/v1").json()["state"], "pending");

        // This instance deletes it, the new path included: the merge made
        // it due now, and a record due now wakes the dispatcher (claimed,
        // not through the fast lane: the lane does not wake it).
        app.record(&["wake"], json!({}));
        wait_until("done", || {
            app.get("/v1/deletions/v1").json()["state"] == "done"
        });
        assert!(!app.exists("late-rendition.mp4"));
        assert_eq!(app.get("/v1/deletions/v1").json()["deleted"], 1);
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn every_bad_path_is_a_400_naming_it_and_nothing_is_recorded() {
    let app = spawn_app(Backend::Sqlite, |_| {});
    let long = "a".repeat(1025);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!(["/etc/passwd"]),
            "items[0].paths[0]: must be relative",
        ),
        (
            json!(["ok.mp4", "../x"]),
            "items[0].paths[1]: must not contain ..",
        ),
        (json!(["a/../x"]), "must not contain .."),
        (json!(["./x"]), "must not contain ."),
        (json!(["a//x"]), "must not contain empty path components"),
        (json!([""]), "must not be empty"),
        (json!(["a\\b"]), "must not contain NUL or backslash"),
        (json!(["a\u{0}b"]), "control characters"),
        (json!(["a\nb"]), "control characters"),
        (json!([long]), "at most 1024 bytes, not 1025"),
    ];
    for (paths, reason) in cases {
        let reply = items(&app, json!([{ "id": "v1", "paths": paths }]), json!({}));
        assert_eq!(reply.status, 400, "{paths}: {}", reply.body);
        assert!(
            reply.json()["error"].as_str().unwrap().contains(reason),
            "{paths}: {}",
            reply.body
        );
    }
    let too_many: Vec<String> = (0..257).map(|i| format!("r-{i}.mp4")).collect();
    let reply = items(&app, json!([{ "id": "v1", "paths": too_many }]), json!({}));
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .body
            .contains("items[0].paths: at most 256 paths, got 257"),
        "{}",
        reply.body
    );
    let bad_id = items(&app, json!([{ "id": "../v1", "paths": ["a"] }]), json!({}));
    assert_eq!(
        (bad_id.status, bad_id.json()["code"].as_str()),
        (400, Some("invalid_id"))
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "id": format!("v{i}") }))
        .collect();
    let reply = items(&app, json!(many), json!({}));
    assert!(reply.body.contains("at most 1000 items"), "{}", reply.body);
    let ids: Vec<String> = (0..10_001).map(|i| format!("i{i}")).collect();
    let reply = items(&app, json!([{ "id": "t" }]), json!({ "ids": ids }));
    assert!(
        reply
            .body
            .contains("at most 10000 ids per request, got 10001"),
        "{}",
        reply.body
    );
    let unknown = app.post(
        "/v1/deletions",
        json!({ "items": [{ "id": "v1", "path": ["a"] }] }),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(crate::common::row_count(&app.db()), 0, "nothing recorded");

    // 256 paths of 1,024 bytes each are accepted.
    let most: Vec<String> = (0..256)
        .map(|i| format!("{i:04}{}", "b".repeat(1020)))
        .collect();
    let reply = items(
        &app,
        json!([{ "id": "v1", "paths": most }]),
        json!({ "delay_secs": 60 }),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
}

#[cfg(feature = "sqlite")]
#[test]
fn a_request_cannot_grow_past_4096_paths() {
    let app = spawn_app(Backend::Sqlite, |_| {});
    let batch = |from: usize| -> Value {
        json!((from..from + 256)
            .map(|i| format!("r-{i}.mp4"))
            .collect::<Vec<_>>())
    };
    // Sixteen items of 256 paths: 4,096, the most a request keeps.
    let full: Vec<Value> = (0..16)
        .map(|n| json!({ "id": "v1", "paths": batch(n * 256) }))
        .collect();
    let reply = items(&app, json!(full), json!({ "delay_secs": 60 }));
    assert_eq!(reply.status, 202, "{}", reply.body);
    let reply = items(
        &app,
        json!([{ "id": "v1", "paths": batch(5000) }]),
        json!({}),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("v1: its request would name more than 4096 paths"),
        "{}",
        reply.body
    );
    let kept = app.get("/v1/deletions/v1").json();
    assert_eq!(kept["paths"].as_array().unwrap().len(), 4096);
}

#[cfg(feature = "sqlite")]
#[test]
fn symlinks_named_by_a_request_are_removed_as_links_and_never_followed_out() {
    let app = spawn_app(Backend::Sqlite, |c| {
        c.tick_ms = 20;
        c.max_attempts = 1;
    });
    let outside = app.root().parent().unwrap().join("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("dir/keep.mp4"), b"x").unwrap();
    std::fs::write(outside.join("keep.mp4"), b"x").unwrap();
    std::fs::create_dir_all(app.root()).unwrap();
    std::os::unix::fs::symlink(&outside, app.root().join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("dir"), app.root().join("dir-link")).unwrap();
    std::os::unix::fs::symlink(outside.join("keep.mp4"), app.root().join("file-link")).unwrap();

    let reply = items(
        &app,
        json!([
            { "id": "through", "paths": ["escape/keep.mp4"] },
            { "id": "through-dir", "paths": ["escape/dir/"] },
            { "id": "links", "paths": ["dir-link/", "file-link"] }
        ]),
        json!({}),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    wait_until("the two escapes fail and the links go", || {
        let stats = app.get("/v1/stats").json();
        stats["failed"] == 2 && stats["done"] == 1
    });
    let through = app.get("/v1/deletions/through").json();
    assert!(
        through["last_error"]
            .as_str()
            .unwrap()
            .starts_with("escape/keep.mp4: "),
        "{through}"
    );
    assert!(app.get("/v1/deletions/through-dir").json()["last_error"]
        .as_str()
        .is_some());
    // The links are gone, what they pointed to is not.
    assert!(app.root().join("dir-link").symlink_metadata().is_err());
    assert!(app.root().join("file-link").symlink_metadata().is_err());
    assert!(outside.join("dir/keep.mp4").exists());
    assert!(outside.join("keep.mp4").exists());
}

#[cfg(feature = "sqlite")]
#[test]
fn enqueue_takes_json_lines_naming_paths_besides_plain_ids() {
    use std::io::Write;
    let (ws, config) = crate::common::workspace(Backend::Sqlite);
    let config_file = crate::common::process::write_config(&config, ws.dir.path(), "conf.json");
    let run = |stdin: &str| {
        let mut child = crate::common::binary()
            .arg("--config")
            .arg(&config_file)
            .args(["enqueue", "--delay-secs", "3600"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, _, stderr) = run("migrate-first\n");
    assert_eq!(code, Some(1), "the schema must exist: {stderr}");
    let migrated = crate::common::binary()
        .arg("--config")
        .arg(&config_file)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(migrated.status.success());

    let (code, stdout, stderr) = run(
        "plain-1\n{\"id\": \"v1\", \"paths\": [\"web/3f2a-720.mp4\", \"hls/3f2a/\"]}\n\n{\"id\": \"v2\"}\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("accepted 3, already queued 0"), "{stdout}");
    let db = video_scheduler::db::Db::connect(&config.database_url, 1).unwrap();
    let row = db
        .read(|c| video_scheduler::db::queries::manage::get(c, "v1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        row.paths.as_deref(),
        Some(r#"["web/3f2a-720.mp4","hls/3f2a/"]"#)
    );
    assert_eq!(row.source, "cli");

    // One bad line anywhere records nothing and names the line.
    let (code, _, stderr) = run("fresh\n{\"id\": \"v3\", \"paths\": [\"../x\"]}\n");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("paths[0]: must not contain .."), "{stderr}");
    assert!(db
        .read(|c| video_scheduler::db::queries::manage::get(c, "fresh"))
        .unwrap()
        .is_none());
    let (code, _, stderr) = run("{\"id\": \"v4\", \"pathz\": []}\n");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not an item"), "{stderr}");
    drop(ws);
}
