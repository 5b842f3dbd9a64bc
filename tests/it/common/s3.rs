//! An S3-compatible server inside the test process: s3s (the S3 protocol,
//! SigV4 authentication) over s3s-fs (objects as files in a temp dir), on
//! 127.0.0.1, with faults a test switches on and off: 503 SlowDown on an
//! operation, a per-key error inside DeleteObjects, the whole server down
//! and back on the same port.
//!
//! Objects are files under `bucket_dir()`: a test seeds and checks them on
//! disk, as it does for local storage. (s3s-fs leaves empty directories
//! behind when it deletes; "gone" means no file under a prefix.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

pub const ACCESS_KEY: &str = "test-access-key";
pub const SECRET_KEY: &str = "test-secret-key-0123456789";
pub const BUCKET: &str = "videos";

/// The S3 operations a test can fault (the `s3s::S3` method names).
pub const LIST: &str = "list_objects_v2";
pub const DELETE_OBJECTS: &str = "delete_objects";

/// Faults switched on and off by a test while the server runs.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Operation -> 503 SlowDown for the next n calls (`None`: until cleared).
    slow_down: HashMap<&'static str, Option<u64>>,
    /// Operation -> 403 AccessDenied until cleared (a permission missing
    /// for that operation only).
    denied: std::collections::HashSet<&'static str>,
    /// Key -> error code inside DeleteObjects answers (not deleted).
    failing_keys: HashMap<String, String>,
    /// Authenticated calls per operation.
    calls: HashMap<&'static str, u64>,
    /// Keys per DeleteObjects request received.
    delete_batches: Vec<usize>,
    /// DeleteObjects answers only after this long (nothing deleted before).
    delete_delay: Option<std::time::Duration>,
}

impl Faults {
    /// 503 SlowDown on `op` for the next `n` calls, or until cleared.
    pub fn slow_down(&self, op: &'static str, n: Option<u64>) {
        self.state.lock().unwrap().slow_down.insert(op, n);
    }

    /// 403 AccessDenied on `op` until cleared, as when the credentials
    /// lack the permission for it.
    pub fn deny(&self, op: &'static str) {
        self.state.lock().unwrap().denied.insert(op);
    }

    /// Every fault off (counters kept).
    pub fn clear(&self) {
        let mut state = self.state.lock().unwrap();
        state.slow_down.clear();
        state.denied.clear();
        state.failing_keys.clear();
        state.delete_delay = None;
    }

    /// `key` fails inside DeleteObjects answers with `code` (not deleted).
    pub fn fail_key(&self, key: &str, code: &str) {
        let mut state = self.state.lock().unwrap();
        state.failing_keys.insert(key.to_owned(), code.to_owned());
    }

    /// DeleteObjects waits `delay` before doing anything (`None`: at once).
    pub fn delay_deletes(&self, delay: Option<Duration>) {
        self.state.lock().unwrap().delete_delay = delay;
    }

    pub fn unfail_key(&self, key: &str) {
        self.state.lock().unwrap().failing_keys.remove(key);
    }

    pub fn calls(&self, op: &'static str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    pub fn delete_batch_sizes(&self) -> Vec<usize> {
        self.state.lock().unwrap().delete_batches.clone()
    }

    /// Counts the call and answers the fault of `op`, if one is on.
    fn before(&self, op: &'static str) -> S3Result<()> {
        let mut state = self.state.lock().unwrap();
        *state.calls.entry(op).or_default() += 1;
        if state.denied.contains(op) {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "injected: Access Denied",
            ));
        }
        let fault = match state.slow_down.get_mut(op) {
            None => false,
            Some(None) => true,
            Some(Some(0)) => false,
            Some(Some(n)) => {
                *n -= 1;
                true
            }
        };
        if fault {
            return Err(S3Error::with_message(
                S3ErrorCode::SlowDown,
                "injected: please reduce your request rate",
            ));
        }
        Ok(())
    }
}

/// s3s-fs with faults: the operations the scheduler uses go through
/// [`Faults`]; every other operation is s3s's default (NotImplemented).
struct Faulty {
    inner: s3s_fs::FileSystem,
    faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl S3 for Faulty {
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.faults.before(LIST)?;
        self.inner.list_objects_v2(req).await
    }

    async fn delete_objects(
        &self,
        mut req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.faults.before(DELETE_OBJECTS)?;
        let delay = self.faults.state.lock().unwrap().delete_delay;
        if let Some(delay) = delay {
            // A client that gives up meanwhile drops this request: nothing
            // is deleted, as when a real server never got to it.
            tokio::time::sleep(delay).await;
        }
        let objects = std::mem::take(&mut req.input.delete.objects);
        let (mut errors, mut keep) = (Vec::new(), Vec::new());
        {
            let mut state = self.faults.state.lock().unwrap();
            state.delete_batches.push(objects.len());
            for object in objects {
                match state.failing_keys.get(&object.key) {
                    Some(code) => errors.push(Error {
                        code: Some(code.clone()),
                        key: Some(object.key),
                        message: Some("injected".into()),
                        version_id: object.version_id,
                    }),
                    None => keep.push(object),
                }
            }
        }
        let mut response = if keep.is_empty() {
            S3Response::new(DeleteObjectsOutput::default())
        } else {
            req.input.delete.objects = keep;
            self.inner.delete_objects(req).await?
        };
        if !errors.is_empty() {
            response
                .output
                .errors
                .get_or_insert_with(Vec::new)
                .extend(errors);
        }
        Ok(response)
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.inner.put_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.inner.head_object(req).await
    }
}

/// Fixed credentials, answering `InvalidAccessKeyId` for another key as
/// AWS does (a wrong secret gets `SignatureDoesNotMatch` from s3s).
struct StaticAuth;

#[async_trait::async_trait]
impl S3Auth for StaticAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == ACCESS_KEY {
            Ok(SecretKey::from(SECRET_KEY))
        } else {
            Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ))
        }
    }
}

/// The running server.
pub struct TestS3 {
    /// `http://127.0.0.1:PORT`, the same across stop and restart.
    pub endpoint: String,
    addr: SocketAddr,
    /// s3s-fs's root: the bucket is `dir/videos`, object `k` is the file
    /// `dir/videos/k`.
    dir: tempfile::TempDir,
    faults: Arc<Faults>,
    service: S3Service,
    /// Stops the accept loop; answered when the port is closed.
    running: Mutex<Option<(oneshot::Sender<()>, mpsc::Receiver<()>)>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestS3 {
    /// Starts on a free port of 127.0.0.1, with its own runtime.
    pub fn start() -> TestS3 {
        let dir = tempfile::Builder::new()
            .prefix("test-s3-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join(BUCKET)).unwrap();
        let faults = Arc::new(Faults::default());
        let filesystem = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let mut builder = S3ServiceBuilder::new(Faulty {
            inner: filesystem,
            faults: faults.clone(),
        });
        builder.set_auth(StaticAuth);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-s3")
            .enable_all()
            .build()
            .unwrap();
        let listener = bind(0);
        let addr = listener.local_addr().unwrap();
        let s3 = TestS3 {
            endpoint: format!("http://{addr}"),
            addr,
            dir,
            faults,
            service: builder.build(),
            running: Mutex::new(None),
            runtime: Some(runtime),
        };
        s3.serve(listener);
        s3
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Where the bucket's objects are, as files.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(BUCKET)
    }

    /// Closes the port and every open connection: the endpoint is down.
    pub fn stop(&self) {
        if let Some((stop, stopped)) = self.running.lock().unwrap().take() {
            let _ = stop.send(());
            stopped
                .recv_timeout(Duration::from_secs(10))
                .expect("the S3 server stops");
        }
    }

    /// Serves again on the same port.
    pub fn restart(&self) {
        if self.running.lock().unwrap().is_none() {
            self.serve(bind(self.addr.port()));
        }
    }

    fn serve(&self, listener: std::net::TcpListener) {
        let runtime = self.runtime.as_ref().unwrap();
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        let (stop, mut stopping) = oneshot::channel::<()>();
        let (stopped_tx, stopped) = mpsc::channel();
        let service = self.service.clone();
        runtime.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopping => break,
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        let service = service.clone();
                        connections.spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(socket), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            drop(listener);
            connections.abort_all();
            while connections.join_next().await.is_some() {}
            let _ = stopped_tx.send(());
        });
        *self.running.lock().unwrap() = Some((stop, stopped));
    }

    /// A storage configuration for this server.
    pub fn storage_config(&self, paths: Vec<String>) -> video_scheduler::config::StorageConfig {
        video_scheduler::config::StorageConfig {
            kind: video_scheduler::config::StorageKind::S3,
            paths,
            bucket: Some(BUCKET.into()),
            endpoint: Some(self.endpoint.clone()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(video_scheduler::config::Secret::new(SECRET_KEY)),
            ..Default::default()
        }
    }
}

fn bind(port: u16) -> std::net::TcpListener {
    // std sets SO_REUSEADDR: the same port binds again right after a stop.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
