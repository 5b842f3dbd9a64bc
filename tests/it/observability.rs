//! What an operator watches: request ids from the edge to the batch's log
//! line and the receipt, the access log, and the metrics a Prometheus
//! scrape gets.

use crate::common::process::{write_config, ServerProcess};
use crate::common::{spawn_app, wait_until, workspace, Backend};
use serde_json::json;

/// `GET path` with `X-Request-Id: id`; returns the id the answer carries.
fn echoed(app: &crate::common::Client, path: &str, id: Option<&str>) -> String {
    let mut request = ureq::get(&app.url(path));
    if let Some(id) = id {
        request = request.set("X-Request-Id", id);
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{e}"),
    };
    response.header("x-request-id").unwrap().to_owned()
}

#[test]
fn request_ids_are_taken_when_sane_else_generated_and_echoed() {
    let app = spawn_app(Backend::Sqlite, |_| {});
    assert_eq!(
        echoed(&app, "/v1/stats", Some("lb-4711:a.b_c-d")),
        "lb-4711:a.b_c-d"
    );
    let long = "x".repeat(65);
    for refused in [long.as_str(), "has space", "semi;colon", "<script>", ""] {
        let given = echoed(&app, "/v1/stats", Some(refused));
        assert_ne!(given, refused);
        assert!(uuid_like(&given), "a generated id, not {given:?}");
    }
    let (a, b) = (
        echoed(&app, "/healthz", None),
        echoed(&app, "/healthz", None),
    );
    assert!(uuid_like(&a) && uuid_like(&b) && a != b);
    // Errors carry it too.
    assert!(uuid_like(&echoed(&app, "/v1/deletions/a%20b", None)));
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|&c| c == '-').count() == 4
}

#[test]
fn a_request_id_follows_the_request_into_the_access_log_its_batch_line_and_its_receipt() {
    let (ws, mut config) = workspace(Backend::Sqlite);
    config.access_log = true;
    config.storage[0].paths = vec!["{id}".into()];
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    server.create_file("traced");
    let response = ureq::get(&server.url("/video-delete-record/traced"))
        .set("X-Request-Id", "trace-0001")
        .call()
        .unwrap();
    assert_eq!(response.header("x-request-id"), Some("trace-0001"));
    wait_until("the request is done", || {
        server.get("/v1/deletions/traced").json()["state"] == "done"
    });
    let receipt = server.get("/v1/deletions/traced").json();
    assert_eq!(receipt["request_id"], "trace-0001");
    assert_eq!(receipt["source"], "seed");
    wait_until("the lines are logged", || {
        server.log().contains("requests trace-0001")
    });
    let log = server.log();
    let access = log
        .lines()
        .find(|l| l.contains("access]") && l.contains("/video-delete-record/traced"))
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    assert!(
        access.contains("\"GET /video-delete-record/traced\" 200"),
        "{access}"
    );
    assert!(access.contains("request_id=trace-0001"), "{access}");
    let batch = log
        .lines()
        .find(|l| l.contains("batch of 1:"))
        .unwrap_or_else(|| panic!("no batch line:\n{log}"));
    assert!(batch.ends_with("; requests trace-0001"), "{batch}");
}

#[test]
fn the_access_log_is_off_by_default() {
    let (ws, config) = workspace(Backend::Sqlite);
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    let server = ServerProcess::start(&config, &write_config(&config, ws.dir.path(), "conf.json"));
    for _ in 0..5 {
        assert_eq!(server.get("/v1/stats").status, 200);
    }
    assert!(!server.log().contains("access]"), "{}", server.log());
}

#[test]
fn a_scrape_has_the_queue_gauges_http_and_pipeline_metrics() {
    let app = spawn_app(Backend::Sqlite, |c| c.tick_ms = 20);
    app.record(&["later-1", "later-2"], json!({ "delay_secs": 3600 }));
    app.create_file("now-1");
    assert_eq!(app.get("/video-delete-record/now-1").status, 200);
    wait_until("deleted", || !app.exists("now-1"));
    let db = app.db();
    let claimed = crate::common::claim_as(&db, "test", 1);
    crate::common::fail_for_good(&db, "test", &claimed[0]);
    assert_eq!(app.get("/v1/deletions/nope").status, 404);

    let gauge = |name: &str| app.metric(name);
    assert_eq!(gauge("video_scheduler_requests{state=\"pending\"}"), 1.0);
    assert_eq!(gauge("video_scheduler_requests{state=\"failed\"}"), 1.0);
    assert_eq!(gauge("video_scheduler_requests{state=\"done\"}"), 1.0);
    assert_eq!(gauge("video_scheduler_requests{state=\"running\"}"), 0.0);
    assert_eq!(gauge("video_scheduler_oldest_due_seconds"), 0.0);
    assert_eq!(gauge("video_scheduler_paused"), 0.0);
    assert!(gauge("video_scheduler_claim_seconds_count") >= 1.0);
    assert!(gauge("video_scheduler_ack_seconds_count") >= 1.0);
    // HTTP by route template (not by id), with the status.
    assert_eq!(
        gauge("video_scheduler_http_requests_total{route=\"/v1/deletions/{id}\",status=\"404\"}"),
        1.0
    );
    assert_eq!(
        gauge("video_scheduler_http_requests_total{route=\"/video-delete-record/{vid:.*}\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        gauge("video_scheduler_http_request_seconds_count{route=\"/v1/deletions/{id}\"}"),
        1.0
    );
    // A due request waiting shows its age.
    app.post("/v1/pause", json!({}));
    app.record(&["waits"], json!({}));
    wait_until("the age shows", || {
        gauge("video_scheduler_oldest_due_seconds") >= 1.0
    });
    assert_eq!(gauge("video_scheduler_paused"), 1.0);
}
