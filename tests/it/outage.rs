//! A database outage, made by cutting a TCP proxy between the real binary
//! and MariaDB/PostgreSQL: 503s with Retry-After, `/readyz` down and up, one
//! log line per outage, and the work finishing by itself afterwards.

use crate::common::process::{write_config, ServerProcess};
use crate::common::proxy::{through, Proxy};
use crate::common::{wait_until, workspace, Backend};
use serde_json::json;
use video_scheduler::db::Db;

#[cfg(feature = "mysql")]
#[test]
fn mysql_outage_gives_503_and_work_resumes_by_itself() {
    database_outage(Backend::Mysql);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_outage_gives_503_and_work_resumes_by_itself() {
    database_outage(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_a_record_the_database_does_not_answer_is_503_within_record_timeout() {
    held_network(Backend::Mysql);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_a_record_the_database_does_not_answer_is_503_within_record_timeout() {
    held_network(Backend::Postgres);
}

/// The network to the database holds (nothing forwarded, nothing closed):
/// every record answers 503 once `record_timeout_ms` (here 1 s) has passed,
/// never hangs (the client gives up only after 10 s), and `/readyz` answers
/// 503 too; once the network heals, records work again and what the held
/// records committed meanwhile answers `already_queued`.
fn held_network(backend: Backend) {
    let (ws, mut config) = workspace(backend);
    config.tick_ms = 50;
    config.record_timeout_ms = 1000;
    let (proxied, target) = through(&config.database_url, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(target);
    config.database_url = through(&proxied, proxy.addr).0;
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    assert_eq!(server.get("/video-delete-record/before").status, 200);

    proxy.hold();
    let within = std::time::Duration::from_secs(10);
    let mut bodies = Vec::new();
    for i in 0..3 {
        let answer = ureq::post(&server.url("/v1/deletions"))
            .timeout(within)
            .send_json(json!({ "ids": [format!("held-{i}")] }));
        match answer {
            Err(ureq::Error::Status(503, reply)) => {
                assert!(reply.header("Retry-After").is_some());
                bodies.push(reply.into_string().unwrap());
            }
            other => panic!("a record while the network holds: {other:?}"),
        }
    }
    // A record times out; once the pool too gave up waiting for a
    // connection (3 s), the outage is known and records answer 503 at once
    // (the contract's "while an outage is known": `database unavailable`).
    assert!(
        bodies.iter().any(|b| b.contains("may still commit")),
        "{bodies:?}"
    );
    for body in &bodies {
        assert!(
            body.contains("may still commit") || body.contains("database unavailable"),
            "{body}"
        );
    }
    let seed = ureq::get(&server.url("/video-delete-record/held-seed"))
        .timeout(within)
        .call();
    assert!(matches!(seed, Err(ureq::Error::Status(503, _))), "{seed:?}");
    readyz_answers_503_before_a_probe_gives_up(&server);

    proxy.restore();
    wait_until("records are taken again", || {
        server
            .post("/v1/deletions", json!({ "ids": ["after"] }))
            .status
            == 202
    });
    let again = server.post(
        "/v1/deletions",
        json!({ "ids": ["held-0", "held-1", "held-2"] }),
    );
    assert_eq!(again.status, 202, "{}", again.body);
    let counts = again.json();
    assert_eq!(
        counts["accepted"].as_u64().unwrap() + counts["already_queued"].as_u64().unwrap(),
        3,
        "{counts}"
    );
    drop(server);
}

fn files_left(root: &std::path::Path) -> usize {
    std::fs::read_dir(root).unwrap().count()
}

fn database_outage(backend: Backend) {
    let (ws, mut config) = workspace(backend);
    config.tick_ms = 50;
    config.lease_secs = 5;
    let direct = Db::connect(&config.database_url, 1).unwrap();
    let (proxied, target) = through(&config.database_url, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(target);
    config.database_url = through(&proxied, proxy.addr).0;
    let root = config.storage[0].root.clone();
    std::fs::create_dir_all(&root).unwrap();
    let mut server =
        ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));

    // Before: work flows.
    for i in 0..100 {
        std::fs::write(root.join(format!("before-{i}")), b"").unwrap();
        assert_eq!(
            server
                .get(&format!("/video-delete-record/before-{i}"))
                .status,
            200
        );
    }
    wait_until("the first files are deleted", || files_left(&root) == 0);

    // During: answers are 503 with Retry-After, nothing crashes.
    for i in 0..100 {
        std::fs::write(root.join(format!("during-{i}")), b"").unwrap();
    }
    proxy.cut();
    wait_until("the seed route answers 503", || {
        server.get("/video-delete-record/during-0").status == 503
    });
    let seed = server.get("/video-delete-record/during-1");
    assert_eq!(
        (seed.status, seed.body.as_str()),
        (503, "database unavailable")
    );
    assert_eq!(seed.retry_after.as_deref(), Some("1"));
    let batch = server.post("/v1/deletions", json!({ "ids": ["during-2"] }));
    assert_eq!(batch.status, 503);
    assert_eq!(batch.json()["code"], "unavailable");
    assert!(batch.retry_after.is_some());
    readyz_answers_503_before_a_probe_gives_up(&server);
    assert_eq!(
        server.get("/healthz").status,
        200,
        "the process itself is fine"
    );
    assert!(server.alive());

    // After: ready again by itself, and everything recorded gets done.
    proxy.restore();
    wait_until("/readyz is 200 again", || {
        server.get("/readyz").status == 200
    });
    let ids: Vec<String> = (0..100).map(|i| format!("during-{i}")).collect();
    let reply = server.post("/v1/deletions", json!({ "ids": ids }));
    assert_eq!(reply.status, 202, "{}", reply.body);
    wait_until("every file is deleted", || files_left(&root) == 0);
    wait_until("every row is gone", || {
        crate::common::row_count(&direct) == 0
    });
    assert!(server.alive());
    let log = server.log();
    assert_eq!(
        log.matches(OUTAGE_STARTS).count(),
        1,
        "one warning per outage, whoever meets it:\n{log}"
    );
    assert_eq!(log.matches("database is back").count(), 1, "{log}");
    assert!(
        !log.contains("claim failed"),
        "the dispatcher does not repeat it:\n{log}"
    );
}

/// For four seconds of an outage (longer than the pool waits for a
/// connection, 3 s), every `/readyz` answers 503 with the cause before an
/// orchestrator's probe would give up: 1 s by default; this client allows 2.
fn readyz_answers_503_before_a_probe_gives_up(server: &ServerProcess) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < until {
        let answer = ureq::get(&server.url("/readyz"))
            .timeout(std::time::Duration::from_secs(2))
            .call();
        match answer {
            Err(ureq::Error::Status(503, reply)) => {
                let body = reply.into_string().unwrap();
                assert!(body.contains("database unavailable"), "{body}");
            }
            other => panic!("/readyz during the outage: {other:?}"),
        }
    }
}

/// Waits until the server logged the start of an outage whose cause
/// contains `words`, then checks it said so once.
fn logs_outage_in_the_server_s_words(server: &ServerProcess, words: &str) {
    wait_until("the outage is logged", || {
        server.log().contains(OUTAGE_STARTS)
    });
    wait_until("the server's own words are logged", || {
        server.log().contains(words)
    });
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 503);
    let reason = ready.json()["error"].as_str().unwrap().to_owned();
    assert!(reason.contains(words), "{reason}");
    // A few more failing claims and requests must not log it again, nor
    // the receipt pruner's rounds (every second in these tests) that meet
    // the outage meanwhile: the server stays unready for two of them.
    for _ in 0..20 {
        assert_eq!(server.get("/video-delete-record/x").status, 503);
    }
    let window = std::time::Instant::now();
    wait_until("two pruning rounds met the outage", || {
        assert_eq!(server.get("/readyz").status, 503);
        window.elapsed() >= std::time::Duration::from_millis(2500)
    });
    let log = server.log();
    assert_eq!(log.matches(words).count(), 1, "said once:\n{log}");
    assert_eq!(log.matches(OUTAGE_STARTS).count(), 1, "{log}");
}

/// The line that starts an outage, from the module that owns outages.
const OUTAGE_STARTS: &str = "db::outage] database unavailable: ";

#[cfg(feature = "postgres")]
#[test]
fn postgres_a_dropped_database_is_logged_in_the_server_s_words() {
    let (ws, mut config) = workspace(Backend::Postgres);
    config.tick_ms = 50;
    config.receipts.prune_every_secs = 1;
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    assert_eq!(server.get("/readyz").status, 200);
    let name = ws.db.name().to_owned();
    ws.db.admin(&format!("DROP DATABASE {name} WITH (FORCE)"));
    logs_outage_in_the_server_s_words(&server, &format!("database \"{name}\" does not exist"));
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_a_revoked_login_is_logged_in_the_server_s_words() {
    let (ws, mut config) = workspace(Backend::Mysql);
    config.tick_ms = 50;
    config.receipts.prune_every_secs = 1;
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let name = ws.db.name().to_owned();
    let user = format!("u_{name}");
    ws.db
        .admin(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"));
    ws.db
        .admin(&format!("GRANT ALL ON {name}.* TO '{user}'@'%'"));
    let at = config.database_url.find("://").unwrap() + 3;
    let host = &config.database_url[config.database_url.find('@').unwrap() + 1..];
    config.database_url = format!("{}{user}:pw@{host}", &config.database_url[..at]);
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    assert_eq!(server.get("/readyz").status, 200);
    ws.db.admin(&format!("DROP USER '{user}'@'%'"));
    ws.db.admin(&format!("KILL CONNECTION USER '{user}'"));
    logs_outage_in_the_server_s_words(&server, &format!("Access denied for user '{user}'"));
}

/// A server that takes no writes is an outage, not an error. Here the test
/// database's new sessions are made read-only (`default_transaction_read_only`,
/// what a hot standby's sessions are) and its sessions ended: records
/// answer 503 with Retry-After (never 500), `/readyz` names the read-only
/// server, and the outage is logged once. Reads succeeding meanwhile do not
/// end it; the first write that works again does, logged once.
#[cfg(feature = "postgres")]
#[test]
fn postgres_a_read_only_server_is_an_outage_not_an_error() {
    let (ws, mut config) = workspace(Backend::Postgres);
    config.tick_ms = 50;
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    assert_eq!(server.get("/video-delete-record/before").status, 200);
    let name = ws.db.name().to_owned();
    let read_only = |on: bool| {
        let setting = if on { "on" } else { "off" };
        ws.db.admin(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = {setting}"
        ));
        ws.db.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ));
    };

    read_only(true);
    wait_until("/readyz names the read-only server", || {
        let ready = server.get("/readyz");
        ready.status == 503 && ready.body.contains("read-only server")
    });
    for i in 0..20 {
        let seed = server.get(&format!("/video-delete-record/during-{i}"));
        assert_eq!(seed.status, 503, "{}", seed.body);
        assert_eq!(seed.retry_after.as_deref(), Some("1"));
    }
    let batch = server.post("/v1/deletions", json!({ "ids": ["during-batch"] }));
    assert_eq!(batch.status, 503, "{}", batch.body);
    assert_eq!(batch.json()["code"], "unavailable");
    // Reads work on such a server; they do not make it ready.
    assert_eq!(server.get("/v1/stats").status, 200);
    assert_eq!(server.get("/readyz").status, 503);

    read_only(false);
    wait_until("records are taken again", || {
        server.get("/video-delete-record/after").status == 200
    });
    wait_until("/readyz is 200 again", || {
        server.get("/readyz").status == 200
    });
    let (_, log) = server.terminate();
    // Ending the sessions is an outage of its own, which a fresh (read-only)
    // session that reads may end before the first write is refused: what
    // comes before the read-only line may hold one more start and end.
    assert_eq!(log.matches("read-only server").count(), 1, "{log}");
    let since = &log[log.find("read-only server").unwrap()..];
    assert_eq!(since.matches(OUTAGE_STARTS).count(), 0, "{log}");
    assert_eq!(since.matches("database is back").count(), 1, "{log}");
    assert!(
        !log.contains("ERROR"),
        "no request failed as an error:\n{log}"
    );
}
