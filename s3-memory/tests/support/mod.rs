//! A client for the tests: object_store's S3 client for what it can do
//! (put, get, head, list, unversioned DeleteObjects), and for the rest
//! (ListObjectVersions, versioned DeleteObjects, bucket versioning, bad
//! signatures) requests signed with object_store's own SigV4 signer and
//! sent through its HTTP client, as the scheduler's lister does. Answers
//! are read with quick-xml into a small tree.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{HeaderMap, Method};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpRequestBody, ReqwestConnector,
};
use object_store::RetryConfig;
use quick_xml::events::Event;
use s3_memory::{Entry, MemoryS3, ACCESS_KEY, BUCKET, SECRET_KEY};

/// How long a test waits for something before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A signed S3 client of one server.
pub struct Client {
    /// object_store's client of [`BUCKET`], without retries (a test sees
    /// every fault).
    pub store: AmazonS3,
    http: HttpClient,
    credential: AwsCredential,
    endpoint: String,
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The answer's XML document.
    pub fn xml(&self) -> Node {
        Node::parse(&self.body)
    }

    /// The `Code` of an error answer.
    pub fn code(&self) -> Option<String> {
        if self.body.is_empty() {
            return None;
        }
        self.xml().text("Code").map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Fails the test unless the status is `status`.
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        self
    }
}

impl Client {
    /// A client with the server's keys.
    pub fn new(s3: &MemoryS3) -> Client {
        Client::with_keys(&s3.endpoint(), ACCESS_KEY, SECRET_KEY)
    }

    pub fn with_keys(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
        let options = ClientOptions::new()
            .with_allow_http(true)
            .with_timeout(PATIENCE);
        let store = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key)
            .with_client_options(options.clone())
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .build()
            .unwrap();
        Client {
            store,
            http: ReqwestConnector::default().connect(&options).unwrap(),
            credential: AwsCredential {
                key_id: access_key.into(),
                secret_key: secret_key.into(),
                token: None,
            },
            endpoint: endpoint.into(),
        }
    }

    /// Sends a signed request to `path_and_query` (from `/`).
    pub async fn try_send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, HttpError> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut builder = http::Request::builder().method(method).uri(url.as_str());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(HttpRequestBody::from(body)).unwrap();
        AwsAuthorizer::new(&self.credential, "s3", "us-east-1")
            .try_authorize(&mut request, None)
            .unwrap();
        let response = self.http.execute(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().bytes().await?;
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        })
    }

    /// [`Client::try_send`], failing the test if no answer comes.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        self.try_send(method, path_and_query, headers, body)
            .await
            .unwrap()
    }

    /// ListObjectVersions with these parameters.
    pub async fn list_versions(&self, bucket: &str, params: &[(&str, &str)]) -> Reply {
        let query = format!("/{bucket}?versions{}", query(params));
        self.send(Method::GET, &query, &[], Vec::new()).await
    }

    /// ListObjectsV2 with these parameters.
    pub async fn list_v2(&self, bucket: &str, params: &[(&str, &str)]) -> Reply {
        let query = format!("/{bucket}?list-type=2{}", query(params));
        self.send(Method::GET, &query, &[], Vec::new()).await
    }

    /// Every version and delete marker under `prefix`, page after page of
    /// `max_keys` (following the next markers), and the number of pages.
    pub async fn all_versions(&self, prefix: &str, max_keys: usize) -> (Vec<Entry>, usize) {
        let max_keys = max_keys.to_string();
        let (mut entries, mut pages) = (Vec::new(), 0);
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut params = vec![("prefix", prefix), ("max-keys", max_keys.as_str())];
            if let Some((key, version)) = &markers {
                params.push(("key-marker", key));
                params.push(("version-id-marker", version));
            }
            let page = self.list_versions(BUCKET, &params).await.expect(200).xml();
            pages += 1;
            entries.extend(version_entries(&page));
            if page.text("IsTruncated") != Some("true") {
                assert_eq!(page.text("NextKeyMarker"), None);
                return (entries, pages);
            }
            let key = page.text("NextKeyMarker").unwrap().to_owned();
            let version = page.text("NextVersionIdMarker").unwrap().to_owned();
            assert_eq!(
                entries.last().map(|e| (&e.key, &e.version_id)),
                Some((&key, &version))
            );
            markers = Some((key, version));
        }
    }

    /// DeleteObjects of `(key, version id)` entries, with Content-MD5 as S3
    /// requires, and any other headers.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        entries: &[(&str, Option<&str>)],
        quiet: bool,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = delete_body(entries, quiet);
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5(body.as_bytes()));
        let mut all = vec![("content-md5", md5.as_str())];
        all.extend_from_slice(headers);
        self.send(
            Method::POST,
            &format!("/{bucket}?delete"),
            &all,
            body.into_bytes(),
        )
        .await
    }

    /// GetBucketVersioning.
    pub async fn get_versioning(&self, bucket: &str) -> Reply {
        self.send(
            Method::GET,
            &format!("/{bucket}?versioning"),
            &[],
            Vec::new(),
        )
        .await
    }

    /// PutBucketVersioning with this status.
    pub async fn put_versioning(&self, bucket: &str, status: &str) -> Reply {
        let body = format!(
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Status>{status}</Status></VersioningConfiguration>"
        );
        self.send(
            Method::PUT,
            &format!("/{bucket}?versioning"),
            &[],
            body.into_bytes(),
        )
        .await
    }
}

/// `&name=value...`, values encoded as SigV4 canonicalises them.
pub fn query(params: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (name, value) in params {
        out.push('&');
        out.push_str(name);
        out.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn md5(body: &[u8]) -> [u8; 16] {
    use s3s::crypto::Checksum as _;
    s3s::crypto::Md5::checksum(body)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A DeleteObjects request body.
pub fn delete_body(entries: &[(&str, Option<&str>)], quiet: bool) -> String {
    let mut body = String::from("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    if quiet {
        body.push_str("<Quiet>true</Quiet>");
    }
    for (key, version) in entries {
        body.push_str(&format!("<Object><Key>{}</Key>", escape(key)));
        if let Some(version) = version {
            body.push_str(&format!("<VersionId>{}</VersionId>", escape(version)));
        }
        body.push_str("</Object>");
    }
    body.push_str("</Delete>");
    body
}

/// The `<Version>` and `<DeleteMarker>` entries of a ListObjectVersions
/// answer, in document order.
pub fn version_entries(page: &Node) -> Vec<Entry> {
    page.children
        .iter()
        .filter(|n| n.name == "Version" || n.name == "DeleteMarker")
        .map(|n| Entry {
            key: n.text("Key").unwrap().to_owned(),
            version_id: n.text("VersionId").unwrap().to_owned(),
            marker: n.name == "DeleteMarker",
            latest: match n.text("IsLatest") {
                Some("true") => true,
                Some("false") => false,
                other => panic!("IsLatest {other:?}"),
            },
        })
        .collect()
}

/// Polls `check` until it gives a value, failing after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An XML element: its name, its text, its child elements.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// The root element of `xml`.
    pub fn parse(xml: &str) -> Node {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut stack = vec![Node::default()];
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) => stack.push(Node {
                    name: String::from_utf8(e.local_name().as_ref().to_vec()).unwrap(),
                    ..Node::default()
                }),
                Event::Empty(e) => {
                    let node = Node {
                        name: String::from_utf8(e.local_name().as_ref().to_vec()).unwrap(),
                        ..Node::default()
                    };
                    stack.last_mut().unwrap().children.push(node);
                }
                Event::End(_) => {
                    let node = stack.pop().unwrap();
                    stack.last_mut().unwrap().children.push(node);
                }
                Event::Text(text) => {
                    let text = text.decode().unwrap();
                    stack.last_mut().unwrap().text.push_str(&text);
                }
                Event::GeneralRef(entity) => {
                    let node = stack.last_mut().unwrap();
                    match entity.resolve_char_ref().unwrap() {
                        Some(c) => node.text.push(c),
                        None => {
                            let name = entity.decode().unwrap();
                            let text = quick_xml::escape::resolve_predefined_entity(&name).unwrap();
                            node.text.push_str(text);
                        }
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        let document = stack.pop().unwrap();
        document.children.into_iter().next().unwrap()
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|n| n.name == name)
    }

    /// The text of the first child named `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|n| n.text.as_str())
    }

    /// Every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |n| n.name == name)
    }

    /// The fields of an element, as (name, text) pairs sorted by name: for
    /// comparing a `<Deleted>` or `<Error>` entry whole (the order of its
    /// fields means nothing).
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut fields: Vec<_> = self
            .children
            .iter()
            .map(|n| (n.name.clone(), n.text.clone()))
            .collect();
        fields.sort();
        fields
    }
}

/// `(name, text)` pairs from literals, sorted as [`Node::fields`].
pub fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut fields: Vec<_> = pairs
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    fields.sort();
    fields
}
