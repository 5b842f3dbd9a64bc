//! What a hostile client or a careless operator meets: bounded schedules,
//! rows left by the Go scheduler that are not valid ids, errors that say
//! their cause, slow clients, and the small HTTP details.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::process::{write_config, ServerProcess};
use crate::common::{spawn_app, wait_until, workspace, Backend, TestApp, DEADLINE};
use diesel::RunQueryDsl;
use serde_json::{json, Value};

backend_tests!(
    huge_delays_and_far_schedules_are_refused_the_same_way_on_every_route,
    rows_with_ids_that_are_not_valid_can_be_listed_past_inspected_and_cancelled,
    a_query_error_is_a_500_with_its_cause_in_the_log_and_readyz_says_why,
    a_database_that_is_not_migrated_is_not_ready,
);

/// Runs raw SQL on the app's database, as another program would.
fn sql(app: &TestApp, statement: &str) {
    app.db()
        .write(|c| diesel::sql_query(statement).execute(c))
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

fn huge_delays_and_far_schedules_are_refused_the_same_way_on_every_route(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    for body in [
        json!({ "ids": ["far"], "delay_secs": 10_000_000_000_000_000u64 }),
        json!({ "ids": ["far"], "delay_secs": u64::MAX }),
        // One above the documented bound (found by schemathesis).
        json!({ "ids": ["far"], "delay_secs": video_scheduler::schedule::MAX_DELAY_SECS + 1 }),
        json!({ "ids": ["far"], "not_before": "10000-01-01T00:00:00Z" }),
        json!({ "ids": ["far"], "not_before": "9999-12-31T23:59:59-23:59" }),
    ] {
        let reply = app.post("/v1/deletions", body.clone());
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let error = reply.json();
        assert_eq!(error["code"], "bad_request");
        let text = error["error"].as_str().unwrap();
        assert!(
            text.starts_with("delay_secs: at most") || text.starts_with("not_before: "),
            "{text}"
        );
    }
    // The CLI refuses the same way, through the same function.
    let config_file = write_config(&app.config, app.root().parent().unwrap(), "cli.json");
    let out = crate::common::binary()
        .arg("--config")
        .arg(&config_file)
        .args(["enqueue", "--delay-secs", "10000000000000000", "far"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--delay-secs: at most"), "{stderr}");
    assert_eq!(app.row_count(), 0, "nothing was recorded");
    let longest = app.record(
        &["longest"],
        json!({ "delay_secs": video_scheduler::schedule::MAX_DELAY_SECS }),
    );
    assert_eq!(longest.status, 202, "the bound itself: {}", longest.body);

    // The latest time accepted reads back as a valid time, and a past one
    // is stored as now: a pending request never shows `not_before: null`.
    let latest = app.record(&["latest"], json!({ "not_before": "9999-12-31T23:59:59Z" }));
    assert_eq!(latest.status, 202, "{}", latest.body);
    let row = app.get("/v1/deletions/latest").json();
    assert_eq!(row["not_before"], "9999-12-31T23:59:59.000Z");
    let past = app.record(&["past"], json!({ "not_before": "1990-01-01T00:00:00Z", }));
    assert_eq!(past.status, 202);
    let cli = crate::common::binary()
        .arg("--config")
        .arg(&config_file)
        .args(["enqueue", "--delay-secs", "3600", "from-cli"])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let page = app.get("/v1/deletions?limit=1000").json();
    for item in page["items"].as_array().unwrap() {
        let not_before = item["not_before"]
            .as_str()
            .unwrap_or_else(|| panic!("{item}"));
        chrono::DateTime::parse_from_rfc3339(not_before).unwrap();
    }
}

fn rows_with_ids_that_are_not_valid_can_be_listed_past_inspected_and_cancelled(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 20);
    // What the Go scheduler accepted without checking, next to real ids.
    // (No empty id next to " ": MariaDB's collations ignore trailing spaces.)
    for id in ["../x", " ", "a b", "é"] {
        sql(
            &app,
            &format!("INSERT INTO video_del_rec (id) VALUES ('{id}')"),
        );
    }
    wait_until("the invalid ids fail for good, never used as paths", || {
        app.get("/v1/stats").json()["failed"] == 4
    });
    app.record(&["valid-1", "valid-2"], json!({ "delay_secs": 3600 }));
    let db = app.db();
    for claimed in crate::common::claim_as(&db, "test", 10) {
        crate::common::fail_for_good(&db, "test", &claimed);
    }

    // Listed past, one per page: every `next` is accepted as `after`.
    let mut seen = Vec::new();
    let mut path = "/v1/deletions?state=failed&limit=1".to_owned();
    loop {
        let reply = app.get(&path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let page = reply.json();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => {
                let next: String = url_encode(next);
                path = format!("/v1/deletions?state=failed&limit=1&after={next}");
            }
            None => break,
        }
    }
    // In the database's collation order: compare as sets, with no repeat.
    let distinct: std::collections::BTreeSet<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(distinct.len(), seen.len(), "no id twice: {seen:?}");
    assert_eq!(
        distinct,
        [" ", "../x", "a b", "valid-1", "valid-2", "é"].into()
    );

    // Inspected by their exact text, percent-encoded.
    let row = app.get("/v1/deletions/..%2Fx").json();
    assert_eq!(
        (row["id"].as_str(), row["state"].as_str()),
        (Some("../x"), Some("failed"))
    );
    assert!(row["last_error"]
        .as_str()
        .unwrap()
        .starts_with("invalid video id"));
    // Never retried: not by id, not in bulk.
    let retry = app.post("/v1/deletions/..%2Fx/retry", json!({}));
    assert_eq!(retry.status, 409, "{}", retry.body);
    let config_file = write_config(&app.config, app.root().parent().unwrap(), "cli.json");
    let out = crate::common::binary()
        .arg("--config")
        .arg(&config_file)
        .args(["retry", "--failed"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2 failed requests moved back to pending"
    );
    // A raw id only matches existing rows: anything else stays a 400.
    assert_eq!(app.raw_get("/v1/deletions/..%2Fnothing").status, 400);
    assert_eq!(app.delete("/v1/deletions/..%2Fnothing").status, 400);

    // Cancelled through the API, and the rest with the CLI.
    assert_eq!(app.delete("/v1/deletions/..%2Fx").status, 204);
    assert_eq!(app.delete("/v1/deletions/%20").status, 204);
    let out = crate::common::binary()
        .arg("--config")
        .arg(&config_file)
        .args(["cancel", "--invalid"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cancelled \"é\"\n"), "{stdout}");
    assert!(stdout.contains("cancelled \"a b\"\n"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with("2 requests with an invalid id cancelled"),
        "{stdout}"
    );
    let left: Vec<Value> = app.get("/v1/deletions?limit=1000").json()["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        left.iter()
            .all(|i| i["id"].as_str().unwrap().starts_with("valid")),
        "{left:?}"
    );
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn a_query_error_is_a_500_with_its_cause_in_the_log_and_readyz_says_why(backend: Backend) {
    let (ws, mut config) = workspace(backend);
    config.tick_ms = 50;
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    let db = server.db();
    db.write(|c| diesel::sql_query("DROP TABLE video_del_rec").execute(c))
        .unwrap();

    let batch = server.post("/v1/deletions", json!({ "ids": ["a"] }));
    assert_eq!(batch.status, 500, "{}", batch.body);
    assert_eq!(batch.json()["code"], "internal");
    assert!(batch.retry_after.is_none(), "not a retry-later");
    let seed = server.get("/video-delete-record/b");
    assert_eq!((seed.status, seed.body.as_str()), (500, "internal error"));
    assert_eq!(server.get("/v1/stats").status, 500);
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 503);
    let reason = ready.json()["error"].as_str().unwrap().to_owned();
    assert!(reason.contains("video_del_rec"), "{reason}");

    wait_until("the cause is logged at error level", || {
        server.log().lines().any(|l| {
            l.contains("ERROR") && l.contains("answered 500") && l.contains("video_del_rec")
        })
    });
    wait_until("the failing claims are logged", || {
        server.log().contains("claim failed; retrying with backoff")
    });
    let log = server.log();
    assert_eq!(
        log.matches("claim failed").count(),
        1,
        "once per streak, not per tick:\n{log}"
    );
    assert!(
        !log.contains("database unavailable"),
        "not an outage:\n{log}"
    );
}

fn a_database_that_is_not_migrated_is_not_ready(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    assert_eq!(app.get("/readyz").status, 200);
    // A newer binary's migration would be missing the same way.
    sql(
        &app,
        "DELETE FROM __diesel_schema_migrations WHERE version = \
         (SELECT v FROM (SELECT MAX(version) AS v FROM __diesel_schema_migrations) AS latest)",
    );
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(
        ready.json()["error"],
        "database schema is behind, run `video-scheduler migrate`"
    );
    assert_eq!(ready.retry_after.as_deref(), Some("1"));
}

/// Opens a connection and sends `head`, then one byte of `trickle` every
/// 20 ms until the server answers or closes. Returns what it answered.
fn trickle(app: &TestApp, head: &[u8], trickle: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.addr).unwrap();
    stream.write_all(head).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    for byte in trickle.iter().cycle() {
        assert!(
            start.elapsed() < DEADLINE,
            "the slow client was never cut off"
        );
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
    }
    // Read whatever is left until the server closes.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_client_trickling_its_request_is_cut_off_with_408() {
    let app = spawn_app(Backend::Sqlite, |c| c.client_request_timeout_ms = 1000);
    let body = trickle(
        &app,
        b"POST /v1/deletions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
        b"{\"ids\": [\"aaaaaaaaaaaaaaaa",
    );
    assert!(body.starts_with("HTTP/1.1 408"), "{body}");
    assert!(body.contains("\"code\":\"request_timeout\""), "{body}");
    let head = trickle(&app, b"GET /v1/stats HTTP/1.1\r\n", b"X-Slow: aaaaaaaa\r\n");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    // The server is fine and nothing was recorded.
    assert_eq!(app.get("/v1/stats").status, 200);
    assert_eq!(app.row_count(), 0);
}

#[test]
fn http_details_bearer_scheme_head_and_json_404_405() {
    let app = spawn_app(Backend::Sqlite, |c| c.api_tokens = vec!["s3cret".into()]);
    for header in ["Bearer s3cret", "bearer s3cret", "BEARER   s3cret"] {
        let reply = crate::common::try_call(
            ureq::get(&app.url("/v1/stats")).set("Authorization", header),
            None,
        )
        .unwrap();
        assert_eq!(reply.status, 200, "{header}");
    }
    for header in ["s3cret", "Basic s3cret", "Bearer", "Bearers3cret"] {
        let reply = crate::common::try_call(
            ureq::get(&app.url("/v1/stats")).set("Authorization", header),
            None,
        )
        .unwrap();
        assert_eq!(reply.status, 401, "{header}");
    }

    // HEAD wherever GET is answered: every GET of the OpenAPI document.
    let doc = app.get_with_token("/openapi.json", "s3cret").json();
    let auth = ("Authorization", "Bearer s3cret");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("get").is_none() || path.starts_with("/video-delete-record") {
            continue;
        }
        let path = path.replace("{id}", "some-id");
        let get =
            crate::common::try_call(ureq::get(&app.url(&path)).set(auth.0, auth.1), None).unwrap();
        let head =
            crate::common::try_call(ureq::head(&app.url(&path)).set(auth.0, auth.1), None).unwrap();
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert_eq!(head.body, "", "HEAD {path} has no body");
        checked += 1;
    }
    assert!(checked >= 6, "{checked} GET routes checked");
    // The seed's GET records a deletion; a HEAD must not.
    let head = crate::common::try_call(
        ureq::head(&app.url("/video-delete-record/by-head")).set(auth.0, auth.1),
        None,
    )
    .unwrap();
    assert_eq!(head.status, 405);
    assert_eq!(app.row_count(), 0);

    // 404 and 405 under /v1 are JSON errors like the others.
    let missing = app.get_with_token("/v1/nothing-here", "s3cret");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "not_found");
    let wrong = crate::common::try_call(
        ureq::request("PUT", &app.url("/v1/deletions")).set(auth.0, auth.1),
        None,
    )
    .unwrap();
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.json()["code"], "method_not_allowed");
}

#[test]
fn malformed_requests_are_counted_not_logged_as_errors() {
    let (ws, config) = workspace(Backend::Sqlite);
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.write_all(garbage).unwrap();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.read_to_end(&mut Vec::new());
    }
    wait_until("the malformed requests are counted", || {
        server.metric("video_scheduler_http_protocol_errors_total") >= 4.0
    });
    let log = server.log();
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "no error lines for a client's garbage:\n{log}"
    );
}
