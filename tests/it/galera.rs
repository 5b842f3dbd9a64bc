//! A real 3-node MariaDB Galera cluster (issue #28), each test's own
//! ([`Galera`]: galera-4, rsync state transfers, loopback ports), with the
//! real service on it, one instance per node:
//!
//! - Three instances drain 5,000 ids: every file deleted, one receipt per
//!   id, no id deleted twice (no deletion found its file missing), no
//!   outage logged. Galera's certification conflicts show on the
//!   `video_scheduler_db_conflicts_total` counters (printed).
//! - A node cut off from the others (`gmcast.isolate=1`: a commit in
//!   flight fails with 1180, then every statement with 1047) is an outage
//!   for the instance on it: records answer 503 with Retry-After, never
//!   500, from the one in flight at the cut on; `/readyz` answers 503
//!   naming the Galera node;
//!   the outage is logged once. Healed, records are taken again by
//!   themselves; an instance on another node took records all along.
//! - Reads follow writes across nodes: 500 records through an instance on
//!   node 1, each read at once through an instance on node 2, never a 404
//!   (the service sets `wsrep_sync_wait` on Galera sessions).
//! - `kill -9` of a node mid-drain: the instance on it sees an outage, the
//!   others go on; the node restarted rejoins by IST, and nothing is lost.
//!
//! Instances whose log is checked run as child processes (the real
//! binary, [`ServerProcess`]): an in-process server logs through the test
//! binary's one logger, which every test running meanwhile shares.
//! Ignored by a plain `cargo test` (they need galera-4 and rsync);
//! `.ci/run` runs them (`--include-ignored galera::`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use crate::common::galera::Galera;
use crate::common::process::{write_config, ServerProcess};
use crate::common::{start_in, start_more, wait_until, workspace_at, Backend, Workspace};
use diesel::{Connection, QueryDsl, RunQueryDsl};
use serde_json::json;
use video_scheduler::config::Config;

/// The database the service runs on, in each test's own cluster.
const DB: &str = "scheduler";

/// The line that starts an outage, from the module that owns outages.
const OUTAGE_STARTS: &str = "db::outage] database unavailable: ";

/// One receipt: id, files deleted, files found missing, completions.
type Receipt = (String, i32, i32, i32);

#[test]
#[ignore = "needs a Galera cluster (Debian: galera-4, rsync); .ci/run runs it"]
fn three_instances_one_per_node_drain_5000_ids_each_deleted_once_without_an_outage() {
    let cluster = Galera::start(3);
    cluster.create_database(DB);
    let (ws, base) = drain_workspace(&cluster);
    let instances = start_instances(&cluster, &ws, &base);
    let ids = ids("drain", 5_000);
    create_files(&base.storage[0].root, &ids);
    record_spread(&instances, &ids);

    wait_until("every row is gone", || instances[0].row_count() == 0);
    assert_eq!(files_left(&base.storage[0].root), 0, "files left behind");
    let receipts = receipts(&cluster.url(2, DB));
    check_receipts(&receipts, &ids);
    let missing = receipts.iter().filter(|r| r.2 != 0).count();
    assert_eq!(missing, 0, "no id deleted twice (found missing)");
    let deleted: Vec<f64> = instances.iter().map(|i| deletions(i, "deleted")).collect();
    eprintln!("galera: deleted per instance {deleted:?}");
    assert_eq!(
        deleted.iter().sum::<f64>(),
        5_000.0,
        "every id deleted once"
    );
    assert_eq!(sum(&instances, |i| deletions(i, "missing")), 0.0);
    print_conflicts(&instances);
    for instance in &instances {
        assert_eq!(instance.metric("video_scheduler_galera_cluster_size"), 3.0);
        assert_eq!(instance.metric("video_scheduler_galera_ready"), 1.0);
        let replication = instance.get("/v1/stats").json()["replication"].clone();
        assert_eq!(
            replication,
            json!({ "kind": "galera", "cluster_size": 3, "primary": true, "state": "Synced" })
        );
    }
    for (n, instance) in instances.iter().enumerate() {
        let log = instance.log();
        assert!(
            !log.contains("database unavailable"),
            "instance on node {}:\n{log}",
            n + 1
        );
    }
}

#[test]
#[ignore = "needs a Galera cluster (Debian: galera-4, rsync); .ci/run runs it"]
fn a_node_cut_off_from_the_cluster_is_a_503_with_retry_after_and_one_logged_outage() {
    let mut cluster = Galera::start(3);
    cluster.create_database(DB);
    let (ws, mut base) = workspace_at(Backend::Mysql, &cluster.url(1, DB));
    base.tick_ms = 50;
    let on = |n| on_node(&cluster, n, &base);
    let first = spawn(&ws, &on(1), "node1");
    let cut = spawn(&ws, &on(3), "node3");
    assert_eq!(cut.record(&["before"], json!({})).status, 202);

    // A client records on node 3 all along, from before the cut: what
    // answers while the node drops out of the cluster.
    let (isolated, first_503) = std::thread::scope(|s| {
        let client = s.spawn(|| record_until_refused(&cut));
        let isolated = Instant::now();
        cluster.isolate(3);
        eprintln!(
            "galera: node 3 out of the view {:?} after gmcast.isolate=1",
            isolated.elapsed()
        );
        (
            isolated,
            client
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    eprintln!(
        "galera: isolate to the first 503 {:?}",
        first_503 - isolated
    );
    assert_eq!(cluster.status(3, "wsrep_ready").as_deref(), Some("OFF"));
    refused_while_cut_off(&cut);
    first.record_now(&["elsewhere"]);
    let ready = cut.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body.contains("Galera"),
        "names the Galera node: {}",
        ready.body
    );

    let healing = Instant::now();
    cluster.heal(3);
    eprintln!(
        "galera: node 3 Synced again {:?} after gmcast.isolate=0",
        healing.elapsed()
    );
    wait_until("records are taken again on node 3", || {
        record_status(&cut, "after") == 202
    });
    eprintln!("galera: heal to the first 2xx {:?}", healing.elapsed());
    assert_eq!(cut.get("/v1/deletions/elsewhere").status, 200);
    wait_until("/readyz is 200 again", || cut.get("/readyz").status == 200);
    let log = cut.log();
    assert_eq!(log.matches(OUTAGE_STARTS).count(), 1, "logged once:\n{log}");
    assert_eq!(log.matches("database is back").count(), 1, "{log}");
    assert!(
        !first.log().contains("database unavailable"),
        "{}",
        first.log()
    );
}

/// Records one id at a time on `app` until five in a row answered 503;
/// returns when the first of them did. Every answer is a 202 or a 503
/// with Retry-After (see [`record_status`]).
fn record_until_refused(app: &ServerProcess) -> Instant {
    let (mut refused, mut first) = (0, Instant::now());
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let start = Instant::now();
    for n in 0.. {
        let status = record_status(app, &format!("transition-{n}"));
        *by_status.entry(status).or_default() += 1;
        match status {
            503 if refused == 0 => (refused, first) = (1, Instant::now()),
            503 => refused += 1,
            _ => refused = 0,
        }
        if refused == 5 {
            break;
        }
        assert!(start.elapsed() < crate::common::DEADLINE, "{by_status:?}");
    }
    eprintln!("galera: records while node 3 is cut off, by status {by_status:?}");
    first
}

/// While its node is cut off, every record on `cut` (the batch route and
/// the seed route) answers 503 with Retry-After.
fn refused_while_cut_off(cut: &ServerProcess) {
    for i in 0..20 {
        let batch = cut.record(&[&format!("during-{i}")], json!({}));
        assert_eq!(batch.status, 503, "{}", batch.body);
        assert_eq!(batch.json()["code"], "unavailable", "{}", batch.body);
        assert!(batch.retry_after.is_some(), "{batch:?}");
        let seed = cut.get(&format!("/video-delete-record/seed-{i}"));
        assert_eq!(seed.status, 503, "{}", seed.body);
        assert_eq!(seed.retry_after.as_deref(), Some("1"), "{seed:?}");
    }
}

/// `POST /v1/deletions` of `id`: its status, which must be a 202 or a 503
/// with Retry-After (never a 500).
fn record_status(app: &ServerProcess, id: &str) -> u16 {
    let reply = app.record(&[id], json!({}));
    match reply.status {
        202 => {}
        503 => assert!(reply.retry_after.is_some(), "{reply:?}"),
        _ => panic!(
            "a record answered {}: {}\nthe server's warnings and errors:\n{}",
            reply.status,
            reply.body,
            warnings(&app.log())
        ),
    }
    reply.status
}

/// The lines of `log` at warning or error level.
fn warnings(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    lines.join("\n")
}

#[test]
#[ignore = "needs a Galera cluster (Debian: galera-4, rsync); .ci/run runs it"]
fn a_record_through_node_1_is_read_at_once_through_node_2() {
    let cluster = Galera::start(3);
    cluster.create_database(DB);
    let (ws, config) = workspace_at(Backend::Mysql, &cluster.url(1, DB));
    let writer = start_in(ws, config);
    let reader = start_more(&writer, |c| c.database_url = cluster.url(2, DB));
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut not_found = Vec::new();
    for id in ids("causal", 500) {
        // Delayed: nothing claims or deletes it meanwhile.
        let reply = writer.record(&[&id], json!({ "delay_secs": 3600 }));
        assert_eq!(reply.status, 202, "{}", reply.body);
        let read = reader.get(&format!("/v1/deletions/{id}"));
        *by_status.entry(read.status).or_default() += 1;
        if read.status != 200 {
            not_found.push(format!("{id}: {} {}", read.status, read.body));
        }
    }
    eprintln!("galera: reads on node 2 right after a record on node 1, by status {by_status:?}");
    assert!(
        not_found.is_empty(),
        "{} of 500 records not seen at once on another node, e.g. {:#?}",
        not_found.len(),
        &not_found[..not_found.len().min(5)]
    );
}

#[test]
#[ignore = "needs a Galera cluster (Debian: galera-4, rsync); .ci/run runs it"]
fn a_node_killed_mid_drain_rejoins_by_ist_and_nothing_is_lost() {
    let mut cluster = Galera::start(3);
    cluster.create_database(DB);
    let (ws, mut base) = drain_workspace(&cluster);
    // About 6 s for the whole drain: the kill, the restart and the IST
    // all happen while it runs.
    base.max_deletions_per_sec = 400;
    let instances = start_instances(&cluster, &ws, &base);
    let ids = ids("kill", 5_000);
    create_files(&base.storage[0].root, &ids);
    record_spread(&instances, &ids);
    wait_until("the drain is under way", || {
        sum(&instances, erased) >= 1_000.0
    });

    eprintln!(
        "galera: kill -9 of node 3 after {} deletions",
        sum(&instances, erased)
    );
    cluster.kill9(3);
    let orphaned = &instances[2];
    wait_until("the instance on node 3 is unready", || {
        orphaned.get("/readyz").status == 503
    });
    let before = sum(&instances[..2], erased);
    wait_until("the others go on", || {
        sum(&instances[..2], erased) >= before + 500.0
    });
    let took = cluster.restart(3);
    eprintln!("galera: node 3 restarted and Synced by IST in {took:?}");
    wait_until("the instance on node 3 is ready again", || {
        orphaned.get("/readyz").status == 200
    });
    wait_until("every row is gone", || instances[0].row_count() == 0);

    assert_eq!(files_left(&base.storage[0].root), 0, "files left behind");
    for n in [1, 3] {
        check_receipts(&receipts(&cluster.url(n, DB)), &ids);
    }
    let missing = sum(&instances, |i| deletions(i, "missing"));
    eprintln!("galera: {missing} deletions found their file missing (redone after a lost ack)");
    print_conflicts(&instances);
    let log = orphaned.log();
    assert_eq!(log.matches(OUTAGE_STARTS).count(), 1, "{log}");
    assert_eq!(log.matches("database is back").count(), 1, "{log}");
}

/// A workspace whose database is on node 1, tuned for a drain: small
/// batches, so that the instances share the work; a short lease, so that
/// what a cut-off instance held comes back within the test.
fn drain_workspace(cluster: &Galera) -> (Workspace, Config) {
    let (ws, mut config) = workspace_at(Backend::Mysql, &cluster.url(1, DB));
    config.batch_size = 100;
    config.executors = 2;
    config.tick_ms = 50;
    config.lease_secs = 5;
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    (ws, config)
}

/// `base` on node `n`.
fn on_node(cluster: &Galera, n: usize, base: &Config) -> Config {
    let mut config = base.clone();
    config.database_url = cluster.url(n, DB);
    config
}

/// The binary with `config`, its config file named after `name`.
fn spawn(ws: &Workspace, config: &Config, name: &str) -> ServerProcess {
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let file = write_config(config, ws.dir.path(), &format!("{name}.json"));
    ServerProcess::start(config, &file)
}

/// One instance per node, node 1's first: it migrates the new database,
/// and the others find it migrated (concurrent migrations are not what
/// these tests are about).
fn start_instances(cluster: &Galera, ws: &Workspace, base: &Config) -> Vec<ServerProcess> {
    (1..=3)
        .map(|n| spawn(ws, &on_node(cluster, n, base), &format!("node{n}")))
        .collect()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

fn create_files(root: &Path, ids: &[String]) {
    for id in ids {
        std::fs::write(root.join(id), b"video bytes").unwrap();
    }
}

fn files_left(root: &Path) -> usize {
    std::fs::read_dir(root).unwrap().count()
}

/// Records `ids`, due in a moment, a third through each instance, all at
/// once, 500 a request.
fn record_spread(instances: &[ServerProcess], ids: &[String]) {
    let at = chrono::DateTime::from_timestamp_millis(crate::common::now_ms() + 500)
        .unwrap()
        .to_rfc3339();
    let third = ids.len().div_ceil(instances.len());
    std::thread::scope(|s| {
        for (part, instance) in ids.chunks(third).zip(instances) {
            let at = at.clone();
            s.spawn(move || {
                for chunk in part.chunks(500) {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    let reply = instance.record(&refs, json!({ "not_before": at }));
                    assert_eq!(reply.status, 202, "{}", reply.body);
                    assert_eq!(reply.json()["accepted"], chunk.len(), "{}", reply.body);
                }
            });
        }
    });
}

/// `video_scheduler_deletions_total{outcome=...}` of one instance.
fn deletions(instance: &ServerProcess, outcome: &str) -> f64 {
    instance.metric(&format!(
        "video_scheduler_deletions_total{{outcome=\"{outcome}\"}}"
    ))
}

/// Files deleted or found missing by one instance.
fn erased(instance: &ServerProcess) -> f64 {
    deletions(instance, "deleted") + deletions(instance, "missing")
}

fn sum(instances: &[ServerProcess], f: impl Fn(&ServerProcess) -> f64) -> f64 {
    instances.iter().map(f).sum()
}

/// Prints the conflicts (deadlocks, certification failures) each
/// statement met and ran again, over all instances.
fn print_conflicts(instances: &[ServerProcess]) {
    let conflicts: Vec<String> = ["claim", "ack", "record"]
        .iter()
        .map(|statement| {
            let name = format!("video_scheduler_db_conflicts_total{{statement=\"{statement}\"}}");
            format!("{statement} {}", sum(instances, |i| i.metric(&name)))
        })
        .collect();
    eprintln!("galera: conflicts run again: {}", conflicts.join(", "));
}

/// Every receipt on the node at `url`, once it has applied every write
/// the cluster committed (`wsrep_sync_wait`).
fn receipts(url: &str) -> Vec<Receipt> {
    use diesel::connection::SimpleConnection;
    use video_scheduler::db::schema::video_del_receipt::dsl::*;
    let mut conn = diesel::MysqlConnection::establish(url).unwrap();
    conn.batch_execute("SET SESSION wsrep_sync_wait = 1")
        .unwrap();
    video_del_receipt
        .select((id, deleted, missing, completions))
        .load(&mut conn)
        .unwrap()
}

/// One receipt per id and none other, each for one completion that
/// deleted the file or found it gone.
fn check_receipts(receipts: &[Receipt], ids: &[String]) {
    let have: HashSet<&str> = receipts.iter().map(|r| r.0.as_str()).collect();
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| !have.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} ids have no receipt, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(receipts.len(), ids.len(), "a receipt per id, none other");
    let odd: Vec<&Receipt> = receipts
        .iter()
        .filter(|r| r.1 + r.2 != 1 || r.3 != 1)
        .collect();
    assert!(
        odd.is_empty(),
        "{} receipts not of one completion, e.g. {:?}",
        odd.len(),
        &odd[..odd.len().min(10)]
    );
}
