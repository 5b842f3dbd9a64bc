//! ListObjectsV2, read here, keys only.
//!
//! Why not `ObjectStore::list`: it deserialises every entry of a page (key,
//! size, date, ETag, storage class) through serde and parses each date with
//! chrono. In an S3 drain that took about 40% of the scheduler's CPU, more
//! than the SQLite work and the DeleteObjects requests together
//! (BENCHMARKS.md). A deletion needs the keys and the continuation token; a
//! pull parser reading just those is several times cheaper. The request is
//! signed and sent by [`Client`].

use super::client::{push_query, Client, Request, RequestError};
use super::xml::{self, Item};

/// One page of a listing.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Page {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// Where a request starts in the key space.
#[derive(Debug, Clone, Copy)]
pub(super) enum Begin<'a> {
    /// The first key (of the prefix).
    Start,
    /// The first key after this one (`start-after`).
    After(&'a str),
    /// Where the previous page ended (`continuation-token`).
    Token(&'a str),
}

/// One page (up to 1,000 keys, the API's page size) of the keys under
/// `prefix`, from `from` on, in key order.
pub(super) async fn page(
    client: &Client,
    prefix: &str,
    from: Begin<'_>,
) -> Result<Page, RequestError> {
    let mut query = "list-type=2".to_owned();
    push_query(&mut query, "prefix", prefix);
    match from {
        Begin::Start => {}
        Begin::After(key) => push_query(&mut query, "start-after", key),
        Begin::Token(token) => push_query(&mut query, "continuation-token", token),
    }
    let body = client.send(Request::get("ListObjectsV2", query)).await?;
    parse_page(&body).map_err(|e| RequestError {
        reason: format!("ListObjectsV2: unreadable answer: {e}"),
        transient: false,
        not_implemented: false,
    })
}

/// The keys and the continuation token of a ListObjectsV2 answer. A page
/// that says it is truncated but gives no token to go on is an error: taken
/// as the last page, it would let an id be acked with objects left.
fn parse_page(body: &[u8]) -> Result<Page, String> {
    let mut page = Page::default();
    let mut truncated = false;
    xml::read(
        body,
        |record, name| match record {
            Some(record) => record == b"Contents" && name == b"Key",
            None => matches!(name, b"NextContinuationToken" | b"IsTruncated"),
        },
        |item| match item {
            Item::Field(f) if f.name == b"Key" => page.keys.push(f.text),
            Item::Field(f) if f.name == b"IsTruncated" => truncated = f.text.trim() == "true",
            Item::Field(f) => page.next = Some(f.text).filter(|t| !t.is_empty()),
            Item::End(_) => {}
        },
    )?;
    if truncated && page.next.is_none() {
        return Err("IsTruncated without a NextContinuationToken".into());
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>videos</Name><Prefix>hls/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents><Key>hls/a/seg-0.ts</Key><LastModified>2026-11-26T04:00:00.000Z</LastModified>
    <ETag>&quot;d41d8&quot;</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>hls/a &amp; b/x&#233;&lt;1&gt;.ts</Key><Size>2</Size></Contents>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"#;

    #[test]
    fn a_page_gives_its_keys_with_entities_resolved_and_the_next_token() {
        let page = parse_page(PAGE.as_bytes()).unwrap();
        assert_eq!(page.keys, ["hls/a/seg-0.ts", "hls/a & b/xé<1>.ts"]);
        assert_eq!(
            page.next.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
    }

    #[test]
    fn the_last_page_has_no_token_and_an_empty_listing_no_keys() {
        let last = "<ListBucketResult><IsTruncated>false</IsTruncated>\
                    <Contents><Key>k</Key></Contents></ListBucketResult>";
        assert_eq!(
            parse_page(last.as_bytes()).unwrap(),
            Page {
                keys: vec!["k".into()],
                next: None
            }
        );
        let empty = "<ListBucketResult><KeyCount>0</KeyCount></ListBucketResult>";
        assert_eq!(parse_page(empty.as_bytes()).unwrap(), Page::default());
    }

    #[test]
    fn a_key_outside_contents_is_not_a_listed_key() {
        // `<Key>` also names things elsewhere in S3 answers; only the
        // entries of `<Contents>` are objects.
        let body = "<ListBucketResult><Key>not-an-object</Key>\
                    <Contents><Key>object</Key></Contents></ListBucketResult>";
        assert_eq!(parse_page(body.as_bytes()).unwrap().keys, ["object"]);
    }

    #[test]
    fn a_truncated_page_without_a_token_is_an_error_not_the_last_page() {
        let body = "<ListBucketResult><IsTruncated>true</IsTruncated>\
                    <Contents><Key>k</Key></Contents></ListBucketResult>";
        assert!(parse_page(body.as_bytes()).is_err());
    }

    #[test]
    fn broken_xml_is_an_error_not_an_empty_page() {
        assert!(parse_page(b"<ListBucketResult><Contents><Key>a</Contents>").is_err());
    }
}
