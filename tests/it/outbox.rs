//! The outbox against crashes and bad configuration: kill -9 of the real
//! binary ten times during a drain with a webhook and a purge configured
//! leaves exactly one event per erased id and sink, each delivered, and
//! none (no announcement either) for what was not erased; every sink rule refuses to start (exit 2)
//! naming its key, never echoing a secret.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::common::receiver::Receiver;
use crate::common::{binary, row_count, wait_until, workspace, Backend};
use crate::crash::{all_ids, crash_config, queue, start_instances};
use crate::notifications::{http_purge, webhook};
use serde_json::json;
use video_scheduler::db::models::{Event, EventState};
use video_scheduler::db::queries;
use video_scheduler::db::Db;

backend_tests!(
    kill_9_ten_times_during_a_drain_announces_each_erased_id_once_per_sink,
    delivered_events_are_pruned_with_the_receipts_and_the_others_kept,
);

/// Every event of the outbox, page by page.
fn all_events(db: &Db) -> Vec<Event> {
    let mut all: Vec<Event> = Vec::new();
    loop {
        let after = all.last().map(|e| e.id);
        let page = db
            .read(|c| queries::events::list(c, None, None, after, 1000))
            .unwrap();
        let full = page.len() == 1000;
        all.extend(page);
        if !full {
            return all;
        }
    }
}

fn kill_9_ten_times_during_a_drain_announces_each_erased_id_once_per_sink(backend: Backend) {
    let hooks = Receiver::ok();
    let cdn = Receiver::ok();
    let (ws, mut config) = workspace(backend);
    crash_config(&mut config);
    let mut hook = webhook("mgmt", hooks.url("/hooks"));
    hook.timeout_secs = 1;
    let mut purge = http_purge("cdn", vec![cdn.url("/videos/{id}.mp4")]);
    purge.max_per_sec = 0;
    purge.timeout_secs = 1;
    config.webhooks = vec![hook];
    config.purge = vec![purge];
    let instances = if backend == Backend::Sqlite { 1 } else { 2 };
    let root = config.storage[0].root.clone();
    std::fs::create_dir_all(&root).unwrap();
    let ids: Vec<String> = (0..5_000).map(|i| format!("told-{i:05}")).collect();
    for id in &ids {
        std::fs::write(root.join(id), b"").unwrap();
    }
    let db = Db::connect(&config.database_url, 2).unwrap();
    db.migrate().unwrap();
    queue(&db, &ids);

    for round in 0..10 {
        let servers = start_instances(&config, ws.dir.path(), instances);
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..400)));
        for server in servers {
            server.kill9();
        }
        // No event for a request still in the table: each was written with
        // the ack that removed its row. Events are read first: a statement
        // of a killed instance may still commit on the server meanwhile.
        let told: Vec<Event> = all_events(&db);
        let announced = db.read(queries::announce::announced_ids).unwrap();
        let left = all_ids(&db);
        assert!(
            told.iter().all(|e| !left.contains(&e.subject)),
            "an event for a request that was not erased"
        );
        assert!(
            announced.iter().all(|id| !left.contains(id)),
            "an announcement of a request that was not erased"
        );
        eprintln!(
            "{backend:?}: after kill {}: {} rows left, {} events",
            round + 1,
            left.len(),
            told.len()
        );
    }
    let _servers = start_instances(&config, ws.dir.path(), instances);
    wait_until("the drain ends", || row_count(&db) == 0);
    // Leased events of killed instances wait for their lease (7 s).
    wait_until("every event is made and delivered", || {
        db.read(queries::announce::announced_ids)
            .unwrap()
            .is_empty()
            && all_events(&db)
                .iter()
                .all(|e| e.state == EventState::Delivered.as_str())
    });
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    let events = all_events(&db);
    let expected: BTreeSet<String> = ids.iter().cloned().collect();
    for sink in ["mgmt", "cdn"] {
        let of_sink: Vec<&Event> = events.iter().filter(|e| e.sink == sink).collect();
        let subjects: BTreeSet<String> = of_sink.iter().map(|e| e.subject.clone()).collect();
        assert_eq!(of_sink.len(), 5_000, "{sink}: one event per erased id");
        assert_eq!(subjects, expected, "{sink}");
    }
    let announced: BTreeSet<String> = hooks
        .received()
        .iter()
        .filter(|r| r.status == Some(200))
        .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        announced, expected,
        "a deletion.completed delivered for each id"
    );
    let purged: BTreeSet<String> = cdn
        .received()
        .iter()
        .filter(|r| r.status == Some(200))
        .map(|r| {
            r.path
                .trim_start_matches("/videos/")
                .trim_end_matches(".mp4")
                .to_owned()
        })
        .collect();
    assert_eq!(purged, expected, "a purge sent for each id");
}

fn delivered_events_are_pruned_with_the_receipts_and_the_others_kept(backend: Backend) {
    let receiver = Receiver::ok();
    let app = crate::common::spawn_app(backend, |c| {
        // No receipts: delivered events go at the next round.
        c.receipts.retention_days = 0;
        c.receipts.prune_every_secs = 1;
        c.webhooks = vec![
            webhook("mgmt", receiver.url("/hooks")),
            webhook(
                "down",
                format!(
                    "http://127.0.0.1:{}/",
                    crate::common::receiver::closed_port()
                ),
            ),
        ];
    });
    let ids = ["pruned-1", "pruned-2"];
    for id in ids {
        app.create_file(id);
    }
    app.record_now(&ids);
    wait_until("both are delivered to mgmt", || {
        receiver.received().len() == 2
    });
    let db = app.db();
    wait_until("the delivered events are pruned", || {
        all_events(&db).iter().all(|e| e.sink == "down")
    });
    // The undelivered ones stay, whatever their age.
    let kept = all_events(&db);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|e| e.state == EventState::Pending.as_str()));
}

/// Runs `command` (`serve`, `config`) with `extra` merged into a valid
/// config; its exit code and output.
fn run_with(dir: &Path, command: &str, extra: serde_json::Value) -> (Option<i32>, String) {
    let mut body = json!({
        "database_url": format!("sqlite://{}", dir.join("db.sqlite").display()),
        "storage": { "root": dir.join("videos") },
        "listen": "127.0.0.1:0",
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let conf = dir.join("conf.json");
    std::fs::write(&conf, body.to_string()).unwrap();
    let out = binary()
        .arg("--config")
        .arg(&conf)
        .arg(command)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text.into_owned())
}

#[test]
fn each_bad_sink_is_refused_at_start_up_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let hook = |fields: serde_json::Value| {
        let mut hook = json!({ "name": "mgmt", "url": "http://127.0.0.1:1/hooks",
                               "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" });
        hook.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        json!({ "webhooks": [hook] })
    };
    let cases = [
        (
            hook(json!({ "url": "ftp://127.0.0.1/hooks" })),
            "webhooks[0].url",
        ),
        (
            hook(json!({ "url": "file:///etc/passwd" })),
            "webhooks[0].url",
        ),
        (hook(json!({ "url": "not a url" })), "webhooks[0].url"),
        (
            hook(json!({ "secret": "Secret-not-whsec-7d1" })),
            "webhooks[0].secret",
        ),
        (
            hook(json!({ "secret": "whsec_Secret!not*base64-7d1" })),
            "webhooks[0].secret",
        ),
        (
            hook(json!({ "secret": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"] })),
            "webhooks[0].secret",
        ),
        (
            hook(json!({ "events": ["deletion.completed", "deletion.exploded"] })),
            "webhooks[0].events",
        ),
        (
            json!({ "purge": [{ "name": "cdn", "kind": "http", "urls": ["gopher://cdn/{id}"] }] }),
            "purge[0].urls",
        ),
        (
            json!({ "purge": [{ "name": "cdn", "kind": "http", "urls": ["https://cdn/all.mp4"] }] }),
            "purge[0].urls",
        ),
        (
            json!({ "purge": [{ "name": "cf", "kind": "cloudflare", "api_token": "t",
                                "urls": ["https://cdn/{id}"] }] }),
            "purge[0].zone_id",
        ),
        (
            json!({ "purge": [{ "name": "cf", "kind": "cloudflare", "zone_id": "z", "api_token": "t",
                                "api_base": "ftp://x", "urls": ["https://cdn/{id}"] }] }),
            "purge[0].api_base",
        ),
        (
            json!({ "webhooks": [{ "name": "same", "url": "http://127.0.0.1:1/",
                                   "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }],
                    "purge": [{ "name": "same", "kind": "http", "urls": ["https://cdn/{id}"] }] }),
            "purge[0].name",
        ),
        (json!({ "webhook_retry_hours": 0 }), "webhook_retry_hours"),
    ];
    for (extra, key) in cases {
        let (code, out) = run_with(dir.path(), "serve", extra.clone());
        assert_eq!(code, Some(2), "{extra}: {out}");
        assert!(out.contains(key), "{extra}: the refusal names {key}: {out}");
        assert!(!out.contains("Secret"), "a secret echoed: {out}");
    }
    // The valid form is accepted, its secret masked in the dump.
    let (code, out) = run_with(dir.path(), "config", hook(json!({})));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(r#""secret": "***""#), "{out}");
    assert!(!out.contains("whsec_"), "{out}");
}
