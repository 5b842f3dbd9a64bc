//! ListObjectVersions, answered by an s3s custom route instead of
//! `S3::list_object_versions`.
//!
//! Why: s3s 0.14.1 serialises `ListObjectVersionsOutput` with every
//! `<DeleteMarker>` first, then the other fields, then every `<Version>`.
//! S3 answers one sequence in listing order (keys in byte order, newest
//! first within a key) with versions and markers interleaved, and a client
//! reading the answer in document order (a pull parser, as the scheduler
//! uses) must see that order. So this route writes the XML itself, in
//! AWS's element order. s3s still does everything before it: SigV4
//! verification (the route runs only for an authenticated request) and
//! the error answers.

use std::sync::Arc;

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::http::Extensions;
use hyper::{HeaderMap, Method, Uri};
use s3s::dto::{Timestamp, TimestampFormat};
use s3s::route::S3Route;
use s3s::{s3_error, Body, S3Request, S3Response, S3Result};

use crate::bucket::{BadMarker, Listed, Page};
use crate::faults::{Faults, Op};
use crate::service::{max_keys, read, unsupported_listing, Store};

/// Serves `GET /{bucket}?versions`.
pub struct VersionsRoute {
    /// The buckets.
    pub store: Arc<Store>,
    /// Faults and counters.
    pub faults: Arc<Faults>,
}

/// The bucket of a path-style bucket URL (`/name` or `/name/`).
fn bucket_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix('/')?;
    let name = name.strip_suffix('/').unwrap_or(name);
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// The query's parameters, decoded as s3s decodes them
/// (`application/x-www-form-urlencoded`: `%XX` escapes, `+` a space).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(name), decode(value))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parameters of a ListObjectVersions request, decoded, as given
/// (the answer echoes the markers).
#[derive(Debug, Default, PartialEq)]
struct Query {
    /// `prefix`: only keys starting with it.
    prefix: Option<String>,
    /// `key-marker`: start after this key (or inside it, with a version).
    key_marker: Option<String>,
    /// `version-id-marker`: start after this version of the key marker.
    version_id_marker: Option<String>,
    /// `max-keys`, unparsed: a bad number is the request's error.
    max_keys: Option<String>,
    /// `delimiter`: not implemented, refused.
    delimiter: Option<String>,
    /// `encoding-type`: not implemented, refused.
    encoding_type: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut parsed = Query::default();
        for (name, value) in query_pairs(query) {
            let slot = match name.as_str() {
                "prefix" => &mut parsed.prefix,
                "key-marker" => &mut parsed.key_marker,
                "version-id-marker" => &mut parsed.version_id_marker,
                "max-keys" => &mut parsed.max_keys,
                "delimiter" => &mut parsed.delimiter,
                "encoding-type" => &mut parsed.encoding_type,
                _ => continue,
            };
            *slot = Some(value);
        }
        parsed
    }
}

/// The value of an optional parameter, an empty one being absent.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Appends `text` with XML's special characters escaped.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// Appends `<name>text</name>`.
fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// S3's date format: `2009-10-12T17:50:30.000Z`.
fn date(timestamp: &Timestamp) -> String {
    let mut buffer = Vec::new();
    // Formatting a valid date into a Vec cannot fail; an empty date would
    // be noticed by any client.
    let _ = timestamp.format(TimestampFormat::DateTime, &mut buffer);
    String::from_utf8_lossy(&buffer).into_owned()
}

/// One `<Version>` or `<DeleteMarker>`, fields in AWS's order.
fn entry_into(out: &mut String, entry: &Listed) {
    let version = &entry.version;
    let tag = if version.marker {
        "DeleteMarker"
    } else {
        "Version"
    };
    out.push('<');
    out.push_str(tag);
    out.push('>');
    element(out, "Key", &entry.key);
    element(out, "VersionId", &version.id);
    element(out, "IsLatest", if entry.latest { "true" } else { "false" });
    element(
        out,
        "LastModified",
        &date(&Timestamp::from(version.modified)),
    );
    if !version.marker {
        element(out, "ETag", &format!("\"{}\"", version.etag));
        element(out, "Size", &version.body.len().to_string());
        element(out, "StorageClass", "STANDARD");
    }
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

/// The `ListVersionsResult` document.
fn render(bucket: &str, query: &Query, prefix: &str, max: usize, page: &Page) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    element(&mut out, "Name", bucket);
    element(&mut out, "Prefix", prefix);
    element(
        &mut out,
        "KeyMarker",
        query.key_marker.as_deref().unwrap_or(""),
    );
    element(
        &mut out,
        "VersionIdMarker",
        query.version_id_marker.as_deref().unwrap_or(""),
    );
    if let Some(last) = page.entries.last().filter(|_| page.truncated) {
        element(&mut out, "NextKeyMarker", &last.key);
        element(&mut out, "NextVersionIdMarker", &last.version.id);
    }
    element(&mut out, "MaxKeys", &max.to_string());
    element(
        &mut out,
        "IsTruncated",
        if page.truncated { "true" } else { "false" },
    );
    for entry in &page.entries {
        entry_into(&mut out, entry);
    }
    out.push_str("</ListVersionsResult>");
    out
}

#[async_trait::async_trait]
impl S3Route for VersionsRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _: &HeaderMap, _: &mut Extensions) -> bool {
        method == Method::GET
            && bucket_of(uri.path()).is_some()
            && query_pairs(uri.query().unwrap_or("")).any(|(name, _)| name == "versions")
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let _in_flight = self.faults.enter(Op::ListObjectVersions).await?;
        let name = bucket_of(req.uri.path()).unwrap_or_default();
        let query = Query::parse(req.uri.query().unwrap_or(""));
        unsupported_listing(query.delimiter.as_deref(), query.encoding_type.as_deref())?;
        let bucket = self.store.existing(name)?;
        let max = match &query.max_keys {
            None => max_keys(None)?,
            Some(text) => max_keys(Some(text.parse().map_err(|_| {
                s3_error!(
                    InvalidArgument,
                    "Provided max-keys not an integer or within integer range"
                )
            })?))?,
        };
        let prefix = query.prefix.clone().unwrap_or_default();
        let page = read(&bucket.state)
            .versions_page(
                &prefix,
                non_empty(&query.key_marker),
                non_empty(&query.version_id_marker),
                max,
            )
            .map_err(|e| match e {
                BadMarker::WithoutKeyMarker => s3_error!(
                    InvalidArgument,
                    "A version-id marker cannot be specified without a key marker."
                ),
                BadMarker::Invalid => s3_error!(InvalidArgument, "Invalid version id specified"),
            })?;
        let xml = render(name, &query, &prefix, max, &page);
        let mut response = S3Response::new(Body::from(xml));
        response
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_decodes_as_forms_do() {
        let query = Query::parse("versions&prefix=a%2Fb+c%26&key-marker=k%C3%A9&max-keys=5&x=%zz");
        assert_eq!(
            query,
            Query {
                prefix: Some("a/b c&".into()),
                key_marker: Some("ké".into()),
                max_keys: Some("5".into()),
                ..Query::default()
            }
        );
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("100%25"), "100%");
    }

    #[test]
    fn only_a_bucket_path_is_a_bucket() {
        assert_eq!(bucket_of("/videos"), Some("videos"));
        assert_eq!(bucket_of("/videos/"), Some("videos"));
        assert_eq!(bucket_of("/videos/key"), None);
        assert_eq!(bucket_of("/"), None);
    }

    #[test]
    fn text_is_escaped() {
        let mut out = String::new();
        element(&mut out, "Key", "a&b<c>\"d'");
        assert_eq!(out, "<Key>a&amp;b&lt;c&gt;&quot;d&apos;</Key>");
    }
}
