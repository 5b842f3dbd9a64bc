//! Test harness: the real server on 127.0.0.1:0, a real SQLite file and a
//! real video root in a temp directory, talked to over HTTP.
// Every helper is used with every feature on (CI's clippy checks that); a
// build with fewer features leaves the helpers of the others' areas unused.
#![cfg_attr(
    not(all(
        feature = "sqlite",
        feature = "mysql",
        feature = "postgres",
        feature = "s3"
    )),
    allow(dead_code)
)]

#[cfg(feature = "mysql")]
pub mod galera;
#[cfg(feature = "s3")]
pub mod moto;
#[cfg(feature = "postgres")]
pub mod pg_cluster;
pub mod process;
pub mod proxy;
pub mod receiver;
#[cfg(feature = "s3")]
pub mod s3;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use serde_json::Value;
use tempfile::TempDir;
use video_scheduler::config::Config;
use video_scheduler::db::Db;

/// How long any polled condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Defines each named test, written once as `fn name(backend: Backend)`,
/// for every backend compiled in: `sqlite::name`, `mysql::name`,
/// `postgres::name`, in the area's module (`receipts::sqlite::name`). A
/// backend whose feature is on is tested, never skipped: its server must be
/// reachable (see [`TestDb`]). In scope in every area through
/// `#[macro_use] mod common` in main.rs, as `storage_tests!` is.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(#[test] fn $name() { super::$name($crate::common::Backend::Sqlite) })*
        }
        #[cfg(feature = "mysql")]
        mod mysql {
            $(#[test] fn $name() { super::$name($crate::common::Backend::Mysql) })*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(#[test] fn $name() { super::$name($crate::common::Backend::Postgres) })*
        }
    };
}

/// Defines each named test, written once as `fn name(backend: Backend,
/// storage: Storage)`, for local storage on every database backend compiled
/// in (`sqlite::name`, `mysql::name`, `postgres::name`) and, with the `s3`
/// feature, for object storage on SQLite (`s3::name`).
macro_rules! storage_tests {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(#[test] fn $name() {
                super::$name($crate::common::Backend::Sqlite, $crate::common::Storage::Local)
            })*
        }
        #[cfg(feature = "mysql")]
        mod mysql {
            $(#[test] fn $name() {
                super::$name($crate::common::Backend::Mysql, $crate::common::Storage::Local)
            })*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(#[test] fn $name() {
                super::$name($crate::common::Backend::Postgres, $crate::common::Storage::Local)
            })*
        }
        #[cfg(feature = "s3")]
        mod s3 {
            $(#[test] fn $name() {
                super::$name($crate::common::Backend::Sqlite, $crate::common::Storage::S3)
            })*
        }
    };
}

/// Where a test's files live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Under a temp directory (`storage.kind = "local"`).
    Local,
    /// In a bucket of an S3 server in the test process (`storage.kind = "s3"`).
    S3,
}

/// The database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
    Postgres,
}

/// A database of its own for one test: a file for SQLite, a freshly created
/// database with a unique name on the MariaDB/PostgreSQL server (from
/// `TEST_MYSQL_URL` / `TEST_POSTGRES_URL`, defaulting to the local servers),
/// dropped when the test ends.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    /// Server URL and database name to drop afterwards.
    server: Option<(String, String)>,
}

pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

impl TestDb {
    pub fn create(backend: Backend, dir: &Path) -> TestDb {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vs_test_{}_{}_{:06x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..0xffffff)
        );
        let server_url =
            |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
        match backend {
            Backend::Sqlite => TestDb {
                backend,
                url: format!("sqlite://{}", dir.join("scheduler.db").display()),
                server: None,
            },
            Backend::Mysql => {
                let server = server_url("TEST_MYSQL_URL", DEFAULT_MYSQL_URL);
                admin(
                    backend,
                    &server,
                    &format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
                );
                TestDb {
                    backend,
                    url: with_database(&server, &name),
                    server: Some((server, name)),
                }
            }
            Backend::Postgres => {
                let server = server_url("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL);
                admin(backend, &server, &format!("CREATE DATABASE {name}"));
                TestDb {
                    backend,
                    url: with_database(&server, &name),
                    server: Some((server, name)),
                }
            }
        }
    }
}

impl TestDb {
    /// The database's name on its server (MariaDB/PostgreSQL).
    pub fn name(&self) -> &str {
        &self.server.as_ref().expect("a server database").1
    }

    /// Runs `sql` as the server's administrator (not in this database).
    pub fn admin(&self, sql: &str) {
        let (server, _) = self.server.as_ref().expect("a server database");
        admin(self.backend, server, sql);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.server {
            let sql = match self.backend {
                Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                _ => format!("DROP DATABASE IF EXISTS {name}"),
            };
            admin(self.backend, server, &sql);
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(slash) if slash > base.find("://").unwrap() + 2 => &base[..slash],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs one statement on the server; panics (fails the test) when the server
/// cannot be reached: a compiled-in backend is tested, not skipped.
#[allow(unused_variables)]
fn admin(backend: Backend, server: &str, sql: &str) {
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    use diesel::{Connection, RunQueryDsl};
    let result: Result<usize, String> = match backend {
        #[cfg(feature = "mysql")]
        Backend::Mysql => diesel::MysqlConnection::establish(server)
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                diesel::sql_query(sql)
                    .execute(&mut c)
                    .map_err(|e| e.to_string())
            }),
        #[cfg(feature = "postgres")]
        Backend::Postgres => diesel::PgConnection::establish(server)
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                diesel::sql_query(sql)
                    .execute(&mut c)
                    .map_err(|e| e.to_string())
            }),
        _ => Err("backend not compiled in".into()),
    };
    if let Err(e) = result {
        panic!("{backend:?} test server {server} is required for these tests: {sql}: {e}");
    }
}

/// A test's temp directory, database and (for object storage) S3 server,
/// kept across restarts.
pub struct Workspace {
    pub dir: TempDir,
    pub db: TestDb,
    #[cfg(feature = "s3")]
    pub s3: Option<std::sync::Arc<s3::TestS3>>,
}

impl Workspace {
    /// A client of a server at `addr` running `config` on this workspace.
    pub fn client(&self, addr: SocketAddr, config: Config) -> Client {
        Client {
            addr,
            config,
            #[cfg(feature = "s3")]
            s3: self.s3.clone(),
        }
    }
}

/// How a test talks to a server: its address, the config it runs with, and
/// the storage it deletes from.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub config: Config,
    #[cfg(feature = "s3")]
    pub s3: Option<std::sync::Arc<s3::TestS3>>,
}

/// A server running in this process, and the workspace holding its
/// database and files.
pub struct TestApp {
    client: Client,
    /// `None` once handed back by `stop`.
    workspace: Option<Workspace>,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

/// A fresh workspace and a config for it: files inside the temp dir, port 0.
pub fn workspace(backend: Backend) -> (Workspace, Config) {
    workspace_on(backend, Storage::Local)
}

/// The tests' config for a database at `url` and a video root in `dir`:
/// port 0, short ticks, a short shutdown.
fn test_config(dir: &Path, url: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: url.to_owned(),
        storage: video_scheduler::config::StorageConfig {
            root: dir.join("videos"),
            ..Default::default()
        }
        .into(),
        tick_ms: 100,
        shutdown_timeout_secs: 10,
        ..Config::default()
    }
}

/// A workspace (temp dir, video root) and the test config for a database
/// at `url` that the test owns (a Galera node, a PostgreSQL primary and
/// standby): nothing is created on the machine's own servers, and nothing
/// is dropped.
pub fn workspace_at(backend: Backend, url: &str) -> (Workspace, Config) {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), url);
    let db = TestDb {
        backend,
        url: url.to_owned(),
        server: None,
    };
    let workspace = Workspace {
        dir,
        db,
        #[cfg(feature = "s3")]
        s3: None,
    };
    (workspace, config)
}

/// A fresh workspace on `storage`: a local root in the temp dir, or a
/// bucket of an S3 server started for the test.
pub fn workspace_on(backend: Backend, storage: Storage) -> (Workspace, Config) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(backend, dir.path());
    let mut config = test_config(dir.path(), &db.url);
    let workspace = match storage {
        Storage::Local => Workspace {
            dir,
            db,
            #[cfg(feature = "s3")]
            s3: None,
        },
        #[cfg(feature = "s3")]
        Storage::S3 => {
            let server = s3::TestS3::start();
            config.storage[0] = server.storage_config(config.storage[0].paths.clone());
            Workspace {
                dir,
                db,
                s3: Some(std::sync::Arc::new(server)),
            }
        }
        #[cfg(not(feature = "s3"))]
        Storage::S3 => unreachable!("S3 tests need the s3 feature"),
    };
    let _ = &mut config;
    (workspace, config)
}

/// Starts the app on `backend` with the test config changed by `customize`.
pub fn spawn_app(backend: Backend, customize: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(backend, Storage::Local, customize)
}

/// Starts the app on `backend` and `storage`, the test config changed by
/// `customize`.
pub fn spawn_app_on(
    backend: Backend,
    storage: Storage,
    customize: impl FnOnce(&mut Config),
) -> TestApp {
    let (workspace, mut config) = workspace_on(backend, storage);
    customize(&mut config);
    start_in(workspace, config)
}

/// Starts the app on an existing workspace (a restart, or a second instance
/// when the workspace is shared by reference through [`start_more`]).
pub fn start_in(workspace: Workspace, config: Config) -> TestApp {
    let (addr, handle, thread) = launch(&config);
    TestApp {
        client: workspace.client(addr, config),
        workspace: Some(workspace),
        handle,
        thread: Some(thread),
    }
}

/// Another instance on the same database and storage as `app`.
pub fn start_more(app: &TestApp, customize: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = app.config.clone();
    customize(&mut config);
    let (addr, handle, thread) = launch(&config);
    TestApp {
        client: Client {
            addr,
            config,
            #[cfg(feature = "s3")]
            s3: app.client.s3.clone(),
        },
        workspace: None,
        handle,
        thread: Some(thread),
    }
}

fn launch(config: &Config) -> (SocketAddr, ServerHandle, JoinHandle<()>) {
    config.validate().expect("test config is valid");
    for target in config.storage.iter() {
        if target.kind == video_scheduler::config::StorageKind::Local {
            std::fs::create_dir_all(&target.root).unwrap();
        }
    }
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
    (addr, handle, thread)
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Where the server's files are, as files: the local root, or the
    /// bucket's directory in the S3 server.
    pub fn root(&self) -> PathBuf {
        #[cfg(feature = "s3")]
        if let Some(s3) = &self.s3 {
            return s3.bucket_dir();
        }
        self.config.storage[0].root.clone()
    }

    /// Creates `root/rel` (and its parents) with some content: a file, or
    /// an object whose key is `rel`.
    pub fn create_file(&self, rel: &str) -> PathBuf {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"video bytes").unwrap();
        path
    }

    /// Whether `rel` is still there: a file or directory, or (object
    /// storage, which leaves empty directories behind) any object under it.
    pub fn exists(&self, rel: &str) -> bool {
        let path = self.root().join(rel);
        #[cfg(feature = "s3")]
        if self.s3.is_some() {
            return files_under(&path) > 0;
        }
        path.symlink_metadata().is_ok()
    }

    /// Makes `rel` undeletable in a way root cannot bypass: a non-empty
    /// directory where a file is expected, or a per-key error of the S3
    /// server. Undone by [`Client::unblock`].
    pub fn block(&self, rel: &str) {
        #[cfg(feature = "s3")]
        if let Some(s3) = &self.s3 {
            self.create_file(rel);
            s3.faults().fail_key(rel, "AccessDenied");
            return;
        }
        self.create_file(&format!("{rel}/inside.mp4"));
    }

    /// Makes `rel` a plain deletable file again.
    pub fn unblock(&self, rel: &str) {
        #[cfg(feature = "s3")]
        if let Some(s3) = &self.s3 {
            s3.faults().unfail_key(rel);
            return;
        }
        std::fs::remove_dir_all(self.root().join(rel)).unwrap();
        self.create_file(rel);
    }

    /// Requests left in the table, in any state.
    pub fn row_count(&self) -> i64 {
        row_count(&self.db())
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

    /// `POST path` that reports a dead server instead of failing the test.
    pub fn try_post(&self, path: &str, body: Value) -> Result<Reply, String> {
        try_call(ureq::post(&self.url(path)), Some(body))
    }

    /// `GET path` that reports a dead server instead of failing the test.
    pub fn try_get(&self, path: &str) -> Result<Reply, String> {
        try_call(ureq::get(&self.url(path)), None)
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

    /// `POST /v1/deletions` of `ids`, due now, which must be accepted.
    pub fn record_now(&self, ids: &[&str]) {
        let reply = self.record(ids, serde_json::json!({}));
        assert_eq!(reply.status, 202, "{}", reply.body);
    }

    /// `GET /v1/deletions/{id}`, which must answer 200: the live request
    /// or its receipt.
    pub fn request(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/deletions/{id}"));
        assert_eq!(reply.status, 200, "{id}: {}", reply.body);
        reply.json()
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

    /// The value of a counter or gauge on `/metrics`, labels included in
    /// `name` as written there, e.g. `x_total{outcome="deleted"}`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }
}

impl std::ops::Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestApp {
    /// Stops the server and waits for its pipeline to finish; returns the
    /// directory so that the same database and files can be restarted.
    pub fn stop(mut self) -> (Workspace, Config) {
        self.shutdown();
        let workspace = self
            .workspace
            .take()
            .expect("stop the instance that owns the workspace");
        (workspace, self.config.clone())
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
    try_call(request, body).unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// Any HTTP answer, or the transport error (refused, reset: the server died).
pub fn try_call(request: ureq::Request, body: Option<Value>) -> Result<Reply, String> {
    let result = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_owned);
    let body = response.into_string().map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// A receipt's `targets` for the single storage target (`default`), as
/// `GET /v1/deletions/{id}` shows them.
pub fn counts(objects: u32, versions: u32, missing: u32, versions_kept: u32) -> Value {
    serde_json::json!([{
        "name": "default",
        "objects": objects,
        "versions": versions,
        "missing": missing,
        "versions_kept": versions_kept,
    }])
}

/// Files under `path` (a file counts as one), following no symlink.
pub fn files_under(path: &Path) -> usize {
    match path.symlink_metadata() {
        Err(_) => 0,
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
            .unwrap()
            .map(|e| files_under(&e.unwrap().path()))
            .sum(),
        Ok(_) => 1,
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
    video_scheduler::clock::now_ms()
}

/// Inserts receipts given as SQL value tuples (`('id', requested_at,
/// completed_at, attempts, deleted, missing, 'acked_by', 'source',
/// request_id)`), 1,000 a statement, as instances would have left them,
/// then recounts the kept counts.
pub fn insert_receipts(db: &Db, rows: impl IntoIterator<Item = String>) {
    use diesel::RunQueryDsl;
    let rows: Vec<String> = rows.into_iter().collect();
    for chunk in rows.chunks(1000) {
        let sql = format!(
            "INSERT INTO video_del_receipt \
             (id, requested_at, completed_at, attempts, deleted, missing, acked_by, source, request_id) \
             VALUES {}",
            chunk.join(", ")
        );
        db.write(|c| diesel::sql_query(&sql).execute(c)).unwrap();
    }
    db.write(video_scheduler::db::queries::counts::recount)
        .unwrap();
}

/// Requests left in the table, in any state.
pub fn row_count(db: &Db) -> i64 {
    let s = db
        .read(|c| video_scheduler::db::queries::counts::stats(c, now_ms()))
        .unwrap();
    s.pending + s.running + s.failed
}

/// The `video-scheduler` binary, without the developer's own
/// `VIDEO_SCHEDULER_*` variables.
pub fn binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_video-scheduler"));
    for (key, _) in std::env::vars() {
        if key.starts_with("VIDEO_SCHEDULER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Two hours ahead: a claim made "then" takes rows recorded with a delay of
/// an hour, which the app's own dispatcher cannot have claimed yet.
pub fn two_hours_ahead() -> i64 {
    now_ms() + 2 * 3_600_000
}

/// Leases up to `limit` due rows to `owner`, as another instance would.
pub fn claim_as(db: &Db, owner: &str, limit: usize) -> Vec<video_scheduler::db::models::Claimed> {
    let later = two_hours_ahead();
    claim_at(db, owner, later, later + 60_000, limit)
}

/// Leases up to `limit` rows due at `now` to `owner` until `until` (none
/// while paused).
pub fn claim_at(
    db: &Db,
    owner: &str,
    now: i64,
    until: i64,
    limit: usize,
) -> Vec<video_scheduler::db::models::Claimed> {
    match db
        .write(|c| video_scheduler::db::queries::claim::claim(c, owner, now, until, limit))
        .unwrap()
    {
        video_scheduler::db::models::Claim::Batch(batch) => batch,
        video_scheduler::db::models::Claim::Paused => Vec::new(),
    }
}

/// A mount made by a test (tests run as root), unmounted on drop even if
/// the test fails, so the temp dir can be removed.
pub struct Mount(PathBuf);

impl Mount {
    /// A fresh tmpfs on `target`.
    pub fn tmpfs(target: &Path) -> Mount {
        run_ok("mount", &["-t", "tmpfs", "tmpfs", target.to_str().unwrap()]);
        Mount(target.to_owned())
    }

    /// `source` bind-mounted on `target`.
    pub fn bind(source: &Path, target: &Path) -> Mount {
        run_ok(
            "mount",
            &["--bind", source.to_str().unwrap(), target.to_str().unwrap()],
        );
        Mount(target.to_owned())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Unmounts now.
    pub fn unmount(self) {}
}

impl Drop for Mount {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                // Still in use (a test failed with a server holding it):
                // detach it now, the kernel frees it when the last user goes.
                cmd.arg("--lazy");
            }
            cmd.arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

/// Runs a command that must succeed.
pub fn run_ok(cmd: &str, args: &[&str]) {
    let status = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(status.success(), "{cmd} {args:?}");
}

/// `claimed` as an executor reports it when every path was already gone.
pub fn done(
    claimed: &[video_scheduler::db::models::Claimed],
) -> Vec<video_scheduler::db::models::Done> {
    claimed
        .iter()
        .map(|c| video_scheduler::db::models::Done {
            claimed: c.clone(),
            removed: Default::default(),
        })
        .collect()
}

/// Acks `claimed` as a failure that used its last attempt: state `failed`.
pub fn fail_for_good(db: &Db, owner: &str, claimed: &video_scheduler::db::models::Claimed) {
    fail_all_for_good(db, owner, std::slice::from_ref(claimed));
}

/// Acks all of `claimed` as failures that used their last attempt.
pub fn fail_all_for_good(db: &Db, owner: &str, claimed: &[video_scheduler::db::models::Claimed]) {
    let policy = video_scheduler::pipeline::retry::RetryPolicy {
        max_attempts: 1,
        base_ms: 1,
        max_ms: 1,
    };
    let failures: Vec<_> = claimed
        .iter()
        .map(|c| policy.failure(c, "boom".into(), now_ms()))
        .collect();
    let counts = db
        .write(|c| video_scheduler::db::queries::ack::ack(c, owner, &[], &failures, None))
        .unwrap();
    assert_eq!(counts.failed, claimed.len());
}
