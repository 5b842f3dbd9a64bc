//! The moto harness (tests/it/common/moto.rs) against moto itself, before any
//! scheduler test relies on it: versions and delete markers are listed as
//! moto keeps them, whole and in order, past the 1,000 entries of a page;
//! Object Lock puts are accepted; a plain DeleteObjects sent by
//! object_store (as the scheduler sends it) leaves every version.

use std::time::{Duration, SystemTime};

use crate::common::moto::{moto, Entry, Lock, MotoBucket};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::ObjectStore;

fn version(key: &str, version_id: &str, latest: bool) -> Entry {
    Entry {
        key: key.into(),
        version_id: version_id.into(),
        marker: false,
        latest,
    }
}

/// The single delete marker of `key` in `entries`.
fn marker_of<'a>(entries: &'a [Entry], key: &str) -> &'a Entry {
    let markers: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.key == key && e.marker)
        .collect();
    assert_eq!(markers.len(), 1, "{entries:#?}");
    markers[0]
}

/// An object_store client of `bucket`, set up from its storage
/// configuration as the scheduler sets up its own.
fn object_store_of(bucket: &MotoBucket) -> AmazonS3 {
    let config = bucket.storage_config(Vec::new());
    AmazonS3Builder::new()
        .with_bucket_name(config.bucket.unwrap())
        .with_endpoint(config.endpoint.unwrap())
        .with_virtual_hosted_style_request(false)
        .with_allow_http(true)
        .with_region(config.region.unwrap())
        .with_access_key_id(config.access_key_id.unwrap())
        .with_secret_access_key(config.secret_access_key.unwrap().expose())
        .build()
        .unwrap()
}

/// Deletes `keys` with one DeleteObjects request (object_store's
/// `delete_stream`, no version ids): every key must be answered as deleted.
fn delete_plainly(bucket: &MotoBucket, keys: &[&str]) {
    let store = object_store_of(bucket);
    let paths: Vec<object_store::Result<Path>> = keys.iter().map(|k| Ok(Path::from(*k))).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results: Vec<object_store::Result<Path>> = runtime.block_on(
        store
            .delete_stream(futures_util::stream::iter(paths).boxed())
            .collect(),
    );
    let deleted: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("deleted").to_string())
        .collect();
    assert_eq!(deleted, keys);
}

#[test]
fn three_puts_of_one_key_are_listed_as_three_versions_newest_first() {
    let bucket = moto().bucket(true, false);
    let ids: Vec<String> = (0..3)
        .map(|i| bucket.put("videos/1/master.m3u8", format!("v{i}").as_bytes()))
        .collect();
    assert!(ids.iter().all(|id| id != "null"), "{ids:?}");
    bucket.put("videos/10/master.m3u8", b"another key under the prefix");

    assert_eq!(
        bucket.entries("videos/1/"),
        [
            version("videos/1/master.m3u8", &ids[2], true),
            version("videos/1/master.m3u8", &ids[1], false),
            version("videos/1/master.m3u8", &ids[0], false),
        ]
    );
    assert_eq!(
        bucket.current_keys("videos/"),
        ["videos/1/master.m3u8", "videos/10/master.m3u8"]
    );
}

#[test]
fn an_unversioned_bucket_keeps_one_null_version_per_key() {
    let bucket = moto().bucket(false, false);
    assert_eq!(bucket.put("k", b"first"), "null");
    assert_eq!(bucket.put("k", b"second"), "null");

    assert_eq!(bucket.entries(""), [version("k", "null", true)]);
}

#[test]
fn versioning_enabled_later_keeps_the_null_version_under_the_new_ones() {
    // As on the bucket of a running scheduler.
    let bucket = moto().bucket(false, false);
    bucket.put("k", b"before");
    bucket.enable_versioning();
    let after = bucket.put("k", b"after");
    assert_ne!(after, "null");

    assert_eq!(
        bucket.entries(""),
        [version("k", &after, true), version("k", "null", false)]
    );
}

#[test]
fn a_plain_delete_in_a_versioned_bucket_leaves_every_version_under_a_delete_marker() {
    let bucket = moto().bucket(true, false);
    let a1 = bucket.put("v/1/a.ts", b"a1");
    let a2 = bucket.put("v/1/a.ts", b"a2");
    let b1 = bucket.put("v/1/b.ts", b"b1");
    let kept = bucket.put("v/2/c.ts", b"c1");

    delete_plainly(&bucket, &["v/1/a.ts", "v/1/b.ts"]);

    let entries = bucket.entries("v/");
    let (a_marker, b_marker) = (
        marker_of(&entries, "v/1/a.ts"),
        marker_of(&entries, "v/1/b.ts"),
    );
    assert_eq!(
        entries,
        [
            a_marker.clone(),
            version("v/1/a.ts", &a2, false),
            version("v/1/a.ts", &a1, false),
            b_marker.clone(),
            version("v/1/b.ts", &b1, false),
            version("v/2/c.ts", &kept, true),
        ]
    );
    assert!(a_marker.latest && b_marker.latest, "{entries:#?}");
    assert_eq!(bucket.current_keys("v/"), ["v/2/c.ts"]);

    // A version put over the marker: the marker is now between versions
    // (listed by moto after them, dated to the same second).
    let a3 = bucket.put("v/1/a.ts", b"a3");
    let a_marker = Entry {
        latest: false,
        ..a_marker.clone()
    };
    assert_eq!(
        bucket.entries("v/1/a"),
        [
            version("v/1/a.ts", &a3, true),
            a_marker,
            version("v/1/a.ts", &a2, false),
            version("v/1/a.ts", &a1, false),
        ]
    );
}

#[test]
fn locked_versions_and_a_legal_hold_are_listed_with_their_version_ids() {
    let bucket = moto().bucket(true, true);
    let until = SystemTime::now() + Duration::from_secs(3600);
    let governed = bucket.put_locked("l/governance", b"g", Lock::Governance { until });
    let complied = bucket.put_locked("l/compliance", b"c", Lock::Compliance { until });
    let held = bucket.put_locked("l/hold", b"h", Lock::LegalHold);

    assert_eq!(
        bucket.entries("l/"),
        [
            version("l/compliance", &complied, true),
            version("l/governance", &governed, true),
            version("l/hold", &held, true),
        ]
    );

    // Object Lock protects versions, not keys: a plain delete puts a marker
    // over each and leaves the locked versions.
    delete_plainly(&bucket, &["l/compliance", "l/governance", "l/hold"]);
    let entries = bucket.entries("l/");
    let versions: Vec<&Entry> = entries.iter().filter(|e| !e.marker).collect();
    assert_eq!(
        versions,
        [
            &version("l/compliance", &complied, false),
            &version("l/governance", &governed, false),
            &version("l/hold", &held, false),
        ]
    );
    for key in ["l/compliance", "l/governance", "l/hold"] {
        assert!(marker_of(&entries, key).latest, "{entries:#?}");
    }
    assert!(bucket.current_keys("l/").is_empty());

    bucket.remove_legal_hold("l/hold", &held);
}

#[test]
fn more_than_a_thousand_versions_of_one_key_are_all_listed() {
    let bucket = moto().bucket(true, false);
    let mut ids: Vec<String> = (0..1_001)
        .map(|i| bucket.put("many", format!("{i}").as_bytes()))
        .collect();
    ids.reverse();

    let entries = bucket.entries("");
    let listed: Vec<&str> = entries.iter().map(|e| e.version_id.as_str()).collect();
    assert_eq!(listed, ids);
    assert!(entries.iter().all(|e| e.key == "many" && !e.marker));
    assert!(entries[0].latest && entries[1..].iter().all(|e| !e.latest));
}

#[test]
fn more_than_a_thousand_current_keys_are_all_listed() {
    let bucket = moto().bucket(false, false);
    let keys: Vec<String> = (0..1_001).map(|i| format!("k/{i:04}")).collect();
    for key in &keys {
        bucket.put(key, b"x");
    }
    bucket.put("other", b"outside the prefix");

    assert_eq!(bucket.current_keys("k/"), keys);
}

#[test]
fn bucket_names_are_unique_and_follow_the_s3_rules() {
    let names: Vec<String> = (0..3).map(|i| moto().bucket(i == 1, i == 2).name).collect();
    for name in &names {
        assert!((3..=63).contains(&name.len()), "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name}"
        );
    }
    assert!(names[0] != names[1] && names[1] != names[2] && names[0] != names[2]);
}

#[test]
fn keys_with_spaces_signs_and_accents_are_put_and_listed_as_they_are() {
    let bucket = moto().bucket(true, false);
    let key = "v/a b+c=d&e é~(1).ts";
    let id = bucket.put(key, b"x");

    assert_eq!(bucket.entries("v/a b"), [version(key, &id, true)]);
    assert_eq!(bucket.current_keys("v/a b+"), [key]);
}
