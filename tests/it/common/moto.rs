//! moto's S3 server as a child process, for what the in-process server of
//! `s3.rs` does not do: versioning (Enabled; moto treats Suspended as
//! unversioned) and Object Lock (governance, compliance, legal hold). moto
//! is an S3 implementation we did not write, so a test of erasure on
//! versioned and locked buckets checks the scheduler against someone
//! else's reading of the API, not against our own.
//!
//! One server serves the whole test process (started on first use, killed
//! with it); each test takes buckets of its own. Every request is signed
//! (SigV4, object_store's signer): moto checks no signature, but takes an
//! unsigned request for an anonymous one and refuses it on existing
//! objects (403, empty body).
//!
//! moto 5.2.1's answers, as this harness reads them:
//! - ListObjectVersions lists a page's `<Version>`s before its
//!   `<DeleteMarker>`s and dates them to the second, so the order between a
//!   key's versions and its markers is read one entry per request (see
//!   [`MotoBucket::entries`]). `NextKeyMarker` with `NextVersionIdMarker`
//!   pages correctly, also through one key's versions; a `key-marker`
//!   alone skips only that key's newest entry (AWS: all of them).
//! - An Object Lock put (retention or legal hold) without `Content-MD5` is
//!   refused (400 MissingUploadObjectWithObjectLockHeaders).
//! - A retain-until date must be `YYYY-MM-DDTHH:MM:SS[.f]Z`: moto parses no
//!   other RFC 3339 form.
//! - DeleteObjects answers a locked version with an `<Error>` of code
//!   `AccessDenied` ("Access Denied because object protected by object
//!   lock."), without its `<VersionId>`.
//! - Two DeleteObjects on versions of one key at once lose one another's
//!   deletions (each rewrites the key's list of versions from a copy): the
//!   server is run to answer one request at a time ([`SERIALIZED_SERVER`]).
//! - A body sent as a form (`application/x-www-form-urlencoded`, what curl
//!   `-d` sends) is read as a form: a put stores an empty object.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use md5::Digest;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::HttpRequestBody;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use quick_xml::events::Event;

use super::DEADLINE;

/// moto accepts any credentials; these are signed with.
pub const ACCESS_KEY: &str = "moto-access-key";
pub const SECRET_KEY: &str = "moto-secret-key";
pub const REGION: &str = "us-east-1";

const INSTALL: &str = "moto's S3 server is needed for these tests: \
                       python3 -m pip install 'moto[server]'";

/// What a query value keeps unencoded: RFC 3986's unreserved characters,
/// as SigV4 canonicalises them.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a key keeps unencoded in a path: the same, and `/`.
const KEY_PATH: &AsciiSet = &QUERY_VALUE.remove(b'/');

const VERSIONING_ENABLED: &str = "<VersioningConfiguration \
    xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
    <Status>Enabled</Status></VersioningConfiguration>";

const LEGAL_HOLD_OFF: &str = "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
    <Status>OFF</Status></LegalHold>";

/// moto's `moto_server`, answering one request at a time. moto's
/// DeleteObjects is not safe under concurrency: deleting a version rewrites
/// the key's list of versions from a copy, so two requests on one key at
/// once (DeleteObjects of 1,000 versions each, as a scheduler sends them)
/// lose one another's deletions, and versions answered `Deleted` come back.
/// S3 deletes each version for good; so the server is made to serve its
/// requests in turn (its threads still hold the connections).
const SERIALIZED_SERVER: &str = r#"
import sys, threading
import moto.server as server

one_at_a_time = threading.Lock()
run_simple = server.run_simple

def serialized(app):
    def serve(environ, start_response):
        with one_at_a_time:
            answer = app(environ, start_response)
            try:
                return [b"".join(answer)]
            finally:
                getattr(answer, "close", lambda: None)()
    return serve

server.run_simple = lambda host, port, app, **kw: run_simple(host, port, serialized(app), **kw)
server.main(sys.argv[1:])
"#;

/// One moto server for the whole test process, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// The running server.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Where moto writes its output (a line per request).
    pub log: PathBuf,
    agent: ureq::Agent,
    /// Only asked whether it exited while starting; it dies with the test
    /// process.
    child: Mutex<Child>,
}

/// A bucket of the moto server.
pub struct MotoBucket {
    pub name: String,
    /// The server's, as in [`Moto::endpoint`].
    pub endpoint: String,
}

/// The Object Lock protection of a version put with
/// [`MotoBucket::put_locked`].
#[derive(Debug, Clone, Copy)]
pub enum Lock {
    /// Retention that a request with `x-amz-bypass-governance-retention`
    /// may override, until `until`.
    Governance { until: SystemTime },
    /// Retention nobody overrides, until `until`.
    Compliance { until: SystemTime },
    /// Protection without a date, until removed
    /// ([`MotoBucket::remove_legal_hold`]).
    LegalHold,
}

/// One version or delete marker as ListObjectVersions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// `null` for an object put while the bucket was unversioned.
    pub version_id: String,
    /// A delete marker rather than a version.
    pub marker: bool,
    /// The key's current entry (a marker here means the key looks deleted).
    pub latest: bool,
}

/// An answer of moto.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Moto {
    fn start() -> Moto {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        // Under target/tmp (cargo's directory for tests' files), kept after
        // the process for a failure to be looked into.
        let dir = tempfile::Builder::new()
            .prefix("moto-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let log = dir.join("moto.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new("python3");
        command
            .args([
                "-c",
                SERIALIZED_SERVER,
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Killed when the thread that forked it ends, so that thread
                // lives as long as the process (below).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    // The test process died before the prctl.
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("moto-parent".into())
            .spawn(move || {
                let _ = tx.send(command.spawn());
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
        let child = match rx.recv().unwrap() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!("{INSTALL} (python3: {e})"),
            Err(e) => panic!("moto_server does not start: {e}"),
        };
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
            child: Mutex::new(child),
        };
        moto.wait_until_up();
        moto
    }

    /// Polls the endpoint until moto answers (any HTTP status).
    fn wait_until_up(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                panic!(
                    "moto_server exited ({status}) before answering; {INSTALL}\n{}",
                    self.log_text()
                );
            }
            match self.agent.get(&self.endpoint).call() {
                Ok(_) | Err(ureq::Error::Status(..)) => return,
                Err(ureq::Error::Transport(e)) => assert!(
                    Instant::now() < deadline,
                    "moto_server does not answer at {} after {DEADLINE:?}: {e}\n{}",
                    self.endpoint,
                    self.log_text()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{}:\n{text}", self.log.display())
    }

    /// A new bucket with a unique lowercase name (S3 bucket naming rules:
    /// 3-63 chars, lowercase letters, digits, hyphens; moto refuses invalid
    /// names), versioned or not, with Object Lock enabled at creation when
    /// `object_lock` (which implies versioning Enabled, whatever
    /// `versioning` says).
    pub fn bucket(&self, versioning: bool, object_lock: bool) -> MotoBucket {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vs-{}-{}-{:06x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..0xffffff)
        );
        let bucket = MotoBucket {
            name,
            endpoint: self.endpoint.clone(),
        };
        let lock = [("x-amz-bucket-object-lock-enabled", "true".to_owned())];
        let headers: &[_] = if object_lock { &lock } else { &[] };
        bucket.expect_ok("CreateBucket", bucket.send("PUT", "", "", headers, b""));
        if versioning && !object_lock {
            bucket.enable_versioning();
        }
        bucket
    }

    /// Sends a request signed with SigV4. `path_and_query` is already
    /// percent-encoded.
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Answer {
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut request = http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut request = request
            .body(HttpRequestBody::from(body.to_vec()))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let credential = AwsCredential {
            key_id: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", REGION)
            .try_authorize(&mut request, None)
            .unwrap();
        let mut call = self.agent.request(method, &url);
        for (name, value) in request.headers() {
            call = call.set(name.as_str(), value.to_str().unwrap());
        }
        let result = match method {
            "GET" | "HEAD" | "DELETE" => call.call(),
            _ => call.send_bytes(body),
        };
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("moto: {method} {url}: {e}"),
        };
        let status = response.status();
        let headers = response
            .headers_names()
            .into_iter()
            .filter_map(|name| {
                let value = response.header(&name)?.to_owned();
                Some((name, value))
            })
            .collect();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut body)
            .unwrap_or_else(|e| panic!("moto: {method} {url}: reading the answer: {e}"));
        Answer {
            status,
            headers,
            body,
        }
    }
}

impl MotoBucket {
    /// Puts `body` at `key`; returns the new version's id (`null` when the
    /// bucket is unversioned).
    pub fn put(&self, key: &str, body: &[u8]) -> String {
        self.put_with(key, body, Vec::new())
    }

    /// Puts `body` at `key` protected by `lock` (the bucket must have been
    /// created with Object Lock); returns the new version's id.
    pub fn put_locked(&self, key: &str, body: &[u8], lock: Lock) -> String {
        let retention = |mode: &str, until: SystemTime| {
            let until = chrono::DateTime::<chrono::Utc>::from(until)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            vec![
                ("x-amz-object-lock-mode", mode.to_owned()),
                ("x-amz-object-lock-retain-until-date", until),
            ]
        };
        let headers = match lock {
            Lock::Governance { until } => retention("GOVERNANCE", until),
            Lock::Compliance { until } => retention("COMPLIANCE", until),
            Lock::LegalHold => vec![("x-amz-object-lock-legal-hold", "ON".to_owned())],
        };
        self.put_with(key, body, headers)
    }

    fn put_with(&self, key: &str, body: &[u8], mut headers: Vec<(&str, String)>) -> String {
        headers.push(("content-type", "application/octet-stream".into()));
        // Required with Object Lock headers, checked by everyone else.
        headers.push(("content-md5", content_md5(body)));
        let answer = self.send("PUT", key, "", &headers, body);
        let answer = self.expect_ok(&format!("PutObject {key}"), answer);
        answer
            .header("x-amz-version-id")
            .unwrap_or("null")
            .to_owned()
    }

    /// Deletes `key` without a version id (DeleteObject): on a versioned
    /// bucket this puts a delete marker over it; returns the marker's
    /// version id when moto gives one.
    pub fn delete(&self, key: &str) -> Option<String> {
        let answer = self.send("DELETE", key, "", &[], b"");
        let answer = self.expect_ok(&format!("DeleteObject {key}"), answer);
        answer.header("x-amz-version-id").map(str::to_owned)
    }

    /// Turns versioning on (PutBucketVersioning Enabled), e.g. on the
    /// bucket of a running scheduler.
    pub fn enable_versioning(&self) {
        let headers = [("content-type", "application/xml".to_owned())];
        let answer = self.send(
            "PUT",
            "",
            "versioning",
            &headers,
            VERSIONING_ENABLED.as_bytes(),
        );
        self.expect_ok("PutBucketVersioning", answer);
    }

    /// Every version and delete marker under `prefix` (every page of
    /// ListObjectVersions): keys in order, each key's entries newest first.
    ///
    /// moto lists a page's versions before its markers and dates them to the
    /// second, so where a key has both the order between them is read again
    /// from moto, one entry per request.
    pub fn entries(&self, prefix: &str) -> Vec<Entry> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = self.versions_page(prefix, after.as_ref(), None);
            let mut keys: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let of_key: Vec<&Entry> = page.entries.iter().filter(|e| e.key == key).collect();
                if of_key.iter().all(|e| e.marker) || of_key.iter().all(|e| !e.marker) {
                    // Each kind is listed newest first.
                    entries.extend(of_key.into_iter().cloned());
                    continue;
                }
                for _ in 0..of_key.len() {
                    let last = entries
                        .last()
                        .map(|e| (e.key.clone(), e.version_id.clone()));
                    let next = self.versions_page(prefix, last.as_ref(), Some(1));
                    match &next.entries[..] {
                        [one] if one.key == key => entries.push(one.clone()),
                        other => panic!("ListObjectVersions after {last:?} gave {other:?}"),
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return entries,
            }
        }
    }

    /// One page of ListObjectVersions, its entries in the answer's order,
    /// and where the next page starts (`None` on the last page).
    fn versions_page(
        &self,
        prefix: &str,
        after: Option<&(String, String)>,
        max_keys: Option<usize>,
    ) -> VersionsPage {
        let mut query = format!("versions&prefix={}", encode_query(prefix));
        if let Some((key, version_id)) = after {
            query += &format!(
                "&key-marker={}&version-id-marker={}",
                encode_query(key),
                encode_query(version_id)
            );
        }
        if let Some(max) = max_keys {
            query += &format!("&max-keys={max}");
        }
        let answer = self.send("GET", "", &query, &[], b"");
        let answer = self.expect_ok("ListObjectVersions", answer);
        let root = parse_xml(&answer.body);
        let entries = root
            .children
            .iter()
            .filter(|e| e.name == "Version" || e.name == "DeleteMarker")
            .map(|e| Entry {
                key: e.text_of("Key"),
                version_id: e.text_of("VersionId"),
                marker: e.name == "DeleteMarker",
                latest: e.text_of("IsLatest") == "true",
            })
            .collect();
        let next = (root.text_of("IsTruncated") == "true").then(|| {
            let (key, version_id) = (
                root.text_of("NextKeyMarker"),
                root.text_of("NextVersionIdMarker"),
            );
            assert!(
                !key.is_empty() && !version_id.is_empty(),
                "a truncated ListObjectVersions page without next markers: {}",
                String::from_utf8_lossy(&answer.body)
            );
            (key, version_id)
        });
        VersionsPage { entries, next }
    }

    /// The keys of the current objects under `prefix` (every page of
    /// ListObjectsV2), in order: a key whose latest entry is a delete
    /// marker is not one.
    pub fn current_keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = format!("list-type=2&prefix={}", encode_query(prefix));
            if let Some(token) = &token {
                query += &format!("&continuation-token={}", encode_query(token));
            }
            let answer = self.send("GET", "", &query, &[], b"");
            let answer = self.expect_ok("ListObjectsV2", answer);
            let root = parse_xml(&answer.body);
            keys.extend(
                root.children
                    .iter()
                    .filter(|e| e.name == "Contents")
                    .map(|e| e.text_of("Key")),
            );
            if root.text_of("IsTruncated") != "true" {
                return keys;
            }
            let next = root.text_of("NextContinuationToken");
            assert!(
                !next.is_empty(),
                "a truncated ListObjectsV2 page without a continuation token"
            );
            token = Some(next);
        }
    }

    /// Removes the legal hold of one version (so a test can clean up).
    pub fn remove_legal_hold(&self, key: &str, version_id: &str) {
        let headers = [
            ("content-type", "application/xml".to_owned()),
            ("content-md5", content_md5(LEGAL_HOLD_OFF.as_bytes())),
        ];
        let query = format!("legal-hold&versionId={}", encode_query(version_id));
        let answer = self.send("PUT", key, &query, &headers, LEGAL_HOLD_OFF.as_bytes());
        self.expect_ok(&format!("PutObjectLegalHold {key} {version_id}"), answer);
    }

    /// A storage configuration for this bucket: kind s3, endpoint, bucket,
    /// and moto's credentials.
    pub fn storage_config(&self, paths: Vec<String>) -> video_scheduler::config::StorageConfig {
        video_scheduler::config::StorageConfig {
            kind: video_scheduler::config::StorageKind::S3,
            paths,
            bucket: Some(self.name.clone()),
            endpoint: Some(self.endpoint.clone()),
            region: Some(REGION.into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(video_scheduler::config::Secret::new(SECRET_KEY)),
            ..Default::default()
        }
    }

    /// A signed request on this bucket (`key` empty) or one of its objects.
    fn send(
        &self,
        method: &str,
        key: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Answer {
        let mut path = format!("/{}", self.name);
        if !key.is_empty() {
            path.push('/');
            path.extend(utf8_percent_encode(key, KEY_PATH));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        moto().send(method, &path, headers, body)
    }

    /// `answer` if it is a success, else a panic naming `what`.
    fn expect_ok(&self, what: &str, answer: Answer) -> Answer {
        assert!(
            (200..300).contains(&answer.status),
            "moto: {what} in bucket {}: {} {}",
            self.name,
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        answer
    }
}

/// One page of ListObjectVersions.
struct VersionsPage {
    entries: Vec<Entry>,
    next: Option<(String, String)>,
}

fn encode_query(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// The base64 MD5 of `body`, as `Content-MD5` carries it.
fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

/// An XML element: its local name, its own text, its children.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    /// The text of the first child named `name` (empty when there is none).
    fn text_of(&self, name: &str) -> String {
        self.children
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.text.clone())
            .unwrap_or_default()
    }
}

/// The root element of an S3 answer, entities resolved.
fn parse_xml(body: &[u8]) -> Element {
    let fail = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "moto's answer is not XML ({e}): {}",
            String::from_utf8_lossy(body)
        )
    };
    let mut reader = quick_xml::Reader::from_reader(body);
    // The open elements, innermost last; the document is a pseudo-root.
    let mut open = vec![Element::default()];
    loop {
        let event = reader.read_event().unwrap_or_else(|e| fail(&e));
        let text = match event {
            Event::Start(start) => {
                open.push(Element {
                    name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
                    ..Element::default()
                });
                continue;
            }
            Event::Empty(empty) => {
                open.last_mut().unwrap().children.push(Element {
                    name: String::from_utf8_lossy(empty.local_name().as_ref()).into_owned(),
                    ..Element::default()
                });
                continue;
            }
            Event::End(_) => {
                let done = open.pop().unwrap();
                match open.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => fail(&"an end tag without a start"),
                }
                continue;
            }
            Event::Eof => break,
            Event::Text(text) => text.decode().unwrap_or_else(|e| fail(&e)).into_owned(),
            Event::CData(text) => text.decode().unwrap_or_else(|e| fail(&e)).into_owned(),
            Event::GeneralRef(entity) => {
                match entity.resolve_char_ref().unwrap_or_else(|e| fail(&e)) {
                    Some(c) => c.to_string(),
                    None => {
                        let name = entity.decode().unwrap_or_else(|e| fail(&e));
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .unwrap_or_else(|| fail(&format!("unknown entity &{name};")))
                            .to_owned()
                    }
                }
            }
            _ => continue,
        };
        open.last_mut().unwrap().text.push_str(&text);
    }
    let document = open.pop().unwrap();
    assert!(open.is_empty(), "moto's answer ends inside an element");
    document
        .children
        .into_iter()
        .next()
        .unwrap_or_else(|| fail(&"no root element"))
}
