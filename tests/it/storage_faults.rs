//! Storage faults that root cannot bypass: each is a failed attempt with a
//! clear `last_error`, retried, then `failed`; never a crash, never a
//! deletion outside the root; and after the cause is fixed, a retry works.
//! Storage does not depend on the database, so these run on SQLite only.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{spawn_app, wait_until, Backend, TestApp};
use serde_json::json;

fn app() -> TestApp {
    spawn_app(Backend::Sqlite, |c| {
        c.storage[0].paths = vec!["{id}".into(), "ro/{id}.mp4".into(), "loop/{id}.jpg".into()];
        c.tick_ms = 20;
        c.retry_base_ms = 20;
        c.retry_max_ms = 40;
        c.max_attempts = 2;
    })
}

use crate::common::run_ok as run;

/// Records `id`, waits for it to fail for good, returns its `last_error`.
fn fails_for_good(app: &TestApp, id: &str) -> String {
    assert_eq!(app.get(&format!("/video-delete-record/{id}")).status, 200);
    let path = format!("/v1/deletions/{id}");
    wait_until("the request fails for good", || {
        app.get(&path).json()["state"] == "failed"
    });
    let row = app.get(&path).json();
    assert_eq!(row["attempts"], 2, "{row}");
    assert_eq!(app.get("/healthz").status, 200, "no crash");
    row["last_error"].as_str().unwrap().to_owned()
}

/// Retries `id` and waits until its row is gone.
fn retry_succeeds(app: &TestApp, id: &str) {
    assert_eq!(
        app.post(&format!("/v1/deletions/{id}/retry"), json!({}))
            .status,
        200
    );
    wait_until("the retried request is done", || {
        app.get(&format!("/v1/deletions/{id}")).json()["state"] == "done"
    });
}

/// Clears the immutable flag even if the test fails, so the temp dir can go.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        run("chattr", &["+i", path.to_str().unwrap()]);
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .args(["-i", self.0.to_str().unwrap()])
            .status();
    }
}

#[test]
fn an_immutable_file_is_operation_not_permitted_even_for_root() {
    let app = app();
    let file = app.create_file("frozen");
    let flag = Immutable::set(&file);
    let error = fails_for_good(&app, "frozen");
    assert_eq!(error, "frozen: Operation not permitted (os error 1)");
    assert!(file.exists());

    drop(flag);
    retry_succeeds(&app, "frozen");
    assert!(!file.exists());
}

#[test]
fn a_read_only_filesystem_fails_until_it_is_writable_again() {
    let app = app();
    let mount_point = app.root().join("ro");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mount = crate::common::Mount::tmpfs(&mount_point);
    let file = app.create_file("ro/on-ro.mp4");
    run(
        "mount",
        &["-o", "remount,ro", mount_point.to_str().unwrap()],
    );

    let error = fails_for_good(&app, "on-ro");
    assert_eq!(error, "ro/on-ro.mp4: Read-only file system (os error 30)");
    assert!(file.exists());

    run(
        "mount",
        &["-o", "remount,rw", mount_point.to_str().unwrap()],
    );
    retry_succeeds(&app, "on-ro");
    assert!(!file.exists());
    drop(mount);
}

#[test]
fn a_symlink_loop_fails_cleanly_until_it_is_replaced() {
    let app = app();
    let looped = app.root().join("loop");
    std::os::unix::fs::symlink("loop", &looped).unwrap();

    let error = fails_for_good(&app, "looped");
    assert!(error.starts_with("loop/looped.jpg: "), "{error}");
    assert!(error.contains("symbolic links"), "{error}");

    std::fs::remove_file(&looped).unwrap();
    let file = app.create_file("loop/looped.jpg");
    retry_succeeds(&app, "looped");
    assert!(!file.exists());
}
