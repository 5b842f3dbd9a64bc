//! Notifications (README, "Notifications"): the outbox written with the
//! ack, the cancel and the last failed attempt; webhooks signed per
//! Standard Webhooks (checked by the PyPI `standardwebhooks` package, an
//! implementation of its own), retried through receivers that fail, hang
//! or refuse, dead and redelivered; CDN purges over HTTP and through a
//! fake Cloudflare API; every event once per sink, none for what did not
//! commit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::receiver::{closed_port, Answer, Received, Receiver};
use crate::common::{binary, spawn_app, start_more, wait_until, Backend, TestApp};
use serde_json::{json, Value};
use video_scheduler::config::{Config, PurgeConfig, Secret, Secrets, WebhookConfig, EVENT_TYPES};

backend_tests!(
    every_end_is_announced_signed_and_checked_by_an_independent_verifier,
    failing_hanging_and_refusing_receivers_get_every_event_once_healed,
    an_event_dies_after_the_retry_window_and_is_redelivered,
    an_http_purge_gets_every_templated_url_and_a_failed_purge_is_retried,
    cloudflare_purges_are_grouped_and_never_beyond_the_rate_limit,
    two_instances_share_one_outbox_and_deliver_each_event_once,
    an_ack_that_lost_its_lease_writes_no_event,
    a_throttled_drain_is_announced_while_it_runs,
);

/// Two secrets, as while rotating: both sign.
pub const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";

pub fn webhook(name: &str, url: String) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url,
        secret: Secrets::One(Secret::new(SECRET_A)),
        events: EVENT_TYPES.iter().map(|e| e.to_string()).collect(),
        max_in_flight: 16,
        timeout_secs: 15,
    }
}

pub fn http_purge(name: &str, urls: Vec<String>) -> PurgeConfig {
    serde_json::from_value(json!({ "name": name, "kind": "http", "urls": urls })).unwrap()
}

/// The requests of `receiver` answered 2xx, by `webhook-id`.
fn delivered(receiver: &Receiver) -> BTreeMap<String, Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
        .map(|r| (r.header("webhook-id").to_owned(), r))
        .collect()
}

/// The video ids of the 2xx'd webhook deliveries of `kind`.
fn subjects(receiver: &Receiver, kind: &str) -> BTreeSet<String> {
    delivered(receiver)
        .values()
        .map(Received::json)
        .filter(|b| b["type"] == kind)
        .map(|b| b["data"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = app
            .get(&format!("/v1/events?limit=1000{query}{after}"))
            .json();
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_i64() {
            Some(next) => after = format!("&after={next}"),
            None => return all,
        }
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

fn refs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

/// Verifies each message with Python's `standardwebhooks` (PyPI) under
/// `secret`: exits non-zero, naming the message, if one fails.
fn verify_in_python(messages: &[&Received], secret: &str) {
    let lines: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "id": m.header("webhook-id"),
                "timestamp": m.header("webhook-timestamp"),
                "signature": m.header("webhook-signature"),
                "body": m.body,
            })
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
hook = Webhook(sys.argv[1])
n = 0
for line in sys.stdin:
    m = json.loads(line)
    headers = {"webhook-id": m["id"], "webhook-timestamp": m["timestamp"],
               "webhook-signature": m["signature"]}
    hook.verify(m["body"], headers)
    n += 1
print(n)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for line in &lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "standardwebhooks refused: {stderr}");
    assert_eq!(stdout.trim(), messages.len().to_string(), "{stderr}");
}

fn every_end_is_announced_signed_and_checked_by_an_independent_verifier(backend: Backend) {
    let receiver = Receiver::ok();
    let only_completed = Receiver::ok();
    let app = spawn_app(backend, |c| {
        c.max_attempts = 1;
        let mut hook = webhook("mgmt", receiver.url("/hooks"));
        hook.secret = Secrets::Several(vec![Secret::new(SECRET_A), Secret::new(SECRET_B)]);
        let mut filtered = webhook("completed-only", only_completed.url("/done"));
        filtered.events = vec!["deletion.completed".into()];
        c.webhooks = vec![hook, filtered];
    });
    let erased = ids("gone", 20);
    for id in &erased {
        app.create_file(id);
    }
    app.block("stuck-0001");
    app.record_now(&refs(&erased));
    app.record_now(&["stuck-0001"]);
    // A pending request cancelled one by one, two in bulk.
    app.record(
        &["later-0001", "later-0002", "later-0003"],
        json!({ "delay_secs": 3600 }),
    );
    assert_eq!(app.delete("/v1/deletions/later-0001").status, 204);
    let bulk = app.post(
        "/v1/deletions/cancel",
        json!({ "state": "pending", "ids": ["later-0002", "later-0003"] }),
    );
    assert_eq!(bulk.json()["count"], 2, "{}", bulk.body);

    wait_until("every end reaches the receiver", || {
        delivered(&receiver).len() == 24
    });
    assert_eq!(
        subjects(&receiver, "deletion.completed"),
        erased.iter().cloned().collect()
    );
    assert_eq!(
        subjects(&receiver, "deletion.failed"),
        BTreeSet::from(["stuck-0001".to_owned()])
    );
    let cancelled: BTreeSet<String> = ["later-0001", "later-0002", "later-0003"]
        .map(String::from)
        .into();
    assert_eq!(subjects(&receiver, "deletion.cancelled"), cancelled);

    let messages = delivered(&receiver);
    let one = messages
        .values()
        .find(|m| m.json()["data"]["id"] == "gone-0007")
        .unwrap();
    assert_eq!((one.method.as_str(), one.path.as_str()), ("POST", "/hooks"));
    assert_eq!(one.header("content-type"), "application/json");
    assert!(one.header("webhook-id").starts_with("evt_"), "{one:?}");
    let body = one.json();
    assert_eq!(body["type"], "deletion.completed");
    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();
    // The data is the receipt.
    let receipt = app.request("gone-0007");
    for field in [
        "id",
        "requested_at",
        "attempts",
        "deleted",
        "missing",
        "targets",
        "source",
    ] {
        assert_eq!(
            body["data"][field], receipt[field],
            "{field}: {body} vs {receipt}"
        );
    }
    assert_eq!(body["data"]["completed_at"], body["timestamp"]);
    let failed = messages
        .values()
        .map(Received::json)
        .find(|b| b["type"] == "deletion.failed")
        .unwrap();
    assert_eq!(failed["data"]["attempts"], 1, "{failed}");
    assert!(
        failed["data"]["last_error"]
            .as_str()
            .unwrap()
            .contains("stuck-0001"),
        "{failed}"
    );
    // Two signatures while rotating, each verified on its own by Python's
    // standardwebhooks.
    assert_eq!(
        one.header("webhook-signature").split(' ').count(),
        2,
        "{one:?}"
    );
    let all: Vec<&Received> = messages.values().collect();
    verify_in_python(&all, SECRET_A);
    verify_in_python(&all, SECRET_B);

    // The filtered sink got completions only, exactly once each.
    wait_until("the filtered sink has every completion", || {
        delivered(&only_completed).len() == 20
    });
    assert!(only_completed
        .received()
        .iter()
        .all(|r| r.json()["type"] == "deletion.completed"));
    wait_until("every event is marked delivered", || {
        events(&app, "&state=pending").is_empty()
    });
    let listed = events(&app, "&state=delivered&sink=mgmt");
    assert_eq!(listed.len(), 24);
    assert_eq!(listed[0]["webhook_id"], format!("evt_{}", listed[0]["id"]));
    assert_eq!(listed[0]["last_status"], 200);
}

fn failing_hanging_and_refusing_receivers_get_every_event_once_healed(backend: Backend) {
    // 500 for the first 15 requests; hangs past the 1 s timeout for the
    // first 3; nothing listening until after the first tries.
    let flaky = Receiver::start(|_, nth| match nth < 15 {
        true => Answer::Json(500, json!({ "error": "down for maintenance" })),
        false => Answer::Status(204),
    });
    let slow = Receiver::start(|_, nth| match nth < 3 {
        true => Answer::Hang(Duration::from_secs(4)),
        false => Answer::Status(200),
    });
    let port = closed_port();
    let app = spawn_app(backend, |c| {
        let mut slow_hook = webhook("slow", slow.url("/"));
        slow_hook.timeout_secs = 1;
        c.webhooks = vec![
            webhook("flaky", flaky.url("/")),
            slow_hook,
            webhook("down", format!("http://127.0.0.1:{port}/hooks")),
        ];
    });
    let all = ids("heal", 12);
    for id in &all {
        app.create_file(id);
    }
    app.record_now(&refs(&all));
    wait_until("the refused sink records a connection error", || {
        events(&app, "&sink=down").iter().any(|e| {
            e["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("connect"))
        })
    });
    let down = Receiver::start_on(port, |_, _| Answer::Status(200));
    let expected: BTreeSet<String> = all.iter().cloned().collect();
    for (name, receiver) in [("flaky", &flaky), ("slow", &slow), ("down", &down)] {
        wait_until(&format!("{name} has every event"), || {
            subjects(receiver, "deletion.completed") == expected
        });
    }
    // A retry carries the same webhook-id: every id the flaky receiver
    // answered 500 came again under that id, and was then delivered.
    let received = flaky.received();
    let refused: BTreeSet<&str> = received
        .iter()
        .filter(|r| r.status == Some(500))
        .map(|r| r.header("webhook-id"))
        .collect();
    let retried = delivered(&flaky);
    assert!(!refused.is_empty());
    for id in &refused {
        let again = &retried[*id];
        let first = received
            .iter()
            .find(|r| r.header("webhook-id") == *id)
            .unwrap();
        assert_eq!(again.body, first.body, "the same event");
    }
    assert_eq!(retried.len(), 12, "one webhook-id per event");
    let hung = &slow.received()[0];
    assert!(delivered(&slow).contains_key(hung.header("webhook-id")));
    wait_until("nothing pending", || {
        events(&app, "&state=pending").is_empty()
    });
    let flaky_events = events(&app, "&sink=flaky");
    assert!(
        flaky_events.iter().any(|e| e["tries"].as_i64() > Some(1)),
        "{flaky_events:?}"
    );
}

fn an_event_dies_after_the_retry_window_and_is_redelivered(backend: Backend) {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let healed = healthy.clone();
    let receiver =
        Receiver::start(
            move |_, _| match healed.load(std::sync::atomic::Ordering::Relaxed) {
                true => Answer::Status(200),
                false => Answer::Json(503, json!({ "error": "receiver broken" })),
            },
        );
    let app = spawn_app(backend, |c| {
        c.webhooks = vec![webhook("mgmt", receiver.url("/hooks"))];
        // 5 s, then 10 s of backoff fit; the next 20 s do not: dead after
        // the third try.
        c.webhook_retry_hours = 20.0 / 3600.0;
    });
    let all = ids("dead", 3);
    for id in &all {
        app.create_file(id);
    }
    app.record_now(&refs(&all));
    wait_until("every event is dead", || {
        events(&app, "&state=dead").len() == 3
    });
    let dead = events(&app, "&state=dead");
    for event in &dead {
        assert_eq!(event["tries"], 3, "{event}");
        assert_eq!(event["last_status"], 503, "{event}");
        assert!(
            event["last_error"]
                .as_str()
                .unwrap()
                .contains("receiver broken"),
            "{event}"
        );
    }
    let sinks = app.get("/v1/events/sinks").json();
    assert_eq!(sinks[0]["dead"], 3, "{sinks}");
    assert!(
        sinks[0]["last_error"].as_str().unwrap().contains("503"),
        "{sinks}"
    );
    let metrics = app.get("/metrics").body;
    assert!(
        metrics.contains(r#"video_scheduler_outbox_events{sink="mgmt",state="dead"} 3"#),
        "{metrics}"
    );
    assert_eq!(
        app.metric(r#"video_scheduler_event_deliveries_total{outcome="dead",sink="mgmt"}"#),
        3.0
    );
    assert_eq!(
        app.metric(r#"video_scheduler_event_deliveries_total{outcome="failed",sink="mgmt"}"#),
        9.0
    );
    // The CLI lists them.
    let conf =
        crate::common::process::write_config(&app.config, app.root().parent().unwrap(), "cli.json");
    let out = binary()
        .args(["--config", conf.to_str().unwrap(), "events", "--dead"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    healthy.store(true, std::sync::atomic::Ordering::Relaxed);
    let first = dead[0]["id"].as_i64().unwrap();
    let one = app.post(&format!("/v1/events/{first}/redeliver"), json!({}));
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["tries"], 0);
    wait_until("the redelivered event arrives", || {
        delivered(&receiver).len() == 1
    });
    let rest = app.post("/v1/events/redeliver?state=dead", json!({}));
    assert_eq!(rest.json()["count"], 2, "{}", rest.body);
    wait_until("every event arrives", || delivered(&receiver).len() == 3);
    wait_until("their deliveries are counted", || {
        app.metric(r#"video_scheduler_event_deliveries_total{outcome="delivered",sink="mgmt"}"#)
            == 3.0
    });
    assert_eq!(
        app.metric(r#"video_scheduler_event_delivery_seconds_count{sink="mgmt"}"#),
        3.0
    );
    assert_eq!(
        app.post("/v1/events/999999/redeliver", json!({})).status,
        404
    );
    assert_eq!(app.post("/v1/events/x/redeliver", json!({})).status, 400);
    assert_eq!(
        app.post("/v1/events/redeliver?state=pending", json!({}))
            .status,
        400
    );
    let long = "s".repeat(65);
    assert_eq!(app.get(&format!("/v1/events?sink={long}")).status, 400);
    let bulk = format!("/v1/events/redeliver?state=dead&sink={long}");
    assert_eq!(app.post(&bulk, json!({})).status, 400);
    // The CLI redelivers too.
    let out = binary()
        .args([
            "--config",
            conf.to_str().unwrap(),
            "redeliver",
            &first.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the CLI's redelivery arrives", || {
        receiver
            .received()
            .iter()
            .filter(|r| r.status == Some(200))
            .count()
            == 4
    });
}

fn an_http_purge_gets_every_templated_url_and_a_failed_purge_is_retried(backend: Backend) {
    // The first two purge requests fail; a 404 (not cached) is purged.
    let cdn = Receiver::start(|r, nth| match (nth, r.path.ends_with(".m3u8")) {
        (0 | 1, _) => Answer::Status(502),
        (_, true) => Answer::Status(404),
        _ => Answer::Status(200),
    });
    let app = spawn_app(backend, |c| {
        let mut purge = http_purge(
            "cdn",
            vec![
                cdn.url("/videos/{id}.mp4"),
                cdn.url("/hls/{id}/master.m3u8"),
            ],
        );
        purge
            .headers
            .insert("X-Purge-Key".into(), Secret::new("purge-key"));
        c.purge = vec![purge];
    });
    let all = ids("purge", 30);
    for id in &all {
        app.create_file(id);
    }
    app.record_now(&refs(&all));
    let urls = |r: &Received| r.path.clone();
    let expected: BTreeSet<String> = all
        .iter()
        .flat_map(|id| {
            [
                format!("/videos/{id}.mp4"),
                format!("/hls/{id}/master.m3u8"),
            ]
        })
        .collect();
    wait_until("every URL purged", || {
        let purged: BTreeSet<String> = cdn
            .received()
            .iter()
            .filter(|r| matches!(r.status, Some(200 | 404)))
            .map(urls)
            .collect();
        purged == expected
    });
    let received = cdn.received();
    assert!(
        received.iter().all(|r| r.method == "PURGE"),
        "{:?}",
        received[0]
    );
    assert!(received
        .iter()
        .all(|r| r.header("x-purge-key") == "purge-key"));
    wait_until("every purge event is delivered", || {
        events(&app, "&state=delivered&sink=cdn").len() == 30
    });
    // A failed purge never reopened a deletion.
    assert_eq!(app.row_count(), 0);
}

fn cloudflare_purges_are_grouped_and_never_beyond_the_rate_limit(backend: Backend) {
    let cloudflare = Receiver::start(|r, nth| {
        let auth_ok = r.header("authorization") == "Bearer cf-token";
        let shape_ok = r.method == "POST"
            && r.path == "/client/v4/zones/zone-1/purge_cache"
            && r.json()["files"].is_array();
        match (auth_ok && shape_ok, nth) {
            (false, _) => Answer::Json(
                400,
                json!({ "success": false, "errors": [{ "code": 1, "message": "bad request" }] }),
            ),
            // The first call is refused as Cloudflare does past its limit.
            (true, 0) => Answer::Json(
                429,
                json!({ "success": false, "errors": [{ "code": 971, "message": "throttled" }] }),
            ),
            (true, _) => Answer::Json(
                200,
                json!({ "success": true, "errors": [], "result": { "id": "zone-1" } }),
            ),
        }
    });
    let app = spawn_app(backend, |c| {
        c.purge = vec![serde_json::from_value(json!({
            "name": "cf", "kind": "cloudflare", "zone_id": "zone-1", "api_token": "cf-token",
            "api_base": cloudflare.url("/client/v4"),
            "urls": ["https://media.example.com/hls/{id}/master.m3u8", "https://media.example.com/{id}.mp4"],
            "max_urls_per_call": 10, "max_calls_per_min": 60
        }))
        .unwrap()];
    });
    let all = ids("cf", 23);
    for id in &all {
        app.create_file(id);
    }
    app.record_now(&refs(&all));
    let expected: BTreeSet<String> = all
        .iter()
        .flat_map(|id| {
            [
                format!("https://media.example.com/hls/{id}/master.m3u8"),
                format!("https://media.example.com/{id}.mp4"),
            ]
        })
        .collect();
    let purged = || -> BTreeSet<String> {
        cloudflare
            .received()
            .iter()
            .filter(|r| r.status == Some(200))
            .flat_map(|r| r.json()["files"].as_array().unwrap().clone())
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    };
    wait_until("every URL purged", || purged() == expected);
    let calls = cloudflare.received();
    assert!(
        calls.iter().all(|c| c.status != Some(400)),
        "a malformed call: {calls:?}"
    );
    // Grouped: at most 10 URLs (5 videos) a call, so at least 5 calls.
    assert!(calls
        .iter()
        .all(|c| c.json()["files"].as_array().unwrap().len() <= 10));
    assert!(calls.len() >= 5, "{}", calls.len());
    // 60 a minute: never two calls less than a second apart.
    for pair in calls.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(950), "calls {gap:?} apart");
    }
    wait_until("every purge event delivered", || {
        events(&app, "&state=delivered&sink=cf").len() == 23
    });
}

fn two_instances_share_one_outbox_and_deliver_each_event_once(backend: Backend) {
    let receiver = Receiver::ok();
    let hook = webhook("mgmt", receiver.url("/hooks"));
    let first = spawn_app(backend, |c: &mut Config| {
        c.webhooks = vec![hook.clone()];
        c.batch_size = 100;
    });
    let second = start_more(&first, |_| {});
    let all = ids("shared", 1000);
    for id in &all {
        first.create_file(id);
    }
    for (i, chunk) in all.chunks(100).enumerate() {
        let app = if i % 2 == 0 { &first } else { &second };
        app.record_now(&refs(chunk));
    }
    wait_until("every event delivered", || {
        subjects(&receiver, "deletion.completed").len() == 1000
    });
    // Each event leased to one instance at a time: with a healthy receiver
    // none came twice.
    let received = receiver.received();
    let distinct: BTreeSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(received.len(), distinct.len(), "an event delivered twice");
    assert_eq!(received.len(), 1000);
    let agents: BTreeSet<&str> = received.iter().map(|r| r.header("user-agent")).collect();
    assert_eq!(agents.len(), 1, "{agents:?}");
    drop(second);
}

fn an_ack_that_lost_its_lease_writes_no_event(backend: Backend) {
    use video_scheduler::db::queries::{self, events::Sinks};
    let app = spawn_app(backend, |c| {
        c.webhooks = vec![webhook("mgmt", closed_url())]
    });
    let lost = ["lost-0001", "lost-0002", "lost-0003"];
    app.record(&lost, json!({ "delay_secs": 3600 }));
    let db = app.db();
    let claimed = crate::common::claim_as(&db, "owner-a", 10);
    assert_eq!(claimed.len(), 3);
    let sinks = Sinks::new(&[("mgmt".into(), vec!["deletion.completed".into()])], &[]);
    let done = crate::common::done(&claimed);
    let now = crate::common::now_ms();
    let wrong = db
        .write(|c| queries::ack::ack_announcing(c, "owner-b", (&done, &[]), Some(now), now, &sinks))
        .unwrap();
    assert_eq!(wrong.removed, 0);
    let announced = || db.read(queries::announce::announced_ids).unwrap();
    assert!(
        events(&app, "").is_empty() && announced().is_empty(),
        "an event or an announcement for an ack that did not happen"
    );
    // One row of the batch taken over by another instance meanwhile: the
    // ack announces only the two that went.
    db.write(|c| {
        use diesel::RunQueryDsl;
        diesel::sql_query("UPDATE video_del_rec SET locked_by = 'owner-b' WHERE id = 'lost-0003'")
            .execute(c)
    })
    .unwrap();
    let right = db
        .write(|c| queries::ack::ack_announcing(c, "owner-a", (&done, &[]), Some(now), now, &sinks))
        .unwrap();
    assert_eq!(right.removed, 2);
    // The notifier makes the ack's announcement into events.
    wait_until("two events", || events(&app, "").len() == 2);
    let written = events(&app, "");
    assert!(announced().is_empty());
    assert!(written
        .iter()
        .all(|e| e["type"] == "deletion.completed" && e["sink"] == "mgmt"));
    let told: BTreeSet<(&str, &str)> = written
        .iter()
        .map(|e| {
            (
                e["subject"].as_str().unwrap(),
                e["data"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        told,
        BTreeSet::from([("lost-0001", "lost-0001"), ("lost-0002", "lost-0002")])
    );
}

/// The notifier yields to a backlog's drain only when nothing throttles
/// it: under `max_deletions_per_sec` the completions reach the receiver
/// while rows are still waiting (100 ids at 20 a second: 5 s of drain).
fn a_throttled_drain_is_announced_while_it_runs(backend: Backend) {
    let receiver = Receiver::ok();
    let app = spawn_app(backend, |c| {
        c.max_deletions_per_sec = 20;
        c.webhooks = vec![webhook("mgmt", receiver.url("/hooks"))];
    });
    let all = ids("slow", 100);
    for id in &all {
        app.create_file(id);
    }
    app.record_now(&refs(&all));
    wait_until("a first completion", || {
        !subjects(&receiver, "deletion.completed").is_empty()
    });
    assert!(app.row_count() > 0, "announced only after the drain");
    wait_until("every completion", || {
        subjects(&receiver, "deletion.completed").len() == 100
    });
}

fn closed_url() -> String {
    format!("http://127.0.0.1:{}/", closed_port())
}
