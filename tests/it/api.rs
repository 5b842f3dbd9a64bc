//! The HTTP contract: answers, errors, limits, auth.

use std::collections::BTreeSet;

use crate::common::{claim_as, fail_for_good, spawn_app, Backend, TestApp};
use serde_json::{json, Value};
use video_scheduler::db::queries;

backend_tests!(
    the_openapi_document_describes_every_route,
    every_bad_id_is_a_400_and_changes_nothing,
    the_batch_route_enforces_its_limits_with_json_errors,
    show_cancel_and_retry_answer_as_the_contract_says,
    listing_is_keyset_paginated_by_id_and_filtered_by_state,
    stats_count_by_state_and_age_the_oldest_due_request,
    probes_answer_and_readyz_checks_the_database,
    api_tokens_protect_every_route_but_the_probes,
);

fn stats(app: &TestApp) -> Value {
    app.get("/v1/stats").json()
}

fn every_bad_id_is_a_400_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    // (path as sent on the wire, expected seed answer)
    let long = "x".repeat(65);
    let seed_cases = [
        ("/video-delete-record/", "video id should not be empty"),
        ("/video-delete-record", "video id should not be empty"),
        (&*format!("/video-delete-record/{long}"), "invalid video id"),
        ("/video-delete-record/.", "invalid video id"),
        ("/video-delete-record/..", "invalid video id"),
        ("/video-delete-record/../x", "invalid video id"),
        ("/video-delete-record/..%2Fx", "invalid video id"),
        ("/video-delete-record/a/b", "invalid video id"),
        ("/video-delete-record/%2e%2e%2fetc", "invalid video id"),
        (
            "/video-delete-record/%252e%252e%252fetc",
            "invalid video id",
        ),
        ("/video-delete-record/a%00b", "invalid video id"),
        ("/video-delete-record/a%20b", "invalid video id"),
        ("/video-delete-record/vid%C3%A9o", "invalid video id"),
    ];
    for (path, answer) in seed_cases {
        let reply = app.raw_get(path);
        assert_eq!((reply.status, reply.body.as_str()), (400, answer), "{path}");
    }

    let body_cases = [
        "",
        &long,
        ".",
        "..",
        "../x",
        "a/b",
        "%2e%2e%2fetc",
        "a\0b",
        "a b",
        " a",
        "vidéo",
    ];
    for bad in body_cases {
        let reply = app.record(&["fine-id", bad], json!({}));
        assert_eq!(reply.status, 400, "{bad:?}");
        let error = reply.json();
        assert_eq!(error["code"], "invalid_id", "{bad:?}");
        assert!(
            error["error"].as_str().unwrap().starts_with("ids[1]: "),
            "{error}"
        );
    }
    for path in [
        "/v1/deletions/..",
        "/v1/deletions/a%20b",
        "/v1/deletions/%2e%2e%2fetc",
    ] {
        let reply = app.raw_get(path);
        assert_eq!(reply.status, 400, "{path}");
    }

    assert_eq!(
        stats(&app),
        json!({ "pending": 0, "running": 0, "failed": 0, "done": 0,
                "oldest_due_age_ms": null, "urgent_due": 0,
                "oldest_urgent_due_age_ms": null, "paused": false,
                "targets": [{ "name": "default", "kind": "local", "ready": true, "error": null }],
                "replication": { "kind": "none" } }),
        "nothing was recorded, not even the valid id of a rejected batch"
    );
}

fn the_batch_route_enforces_its_limits_with_json_errors(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    let too_many: Vec<String> = (0..10_001).map(|i| format!("v{i}")).collect();
    let reply = app.post("/v1/deletions", json!({ "ids": too_many }));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["code"], "bad_request");

    let huge = "x".repeat(1 << 20);
    let reply = app.post("/v1/deletions", json!({ "ids": [huge] }));
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["code"], "payload_too_large");

    for body in [
        json!({ "ids": ["a"], "delay_secs": 5, "not_before": "2030-01-01T00:00:00Z" }),
        json!({ "ids": ["a"], "not_before": "tomorrow" }),
        json!({ "ids": ["a"], "delay_secs": -1 }),
        json!({ "ids": "a" }),
        json!({ "id": ["a"] }),
        // Arrays are not objects, though serde would read one as the
        // fields in order (schemathesis found `[]` accepted).
        json!([]),
        json!([["a"]]),
        json!({ "items": [["a"]] }),
    ] {
        let reply = app.post("/v1/deletions", body.clone());
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.json()["code"], "bad_request", "{body}");
    }
    for path in ["/v1/deletions/cancel", "/v1/deletions/retry"] {
        let reply = app.post(path, json!(["failed"]));
        assert_eq!(reply.status, 400, "{path}");
        assert!(
            reply.body.contains("a JSON object"),
            "{path}: {}",
            reply.body
        );
    }

    let duplicates = app.record(&["dup", "dup", "other"], json!({ "delay_secs": 60 }));
    assert_eq!(
        duplicates.json(),
        json!({ "accepted": 2, "already_queued": 0 })
    );
    let empty = app.record(&[], json!({}));
    assert_eq!(empty.json(), json!({ "accepted": 0, "already_queued": 0 }));
}

fn show_cancel_and_retry_answer_as_the_contract_says(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    assert_eq!(app.get("/v1/deletions/unknown").status, 404);
    assert_eq!(app.get("/v1/deletions/unknown").json()["code"], "not_found");
    assert_eq!(app.delete("/v1/deletions/unknown").status, 404);
    assert_eq!(
        app.post("/v1/deletions/unknown/retry", json!({})).status,
        404
    );

    app.record(&["to-cancel", "running-one"], json!({ "delay_secs": 3600 }));
    let row = app.get("/v1/deletions/to-cancel").json();
    assert_eq!(row["state"], "pending");
    assert_eq!(row["attempts"], 0);
    assert!(row["created_at"].as_str().unwrap().ends_with('Z'));

    let retry = app.post("/v1/deletions/to-cancel/retry", json!({}));
    assert_eq!(retry.status, 409, "only failed requests can be retried");
    assert_eq!(retry.json()["code"], "conflict");

    assert_eq!(app.delete("/v1/deletions/to-cancel").status, 204);
    assert_eq!(app.get("/v1/deletions/to-cancel").status, 404);

    let claimed = claim_as(&app.db(), "other-instance", 10);
    assert_eq!(claimed.len(), 1);
    let running = app.get("/v1/deletions/running-one").json();
    assert_eq!(running["state"], "running");
    assert_eq!(running["locked_by"], "other-instance");
    assert_eq!(app.delete("/v1/deletions/running-one").status, 409);
    assert_eq!(
        app.post("/v1/deletions/running-one/retry", json!({}))
            .status,
        409
    );
}

fn listing_is_keyset_paginated_by_id_and_filtered_by_state(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    let ids = ["e", "a", "d", "b", "c"];
    app.record(&ids, json!({ "delay_secs": 3600 }));

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/deletions?limit=2&after={a}"),
            None => "/v1/deletions?limit=2".into(),
        };
        let page = app.get(&path).json();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);

    let pending = app.get("/v1/deletions?state=pending&limit=1000").json();
    assert_eq!(pending["items"].as_array().unwrap().len(), 5);
    assert_eq!(pending["next"], Value::Null);
    let failed = app.get("/v1/deletions?state=failed").json();
    assert_eq!(failed, json!({ "items": [], "next": null }));

    for (bad, code) in [
        ("state=finished", "bad_request"),
        ("limit=0", "bad_request"),
        ("limit=1001", "bad_request"),
        ("limit=x", "bad_request"),
        ("colour=red", "bad_request"),
    ] {
        let reply = app.get(&format!("/v1/deletions?{bad}"));
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.json()["code"], code, "{bad}");
    }
}

fn stats_count_by_state_and_age_the_oldest_due_request(backend: Backend) {
    let app = spawn_app(backend, |c| c.tick_ms = 3_600_000);
    app.record(&["p1", "p2", "f1"], json!({ "delay_secs": 3600 }));
    let db = app.db();
    let claimed = claim_as(&db, "test", 3);
    fail_for_good(&db, "test", claimed.iter().find(|c| c.id == "f1").unwrap());

    let s = stats(&app);
    assert_eq!(
        (
            s["pending"].as_i64(),
            s["running"].as_i64(),
            s["failed"].as_i64()
        ),
        (Some(0), Some(2), Some(1))
    );
    assert_eq!(s["oldest_due_age_ms"], Value::Null, "nothing is due");

    let row = db.read(|c| queries::manage::get(c, "p1")).unwrap().unwrap();
    assert_eq!(row.locked_by.as_deref(), Some("test"));
    let failed = app.get("/v1/deletions/f1").json();
    assert_eq!(
        (failed["state"].as_str(), failed["last_error"].as_str()),
        (Some("failed"), Some("boom"))
    );
}

fn probes_answer_and_readyz_checks_the_database(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    assert_eq!(app.get("/healthz").status, 200);
    let ready = app.get("/readyz");
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
}

fn api_tokens_protect_every_route_but_the_probes(backend: Backend) {
    let app = spawn_app(backend, |c| c.api_tokens = vec!["s3cret".into()]);
    // Every route the router answers, from the router itself: only the
    // probes and the dashboard's page (no data) are open.
    let open = ["/healthz", "/readyz", "/"];
    assert_eq!(video_scheduler::http::OPEN_ROUTES, open);
    let mut protected = 0;
    for (method, template) in video_scheduler::http::route_table() {
        let path = concrete(&template);
        if open.contains(&path.as_str()) {
            continue;
        }
        for header in [None, Some("Bearer wrong"), Some("Basic s3cret")] {
            let mut request = ureq::request(method.as_str(), &app.url(&path));
            if let Some(header) = header {
                request = request.set("Authorization", header);
            }
            let reply = crate::common::try_call(request, None).unwrap();
            assert_eq!(reply.status, 401, "{method} {path} with {header:?}");
            if method != actix_web::http::Method::HEAD {
                assert_eq!(reply.json()["code"], "unauthorized", "{method} {path}");
            }
        }
        protected += 1;
    }
    assert!(protected >= 10, "only {protected} routes checked");
    assert_eq!(app.get_with_token("/v1/stats", "s3cret").status, 200);
    assert_eq!(app.get_with_token("/openapi.json", "s3cret").status, 200);
    assert_eq!(
        app.get_with_token("/video-delete-record/x", "s3cret")
            .status,
        200
    );
    for path in open {
        assert_eq!(app.get(path).status, 200, "{path}");
    }
}

/// A path the router pattern `template` matches: `{id}` and `{vid:.*}`
/// become `x`, a literal pattern such as `{id:retry}` becomes its word.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = start + rest[start..].find('}').expect("a closed segment");
        out.push_str(&rest[..start]);
        match rest[start + 1..end].split_once(':') {
            Some((_, word)) if word.chars().all(|c| c.is_ascii_alphanumeric()) => {
                out.push_str(word)
            }
            _ => out.push('x'),
        }
        rest = &rest[end + 1..];
    }
    out + rest
}

fn the_openapi_document_describes_every_route(backend: Backend) {
    let app = spawn_app(backend, |_| {});
    let reply = app.get("/openapi.json");
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");

    // The router's own list (what `routes()` registers), against the paths
    // and methods of the document: the same set, both ways.
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch", "head"].contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = video_scheduler::http::route_table()
        .into_iter()
        .map(|(method, path)| {
            let method = method.as_str().to_lowercase();
            // `{id:retry}` is the literal `retry` where that is documented
            // for the method, and the id `retry` of `{id}` otherwise.
            let (literal, general) = documented_forms(&path);
            match documented.contains(&(method.clone(), literal.clone())) {
                true => (method, literal),
                false => (method, general),
            }
        })
        .collect();
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes missing from the OpenAPI document"
    );
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented routes the server does not have"
    );
    assert!(routed.len() >= 20, "{routed:?}");

    for param in doc["paths"]["/v1/deletions"]["get"]["parameters"]
        .as_array()
        .unwrap()
    {
        assert_eq!(param["in"], "query", "{param}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "CreateBody",
        "DeletionView",
        "ReceiptView",
        "Page",
        "Stats",
        "Recorded",
        "ErrorBody",
        "BulkBody",
        "Count",
        "Paused",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema}");
    }
}

/// An actix pattern as OpenAPI writes it, twice: `{vid:.*}` is `{vid}`; a
/// segment matching one literal (`{id:retry}`) is that literal in the
/// first form and `{id}` in the second; a trailing `/` names the same
/// route.
fn documented_forms(pattern: &str) -> (String, String) {
    let (mut literal, mut general) = (String::new(), String::new());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        general.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').unwrap();
        let inside = &rest[open + 1..close];
        let (name, regex) = inside.split_once(':').unwrap_or((inside, ""));
        general.push_str(&format!("{{{name}}}"));
        match regex {
            word if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric()) => {
                literal.push_str(word)
            }
            _ => literal.push_str(&format!("{{{name}}}")),
        }
        rest = &rest[close + 1..];
    }
    literal.push_str(rest);
    general.push_str(rest);
    let trim = |s: String| match s.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed.to_owned(),
        _ => s,
    };
    (trim(literal), trim(general))
}
