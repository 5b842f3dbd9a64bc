//! The storage root is the directory its path names *now*: a file system
//! mounted on it after start-up, or the directory renamed and recreated,
//! deletes nothing and counts nothing missing until it is fixed; a marker
//! file guards an empty mount point; recursive removal never crosses into
//! another mount. Real mounts (tests run as root), the real binary.

use std::path::{Path, PathBuf};

use crate::common::process::{write_config, ServerProcess};
use crate::common::{wait_until, workspace, Backend, Client, Mount, Workspace};
use serde_json::json;
use video_scheduler::config::Config;

backend_tests!(
    a_file_system_mounted_over_the_root_after_start_deletes_nothing_until_it_is_unmounted,
    a_root_renamed_and_recreated_deletes_nothing_until_it_is_put_back,
);

/// A server process with quick retries, and `n` files named `{prefix}-{i}`
/// in its root.
fn server_with_files(
    backend: Backend,
    prefix: &str,
    n: usize,
    customize: impl FnOnce(&mut Config),
) -> (Workspace, ServerProcess, Vec<String>) {
    let (ws, mut config) = workspace(backend);
    config.tick_ms = 50;
    config.retry_base_ms = 50;
    config.retry_max_ms = 100;
    config.max_attempts = 2;
    customize(&mut config);
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for id in &ids {
        std::fs::write(config.storage[0].root.join(id), b"video").unwrap();
    }
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    (ws, server, ids)
}

fn record(client: &Client, ids: &[String]) {
    let reply = client.post("/v1/deletions", json!({ "ids": ids }));
    assert_eq!(reply.status, 202, "{}", reply.body);
}

/// Waits until every id was tried and given back with a `last_error`
/// containing `reason`, then checks that none used an attempt.
fn all_refused(client: &Client, ids: &[String], reason: &str) {
    wait_until("every request was refused by the storage", || {
        ids.iter().all(|id| {
            let row = client.get(&format!("/v1/deletions/{id}")).json();
            row["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(reason))
        })
    });
    for id in ids {
        let row = client.get(&format!("/v1/deletions/{id}")).json();
        assert_eq!(row["attempts"], 0, "no attempt is used: {row}");
        assert_ne!(row["state"], "failed", "{row}");
    }
    let ready = client.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.json()["error"].as_str().unwrap().contains(reason),
        "{}",
        ready.body
    );
    assert_eq!(missing(client), 0.0, "nothing is counted missing");
}

fn missing(client: &Client) -> f64 {
    client.metric("video_scheduler_deletions_total{outcome=\"missing\"}")
}

fn deleted(client: &Client) -> f64 {
    client.metric("video_scheduler_deletions_total{outcome=\"deleted\"}")
}

/// Waits until every file and row is gone, each id deleted (none missing).
fn all_deleted(client: &Client, root: &Path, ids: &[String]) {
    wait_until("every file is deleted", || {
        ids.iter().all(|id| !root.join(id).exists())
    });
    wait_until("every row is gone", || client.row_count() == 0);
    assert_eq!(deleted(client), ids.len() as f64);
    assert_eq!(missing(client), 0.0);
    assert_eq!(client.get("/readyz").status, 200);
}

fn a_file_system_mounted_over_the_root_after_start_deletes_nothing_until_it_is_unmounted(
    backend: Backend,
) {
    let (_ws, server, ids) = server_with_files(backend, "late-mount", 20, |_| {});
    let root = server.root();
    let mount = Mount::tmpfs(&root);
    // What the server would see through the path: an empty directory.
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);

    record(&server, &ids);
    all_refused(
        &server,
        &ids,
        "no longer names the directory opened at start-up",
    );

    mount.unmount();
    all_deleted(&server, &root, &ids);
    let log = server.log();
    assert_eq!(
        log.matches("storage unavailable, pausing deletions")
            .count(),
        1,
        "said once:\n{log}"
    );
    assert_eq!(log.matches("storage is usable again").count(), 1, "{log}");
}

fn a_root_renamed_and_recreated_deletes_nothing_until_it_is_put_back(backend: Backend) {
    let (_ws, server, ids) = server_with_files(backend, "renamed", 20, |_| {});
    let root = server.root();
    let moved = root.with_file_name("videos.old");
    std::fs::rename(&root, &moved).unwrap();
    std::fs::create_dir(&root).unwrap();

    record(&server, &ids);
    all_refused(
        &server,
        &ids,
        "no longer names the directory opened at start-up",
    );
    for id in &ids {
        assert!(
            moved.join(id).exists(),
            "{id} was deleted in a directory no longer at the configured path"
        );
    }

    std::fs::remove_dir(&root).unwrap();
    std::fs::rename(&moved, &root).unwrap();
    all_deleted(&server, &root, &ids);
}

const MARKER: &str = ".video-scheduler-root";

#[test]
fn with_a_marker_nothing_is_deleted_until_the_marker_is_in_the_root() {
    let (_ws, server, ids) = server_with_files(Backend::Sqlite, "marked", 10, |c| {
        c.storage[0].marker = Some(MARKER.into());
    });
    let root = server.root();
    record(&server, &ids);
    all_refused(&server, &ids, MARKER);
    assert!(ids.iter().all(|id| root.join(id).exists()));

    std::fs::write(root.join(MARKER), b"").unwrap();
    all_deleted(&server, &root, &ids);
    assert!(root.join(MARKER).exists(), "the marker itself stays");
}

#[test]
fn with_a_marker_a_shared_mount_that_arrives_after_start_becomes_the_root() {
    // The service came up before its shared mount: the empty mount point
    // has no marker, so nothing is deleted; the mount brings the marker.
    let (_ws, server, _) = server_with_files(Backend::Sqlite, "unused", 0, |c| {
        c.storage[0].marker = Some(MARKER.into());
    });
    let root = server.root();
    wait_until("not ready without the marker", || {
        server.get("/readyz").status == 503
    });
    let mount = Mount::tmpfs(&root);
    std::fs::write(mount.path().join(MARKER), b"").unwrap();
    let ids: Vec<String> = (0..10).map(|i| format!("on-mount-{i}")).collect();
    for id in &ids {
        std::fs::write(root.join(id), b"video").unwrap();
    }
    record(&server, &ids);
    all_deleted(&server, &root, &ids);
    assert!(
        server
            .log()
            .contains("now names another directory, which holds the marker"),
        "{}",
        server.log()
    );
    // The server holds the mounted root open: stop it first.
    server.kill9();
    mount.unmount();
}

#[test]
fn recursive_removal_never_crosses_into_a_mount_inside_the_root() {
    let (ws, server, _) = server_with_files(Backend::Sqlite, "unused", 0, |c| {
        c.storage[0].paths = vec!["hls/{id}/".into()];
    });
    let root = server.root();
    let outside = ws.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("deeper")).unwrap();
    std::fs::write(outside.join("segment.ts"), b"outside").unwrap();
    std::fs::write(outside.join("deeper/more.ts"), b"outside").unwrap();

    // A bind mount below the id's directory, and one on the directory itself.
    let below: PathBuf = root.join("hls/bound-below/sub");
    std::fs::create_dir_all(&below).unwrap();
    std::fs::write(root.join("hls/bound-below/index.m3u8"), b"").unwrap();
    let at = root.join("hls/bound-at");
    std::fs::create_dir_all(&at).unwrap();
    let mounts = [Mount::bind(&outside, &below), Mount::bind(&outside, &at)];
    // A plain directory next to them is removed as usual.
    std::fs::create_dir_all(root.join("hls/plain/seg")).unwrap();
    std::fs::write(root.join("hls/plain/seg/0001.ts"), b"").unwrap();

    for id in ["bound-below", "bound-at", "plain"] {
        assert_eq!(
            server.get(&format!("/video-delete-record/{id}")).status,
            200
        );
    }
    wait_until("the plain directory is removed", || {
        !root.join("hls/plain").exists()
    });
    for id in ["bound-below", "bound-at"] {
        wait_until("the request fails for good", || {
            server.get(&format!("/v1/deletions/{id}")).json()["state"] == "failed"
        });
        let row = server.get(&format!("/v1/deletions/{id}")).json();
        let error = row["last_error"].as_str().unwrap();
        assert!(error.starts_with(&format!("hls/{id}: ")), "{error}");
        assert!(
            error.contains("is a mount point; not crossing into another file system"),
            "{error}"
        );
    }
    assert_eq!(
        std::fs::read(outside.join("segment.ts")).unwrap(),
        b"outside"
    );
    assert_eq!(
        std::fs::read(outside.join("deeper/more.ts")).unwrap(),
        b"outside"
    );

    // Unmounted, the directories are the scheduler's again.
    drop(mounts);
    for id in ["bound-below", "bound-at"] {
        let retried = server.post(&format!("/v1/deletions/{id}/retry"), json!({}));
        assert_eq!(retried.status, 200, "{}", retried.body);
    }
    wait_until("the directories are removed after the retry", || {
        !root.join("hls/bound-below").exists() && !root.join("hls/bound-at").exists()
    });
    assert_eq!(
        std::fs::read(outside.join("segment.ts")).unwrap(),
        b"outside"
    );
}
