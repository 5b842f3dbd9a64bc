//! ListObjectsV2, sent through object_store's HTTP client and SigV4 signer
//! but read here, keys only.
//!
//! Why not `ObjectStore::list`: it deserialises every entry of a page (key,
//! size, date, ETag, storage class) through serde and parses each date with
//! chrono. In an S3 drain that took about 40% of the scheduler's CPU, more
//! than the SQLite work and the DeleteObjects requests together
//! (BENCHMARKS.md). A deletion needs the keys and the continuation token; a
//! pull parser reading just those is several times cheaper. Credentials,
//! signing, TLS, proxies and timeouts stay object_store's (its
//! [`AwsAuthorizer`] and [`HttpClient`]); retries are the caller's, within
//! the batch's budget.

use std::sync::Arc;

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpRequestBody};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use quick_xml::events::Event;

use super::describe;

/// What a query value may keep unencoded: RFC 3986's unreserved
/// characters, as SigV4 canonicalises them.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Sends ListObjectsV2 requests for one bucket.
#[derive(Debug)]
pub struct Lister {
    http: HttpClient,
    /// Holds the credential provider (static keys, environment, instance
    /// metadata), so credentials are found and refreshed as for deletes.
    store: Arc<AmazonS3>,
    /// The bucket's URL as object_store addresses it (path-style on custom
    /// endpoints; see [`bucket_url`]).
    bucket_url: String,
    region: String,
}

/// One page of a listing.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// A listing request that failed.
#[derive(Debug)]
pub struct ListError {
    pub reason: String,
    /// Worth trying again: throttling (503 SlowDown, 429), another 5xx, or
    /// no answer (refused, reset, timed out). A 4xx (wrong credentials, no
    /// such bucket) is not.
    pub transient: bool,
}

impl ListError {
    fn transient(reason: String) -> ListError {
        ListError {
            reason,
            transient: true,
        }
    }
}

/// Where a request starts in the key space.
#[derive(Debug, Clone, Copy)]
pub enum Begin<'a> {
    /// The first key (of the prefix).
    Start,
    /// The first key after this one (`start-after`).
    After(&'a str),
    /// Where the previous page ended (`continuation-token`).
    Token(&'a str),
}

impl Lister {
    pub fn new(
        http: HttpClient,
        store: Arc<AmazonS3>,
        bucket_url: String,
        region: String,
    ) -> Lister {
        Lister {
            http,
            store,
            bucket_url,
            region,
        }
    }

    /// One page (up to 1,000 keys, the API's page size) of the keys under
    /// `prefix`, from `from` on, in key order.
    pub async fn page(&self, prefix: &str, from: Begin<'_>) -> Result<Page, ListError> {
        let mut url = format!("{}?list-type=2", self.bucket_url);
        push_query(&mut url, "prefix", prefix);
        match from {
            Begin::Start => {}
            Begin::After(key) => push_query(&mut url, "start-after", key),
            Begin::Token(token) => push_query(&mut url, "continuation-token", token),
        }
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| ListError::transient(describe(&e)))?;
        let mut request = http::Request::get(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| ListError {
                reason: format!("invalid listing URL {url}: {e}"),
                transient: false,
            })?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| ListError::transient(describe(&e)))?;
        let failed = |e: &dyn std::error::Error| {
            ListError::transient(format!("ListObjectsV2: {}", describe(e)))
        };
        let response = self.http.execute(request).await.map_err(|e| failed(&e))?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| failed(&e))?;
        if !status.is_success() {
            return Err(ListError {
                reason: format!(
                    "ListObjectsV2: {status}{}",
                    s3_error(&body).map_or_else(String::new, |e| format!(": {e}"))
                ),
                transient: status.is_server_error() || status.as_u16() == 429,
            });
        }
        parse_page(&body).map_err(|e| ListError {
            reason: format!("ListObjectsV2: unreadable answer: {e}"),
            transient: false,
        })
    }
}

/// The URL object_store sends a bucket's requests to, from the same
/// settings (its builder keeps it private).
pub fn bucket_url(
    endpoint: Option<&str>,
    virtual_hosted: bool,
    bucket: &str,
    region: &str,
) -> String {
    match (endpoint, virtual_hosted) {
        (Some(endpoint), true) => endpoint.trim_end_matches('/').to_owned(),
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    }
}

fn push_query(url: &mut String, name: &str, value: &str) {
    url.push('&');
    url.push_str(name);
    url.push('=');
    url.extend(utf8_percent_encode(value, QUERY_VALUE));
}

/// Which element's text is being read.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    Key,
    Token,
    Truncated,
    Code,
    Message,
}

/// Reads the text of the elements a caller asks for, in document order:
/// `want` maps an element (its local name, and whether it sits inside
/// `<Contents>`) to a field, `got` receives each field's whole text.
/// Entities are resolved; text split around them is joined.
fn read_fields(
    body: &[u8],
    want: impl Fn(&[u8], bool) -> Option<Field>,
    mut got: impl FnMut(Field, String),
) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut in_contents = false;
    let mut field: Option<(Field, String)> = None;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(element) => {
                let name = element.local_name();
                if name.as_ref() == b"Contents" {
                    in_contents = true;
                }
                field = want(name.as_ref(), in_contents).map(|f| (f, String::new()));
            }
            Event::End(element) => {
                if element.local_name().as_ref() == b"Contents" {
                    in_contents = false;
                }
                if let Some((f, text)) = field.take() {
                    got(f, text);
                }
            }
            Event::Eof => return Ok(()),
            event => {
                if let Some((_, value)) = &mut field {
                    push_text(value, event)?;
                }
            }
        }
    }
}

/// Appends what `event` adds to an element's text: text, CDATA, or an
/// entity (`&amp;`, `&#233;`) resolved.
fn push_text(value: &mut String, event: Event<'_>) -> Result<(), String> {
    let text = match event {
        Event::Text(text) => text.decode().map_err(|e| e.to_string())?,
        Event::CData(text) => text.decode().map_err(|e| e.to_string())?,
        Event::GeneralRef(entity) => {
            if let Some(c) = entity.resolve_char_ref().map_err(|e| e.to_string())? {
                value.push(c);
                return Ok(());
            }
            let name = entity.decode().map_err(|e| e.to_string())?;
            quick_xml::escape::resolve_predefined_entity(&name)
                .ok_or_else(|| format!("unknown entity &{name};"))?
                .into()
        }
        _ => return Ok(()),
    };
    value.push_str(&text);
    Ok(())
}

/// The keys and the continuation token of a ListObjectsV2 answer. A page
/// that says it is truncated but gives no token to go on is an error: taken
/// as the last page, it would let an id be acked with objects left.
fn parse_page(body: &[u8]) -> Result<Page, String> {
    let mut page = Page::default();
    let mut truncated = false;
    read_fields(
        body,
        |name, in_contents| match (name, in_contents) {
            (b"Key", true) => Some(Field::Key),
            (b"NextContinuationToken", false) => Some(Field::Token),
            (b"IsTruncated", false) => Some(Field::Truncated),
            _ => None,
        },
        |field, text| match field {
            Field::Key => page.keys.push(text),
            Field::Truncated => truncated = text.trim() == "true",
            _ => page.next = Some(text).filter(|t| !t.is_empty()),
        },
    )?;
    if truncated && page.next.is_none() {
        return Err("IsTruncated without a NextContinuationToken".into());
    }
    Ok(page)
}

/// `Code: Message` of an S3 error answer, when it is one.
fn s3_error(body: &[u8]) -> Option<String> {
    let (mut code, mut message) = (None, None);
    read_fields(
        body,
        |name, _| match name {
            b"Code" => Some(Field::Code),
            b"Message" => Some(Field::Message),
            _ => None,
        },
        |field, text| match field {
            Field::Code => code = Some(text),
            _ => message = Some(text),
        },
    )
    .ok()?;
    match (code, message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (code, message) => code.or(message),
    }
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

    #[test]
    fn an_error_answer_gives_its_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message>\
                    <RequestId>1</RequestId></Error>";
        assert_eq!(
            s3_error(body.as_bytes()).as_deref(),
            Some("SignatureDoesNotMatch: The request signature we calculated does not match")
        );
        assert_eq!(s3_error(b""), None);
    }

    #[test]
    fn query_values_are_encoded_as_sigv4_canonicalises_them() {
        let mut url = "http://h/b?list-type=2".to_owned();
        push_query(&mut url, "prefix", "hls/a b+c~d_e.f-é/");
        assert_eq!(
            url,
            "http://h/b?list-type=2&prefix=hls%2Fa%20b%2Bc~d_e.f-%C3%A9%2F"
        );
    }

    #[test]
    fn the_bucket_url_is_the_one_object_store_uses() {
        assert_eq!(
            bucket_url(Some("http://127.0.0.1:9000/"), false, "v", "us-east-1"),
            "http://127.0.0.1:9000/v"
        );
        assert_eq!(
            bucket_url(Some("https://v.r2.example"), true, "v", "auto"),
            "https://v.r2.example"
        );
        assert_eq!(
            bucket_url(None, true, "v", "eu-west-1"),
            "https://v.s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            bucket_url(None, false, "v", "eu-west-1"),
            "https://s3.eu-west-1.amazonaws.com/v"
        );
    }
}
