//! Test harness: the real server on 127.0.0.1:0, a real SQLite file and a
//! real video root in a temp directory, talked to over HTTP.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use serde_json::Value;
use tempfile::TempDir;
use video_scheduler::config::Config;
use video_scheduler::db::Db;

/// How long any polled condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running server and the temp directory holding its database and files.
pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    /// Kept alive while the app runs; `None` once handed back by `stop`.
    dir: Option<TempDir>,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

/// A config for tests: everything inside `dir`, port 0.
pub fn test_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.join("scheduler.db").display()),
        storage: video_scheduler::config::StorageConfig {
            root: dir.join("videos"),
            ..Default::default()
        },
        tick_ms: 100,
        shutdown_timeout_secs: 10,
        ..Config::default()
    }
}

/// Starts the app with the test config changed by `customize`.
pub fn spawn_app(customize: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    customize(&mut config);
    start_in(dir, config)
}

/// Starts the app on an existing directory (a restart).
pub fn start_in(dir: TempDir, config: Config) -> TestApp {
    config.validate().expect("test config is valid");
    std::fs::create_dir_all(&config.storage.root).unwrap();
    let _ = env_logger::builder().is_test(true).try_init();
    let (tx, rx) = std::sync::mpsc::channel();
    let app_config = config.clone();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let timeout = Duration::from_secs(app_config.shutdown_timeout_secs);
            let running = video_scheduler::start(app_config)
                .await
                .expect("app starts");
            tx.send((running.addr(), running.handle())).unwrap();
            running.wait(timeout).await.unwrap();
        })
    });
    let (addr, handle) = rx.recv().expect("app started");
    TestApp {
        addr,
        config,
        dir: Some(dir),
        handle,
        thread: Some(thread),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn root(&self) -> PathBuf {
        self.config.storage.root.clone()
    }

    /// Creates `root/rel` (and its parents) with some content.
    pub fn create_file(&self, rel: &str) -> PathBuf {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"video bytes").unwrap();
        path
    }

    /// A direct handle on the same database, to check rows.
    pub fn db(&self) -> Db {
        Db::connect(&self.config.database_url, 1).unwrap()
    }

    pub fn get(&self, path: &str) -> Reply {
        call(ureq::get(&self.url(path)), None)
    }

    pub fn get_with_token(&self, path: &str, token: &str) -> Reply {
        call(
            ureq::get(&self.url(path)).set("Authorization", &format!("Bearer {token}")),
            None,
        )
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        call(ureq::post(&self.url(path)), Some(body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        call(ureq::delete(&self.url(path)), None)
    }

    /// `POST /v1/deletions` with these ids and extra fields.
    pub fn record(&self, ids: &[&str], extra: Value) -> Reply {
        let mut body = serde_json::json!({ "ids": ids });
        if let Value::Object(fields) = extra {
            body.as_object_mut().unwrap().extend(fields);
        }
        self.post("/v1/deletions", body)
    }

    /// Sends `GET path` byte for byte, with no client-side normalisation of
    /// `.`, `..` or percent escapes.
    pub fn raw_get(&self, path: &str) -> Reply {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Reply {
            status,
            body,
            retry_after: None,
        }
    }

    /// Stops the server and waits for its pipeline to finish; returns the
    /// directory so that the same database and files can be restarted.
    pub fn stop(mut self) -> (TempDir, Config) {
        self.shutdown();
        (self.dir.take().unwrap(), self.config.clone())
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            actix_web::rt::System::new().block_on(self.handle.stop(true));
            thread.join().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An HTTP answer, whatever its status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn call(request: ureq::Request, body: Option<Value>) -> Reply {
    let result = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_owned);
    Reply {
        status,
        retry_after,
        body: response.into_string().unwrap(),
    }
}

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Milliseconds since the epoch, as the scheduler stores times.
pub fn now_ms() -> i64 {
    video_scheduler::db::now_ms()
}

/// Two hours ahead: a claim made "then" takes rows recorded with a delay of
/// an hour, which the app's own dispatcher cannot have claimed yet.
pub fn two_hours_ahead() -> i64 {
    now_ms() + 2 * 3_600_000
}

/// Leases up to `limit` due rows to `owner`, as another instance would.
pub fn claim_as(db: &Db, owner: &str, limit: usize) -> Vec<video_scheduler::db::models::Claimed> {
    let later = two_hours_ahead();
    db.write(|c| video_scheduler::db::queries::claim(c, owner, later, later + 60_000, limit))
        .unwrap()
}

/// Acks `claimed` as a failure that used its last attempt: state `failed`.
pub fn fail_for_good(db: &Db, owner: &str, claimed: &video_scheduler::db::models::Claimed) {
    let policy = video_scheduler::pipeline::retry::RetryPolicy {
        max_attempts: 1,
        base_ms: 1,
        max_ms: 1,
    };
    let failure = policy.failure(claimed, "boom".into(), now_ms());
    let counts = db
        .write(|c| video_scheduler::db::queries::ack(c, owner, &[], &[failure]))
        .unwrap();
    assert_eq!(counts.failed, 1);
}
