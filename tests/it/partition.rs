//! Partitions between the instances and the database (MariaDB,
//! PostgreSQL): a TCP proxy per instance that holds, forwarding nothing and
//! closing nothing and leaving new connections waiting, as a blackholed
//! network does, then heals. Records get an answer (2xx or 503 with
//! `Retry-After`) within `record_timeout_ms` and a margin throughout, every
//! 2xx is kept, and the work finishes once the network heals; an instance
//! cut off alone notices and says so, and the other takes its rows over.
//! The times from healing to the first 2xx record and the first deletion
//! are printed (BENCHMARKS.md), not asserted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::process::{write_config, ServerProcess};
use crate::common::proxy::{through, Proxy};
use crate::common::{wait_until, workspace, Backend, Workspace};
use diesel::prelude::*;
use serde_json::json;
use video_scheduler::config::Config;
use video_scheduler::db::schema::video_del_receipt::dsl as r;
use video_scheduler::db::Db;

/// How much longer than `record_timeout_ms` a record may take to answer.
const MARGIN: Duration = Duration::from_secs(3);

#[cfg(feature = "postgres")]
#[test]
#[ignore = "a 20 s partition; .ci/run runs it"]
fn postgres_through_a_20_s_partition_every_record_is_answered_and_none_lost() {
    every_instance_cut_off(Backend::Postgres, Duration::from_secs(20));
}

#[cfg(feature = "mysql")]
#[test]
#[ignore = "a 20 s partition; .ci/run runs it"]
fn mysql_through_a_20_s_partition_every_record_is_answered_and_none_lost() {
    every_instance_cut_off(Backend::Mysql, Duration::from_secs(20));
}

#[cfg(feature = "postgres")]
#[test]
#[ignore = "a 90 s partition; .ci/run runs it"]
fn postgres_through_a_90_s_partition_every_record_is_answered_and_none_lost() {
    every_instance_cut_off(Backend::Postgres, Duration::from_secs(90));
}

#[cfg(feature = "postgres")]
#[test]
#[ignore = "a partition past the lease; .ci/run runs it"]
fn postgres_an_instance_cut_off_alone_notices_and_the_other_takes_its_rows_over() {
    one_instance_cut_off(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
#[ignore = "a partition past the lease; .ci/run runs it"]
fn mysql_an_instance_cut_off_alone_notices_and_the_other_takes_its_rows_over() {
    one_instance_cut_off(Backend::Mysql);
}

/// The settings of every instance here: short ticks and leases, records
/// bounded by 1 s, a slow drain so that work is under way when the
/// network goes.
pub(crate) fn tuned(backend: Backend) -> (Workspace, Config) {
    let (ws, mut config) = workspace(backend);
    config.tick_ms = 50;
    config.lease_secs = 8;
    config.record_timeout_ms = 1000;
    config.batch_size = 20;
    config.executors = 2;
    config.max_deletions_per_sec = 100;
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    (ws, config)
}

/// An instance on `config`'s database, behind a proxy of its own when
/// `proxied`.
pub(crate) fn instance(
    ws: &Workspace,
    config: &Config,
    name: &str,
    proxied: bool,
) -> (ServerProcess, Option<Proxy>) {
    let mut config = config.clone();
    let proxy = proxied.then(|| {
        let (url, target) = through(&config.database_url, "127.0.0.1:1".parse().unwrap());
        let proxy = Proxy::start(target);
        config.database_url = through(&url, proxy.addr).0;
        proxy
    });
    let file = write_config(&config, ws.dir.path(), &format!("{name}.json"));
    (ServerProcess::start(&config, &file), proxy)
}

/// `n` ids with a file each under `root`, recorded through `server`.
pub(crate) fn drain(server: &ServerProcess, root: &Path, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("drain-{i:05}")).collect();
    for id in &ids {
        std::fs::write(root.join(id), b"x").unwrap();
    }
    for part in ids.chunks(1000) {
        let refs: Vec<&str> = part.iter().map(String::as_str).collect();
        assert_eq!(server.record(&refs, json!({})).status, 202);
    }
    ids
}

/// One record's answer.
struct Answer {
    id: String,
    status: u16,
    at: Instant,
}

/// Records new ids (a file each) one at a time, in turn through
/// `servers`, until `stop`: each must be answered, 2xx or 503 with
/// `Retry-After`, within `within`.
fn record_until(
    servers: &[&ServerProcess],
    root: &Path,
    within: Duration,
    stop: &AtomicBool,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n = answers.len();
        let id = format!("rec-{n:05}");
        std::fs::write(root.join(&id), b"x").unwrap();
        let url = servers[n % servers.len()].url("/v1/deletions");
        let reply = ureq::post(&url)
            .timeout(within)
            .send_json(json!({ "ids": [&id] }));
        let status = match reply {
            Ok(reply) => reply.status(),
            Err(ureq::Error::Status(503, reply)) => {
                assert!(
                    reply.header("Retry-After").is_some(),
                    "{id}: 503 without Retry-After"
                );
                503
            }
            Err(e) => panic!("record {id}: no 2xx or 503 within {within:?}: {e}"),
        };
        assert!(status == 202 || status == 503, "{id}: {status}");
        answers.push(Answer {
            id,
            status,
            at: Instant::now(),
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    answers
}

/// Deletions done by `servers` so far (files found and removed, or found
/// missing), from their metrics.
pub(crate) fn deletions(servers: &[&ServerProcess]) -> f64 {
    let outcome = |s: &ServerProcess, o: &str| {
        s.metric(&format!(
            "video_scheduler_deletions_total{{outcome=\"{o}\"}}"
        ))
    };
    servers
        .iter()
        .map(|s| outcome(s, "deleted") + outcome(s, "missing"))
        .sum()
}

/// `server`'s `/readyz` answers 503 within `within`.
pub(crate) fn unready_within(server: &ServerProcess, within: Duration) {
    let ready = ureq::get(&server.url("/readyz")).timeout(within).call();
    assert!(
        matches!(ready, Err(ureq::Error::Status(503, _))),
        "{ready:?}"
    );
}

/// Waits until the other instance finished every row (the cut-off one's
/// too); the database, for what follows.
pub(crate) fn all_done(ws: &Workspace) -> Db {
    let db = Db::connect(&ws.db.url, 1).unwrap();
    wait_until("B finished every row, A's too", || {
        crate::common::row_count(&db) == 0
    });
    db
}

/// Every receipt: id to (deleted, missing, claims).
fn receipts(db: &Db) -> HashMap<String, (i32, i32, i32)> {
    db.read(|c| {
        r::video_del_receipt
            .select((r::id, r::deleted, r::missing, r::claims))
            .load::<(String, i32, i32, i32)>(c)
    })
    .unwrap()
    .into_iter()
    .map(|(id, deleted, missing, claims)| (id, (deleted, missing, claims)))
    .collect()
}

/// Both instances lose the database for `length` while records come in
/// throughout and a drain is under way; then the network heals.
fn every_instance_cut_off(backend: Backend, length: Duration) {
    let (ws, config) = tuned(backend);
    let root = config.storage[0].root.clone();
    let (a, proxy_a) = instance(&ws, &config, "a", true);
    let (b, proxy_b) = instance(&ws, &config, "b", true);
    let proxies = [proxy_a.unwrap(), proxy_b.unwrap()];
    let drained = drain(&a, &root, 2000);
    let within = Duration::from_millis(config.record_timeout_ms) + MARGIN;
    let stop = AtomicBool::new(false);
    let (answers, healed) = std::thread::scope(|s| {
        let recorder = s.spawn(|| record_until(&[&a, &b], &root, within, &stop));
        std::thread::sleep(Duration::from_secs(2));
        proxies.iter().for_each(Proxy::hold);
        std::thread::sleep(length);
        let before = deletions(&[&a, &b]);
        proxies.iter().for_each(Proxy::restore);
        let healed = Instant::now();
        wait_until("a deletion after healing", || deletions(&[&a, &b]) > before);
        eprintln!(
            "partition {length:?} ({backend:?}): first deletion {:?} after healing",
            healed.elapsed()
        );
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        (recorder.join().unwrap(), healed)
    });
    let first_2xx = answers.iter().find(|x| x.at > healed && x.status == 202);
    let first_2xx = first_2xx.expect("records are taken after healing");
    eprintln!(
        "partition {length:?} ({backend:?}): first 2xx record {:?} after healing; {} records, {} answered 503",
        first_2xx.at - healed,
        answers.len(),
        answers.iter().filter(|x| x.status == 503).count()
    );
    let db = Db::connect(&ws.db.url, 1).unwrap();
    wait_until("every row is done", || crate::common::row_count(&db) == 0);
    let receipts = receipts(&db);
    for id in &drained {
        assert!(receipts.contains_key(id), "{id} has no receipt");
    }
    for answer in &answers {
        // A 503 may still have committed: then it is done like a 2xx.
        let done = receipts.contains_key(&answer.id);
        assert!(done || answer.status == 503, "{}: a 2xx lost", answer.id);
        assert_eq!(root.join(&answer.id).exists(), !done, "{}", answer.id);
    }
    assert!(
        drained.iter().all(|id| !root.join(id).exists()),
        "drain files left"
    );
}

/// Instance A loses the database for three leases while both drain; B
/// still reaches it. A notices (logs the outage, `/readyz` 503 within a
/// second), B finishes everything, A's rows included, and once A is back
/// nothing is done twice: one receipt per id, every file gone.
fn one_instance_cut_off(backend: Backend) {
    let (ws, config) = tuned(backend);
    let root = config.storage[0].root.clone();
    let (a, proxy) = instance(&ws, &config, "a", true);
    let (b, _) = instance(&ws, &config, "b", false);
    let proxy = proxy.unwrap();
    let ids = drain(&b, &root, 1500);
    wait_until("A is deleting", || deletions(&[&a]) > 0.0);

    proxy.hold();
    let cut = Instant::now();
    wait_until("A logs the outage", || {
        a.log().contains("database unavailable")
    });
    eprintln!(
        "partition ({backend:?}): A logged the outage {:?} after the cut",
        cut.elapsed()
    );
    unready_within(&a, Duration::from_millis(1500));
    let db = all_done(&ws);
    assert!(
        cut.elapsed() > Duration::from_secs(config.lease_secs),
        "B waited for A's leases"
    );

    proxy.restore();
    wait_until("A is back", || a.log().contains("database is back"));
    let receipts = receipts(&db);
    assert_eq!(receipts.len(), ids.len(), "one receipt per id");
    for id in &ids {
        let (deleted, missing, claims) = receipts[id];
        assert_eq!(deleted + missing, 1, "{id}");
        assert!(!root.join(id).exists(), "{id}");
        // Found missing: A deleted it and lost its lease; the receipt says
        // the request was taken over.
        assert!(
            missing == 0 || claims >= 2,
            "{id}: missing, claimed {claims} time(s)"
        );
    }
    let missing = receipts.values().filter(|(_, m, _)| *m > 0).count();
    eprintln!("partition ({backend:?}): {missing} receipts say missing (deleted by A, acked by B)");
}
