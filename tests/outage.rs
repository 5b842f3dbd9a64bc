//! A database outage, made by cutting a TCP proxy between the real binary
//! and MariaDB/PostgreSQL: 503s with Retry-After, `/readyz` down and up, one
//! log line per outage, and the work finishing by itself afterwards.

#![cfg(any(feature = "mysql", feature = "postgres"))]

mod common;

use std::net::{SocketAddr, ToSocketAddrs};

use common::process::{write_config, ServerProcess};
use common::proxy::Proxy;
use common::{wait_until, workspace, Backend};
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

/// `url` with its `host:port` replaced by `addr`, and that `host:port`.
fn through(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let start = url
        .find('@')
        .map(|at| at + 1)
        .unwrap_or_else(|| url.find("://").unwrap() + 3);
    let end = start + url[start..].find('/').unwrap();
    let target = url[start..end].to_socket_addrs().unwrap().next().unwrap();
    (format!("{}{addr}{}", &url[..start], &url[end..]), target)
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
    let root = config.storage.root.clone();
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
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 503);
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
    wait_until("every row is gone", || common::row_count(&direct) == 0);
    assert!(server.alive());
    let log = server.log();
    assert_eq!(
        log.matches("claim failed").count(),
        1,
        "one warning per outage:\n{log}"
    );
    assert_eq!(log.matches("database is back").count(), 1, "{log}");
    assert_eq!(log.matches("recording failed").count(), 1, "{log}");
    assert_eq!(log.matches("recording works again").count(), 1, "{log}");
}
