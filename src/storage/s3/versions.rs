//! ListObjectVersions: every version and delete marker under a prefix,
//! read here (object_store cannot list versions), keys, version ids and
//! which entry is the latest only.
//!
//! Pages follow `key-marker` and `version-id-marker`. A page that says it
//! is truncated without both markers is an error, never the last page:
//! going on from the key alone would skip the key's remaining versions,
//! and taking it as the end would let an id be acked with versions left.

use super::client::{push_query, Client, Request, RequestError};
use super::xml::{self, Item};

/// One version or delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub key: String,
    /// `null` for the version written while versioning was off or
    /// suspended.
    pub version_id: String,
    /// A delete marker, not an object version.
    pub marker: bool,
    /// The key's current entry.
    pub latest: bool,
}

/// One page of a listing.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Page {
    pub entries: Vec<Entry>,
    /// Where the next page starts (key and version id markers); `None` on
    /// the last page.
    pub next: Option<(String, String)>,
}

/// One page (up to 1,000 entries) of the versions under `prefix`, in key
/// order and newest first within a key, after `after` (the previous
/// page's `next`).
pub(super) async fn page(
    client: &Client,
    prefix: &str,
    after: Option<(&str, &str)>,
) -> Result<Page, RequestError> {
    let mut query = "versions=".to_owned();
    push_query(&mut query, "prefix", prefix);
    if let Some((key, version)) = after {
        push_query(&mut query, "key-marker", key);
        push_query(&mut query, "version-id-marker", version);
    }
    let body = client
        .send(Request::get("ListObjectVersions", query))
        .await?;
    parse_page(&body).map_err(|e| RequestError {
        reason: format!("ListObjectVersions: unreadable answer: {e}"),
        transient: false,
        not_implemented: false,
    })
}

fn parse_page(body: &[u8]) -> Result<Page, String> {
    let mut page = Page::default();
    let (mut truncated, mut key_marker, mut version_marker) = (false, None, None);
    let mut entry = Entry {
        key: String::new(),
        version_id: String::new(),
        marker: false,
        latest: false,
    };
    let mut broken = None;
    xml::read(
        body,
        |record, name| match record {
            Some(b"Version" | b"DeleteMarker") => {
                matches!(name, b"Key" | b"VersionId" | b"IsLatest")
            }
            Some(_) => false,
            None => matches!(
                name,
                b"IsTruncated" | b"NextKeyMarker" | b"NextVersionIdMarker"
            ),
        },
        |item| match item {
            Item::Field(f) => match (f.record, f.name) {
                (Some(_), b"Key") => entry.key = f.text,
                (Some(_), b"VersionId") => entry.version_id = f.text,
                (Some(_), _) => entry.latest = f.text.trim() == "true",
                (None, b"IsTruncated") => truncated = f.text.trim() == "true",
                (None, b"NextKeyMarker") => key_marker = Some(f.text).filter(|t| !t.is_empty()),
                (None, _) => version_marker = Some(f.text).filter(|t| !t.is_empty()),
            },
            Item::End(record) if matches!(record, b"Version" | b"DeleteMarker") => {
                let mut done = std::mem::replace(
                    &mut entry,
                    Entry {
                        key: String::new(),
                        version_id: String::new(),
                        marker: false,
                        latest: false,
                    },
                );
                done.marker = record == b"DeleteMarker";
                if done.key.is_empty() || done.version_id.is_empty() {
                    broken.get_or_insert_with(|| {
                        format!("an entry without a key or a version id ({done:?})")
                    });
                }
                page.entries.push(done);
            }
            Item::End(_) => {}
        },
    )?;
    if let Some(broken) = broken {
        return Err(broken);
    }
    if truncated {
        match (key_marker, version_marker) {
            (Some(key), Some(version)) => page.next = Some((key, version)),
            _ => return Err("IsTruncated without NextKeyMarker and NextVersionIdMarker".into()),
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>videos</Name><Prefix>v/</Prefix><KeyMarker/><VersionIdMarker/>
  <NextKeyMarker>v/a.mp4</NextKeyMarker><NextVersionIdMarker>3</NextVersionIdMarker>
  <MaxKeys>3</MaxKeys><IsTruncated>true</IsTruncated>
  <DeleteMarker><Key>v/a.mp4</Key><VersionId>1</VersionId><IsLatest>true</IsLatest>
    <LastModified>2026-12-05T00:00:00.000Z</LastModified><Owner><ID>x</ID></Owner></DeleteMarker>
  <Version><Key>v/a.mp4</Key><VersionId>2</VersionId><IsLatest>false</IsLatest><Size>3</Size></Version>
  <Version><Key>v/a.mp4</Key><VersionId>3</VersionId><IsLatest>false</IsLatest></Version>
</ListVersionsResult>"#;

    #[test]
    fn a_page_gives_versions_and_markers_and_where_the_next_begins() {
        let page = parse_page(PAGE.as_bytes()).unwrap();
        let entries: Vec<(&str, bool, bool)> = page
            .entries
            .iter()
            .map(|e| (e.version_id.as_str(), e.marker, e.latest))
            .collect();
        assert_eq!(
            entries,
            [("1", true, true), ("2", false, false), ("3", false, false)]
        );
        assert!(page.entries.iter().all(|e| e.key == "v/a.mp4"));
        assert_eq!(page.next, Some(("v/a.mp4".into(), "3".into())));
    }

    #[test]
    fn a_truncated_page_without_both_markers_is_an_error() {
        let body = "<ListVersionsResult><IsTruncated>true</IsTruncated>\
                    <NextKeyMarker>k</NextKeyMarker>\
                    <Version><Key>k</Key><VersionId>1</VersionId></Version></ListVersionsResult>";
        assert!(parse_page(body.as_bytes()).is_err());
    }

    #[test]
    fn an_entry_without_a_version_id_is_an_error() {
        let body = "<ListVersionsResult><Version><Key>k</Key></Version></ListVersionsResult>";
        assert!(parse_page(body.as_bytes()).is_err());
    }

    #[test]
    fn the_last_page_and_an_empty_one() {
        let body = "<ListVersionsResult><IsTruncated>false</IsTruncated>\
                    <Version><Key>k</Key><VersionId>null</VersionId><IsLatest>true</IsLatest></Version>\
                    </ListVersionsResult>";
        let page = parse_page(body.as_bytes()).unwrap();
        assert_eq!(page.next, None);
        assert_eq!(page.entries[0].version_id, "null");
        assert_eq!(
            parse_page(b"<ListVersionsResult/>").unwrap(),
            Page::default()
        );
    }
}
