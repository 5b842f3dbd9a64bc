//! Failover of a PostgreSQL primary to its hot standby (issue #28), on a
//! real primary and standby of the test's own ([`PgCluster`]) and the real
//! service in this process:
//!
//! - With a synchronous standby and `target_session_attrs=read-write`, two
//!   instances drain 5,000 ids while a client records new ones; the primary
//!   is killed (`kill -9`) and the standby promoted. Every id that got a 2xx
//!   is on the new primary and erased, each file deleted once (no receipt
//!   or metric says `missing`), and every answer meanwhile was a 2xx or a
//!   503 with Retry-After: never a 500, never a hang. The times from the
//!   promote to the first deletion and to the first 2xx record are printed
//!   (BENCHMARKS.md).
//! - Without `target_session_attrs`, a hot standby left alone (primary
//!   dead, not yet promoted) is an outage: records answer 503 with
//!   Retry-After, `/readyz` 503 naming the read-only server, and an
//!   instance started meanwhile starts unready instead of exiting; once
//!   promoted, records and deletions work again by themselves.
//! - With its synchronous standby gone, the primary holds every commit: a
//!   record answers 503 once `record_timeout_ms` has passed, never hangs,
//!   and what it held commits once the primary stops waiting.
//!
//! Ignored by a plain `cargo test` (they need `initdb` and
//! `pg_basebackup`); `.ci/run` runs them (`--include-ignored failover::`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::pg_cluster::{PgCluster, Replication};
use crate::common::{
    start_in, start_more, try_call, wait_until, workspace_at, Backend, Reply, TestApp,
};
use diesel::{Connection, QueryDsl, RunQueryDsl};
use serde_json::json;
use video_scheduler::config::Config;

/// The database the service runs on, in each test's own cluster.
const DB: &str = "scheduler";

/// How long the recording client waits for an answer: well past
/// `record_timeout_ms` (5 s), so that only a hang runs into it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// One answer the recording client got.
struct Answer {
    id: String,
    /// How long the answer took.
    took: Duration,
    /// When the answer arrived.
    at: Instant,
    /// The answer, or why there was none (a timeout is a hang).
    outcome: Result<Reply, String>,
}

/// When the failover happened, as the test saw it.
struct Failover {
    /// How long `pg_promote()` took.
    promote: Duration,
    /// When the standby took writes.
    promoted_at: Instant,
    /// Files the instances had deleted (or found missing) by the promote.
    erased_before: f64,
}

/// Tells the recording client to stop when dropped: also when the test
/// panics, which would otherwise wait for the client forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
#[ignore = "needs a PostgreSQL primary and standby (initdb, pg_basebackup); .ci/run runs it"]
fn a_failover_to_a_synchronous_standby_loses_no_acknowledged_record_and_deletes_each_file_once() {
    let mut cluster = PgCluster::start(Replication::Synchronous);
    cluster.create_database(DB);
    let (ws, mut config) = workspace_at(Backend::Postgres, &cluster.multi_host_url(DB, true));
    tune(&mut config);
    let a = start_in(ws, config);
    let b = start_more(&a, |_| {});
    let drain: Vec<String> = (0..5_000).map(|i| format!("drain-{i:05}")).collect();
    for id in &drain {
        a.create_file(id);
    }
    for (part, app) in drain.chunks(2_500).zip([&a, &b]) {
        let part: Vec<&str> = part.iter().map(String::as_str).collect();
        let reply = app.record(&part, json!({}));
        assert_eq!(reply.status, 202, "{}", reply.body);
    }

    let answers = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let failover = std::thread::scope(|s| {
        let client = s.spawn(|| record_until(&[&a, &b], &answers, &stop));
        let stopping = StopOnDrop(&stop);
        wait_until("the drain is under way", || erased(&[&a, &b]) >= 1_000.0);
        let failover = fail_over(&mut cluster, &[&a, &b], &answers);
        wait_until("a deletion after the promote", || {
            erased(&[&a, &b]) > failover.erased_before
        });
        let first_deletion = failover.promoted_at.elapsed();
        wait_until("100 records acknowledged after the promote", || {
            acked_since(&answers.lock().unwrap(), failover.promoted_at) >= 100
        });
        drop(stopping);
        client.join().unwrap();
        eprintln!(
            "failover: pg_promote() took {:?}; promote to first deletion {first_deletion:?}",
            failover.promote
        );
        failover
    });
    let answers = answers.into_inner().unwrap();
    print_first_2xx_after(&answers, failover.promoted_at);
    let acked = check_answers(&answers);
    wait_until("every row is gone", || a.row_count() == 0);
    let receipts = receipts(&cluster.standby_url(DB));
    check_receipts(&receipts, &drain, &acked, &answers);
    check_files(&a, &receipts, &drain, &answers);
    check_metrics(&[&a, &b], receipts.len());
}

/// Small batches, so that many are in flight when the primary dies; a
/// lease well past the failover (an ack may wait that long for the new
/// primary), short enough that rows whose ack was lost anyway come back
/// within the test's deadline, to be counted.
fn tune(config: &mut Config) {
    config.batch_size = 100;
    config.executors = 2;
    config.tick_ms = 50;
    config.lease_secs = 15;
}

/// Records one new id (its file created first) at a time, alternating
/// between `apps`, until `stop`; keeps every answer.
fn record_until(apps: &[&TestApp], answers: &Mutex<Vec<Answer>>, stop: &AtomicBool) {
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let app = apps[n % apps.len()];
        let id = format!("live-{n:06}");
        app.create_file(&id);
        let request = ureq::post(&app.url("/v1/deletions")).timeout(CLIENT_TIMEOUT);
        let sent = Instant::now();
        let outcome = try_call(request, Some(json!({ "ids": [id] })));
        let refused = !matches!(&outcome, Ok(reply) if reply.status == 202);
        answers.lock().unwrap().push(Answer {
            id,
            took: sent.elapsed(),
            at: Instant::now(),
            outcome,
        });
        if refused {
            // A client's back-off (not a wait for a state): bounds the ids
            // made while every record is refused at once.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `kill -9` of the primary; once every instance sees the outage and the
/// client was refused three times, the standby is promoted.
fn fail_over(cluster: &mut PgCluster, apps: &[&TestApp], answers: &Mutex<Vec<Answer>>) -> Failover {
    eprintln!(
        "failover: kill -9 of the primary after {} deletions",
        erased(apps)
    );
    let killed = Instant::now();
    let refused_before = refused(&answers.lock().unwrap());
    cluster.kill9_primary();
    for app in apps {
        wait_until("the instance is unready", || {
            app.get("/readyz").status == 503
        });
    }
    wait_until("the client was refused three times", || {
        refused(&answers.lock().unwrap()) >= refused_before + 3
    });
    let erased_before = erased(apps);
    let started = Instant::now();
    cluster.promote();
    eprintln!("failover: promoted {:?} after the kill", killed.elapsed());
    Failover {
        promote: started.elapsed(),
        promoted_at: Instant::now(),
        erased_before,
    }
}

fn refused(answers: &[Answer]) -> usize {
    answers.iter().filter(|a| !is_2xx(a)).count()
}

/// Files deleted or found missing by `apps`, from their `/metrics`.
fn erased(apps: &[&TestApp]) -> f64 {
    apps.iter()
        .map(|app| deletions(app, "deleted") + deletions(app, "missing"))
        .sum()
}

/// `video_scheduler_deletions_total{outcome=...}`; 0 before the first batch.
fn deletions(app: &TestApp, outcome: &str) -> f64 {
    let name = format!("video_scheduler_deletions_total{{outcome=\"{outcome}\"}} ");
    app.get("/metrics")
        .body
        .lines()
        .find_map(|line| line.strip_prefix(&name)?.parse().ok())
        .unwrap_or(0.0)
}

fn is_2xx(answer: &Answer) -> bool {
    matches!(&answer.outcome, Ok(reply) if (200..300).contains(&reply.status))
}

fn acked_since(answers: &[Answer], since: Instant) -> usize {
    answers
        .iter()
        .filter(|a| a.at >= since && is_2xx(a))
        .count()
}

fn print_first_2xx_after(answers: &[Answer], promoted_at: Instant) {
    let first = answers
        .iter()
        .find(|a| a.at >= promoted_at && is_2xx(a))
        .map(|a| a.at - promoted_at);
    eprintln!("failover: promote to first 2xx record {first:?}");
}

/// Every answer was a 2xx or a 503 with Retry-After; returns the ids that
/// got a 2xx.
fn check_answers(answers: &[Answer]) -> HashSet<String> {
    let mut by_status: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    let mut wrong = Vec::new();
    for answer in answers {
        let key = match &answer.outcome {
            Ok(reply) => reply.status.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        let (count, slowest) = by_status.entry(key).or_default();
        *count += 1;
        *slowest = (*slowest).max(answer.took);
        let fine = match &answer.outcome {
            Ok(reply) if (200..300).contains(&reply.status) => true,
            Ok(reply) if reply.status == 503 => reply.retry_after.is_some(),
            _ => false,
        };
        if !fine && wrong.len() < 10 {
            wrong.push(format!("{}: {:?}", answer.id, answer.outcome));
        }
    }
    eprintln!("failover: record answers by status (count, slowest): {by_status:?}");
    assert!(
        wrong.is_empty(),
        "answers other than 2xx or 503: {wrong:#?}"
    );
    answers
        .iter()
        .filter(|a| is_2xx(a))
        .map(|a| a.id.clone())
        .collect()
}

/// One receipt: id, files deleted, files found missing, completions.
type Receipt = (String, i32, i32, i32);

/// Every receipt on the server at `url`.
fn receipts(url: &str) -> Vec<Receipt> {
    use video_scheduler::db::schema::video_del_receipt::dsl::*;
    let mut conn = diesel::PgConnection::establish(url).unwrap();
    video_del_receipt
        .select((id, deleted, missing, completions))
        .load(&mut conn)
        .unwrap()
}

/// Every acknowledged id has a receipt, only ids that were sent have one,
/// and each says its file was deleted, once: no deletion was redone after
/// a lost ack (which would find the file missing).
fn check_receipts(
    receipts: &[Receipt],
    drain: &[String],
    acked: &HashSet<String>,
    answers: &[Answer],
) {
    let have: HashSet<&str> = receipts.iter().map(|r| r.0.as_str()).collect();
    let lost: Vec<&String> = drain
        .iter()
        .chain(acked)
        .filter(|id| !have.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged ids have no receipt on the new primary, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let sent: HashSet<&str> = drain
        .iter()
        .map(String::as_str)
        .chain(answers.iter().map(|a| a.id.as_str()))
        .collect();
    let committed_anyway = receipts.len() - drain.len() - acked.len();
    eprintln!("failover: {committed_anyway} ids answered 503 were committed anyway");
    let odd: Vec<&Receipt> = receipts
        .iter()
        .filter(|r| !sent.contains(r.0.as_str()) || (r.1, r.2, r.3) != (1, 0, 1))
        .collect();
    assert!(
        odd.is_empty(),
        "{} receipts not (deleted 1, missing 0, completions 1) of a sent id, e.g. {:?}",
        odd.len(),
        &odd[..odd.len().min(10)]
    );
}

/// A file is gone exactly when its id has a receipt: those that got a 503
/// and were not committed are still there.
fn check_files(app: &TestApp, receipts: &[Receipt], drain: &[String], answers: &[Answer]) {
    let have: HashSet<&str> = receipts.iter().map(|r| r.0.as_str()).collect();
    let ids = drain.iter().chain(answers.iter().map(|a| &a.id));
    let wrong: Vec<&String> = ids
        .filter(|id| app.exists(id) == have.contains(id.as_str()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} files still there with a receipt, or gone without one, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// The instances' counters agree with the receipts: each file deleted by
/// exactly one of them, none found missing, none failed.
fn check_metrics(apps: &[&TestApp], receipts: usize) {
    let sum = |outcome| apps.iter().map(|app| deletions(app, outcome)).sum::<f64>();
    let (deleted, missing, failed) = (sum("deleted"), sum("missing"), sum("failed"));
    eprintln!("failover: deletions deleted {deleted}, missing {missing}, failed {failed}");
    assert_eq!(
        (deleted, missing, failed),
        (receipts as f64, 0.0, 0.0),
        "deletions counted against {receipts} receipts"
    );
}

#[test]
#[ignore = "needs a PostgreSQL primary and standby (initdb, pg_basebackup); .ci/run runs it"]
fn without_target_session_attrs_a_lone_hot_standby_is_a_503_until_it_is_promoted() {
    // Asynchronous: what is checked here (a standby refusing writes) does
    // not depend on how commits wait, and nothing is recorded before the
    // kill but one id, deleted before it.
    let mut cluster = PgCluster::start(Replication::Asynchronous);
    cluster.create_database(DB);
    // The primary first: the service migrates at start-up, which a standby
    // refuses. Once the primary is dead, libpq reaches only the standby.
    let (ws, mut config) = workspace_at(Backend::Postgres, &cluster.multi_host_url(DB, false));
    config.tick_ms = 50;
    let app = start_in(ws, config);
    app.create_file("before");
    app.record_now(&["before"]);
    wait_until("the first file is deleted", || !app.exists("before"));

    cluster.kill9_primary();
    wait_until("/readyz names the read-only server", || {
        let ready = app.get("/readyz");
        assert!(matches!(ready.status, 200 | 503), "{ready:?}");
        ready.status == 503 && ready.body.contains("read-only")
    });
    let during: Vec<String> = (0..20).map(|i| format!("during-{i}")).collect();
    for id in &during {
        app.create_file(id);
        refused_as_unavailable(&app, id);
    }
    let ready = app.get("/readyz");
    assert!(
        ready.status == 503 && ready.body.contains("read-only"),
        "{ready:?}"
    );
    assert!(during.iter().all(|id| app.exists(id)), "nothing deleted");
    // An instance (re)started now, with only the standby to reach, starts
    // (its schema is there) and is unready, rather than exiting.
    let restarted = start_more(&app, |_| {});
    let ready = restarted.get("/readyz");
    assert!(
        ready.status == 503 && ready.body.contains("read-only"),
        "{ready:?}"
    );
    refused_as_unavailable(&restarted, "during-restarted");

    let promoting = Instant::now();
    cluster.promote();
    wait_until("records are taken again", || {
        let reply = app.record(&["after"], json!({}));
        assert!(matches!(reply.status, 202 | 503), "{reply:?}");
        reply.status == 202
    });
    eprintln!(
        "failover without target_session_attrs: promote to first 2xx record {:?}",
        promoting.elapsed()
    );
    let refs: Vec<&str> = during.iter().map(String::as_str).collect();
    app.record_now(&refs);
    wait_until("every file is deleted", || {
        during.iter().all(|id| !app.exists(id))
    });
    wait_until("every row is gone", || app.row_count() == 0);
    wait_until("/readyz is 200 again", || app.get("/readyz").status == 200);
    wait_until("the restarted instance takes records", || {
        restarted.record(&["after-restarted"], json!({})).status == 202
    });
    wait_until("its /readyz is 200", || {
        restarted.get("/readyz").status == 200
    });
}

/// A record of `id`, on the batch route and the seed route, answers 503
/// with Retry-After: never a 500, never a 2xx.
fn refused_as_unavailable(app: &TestApp, id: &str) {
    let batch = app.record(&[id], json!({}));
    assert_eq!(batch.status, 503, "{}", batch.body);
    assert_eq!(batch.json()["code"], "unavailable");
    assert!(batch.retry_after.is_some(), "{batch:?}");
    let seed = app.get(&format!("/video-delete-record/{id}"));
    assert_eq!(seed.status, 503, "{}", seed.body);
    assert_eq!(seed.retry_after.as_deref(), Some("1"));
}

#[test]
#[ignore = "needs a PostgreSQL primary and standby (initdb, pg_basebackup); .ci/run runs it"]
fn with_its_synchronous_standby_gone_a_record_answers_503_within_record_timeout() {
    let mut cluster = PgCluster::start(Replication::Synchronous);
    cluster.create_database(DB);
    let (ws, mut config) = workspace_at(Backend::Postgres, &cluster.multi_host_url(DB, true));
    config.tick_ms = 50;
    config.record_timeout_ms = 1000;
    let app = start_in(ws, config);
    app.record_now(&["before"]);

    // Every commit on the primary now waits for a standby that is gone.
    cluster.stop_standby();
    let held: Vec<String> = (0..3).map(|i| format!("held-{i}")).collect();
    for id in &held {
        let request = ureq::post(&app.url("/v1/deletions")).timeout(CLIENT_TIMEOUT);
        let reply = try_call(request, Some(json!({ "ids": [id] })))
            .unwrap_or_else(|e| panic!("no answer within {CLIENT_TIMEOUT:?}: {e}"));
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.retry_after.is_some(), "{reply:?}");
    }
    // Asserted once the commits are released: a failed assertion would
    // otherwise wait for them forever while the app shuts down.
    let ready = app.get("/readyz");

    // The primary stops waiting: the held commits complete, and a record
    // sent again answers `already_queued` for what they committed.
    let mut admin = diesel::PgConnection::establish(&cluster.primary_url("postgres")).unwrap();
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = ''",
        "SELECT pg_reload_conf()",
    ] {
        diesel::sql_query(sql).execute(&mut admin).unwrap();
    }
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body.contains("no synchronous standby connected"),
        "{}",
        ready.body
    );
    wait_until("records are taken again", || {
        app.record(&["after"], json!({})).status == 202
    });
    let refs: Vec<&str> = held.iter().map(String::as_str).collect();
    let again = app.record(&refs, json!({}));
    assert_eq!(again.status, 202, "{}", again.body);
    let counts = again.json();
    assert_eq!(
        counts["accepted"].as_u64().unwrap() + counts["already_queued"].as_u64().unwrap(),
        3,
        "{counts}"
    );
    wait_until("every row is gone", || app.row_count() == 0);
}

#[test]
#[ignore = "needs a PostgreSQL primary and standby (initdb, pg_basebackup); .ci/run runs it"]
fn require_synchronous_replication_refuses_records_while_no_standby_is_synchronous() {
    let cluster = PgCluster::start(Replication::Asynchronous);
    cluster.create_database(DB);
    let (ws, mut config) = workspace_at(Backend::Postgres, &cluster.primary_url(DB));
    config.tick_ms = 50;
    config.require_synchronous_replication = true;
    let app = start_in(ws, config);
    wait_until("the replication was read", || {
        app.get("/v1/stats").json()["replication"]["standbys"] == 1
    });
    let stats = app.get("/v1/stats").json();
    assert_eq!(
        stats["replication"],
        json!({ "kind": "postgres", "standbys": 1, "synchronous": 0, "unknown": 0, "commits_wait": false }),
        "{stats}"
    );
    assert_eq!(app.metric("video_scheduler_db_standbys{sync=\"all\"}"), 1.0);
    assert_eq!(
        app.metric("video_scheduler_db_standbys{sync=\"synchronous\"}"),
        0.0
    );
    refused_as_unavailable(&app, "unsafe");
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("none synchronous"), "{}", ready.body);
    assert_eq!(app.row_count(), 0, "nothing was committed");

    // The standby made synchronous: records are taken (once read again:
    // `/readyz` reads at once).
    let mut admin = diesel::PgConnection::establish(&cluster.primary_url("postgres")).unwrap();
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "SELECT pg_reload_conf()",
    ] {
        diesel::sql_query(sql).execute(&mut admin).unwrap();
    }
    wait_until("ready with a synchronous standby", || {
        app.get("/readyz").status == 200
    });
    app.record_now(&["safe"]);
    wait_until("every row is gone", || app.row_count() == 0);
}
