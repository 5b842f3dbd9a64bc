//! Crash safety with the real binary: kill -9 at random moments, SIGTERM in
//! the middle of a drain, and acknowledged requests across a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::process::{write_config, ServerProcess};
use crate::common::{now_ms, row_count, wait_until, workspace, Backend};
use serde_json::json;
use video_scheduler::config::Config;
use video_scheduler::db::queries::{self, record::RecordRequest};
use video_scheduler::db::Db;
use video_scheduler::video_id::VideoId;

backend_tests!(
    kill_9_at_random_moments_while_draining_loses_nothing_and_touches_nothing_outside,
    every_acknowledged_request_survives_kill_9,
    sigterm_in_the_middle_of_a_drain_exits_0_and_leaves_no_lease,
);

pub fn crash_config(config: &mut Config) {
    config.lease_secs = 2;
    config.tick_ms = 50;
    config.batch_size = 250;
    config.executors = 2;
}

pub fn queue(db: &Db, ids: &[String]) {
    let ids: Vec<VideoId> = ids.iter().map(|id| VideoId::parse(id).unwrap()).collect();
    let now = now_ms();
    let requests = [RecordRequest {
        ids,
        not_before: now,
        counted: false,
        source: video_scheduler::db::models::Source::Cli,
        request_id: None,
        paths: Vec::new(),
        urgent: Vec::new(),
    }];
    db.write(|c| queries::record::record_many(c, &requests, now))
        .unwrap();
}

/// Every file under `dir`, with its content, following no symlink.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = path.symlink_metadata().unwrap();
        if meta.is_dir() {
            files.extend(snapshot(&path));
        } else if meta.is_file() {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// Every id in the table, page by page.
pub fn all_ids(db: &Db) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = db
            .read(|c| queries::manage::list(c, None, after.as_deref(), 1000))
            .unwrap();
        ids.extend(page.iter().map(|d| d.id.clone()));
        match page.last() {
            Some(last) if page.len() == 1000 => after = Some(last.id.clone()),
            _ => return ids,
        }
    }
}

/// Starts `n` instances on the same database and storage.
pub fn start_instances(config: &Config, dir: &Path, n: usize) -> Vec<ServerProcess> {
    (0..n)
        .map(|i| {
            ServerProcess::start(
                config,
                &write_config(config, dir, &format!("conf-{i}.json")),
            )
        })
        .collect()
}

fn kill_9_at_random_moments_while_draining_loses_nothing_and_touches_nothing_outside(
    backend: Backend,
) {
    let (ws, mut config) = workspace(backend);
    crash_config(&mut config);
    let instances = if backend == Backend::Sqlite { 1 } else { 2 };
    let root = config.storage[0].root.clone();
    std::fs::create_dir_all(&root).unwrap();
    let outside = ws.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();

    let mut ids: Vec<String> = (0..20_000).map(|i| format!("crash-{i:05}")).collect();
    for id in &ids {
        std::fs::write(root.join(id), b"").unwrap();
    }
    // Ids whose path is a symlink to a file outside the root: the link goes,
    // the file stays.
    for i in 0..50 {
        let target = outside.join(format!("precious-{i}"));
        std::fs::write(&target, format!("keep {i}")).unwrap();
        let id = format!("link-{i}");
        std::os::unix::fs::symlink(&target, root.join(&id)).unwrap();
        ids.push(id);
    }
    let before = snapshot(&outside);
    let db = Db::connect(&config.database_url, 2).unwrap();
    db.migrate().unwrap();
    queue(&db, &ids);

    for round in 0..10 {
        let servers = start_instances(&config, ws.dir.path(), instances);
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..250)));
        for server in servers {
            server.kill9();
        }
        eprintln!(
            "{backend:?}: after kill {}: {} rows left",
            round + 1,
            row_count(&db)
        );
    }

    let _servers = start_instances(&config, ws.dir.path(), instances);
    wait_until("the restarted instances finish the work", || {
        row_count(&db) == 0
    });
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.is_empty(),
        "{} paths left under the root, e.g. {:?}",
        left.len(),
        left.first()
    );
    assert_eq!(
        snapshot(&outside),
        before,
        "nothing outside the root changed"
    );
}

fn every_acknowledged_request_survives_kill_9(backend: Backend) {
    let (ws, mut config) = workspace(backend);
    crash_config(&mut config);
    let root = config.storage[0].root.clone();
    std::fs::create_dir_all(&root).unwrap();
    let config_file = write_config(&config, ws.dir.path(), "conf.json");
    let db = Db::connect(&config.database_url, 2).unwrap();

    for round in 0..3 {
        let server = ServerProcess::start(&config, &config_file);
        let client = (*server).clone();
        let stop = AtomicBool::new(false);
        // Delayed batches (never deleted during the test) and seed-route ids
        // with files (deleted at once).
        let (delayed, seeded): (Vec<Vec<String>>, Vec<Vec<String>>) = std::thread::scope(|s| {
            let batchers: Vec<_> = (0..3)
                .map(|t| {
                    let (client, stop) = (&client, &stop);
                    s.spawn(move || {
                        let mut acked = Vec::new();
                        for n in 0.. {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let ids: Vec<String> =
                                (0..20).map(|i| format!("d{round}-{t}-{n}-{i}")).collect();
                            match client.try_post(
                                "/v1/deletions",
                                json!({ "ids": ids, "delay_secs": 3600 }),
                            ) {
                                Ok(reply) if reply.status == 202 => acked.extend(ids),
                                _ => break,
                            }
                        }
                        acked
                    })
                })
                .collect();
            let seeders: Vec<_> = (0..2)
                .map(|t| {
                    let (client, stop, root) = (&client, &stop, &root);
                    s.spawn(move || {
                        let mut acked = Vec::new();
                        for n in 0.. {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let id = format!("s{round}-{t}-{n}");
                            std::fs::write(root.join(&id), b"").unwrap();
                            match client.try_get(&format!("/video-delete-record/{id}")) {
                                Ok(reply) if reply.status == 200 => acked.push(id),
                                _ => break,
                            }
                        }
                        acked
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(fastrand::u64(300..800)));
            server.kill9();
            stop.store(true, Ordering::Relaxed);
            (
                batchers.into_iter().map(|h| h.join().unwrap()).collect(),
                seeders.into_iter().map(|h| h.join().unwrap()).collect(),
            )
        });
        let delayed: Vec<String> = delayed.into_iter().flatten().collect();
        let seeded: Vec<String> = seeded.into_iter().flatten().collect();
        assert!(
            !delayed.is_empty() && !seeded.is_empty(),
            "the clients got answers before the kill"
        );

        // Restart (runs the migrations and recovery), then check.
        let server = ServerProcess::start(&config, &config_file);
        for id in &delayed {
            assert!(
                db.read(|c| queries::manage::get(c, id)).unwrap().is_some(),
                "acknowledged {id} was lost"
            );
        }
        for id in &seeded {
            let queued = db.read(|c| queries::manage::get(c, id)).unwrap().is_some();
            assert!(
                queued || !root.join(id).exists(),
                "acknowledged {id} was lost"
            );
        }
        eprintln!(
            "{backend:?} round {round}: {} + {} acknowledged ids all kept",
            delayed.len(),
            seeded.len()
        );
        server.kill9();
    }
}

fn sigterm_in_the_middle_of_a_drain_exits_0_and_leaves_no_lease(backend: Backend) {
    stop_in_the_middle_of_a_drain(backend, Signal::Term);
}

#[test]
fn sigint_in_the_middle_of_a_drain_is_as_graceful_as_sigterm() {
    stop_in_the_middle_of_a_drain(Backend::Sqlite, Signal::Int);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Term,
    Int,
}

/// Signals the server while it drains 20,000 ids, then checks the graceful
/// path: exit 0, the log says so, every batch in flight at the signal was
/// acked (rows left are exactly the files left) or its lease released (no
/// row is left running), and a restart finishes the work at once.
fn stop_in_the_middle_of_a_drain(backend: Backend, signal: Signal) {
    let (ws, mut config) = workspace(backend);
    crash_config(&mut config);
    config.lease_secs = 600;
    let root = config.storage[0].root.clone();
    std::fs::create_dir_all(&root).unwrap();
    let ids: Vec<String> = (0..20_000).map(|i| format!("term-{i:05}")).collect();
    for id in &ids {
        std::fs::write(root.join(id), b"").unwrap();
    }
    let db = Db::connect(&config.database_url, 2).unwrap();
    db.migrate().unwrap();
    queue(&db, &ids);

    let config_file = write_config(&config, ws.dir.path(), "conf.json");
    let server = ServerProcess::start(&config, &config_file);
    wait_until("the drain has started", || row_count(&db) < 20_000);
    let (status, log) = match signal {
        Signal::Term => server.terminate(),
        Signal::Int => server.interrupt(),
    };
    assert!(status.success(), "exit status {status:?}:\n{log}");

    let name = match signal {
        Signal::Term => "SIGTERM",
        Signal::Int => "SIGINT",
    };
    let after_signal = log
        .split_once(&format!("{name} received; shutting down gracefully"))
        .unwrap_or_else(|| panic!("the graceful path is logged:\n{log}"))
        .1;
    assert!(
        after_signal.contains("HTTP server stopped; waiting for in-flight batches")
            && after_signal.trim_end().ends_with("shut down"),
        "{after_signal}"
    );
    assert!(
        after_signal.contains("batch of") || after_signal.contains("released"),
        "a batch was in flight at the signal and was acked or released:\n{after_signal}"
    );
    let stats = db.read(|c| queries::counts::stats(c, now_ms())).unwrap();
    assert_eq!(stats.running, 0, "a lease outlived a graceful shutdown");
    // Every finished batch was acked: the rows left are exactly the files left.
    let left_rows = all_ids(&db);
    let left_files: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left_rows, left_files);
    eprintln!("{backend:?}: {} left after {name}", left_rows.len());

    // A restart finishes the work with no lease to wait for.
    let _server = ServerProcess::start(&config, &config_file);
    wait_until("the restarted instance finishes the work", || {
        row_count(&db) == 0
    });
}
