//! Deletion behaviour end to end: record over HTTP, watch files and rows go.

use crate::common::{
    now_ms, spawn_app, spawn_app_on, start_in, wait_until, Backend, Storage, TestApp,
};
use serde_json::json;
use video_scheduler::db::queries;

// On local disk and in a bucket, from one body each.
storage_tests!(
    recording_an_id_on_the_seed_route_deletes_every_templated_path_without_waiting_for_a_tick,
    a_batch_of_5000_ids_through_the_batch_route_is_all_deleted,
    a_delayed_request_is_not_deleted_before_its_time,
    a_file_that_cannot_be_deleted_is_retried_and_not_lost,
    requests_recorded_before_a_restart_are_processed_after_it,
);

mod database {
    use super::*;
    backend_tests!(
        recording_a_queued_id_again_is_accepted_and_does_not_reset_it,
        not_before_as_rfc3339_schedules_the_request,
        a_symlink_inside_the_root_is_removed_as_a_link_and_its_target_survives,
        a_directory_symlink_out_of_the_root_is_never_followed,
    );
}

fn row_exists(app: &TestApp, id: &str) -> bool {
    app.db()
        .read(|c| queries::manage::get(c, id))
        .unwrap()
        .is_some()
}

fn recording_an_id_on_the_seed_route_deletes_every_templated_path_without_waiting_for_a_tick(
    backend: Backend,
    storage: Storage,
) {
    let app = spawn_app_on(backend, storage, |c| {
        // An hour between ticks: only the RecordActor's nudge can start it.
        c.tick_ms = 3_600_000;
        c.storage[0].paths = vec![
            "{id}".into(),
            "{id}.mp4".into(),
            "thumbs/{id}.jpg".into(),
            "hls/{id}/".into(),
        ];
    });
    let id = "4f6c0f0e-2c39-4c56-9c1a-0b7d2e8f9a11";
    let paths = [
        id.to_owned(),
        format!("{id}.mp4"),
        format!("thumbs/{id}.jpg"),
        format!("hls/{id}/index.m3u8"),
        format!("hls/{id}/seg/0001.ts"),
    ];
    for path in &paths {
        app.create_file(path);
    }
    app.create_file("thumbs/other-video.jpg");
    app.create_file(&format!("hls/{id}-other/index.m3u8"));

    let reply = app.get(&format!("/video-delete-record/{id}"));
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));

    wait_until("every path of the id is gone", || {
        paths.iter().all(|p| !app.exists(p)) && !app.exists(&format!("hls/{id}"))
    });
    wait_until("the row is removed", || !row_exists(&app, id));
    assert!(
        app.exists("thumbs/other-video.jpg") && app.exists(&format!("hls/{id}-other")),
        "a file of another video was touched"
    );
    if storage == Storage::Local {
        assert!(
            app.root().join("hls").is_dir(),
            "the template's parent stays"
        );
    }
}

fn a_batch_of_5000_ids_through_the_batch_route_is_all_deleted(backend: Backend, storage: Storage) {
    let app = spawn_app_on(backend, storage, |_| {});
    let ids: Vec<String> = (0..5000).map(|i| format!("video-{i:05}")).collect();
    for id in &ids {
        std::fs::write(app.root().join(id), b"").unwrap();
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reply = app.record(&refs, json!({}));
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({ "accepted": 5000, "already_queued": 0 })
    );

    wait_until("all rows are gone", || app.row_count() == 0);
    assert_eq!(
        crate::common::files_under(&app.root()),
        0,
        "files left behind"
    );
}

fn recording_a_queued_id_again_is_accepted_and_does_not_reset_it(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    let first = app.record(&["queued-1"], json!({ "delay_secs": 3600 }));
    assert_eq!(first.json(), json!({ "accepted": 1, "already_queued": 0 }));
    let before = app.get("/v1/deletions/queued-1").json();

    let again = app.record(&["queued-1", "fresh-1"], json!({ "delay_secs": 0 }));
    assert_eq!(again.status, 202);
    assert_eq!(again.json(), json!({ "accepted": 1, "already_queued": 1 }));
    let seed = app.get("/video-delete-record/queued-1");
    assert_eq!((seed.status, seed.body.as_str()), (200, ""));

    let after = app.get("/v1/deletions/queued-1").json();
    assert_eq!(after, before, "a second record must not reset the request");
    assert_eq!(after["state"], "pending");
}

fn a_delayed_request_is_not_deleted_before_its_time(backend: Backend, storage: Storage) {
    let app = spawn_app_on(backend, storage, |c| c.tick_ms = 50);
    app.create_file("later");
    let reply = app.record(&["later"], json!({ "delay_secs": 2 }));
    assert_eq!(reply.status, 202);
    let row = app.get("/v1/deletions/later").json();
    let not_before = chrono::DateTime::parse_from_rfc3339(row["not_before"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(
        not_before >= now_ms() + 1000,
        "not_before is about 2 s ahead"
    );

    wait_until("the delayed file is deleted", || {
        let gone = !app.exists("later");
        assert!(
            !gone || now_ms() >= not_before,
            "deleted {} ms before its time",
            not_before - now_ms()
        );
        gone
    });
    wait_until("the row is removed", || !row_exists(&app, "later"));
}

fn not_before_as_rfc3339_schedules_the_request(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    let at = "2099-01-01T00:00:00+02:00";
    assert_eq!(
        app.record(&["far-future"], json!({ "not_before": at }))
            .status,
        202
    );
    let row = app.get("/v1/deletions/far-future").json();
    assert_eq!(row["not_before"], "2098-12-31T22:00:00.000Z");
    assert_eq!(row["state"], "pending");
}

fn a_symlink_inside_the_root_is_removed_as_a_link_and_its_target_survives(backend: Backend) {
    let app = spawn_app(backend, |c| {
        c.storage[0].paths = vec!["{id}".into(), "thumbs/{id}.jpg".into()]
    });
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious.mp4");
    std::fs::write(&target, b"keep me").unwrap();
    let link = app.root().join("linked");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    assert_eq!(app.get("/video-delete-record/linked").status, 200);
    wait_until("the link is removed", || link.symlink_metadata().is_err());
    wait_until("the row is removed", || !row_exists(&app, "linked"));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

fn a_directory_symlink_out_of_the_root_is_never_followed(backend: Backend) {
    let app = spawn_app(backend, |c| {
        c.storage[0].paths = vec!["thumbs/{id}.jpg".into()];
        c.retry_base_ms = 10;
        c.retry_max_ms = 20;
        c.max_attempts = 2;
    });
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("escape.jpg");
    std::fs::write(&target, b"outside the root").unwrap();
    std::os::unix::fs::symlink(outside.path(), app.root().join("thumbs")).unwrap();

    assert_eq!(app.get("/video-delete-record/escape").status, 200);
    wait_until("the request fails for good", || {
        app.get("/v1/deletions/escape").json()["state"] == "failed"
    });
    let row = app.get("/v1/deletions/escape").json();
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .starts_with("thumbs/escape.jpg: "),
        "{row}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"outside the root");
}

fn a_file_that_cannot_be_deleted_is_retried_and_not_lost(backend: Backend, storage: Storage) {
    let app = spawn_app_on(backend, storage, |c| {
        c.tick_ms = 20;
        c.retry_base_ms = 20;
        c.retry_max_ms = 40;
        c.max_attempts = 3;
    });
    // Root ignores permissions: a non-empty directory where the `{id}`
    // template expects a file, or an error from the S3 server for the key.
    app.block("stuck");

    assert_eq!(app.get("/video-delete-record/stuck").status, 200);
    wait_until("the request has used its attempts", || {
        app.get("/v1/deletions/stuck").json()["state"] == "failed"
    });
    let row = app.get("/v1/deletions/stuck").json();
    assert_eq!(row["attempts"], 3, "{row}");
    let error = row["last_error"].as_str().unwrap();
    let cause = match storage {
        Storage::Local => "directory",
        Storage::S3 => "AccessDenied",
    };
    assert!(
        error.starts_with("stuck: ") && error.contains(cause),
        "{error}"
    );
    assert!(app.exists("stuck"));
    let failed = app.get("/v1/deletions?state=failed").json();
    assert_eq!(failed["items"][0]["id"], "stuck");

    // Fix the cause, retry: it goes through.
    app.unblock("stuck");
    let retried = app.post("/v1/deletions/stuck/retry", json!({}));
    assert_eq!(retried.status, 200, "{}", retried.body);
    wait_until("the file is deleted after the retry", || {
        !app.exists("stuck")
    });
    wait_until("the row is removed", || !row_exists(&app, "stuck"));
}

fn requests_recorded_before_a_restart_are_processed_after_it(backend: Backend, storage: Storage) {
    let app = spawn_app_on(backend, storage, |_| {});
    let ids = ["before-restart-1", "before-restart-2", "before-restart-3"];
    for id in ids {
        app.create_file(id);
    }
    let due = now_ms() + 3000;
    let at = chrono::DateTime::from_timestamp_millis(due)
        .unwrap()
        .to_rfc3339();
    assert_eq!(app.record(&ids, json!({ "not_before": at })).status, 202);
    let root = app.root();
    let (dir, config) = app.stop();

    assert!(ids.iter().all(|id| root.join(id).exists()));
    let app = start_in(dir, config);
    assert_eq!(app.row_count(), 3, "the rows survived the restart");
    wait_until("the files are deleted after the restart", || {
        ids.iter().all(|id| !app.exists(id))
    });
    wait_until("the rows are removed", || app.row_count() == 0);
}
