//! The server through real S3 requests over HTTP: object_store's client,
//! and requests signed with its SigV4 signer for what it cannot send.

mod support;

use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use http::Method;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use s3_memory::{Entry, Lock, MemoryS3, Op, Versioning, ACCESS_KEY, BUCKET, SECRET_KEY};
use support::{eventually, fields, version_entries, Client};

fn entry(key: &str, version_id: &str, marker: bool, latest: bool) -> Entry {
    Entry {
        key: key.into(),
        version_id: version_id.into(),
        marker,
        latest,
    }
}

/// Keys listed by object_store (ListObjectsV2, every page).
async fn listed(client: &Client, prefix: &str) -> Vec<String> {
    client
        .store
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

async fn http_put(client: &Client, key: &str, body: &[u8]) -> Option<String> {
    client
        .store
        .put(&Path::from(key), PutPayload::from(body.to_vec()))
        .await
        .unwrap()
        .version
}

#[tokio::test]
async fn versions_page_by_key_and_version_markers_across_more_than_a_thousand_versions_of_one_key()
{
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    s3.set_versioning(BUCKET, Versioning::Enabled);
    for i in 0..1500 {
        s3.put(BUCKET, "a/many", format!("{i}").as_bytes());
    }
    let mut few = Vec::new();
    for i in 0..3 {
        few.push(http_put(&client, "a/few", &[i]).await.unwrap());
    }
    http_put(&client, "a/gone", b"x").await.unwrap();
    client.store.delete(&Path::from("a/gone")).await.unwrap();
    http_put(&client, "a/gone", b"y").await.unwrap();
    s3.put(BUCKET, "b/outside", b"x");
    let expected = s3.entries(BUCKET, "a/");
    assert_eq!(expected.len(), 1506);
    // Newest first: the ids object_store got back, in reverse.
    let few_listed: Vec<&str> = expected[..3]
        .iter()
        .map(|e| e.version_id.as_str())
        .collect();
    assert_eq!(few_listed, [&few[2], &few[1], &few[0]]);
    // a/gone: a version, the delete marker under it, the version under
    // that, in one sequence (not every marker first, as s3s writes them).
    let back: Vec<(bool, bool)> = expected[3..6]
        .iter()
        .map(|e| (e.marker, e.latest))
        .collect();
    assert_eq!(back, [(false, true), (true, false), (false, false)]);

    // Default page size: 1,000 then 506, the first ending inside a/many.
    let page = client
        .list_versions(BUCKET, &[("prefix", "a/")])
        .await
        .expect(200)
        .xml();
    assert_eq!(page.text("IsTruncated"), Some("true"));
    assert_eq!(page.text("MaxKeys"), Some("1000"));
    assert_eq!(page.text("NextKeyMarker"), Some("a/many"));
    assert_eq!(
        page.text("NextVersionIdMarker"),
        Some(expected[999].version_id.as_str())
    );
    assert_eq!(version_entries(&page), expected[..1000]);
    let (all, pages) = client.all_versions("a/", 1000).await;
    assert_eq!((all.as_slice(), pages), (expected.as_slice(), 2));

    // Other page sizes end on every kind of boundary.
    for max_keys in [1, 2, 3, 333, 1000] {
        let (all, _) = client.all_versions("a/", max_keys).await;
        assert_eq!(all, expected, "max-keys {max_keys}");
    }
    // Above 1,000 is 1,000.
    let page = client
        .list_versions(BUCKET, &[("prefix", "a/"), ("max-keys", "5000")])
        .await
        .xml();
    assert_eq!(version_entries(&page).len(), 1000);

    // key-marker alone: after every version of that key.
    let page = client
        .list_versions(BUCKET, &[("key-marker", "a/gone"), ("max-keys", "2")])
        .await
        .expect(200)
        .xml();
    assert_eq!(version_entries(&page), expected[6..8]);
    // key-marker with a version: after that version.
    let page = client
        .list_versions(
            BUCKET,
            &[
                ("key-marker", "a/few"),
                ("version-id-marker", &few[1]),
                ("max-keys", "2"),
            ],
        )
        .await
        .expect(200)
        .xml();
    assert_eq!(version_entries(&page), expected[2..4]);

    // A version marker needs a key marker, and must be a version id.
    let refused = client
        .list_versions(BUCKET, &[("version-id-marker", &few[1])])
        .await
        .expect(400);
    assert_eq!(refused.code().as_deref(), Some("InvalidArgument"));
    let refused = client
        .list_versions(
            BUCKET,
            &[("key-marker", "a/few"), ("version-id-marker", "nonsense")],
        )
        .await
        .expect(400);
    assert_eq!(refused.code().as_deref(), Some("InvalidArgument"));

    // The scheduler's way: list a page, delete what it lists, go on from
    // its markers (which name versions deleted meanwhile).
    let page = client
        .list_versions(BUCKET, &[("prefix", "a/")])
        .await
        .xml();
    let first = version_entries(&page);
    let targets: Vec<(&str, Option<&str>)> = first
        .iter()
        .map(|e| (e.key.as_str(), Some(e.version_id.as_str())))
        .collect();
    let answer = client
        .delete_objects(BUCKET, &targets, true, &[])
        .await
        .expect(200)
        .xml();
    assert!(answer.children.is_empty(), "quiet: {answer:?}");
    let rest = client
        .list_versions(
            BUCKET,
            &[
                ("prefix", "a/"),
                ("key-marker", page.text("NextKeyMarker").unwrap()),
                (
                    "version-id-marker",
                    page.text("NextVersionIdMarker").unwrap(),
                ),
            ],
        )
        .await
        .expect(200)
        .xml();
    assert_eq!(rest.text("IsTruncated"), Some("false"));
    let rest = version_entries(&rest);
    assert_eq!(rest, s3.entries(BUCKET, "a/"));
    assert_eq!(rest.len(), 506);
    assert_eq!(s3.current_keys(BUCKET, ""), ["a/many", "b/outside"]);
}

#[tokio::test]
async fn delete_markers_hide_keys_and_deleting_the_marker_brings_the_key_back() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let path = Path::from("k");
    let version = http_put(&client, "k", b"body").await.unwrap();
    let got = client
        .store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), b"body");

    // object_store's delete: DeleteObjects without a version id.
    client.store.delete(&path).await.unwrap();
    let entries = s3.entries(BUCKET, "k");
    let marker = entries[0].version_id.clone();
    assert_eq!(
        entries,
        [
            entry("k", &marker, true, true),
            entry("k", &version, false, false)
        ]
    );
    assert!(listed(&client, "").await.is_empty());
    assert!(matches!(
        client.store.head(&path).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let head = client
        .send(Method::HEAD, "/videos/k", &[], Vec::new())
        .await;
    assert_eq!(head.status, 404);
    assert_eq!(head.header("x-amz-delete-marker"), Some("true"));
    // The version under the marker is still readable by its id.
    let old = client
        .send(
            Method::GET,
            &format!("/videos/k?versionId={version}"),
            &[],
            Vec::new(),
        )
        .await
        .expect(200);
    assert_eq!(old.body, "body");
    assert_eq!(old.header("x-amz-version-id"), Some(version.as_str()));

    // A key that never existed gets a delete marker too.
    let answer = client
        .delete_objects(BUCKET, &[("missing", None)], false, &[])
        .await
        .expect(200)
        .xml();
    let missing = s3.entries(BUCKET, "missing");
    assert_eq!(missing.len(), 1);
    assert!(missing[0].marker);
    assert_eq!(
        answer.child("Deleted").unwrap().fields(),
        fields(&[
            ("Key", "missing"),
            ("DeleteMarker", "true"),
            ("DeleteMarkerVersionId", &missing[0].version_id),
        ])
    );

    // Deleting the marker by its id: S3 says it was a delete marker.
    let answer = client
        .delete_objects(BUCKET, &[("k", Some(&marker))], false, &[])
        .await
        .expect(200)
        .xml();
    assert_eq!(
        answer.child("Deleted").unwrap().fields(),
        fields(&[
            ("Key", "k"),
            ("VersionId", &marker),
            ("DeleteMarker", "true"),
            ("DeleteMarkerVersionId", &marker),
        ])
    );
    assert_eq!(s3.entries(BUCKET, "k"), [entry("k", &version, false, true)]);
    assert_eq!(client.store.head(&path).await.unwrap().size, 4);
    assert_eq!(listed(&client, "").await, ["k"]);

    // A version that does not exist is deleted all the same; a version
    // that does is removed, and only it.
    let other = http_put(&client, "k", b"newer").await.unwrap();
    let absent = "0000000000000001ffffffffffffffff";
    let answer = client
        .delete_objects(
            BUCKET,
            &[("k", Some(absent)), ("k", Some(&version))],
            false,
            &[],
        )
        .await
        .expect(200)
        .xml();
    let deleted: Vec<_> = answer.all("Deleted").map(|d| d.fields()).collect();
    assert_eq!(
        deleted,
        [
            fields(&[("Key", "k"), ("VersionId", absent)]),
            fields(&[("Key", "k"), ("VersionId", &version)]),
        ]
    );
    assert_eq!(s3.entries(BUCKET, "k"), [entry("k", &other, false, true)]);
}

#[tokio::test]
async fn unversioned_deletes_remove_keys_and_a_missing_key_is_deleted_too() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    assert_eq!(http_put(&client, "u/a", b"a").await, None);
    assert_eq!(s3.put(BUCKET, "u/b", b"b"), "null");
    assert_eq!(
        s3.entries(BUCKET, "u/"),
        [
            entry("u/a", "null", false, true),
            entry("u/b", "null", false, true)
        ]
    );
    let answer = client
        .delete_objects(BUCKET, &[("u/a", None), ("u/missing", None)], false, &[])
        .await
        .expect(200)
        .xml();
    let deleted: Vec<_> = answer.all("Deleted").map(|d| d.fields()).collect();
    assert_eq!(
        deleted,
        [fields(&[("Key", "u/a")]), fields(&[("Key", "u/missing")])]
    );
    assert_eq!(
        s3.entries(BUCKET, "u/"),
        [entry("u/b", "null", false, true)]
    );
    // object_store's bulk delete, with a key that is not there.
    let paths = vec![Ok(Path::from("u/b")), Ok(Path::from("u/nothing"))];
    let results: Vec<_> = client
        .store
        .delete_stream(futures_util::stream::iter(paths).boxed())
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(s3.entries(BUCKET, "").is_empty());

    // S3 wants an integrity header on DeleteObjects.
    let body = support::delete_body(&[("u/x", None)], false);
    let refused = client
        .send(Method::POST, "/videos?delete", &[], body.into_bytes())
        .await
        .expect(400);
    assert_eq!(refused.code().as_deref(), Some("InvalidRequest"));
    // An unknown bucket.
    let refused = client
        .delete_objects("nope", &[("k", None)], false, &[])
        .await
        .expect(404);
    assert_eq!(refused.code().as_deref(), Some("NoSuchBucket"));
}

#[tokio::test]
async fn suspended_versioning_replaces_the_null_version_and_keeps_the_others() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    assert_eq!(s3.put(BUCKET, "k", b"old"), "null");
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let kept = http_put(&client, "k", b"enabled").await.unwrap();
    s3.set_versioning(BUCKET, Versioning::Suspended);
    // PutObject while Suspended: the "null" version is replaced, wherever
    // it was, by a new latest one.
    assert_eq!(
        http_put(&client, "k", b"suspended!").await.as_deref(),
        Some("null")
    );
    assert_eq!(
        s3.entries(BUCKET, "k"),
        [
            entry("k", "null", false, true),
            entry("k", &kept, false, false)
        ]
    );
    assert_eq!(client.store.head(&Path::from("k")).await.unwrap().size, 10);

    // A delete without version id: the null version becomes a null delete
    // marker.
    for _ in 0..2 {
        let answer = client
            .delete_objects(BUCKET, &[("k", None)], false, &[])
            .await
            .expect(200)
            .xml();
        assert_eq!(
            answer.child("Deleted").unwrap().fields(),
            fields(&[
                ("Key", "k"),
                ("DeleteMarker", "true"),
                ("DeleteMarkerVersionId", "null"),
            ])
        );
        assert_eq!(
            s3.entries(BUCKET, "k"),
            [
                entry("k", "null", true, true),
                entry("k", &kept, false, false)
            ]
        );
    }
    assert!(s3.current_keys(BUCKET, "").is_empty());
    // The null marker's id pages like any other.
    let page = client
        .list_versions(BUCKET, &[("max-keys", "1")])
        .await
        .xml();
    assert_eq!(page.text("NextVersionIdMarker"), Some("null"));
    let (all, pages) = client.all_versions("", 1).await;
    assert_eq!((all, pages), (s3.entries(BUCKET, ""), 2));
}

#[tokio::test]
async fn object_lock_refuses_locked_versions_and_governance_yields_to_a_bypass() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let hour = SystemTime::now() + Duration::from_secs(3600);
    let past = SystemTime::now() - Duration::from_secs(1);
    let compliance = s3.put_locked(
        BUCKET,
        "l/compliance",
        b"c",
        Lock::Compliance { until: hour },
    );
    let governance = s3.put_locked(
        BUCKET,
        "l/governance",
        b"g",
        Lock::Governance { until: hour },
    );
    let hold = s3.put_locked(BUCKET, "l/hold", b"h", Lock::LegalHold);
    let expired = s3.put_locked(BUCKET, "l/expired", b"e", Lock::Compliance { until: past });
    // Object Lock headers on a PutObject.
    let put = client
        .send(
            Method::PUT,
            "/videos/l/http",
            &[
                ("x-amz-object-lock-mode", "GOVERNANCE"),
                (
                    "x-amz-object-lock-retain-until-date",
                    "2999-01-01T00:00:00.000Z",
                ),
                ("x-amz-object-lock-legal-hold", "ON"),
            ],
            b"via http".to_vec(),
        )
        .await
        .expect(200);
    let http = put.header("x-amz-version-id").unwrap().to_owned();
    let head = client
        .send(Method::HEAD, "/videos/l/http", &[], Vec::new())
        .await
        .expect(200);
    assert_eq!(head.header("x-amz-object-lock-mode"), Some("GOVERNANCE"));
    assert_eq!(head.header("x-amz-object-lock-legal-hold"), Some("ON"));

    let all = [
        ("l/compliance", Some(compliance.as_str())),
        ("l/expired", Some(expired.as_str())),
        ("l/governance", Some(governance.as_str())),
        ("l/hold", Some(hold.as_str())),
        ("l/http", Some(http.as_str())),
    ];
    let denied = |key: &str, version: &str| {
        fields(&[
            ("Key", key),
            ("VersionId", version),
            ("Code", "AccessDenied"),
            (
                "Message",
                "Access Denied because object protected by object lock.",
            ),
        ])
    };
    let answer = client
        .delete_objects(BUCKET, &all, false, &[])
        .await
        .expect(200)
        .xml();
    let deleted: Vec<_> = answer.all("Deleted").map(|d| d.fields()).collect();
    assert_eq!(
        deleted,
        [fields(&[("Key", "l/expired"), ("VersionId", &expired)])]
    );
    let errors: Vec<_> = answer.all("Error").map(|d| d.fields()).collect();
    assert_eq!(
        errors,
        [
            denied("l/compliance", &compliance),
            denied("l/governance", &governance),
            denied("l/hold", &hold),
            denied("l/http", &http),
        ]
    );
    assert_eq!(s3.entries(BUCKET, "l/").len(), 4);

    // The bypass lifts governance retention only.
    let bypass = [("x-amz-bypass-governance-retention", "true")];
    let answer = client
        .delete_objects(BUCKET, &all, true, &bypass)
        .await
        .expect(200)
        .xml();
    assert!(answer.child("Deleted").is_none(), "quiet");
    let errors: Vec<_> = answer.all("Error").map(|d| d.fields()).collect();
    assert_eq!(
        errors,
        [
            denied("l/compliance", &compliance),
            denied("l/hold", &hold),
            denied("l/http", &http),
        ]
    );
    let keys: Vec<String> = s3
        .entries(BUCKET, "l/")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["l/compliance", "l/hold", "l/http"]);

    // A delete marker on a locked object is always allowed.
    let answer = client
        .delete_objects(BUCKET, &[("l/compliance", None)], false, &[])
        .await
        .expect(200)
        .xml();
    assert_eq!(answer.all("Deleted").count(), 1);
    assert_eq!(s3.entries(BUCKET, "l/compliance").len(), 2);
    assert_eq!(s3.current_keys(BUCKET, "l/"), ["l/hold", "l/http"]);
}

#[tokio::test]
async fn injected_entry_failures_are_answered_per_entry_and_nothing_is_deleted() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let a1 = s3.put(BUCKET, "f/a", b"1");
    let a2 = s3.put(BUCKET, "f/a", b"2");
    let b = s3.put(BUCKET, "f/b", b"b");
    s3.faults().fail_entry("f/a", Some(&a1), "InternalError");
    s3.faults().fail_entry("f/b", None, "SlowDown");
    let request = [
        ("f/a", Some(a1.as_str())),
        ("f/a", Some(a2.as_str())),
        ("f/b", Some(b.as_str())),
        ("f/b", None),
    ];
    let answer = client
        .delete_objects(BUCKET, &request, false, &[])
        .await
        .expect(200)
        .xml();
    let deleted: Vec<_> = answer.all("Deleted").map(|d| d.fields()).collect();
    assert_eq!(deleted, [fields(&[("Key", "f/a"), ("VersionId", &a2)])]);
    let errors: Vec<_> = answer.all("Error").map(|d| d.fields()).collect();
    let injected = |key: &str, version: Option<&str>, code: &str| {
        let mut f = vec![("Key", key), ("Code", code), ("Message", "injected")];
        f.extend(version.map(|v| ("VersionId", v)));
        fields(&f)
    };
    assert_eq!(
        errors,
        [
            injected("f/a", Some(&a1), "InternalError"),
            injected("f/b", Some(&b), "SlowDown"),
            injected("f/b", None, "SlowDown"),
        ]
    );
    assert_eq!(
        s3.entries(BUCKET, "f/"),
        [
            entry("f/a", &a1, false, true),
            entry("f/b", &b, false, true)
        ]
    );

    s3.faults().unfail_entry("f/a", Some(&a1));
    s3.faults().unfail_entry("f/b", None);
    let answer = client
        .delete_objects(BUCKET, &request[..3], false, &[])
        .await
        .expect(200)
        .xml();
    assert_eq!(answer.all("Deleted").count(), 3);
    assert!(s3.entries(BUCKET, "f/").is_empty());

    // Unversioned, through object_store: the failing key is its error.
    s3.set_versioning(BUCKET, Versioning::Unversioned);
    s3.put(BUCKET, "u/ok", b"");
    s3.put(BUCKET, "u/fails", b"");
    s3.faults().fail_entry("u/fails", None, "AccessDenied");
    let paths = vec![Ok(Path::from("u/ok")), Ok(Path::from("u/fails"))];
    let results: Vec<_> = client
        .store
        .delete_stream(futures_util::stream::iter(paths).boxed())
        .collect()
        .await;
    assert!(results[0].is_ok());
    let error = results[1].as_ref().unwrap_err().to_string();
    assert!(error.contains("AccessDenied"), "{error}");
    assert_eq!(s3.current_keys(BUCKET, "u/"), ["u/fails"]);

    assert_eq!(s3.faults().delete_entries(), [4, 3, 2]);
    assert_eq!(s3.faults().calls(Op::DeleteObjects), 3);
}

#[tokio::test]
async fn slow_down_answers_503_for_the_next_calls_or_until_cleared() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    s3.put(BUCKET, "k", b"");
    s3.faults().slow_down(Op::ListObjectsV2, Some(2));
    for _ in 0..2 {
        let busy = client.list_v2(BUCKET, &[]).await.expect(503);
        assert_eq!(busy.code().as_deref(), Some("SlowDown"));
    }
    let page = client.list_v2(BUCKET, &[]).await.expect(200).xml();
    assert_eq!(page.text("KeyCount"), Some("1"));
    assert_eq!(s3.faults().calls(Op::ListObjectsV2), 3);

    // Until cleared; nothing is deleted meanwhile.
    s3.faults().slow_down(Op::DeleteObjects, None);
    for _ in 0..3 {
        let busy = client
            .delete_objects(BUCKET, &[("k", None)], false, &[])
            .await;
        assert_eq!(busy.expect(503).code().as_deref(), Some("SlowDown"));
    }
    assert_eq!(s3.current_keys(BUCKET, ""), ["k"]);
    // Other operations are not affected.
    client.list_v2(BUCKET, &[]).await.expect(200);
    s3.faults().clear();
    client
        .delete_objects(BUCKET, &[("k", None)], false, &[])
        .await
        .expect(200);
    assert!(s3.current_keys(BUCKET, "").is_empty());
    assert_eq!(s3.faults().calls(Op::DeleteObjects), 4);
    // Slowed-down requests are calls, but their entries were not looked at.
    assert_eq!(s3.faults().delete_entries(), [1]);

    // Every operation can be slowed down.
    s3.faults().slow_down(Op::ListObjectVersions, Some(1));
    s3.faults().slow_down(Op::GetBucketVersioning, Some(1));
    s3.faults().slow_down(Op::PutObject, Some(1));
    client.list_versions(BUCKET, &[]).await.expect(503);
    client.list_versions(BUCKET, &[]).await.expect(200);
    client.get_versioning(BUCKET).await.expect(503);
    client.get_versioning(BUCKET).await.expect(200);
    let refused = client
        .store
        .put(&Path::from("p"), PutPayload::from_static(b"x"))
        .await;
    assert!(refused.is_err());
    http_put(&client, "p", b"x").await;
    assert_eq!(s3.faults().calls(Op::PutObject), 2);
}

#[tokio::test]
async fn a_delayed_operation_answers_late_and_a_client_that_gives_up_changes_nothing() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    s3.put(BUCKET, "k", b"");
    s3.faults()
        .delay(Op::DeleteObjects, Some(Duration::from_secs(3600)));
    let endpoint = s3.endpoint();
    let request = tokio::spawn(async move {
        let client = Client::with_keys(&endpoint, ACCESS_KEY, SECRET_KEY);
        client
            .delete_objects(BUCKET, &[("k", None)], false, &[])
            .await
    });
    eventually("the delete to arrive", || async {
        (s3.faults().in_flight(Op::DeleteObjects) == 1).then_some(())
    })
    .await;
    // Other operations are not delayed meanwhile.
    client.list_v2(BUCKET, &[]).await.expect(200);
    // The client gives up: its connection closes, the server drops the
    // request, which never did anything.
    request.abort();
    eventually("the server to drop the request", || async {
        (s3.faults().in_flight(Op::DeleteObjects) == 0).then_some(())
    })
    .await;
    assert_eq!(s3.current_keys(BUCKET, ""), ["k"]);
    assert_eq!(s3.faults().calls(Op::DeleteObjects), 1);
    assert!(s3.faults().delete_entries().is_empty());

    // A short delay: the answer comes, late.
    s3.faults()
        .delay(Op::DeleteObjects, Some(Duration::from_millis(50)));
    client
        .delete_objects(BUCKET, &[("k", None)], false, &[])
        .await
        .expect(200);
    assert!(s3.current_keys(BUCKET, "").is_empty());
    s3.faults().delay(Op::DeleteObjects, None);
    s3.put(BUCKET, "k", b"");
    client
        .delete_objects(BUCKET, &[("k", None)], false, &[])
        .await
        .expect(200);
    assert_eq!(s3.faults().calls(Op::DeleteObjects), 3);
    assert_eq!(s3.faults().delete_entries(), [1, 1]);
    assert_eq!(s3.faults().in_flight(Op::DeleteObjects), 0);
}

#[tokio::test]
async fn stop_closes_the_port_and_restart_serves_the_same_data_on_the_same_port() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    let endpoint = s3.endpoint();
    let addr = endpoint.trim_start_matches("http://").to_owned();
    http_put(&client, "k", b"kept").await;
    // A connection kept open by the client's pool, to be closed by stop.
    client.list_v2(BUCKET, &[]).await.expect(200);

    s3.stop();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the port is closed"
    );
    assert!(client
        .try_send(Method::GET, "/videos?list-type=2", &[], Vec::new())
        .await
        .is_err());
    s3.stop();

    s3.restart();
    s3.restart();
    assert_eq!(s3.endpoint(), endpoint);
    let page = eventually("the restarted server", || async {
        let reply = client
            .try_send(Method::GET, "/videos?list-type=2", &[], Vec::new())
            .await
            .ok()?;
        (reply.status == 200).then_some(reply)
    })
    .await;
    let keys: Vec<String> = page
        .xml()
        .all("Contents")
        .map(|c| c.text("Key").unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["k"]);
    let got = client
        .store
        .get(&Path::from("k"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), b"kept");
}

#[tokio::test]
async fn get_bucket_versioning_reports_status_and_mfa_delete_or_is_not_implemented() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    let never = client.get_versioning(BUCKET).await.expect(200).xml();
    assert_eq!(never.name, "VersioningConfiguration");
    assert!(never.children.is_empty(), "{never:?}");

    client.put_versioning(BUCKET, "Enabled").await.expect(200);
    let status = client.get_versioning(BUCKET).await.expect(200).xml();
    assert_eq!(status.text("Status"), Some("Enabled"));
    s3.set_versioning(BUCKET, Versioning::Suspended);
    let status = client.get_versioning(BUCKET).await.expect(200).xml();
    assert_eq!(status.text("Status"), Some("Suspended"));
    assert_eq!(status.text("MfaDelete"), None);
    client.put_versioning(BUCKET, "Enabled").await.expect(200);
    client.put_versioning(BUCKET, "Sometimes").await.expect(400);

    // MFA delete: shown, and a versioned delete without a token fails whole.
    s3.set_mfa_delete(BUCKET, true);
    let status = client.get_versioning(BUCKET).await.expect(200).xml();
    assert_eq!(status.text("MfaDelete"), Some("Enabled"));
    assert_eq!(status.text("Status"), Some("Enabled"));
    let version = s3.put(BUCKET, "k", b"");
    let refused = client
        .delete_objects(
            BUCKET,
            &[("k", Some(&version)), ("other", None)],
            false,
            &[],
        )
        .await
        .expect(403);
    assert_eq!(refused.code().as_deref(), Some("AccessDenied"));
    assert_eq!(s3.entries(BUCKET, "").len(), 1);
    client.put_versioning(BUCKET, "Suspended").await.expect(403);
    let mfa = [("x-amz-mfa", "arn:aws:iam::1:mfa/device 123456")];
    client
        .delete_objects(BUCKET, &[("k", Some(&version))], false, &mfa)
        .await
        .expect(200);
    assert!(s3.entries(BUCKET, "").is_empty());
    s3.set_mfa_delete(BUCKET, false);
    let status = client.get_versioning(BUCKET).await.expect(200).xml();
    assert_eq!(status.text("MfaDelete"), Some("Disabled"));

    // As R2 answers it.
    s3.versioning_not_implemented(true);
    let refused = client.get_versioning(BUCKET).await.expect(501);
    assert_eq!(refused.code().as_deref(), Some("NotImplemented"));
    s3.faults().clear();
    client.get_versioning(BUCKET).await.expect(501);
    s3.versioning_not_implemented(false);
    client.get_versioning(BUCKET).await.expect(200);

    let refused = client.get_versioning("other").await.expect(404);
    assert_eq!(refused.code().as_deref(), Some("NoSuchBucket"));
    s3.create_bucket("other");
    let other = client.get_versioning("other").await.expect(200).xml();
    assert!(other.children.is_empty());
    assert_eq!(s3.faults().calls(Op::GetBucketVersioning), 10);
}

#[tokio::test]
async fn wrong_credentials_are_refused_as_s3_refuses_them_and_not_counted() {
    let s3 = MemoryS3::start();
    let stranger = Client::with_keys(&s3.endpoint(), "someone-else", SECRET_KEY);
    let refused = stranger.list_v2(BUCKET, &[]).await.expect(403);
    assert_eq!(refused.code().as_deref(), Some("InvalidAccessKeyId"));
    let forger = Client::with_keys(&s3.endpoint(), ACCESS_KEY, "not-the-secret");
    let refused = forger.list_v2(BUCKET, &[]).await.expect(403);
    assert_eq!(refused.code().as_deref(), Some("SignatureDoesNotMatch"));
    let refused = forger.list_versions(BUCKET, &[]).await.expect(403);
    assert_eq!(refused.code().as_deref(), Some("SignatureDoesNotMatch"));
    assert!(forger
        .store
        .put(&Path::from("k"), PutPayload::from_static(b"x"))
        .await
        .is_err());

    // Unsigned.
    let url = format!("{}/videos?versions", s3.endpoint());
    let anonymous = reqwest_free_get(&url).await;
    assert!(anonymous.starts_with("HTTP/1.1 403"), "{anonymous}");
    assert!(
        anonymous.contains("<Code>AccessDenied</Code>"),
        "{anonymous}"
    );

    assert_eq!(s3.faults().calls(Op::ListObjectsV2), 0);
    assert_eq!(s3.faults().calls(Op::ListObjectVersions), 0);
    assert_eq!(s3.faults().calls(Op::PutObject), 0);
    assert!(s3.entries(BUCKET, "").is_empty());
}

/// An unsigned GET over a bare TCP connection: the whole answer.
async fn reqwest_free_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn list_objects_v2_pages_the_current_keys_only() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    s3.set_versioning(BUCKET, Versioning::Enabled);
    let keys: Vec<String> = (0..2500).map(|i| format!("p/{i:04}")).collect();
    for key in &keys {
        s3.put(BUCKET, key, b"v1");
        s3.put(BUCKET, key, b"v2");
    }
    s3.put(BUCKET, "q/other", b"");
    client
        .delete_objects(BUCKET, &[("p/0001", None), ("p/2499", None)], false, &[])
        .await
        .expect(200);
    let current: Vec<String> = keys
        .iter()
        .filter(|k| *k != "p/0001" && *k != "p/2499")
        .cloned()
        .collect();
    assert_eq!(s3.current_keys(BUCKET, "p/"), current);
    // object_store follows the continuation tokens.
    assert_eq!(listed(&client, "p").await, current);

    let page = client
        .list_v2(BUCKET, &[("prefix", "p/")])
        .await
        .expect(200)
        .xml();
    assert_eq!(page.text("KeyCount"), Some("1000"));
    assert_eq!(page.text("IsTruncated"), Some("true"));
    let token = page.text("NextContinuationToken").unwrap().to_owned();
    let first: Vec<&str> = page
        .all("Contents")
        .map(|c| c.text("Key").unwrap())
        .collect();
    assert_eq!(first, current[..1000]);
    let sizes: Vec<&str> = page
        .all("Contents")
        .map(|c| c.text("Size").unwrap())
        .collect();
    assert!(sizes.iter().all(|s| *s == "2"));
    // The token wins over start-after.
    let next = client
        .list_v2(
            BUCKET,
            &[
                ("prefix", "p/"),
                ("continuation-token", &token),
                ("start-after", "p/2000"),
                ("max-keys", "3"),
            ],
        )
        .await
        .expect(200)
        .xml();
    let keys: Vec<&str> = next
        .all("Contents")
        .map(|c| c.text("Key").unwrap())
        .collect();
    assert_eq!(keys, current[1000..1003]);
    // start-after; the last page ends without a token, skipping the
    // deleted key at the end.
    let last = client
        .list_v2(BUCKET, &[("prefix", "p/"), ("start-after", "p/2490")])
        .await
        .expect(200)
        .xml();
    assert_eq!(last.text("KeyCount"), Some("8"));
    assert_eq!(last.text("IsTruncated"), Some("false"));
    assert_eq!(last.text("NextContinuationToken"), None);
    // A page is truncated only if a current key follows (p/2499 is not).
    let page = client
        .list_v2(
            BUCKET,
            &[
                ("prefix", "p/249"),
                ("start-after", "p/2497"),
                ("max-keys", "1"),
            ],
        )
        .await
        .expect(200)
        .xml();
    assert_eq!(page.text("KeyCount"), Some("1"));
    assert_eq!(page.text("IsTruncated"), Some("false"));
    let empty = client
        .list_v2(BUCKET, &[("prefix", "none/")])
        .await
        .expect(200)
        .xml();
    assert_eq!(empty.text("KeyCount"), Some("0"));
    assert!(empty.child("Contents").is_none());
    // Not implemented here: refused, not ignored.
    let refused = client
        .list_v2(BUCKET, &[("delimiter", "/")])
        .await
        .expect(501);
    assert_eq!(refused.code().as_deref(), Some("NotImplemented"));
}

/// The benchmark's load: 10,000 keys with three versions each, listed page
/// by page and deleted by many DeleteObjects requests in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keys_of_three_versions_list_and_delete_with_requests_in_flight() {
    let s3 = MemoryS3::start();
    let client = Client::new(&s3);
    s3.set_versioning(BUCKET, Versioning::Enabled);
    for i in 0..10_000 {
        let key = format!("videos/{i:05}.mp4");
        for v in 0..3u8 {
            s3.put(BUCKET, &key, &[v]);
        }
    }
    let (all, pages) = client.all_versions("videos/", 1000).await;
    assert_eq!((all.len(), pages), (30_000, 30));
    assert_eq!(all, s3.entries(BUCKET, "videos/"));
    let deletes = all.chunks(1000).map(|chunk| {
        let entries: Vec<(String, String)> = chunk
            .iter()
            .map(|e| (e.key.clone(), e.version_id.clone()))
            .collect();
        let client = &client;
        async move {
            let entries: Vec<(&str, Option<&str>)> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                .collect();
            let answer = client.delete_objects(BUCKET, &entries, false, &[]).await;
            answer.expect(200).xml().all("Deleted").count()
        }
    });
    let deleted: Vec<usize> = futures_util::stream::iter(deletes)
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(deleted.iter().sum::<usize>(), 30_000);
    assert!(s3.entries(BUCKET, "").is_empty());
    assert_eq!(s3.faults().delete_entries(), vec![1000; 30]);
}
