//! An S3-compatible server in memory, for the scheduler's integration tests
//! and its benchmark: the real protocol (s3s: HTTP, SigV4 authentication,
//! XML) on 127.0.0.1, over buckets kept in ordered maps, with versioning,
//! Object Lock and faults a test switches on and off.
//!
//! Why not s3s-fs (the first test server): it has no versioning, no Object
//! Lock, and its ListObjectsV2 walks the whole bucket directory for every
//! request. Here a listing costs a range of the key space, as on S3, so
//! the benchmark measures the scheduler, not the server; and the versioned
//! semantics (delete markers, the "null" version, version markers, locks)
//! follow AWS's documented behaviour, which is what the scheduler's
//! correctness is tested against.
//!
//! A test reads and seeds the buckets directly ([`MemoryS3::put`],
//! [`MemoryS3::entries`]), without requests; everything a client does goes
//! through HTTP. The server runs on its own tokio runtime, so a test can
//! use it from synchronous code or from any runtime of its own.

mod bucket;
mod faults;
mod service;
mod versions;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

pub use bucket::{Entry, Lock, Versioning};
pub use faults::{Faults, Op};

use bucket::{Bucket, Protection};
use service::{read, write, Service, StaticAuth, Store};
use versions::VersionsRoute;

/// The access key the server accepts (the only one).
pub const ACCESS_KEY: &str = "memory-access-key";
/// The secret key of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "memory-secret-key";
/// The bucket created at start.
pub const BUCKET: &str = "videos";

/// How long [`MemoryS3::stop`] waits for the accept loop to close the port
/// and its connections.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops a running accept loop: the sender asks, the receiver hears that
/// the port and every connection are closed.
type Running = (oneshot::Sender<()>, mpsc::Receiver<()>);

/// The running server. Dropping it stops it and shuts its runtime down in
/// the background (so it may be dropped inside another runtime).
pub struct MemoryS3 {
    /// The port, kept across stop and restart.
    addr: SocketAddr,
    /// The buckets, shared with the service.
    store: Arc<Store>,
    /// Faults and counters, shared with the service.
    faults: Arc<Faults>,
    /// The s3s service, cloned per connection.
    service: S3Service,
    /// The accept loop, while the server is up.
    running: Mutex<Option<Running>>,
    /// Serves the requests: two workers, so the benchmark's server does
    /// not take every core from the scheduler it measures. `None` only
    /// while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl MemoryS3 {
    /// Starts on a free port of 127.0.0.1 with its own runtime; the bucket
    /// [`BUCKET`] exists, unversioned.
    ///
    /// # Panics
    /// If the runtime cannot be built or no port can be bound
    /// ([`MemoryS3::try_start`] returns the error instead).
    pub fn start() -> MemoryS3 {
        MemoryS3::try_start()
            .unwrap_or_else(|e| panic!("the in-memory S3 server cannot start: {e}"))
    }

    /// [`MemoryS3::start`], returning what went wrong.
    pub fn try_start() -> std::io::Result<MemoryS3> {
        let store = Arc::new(Store::default());
        store.create_bucket(BUCKET);
        let faults = Arc::new(Faults::default());
        let mut builder = S3ServiceBuilder::new(Service {
            store: store.clone(),
            faults: faults.clone(),
        });
        builder.set_auth(StaticAuth);
        builder.set_route(VersionsRoute {
            store: store.clone(),
            faults: faults.clone(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("memory-s3")
            .enable_all()
            .build()?;
        let listener = bind(0)?;
        let s3 = MemoryS3 {
            addr: listener.local_addr()?,
            store,
            faults,
            service: builder.build(),
            running: Mutex::new(None),
            runtime: Some(runtime),
        };
        s3.serve(listener)?;
        Ok(s3)
    }

    /// `http://127.0.0.1:PORT`, the same across stop and restart.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates bucket `name` (unversioned) if it does not exist.
    pub fn create_bucket(&self, name: &str) {
        self.store.create_bucket(name);
    }

    /// Sets the versioning state of `bucket`, as PutBucketVersioning would
    /// (and back to never versioned, which S3 cannot do).
    ///
    /// # Panics
    /// If the bucket does not exist.
    pub fn set_versioning(&self, bucket: &str, versioning: Versioning) {
        write(&self.bucket(bucket).state).versioning = versioning;
    }

    /// Turns MFA delete on or off for `bucket`: GetBucketVersioning shows
    /// it, and DeleteObjects requests naming a version (and
    /// PutBucketVersioning) then need an `x-amz-mfa` header (any value).
    ///
    /// # Panics
    /// If the bucket does not exist.
    pub fn set_mfa_delete(&self, bucket: &str, on: bool) {
        write(&self.bucket(bucket).state).mfa_delete = Some(on);
    }

    /// GetBucketVersioning answers 501 NotImplemented (as Cloudflare R2 and
    /// some servers do). [`Faults::clear`] leaves this as it is.
    pub fn versioning_not_implemented(&self, on: bool) {
        self.store
            .versioning_not_implemented
            .store(on, Ordering::Relaxed);
    }

    /// Stores an object as a PutObject would (a new version when Enabled;
    /// replaces the "null" version when Unversioned or Suspended); returns
    /// its version id ("null" unless Enabled).
    ///
    /// # Panics
    /// If the bucket does not exist.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> String {
        self.put_protected(bucket, key, body, Protection::default())
    }

    /// [`MemoryS3::put`] with an Object Lock setting on the new version.
    ///
    /// # Panics
    /// If the bucket does not exist.
    pub fn put_locked(&self, bucket: &str, key: &str, body: &[u8], lock: Lock) -> String {
        self.put_protected(bucket, key, body, Protection::from(lock))
    }

    /// [`MemoryS3::put`] with the version's Object Lock settings.
    fn put_protected(&self, bucket: &str, key: &str, body: &[u8], lock: Protection) -> String {
        let body = Bytes::copy_from_slice(body);
        write(&self.bucket(bucket).state).put(&self.store.clock, key, body, lock)
    }

    /// Every version and delete marker under `prefix`: keys in byte order,
    /// newest first within a key.
    ///
    /// # Panics
    /// If the bucket does not exist.
    pub fn entries(&self, bucket: &str, prefix: &str) -> Vec<Entry> {
        read(&self.bucket(bucket).state).entries(prefix)
    }

    /// Keys under `prefix` whose latest entry is an object, not a delete
    /// marker (what ListObjectsV2 shows), in byte order.
    ///
    /// # Panics
    /// If the bucket does not exist.
    pub fn current_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        read(&self.bucket(bucket).state)
            .current_page(prefix, None, usize::MAX)
            .entries
            .into_iter()
            .map(|e| e.key)
            .collect()
    }

    /// The faults to switch on and off, and the counters.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Closes the port and every open connection (the endpoint is down:
    /// connections are refused); [`MemoryS3::restart`] serves again on the
    /// same port. Data and faults are kept.
    ///
    /// # Panics
    /// If the server does not stop within 10 seconds.
    pub fn stop(&self) {
        assert!(self.halt(), "the in-memory S3 server did not stop");
    }

    /// Serves again on the same port after [`MemoryS3::stop`] (nothing if
    /// it is running).
    ///
    /// # Panics
    /// If the port cannot be bound again ([`MemoryS3::try_restart`]
    /// returns the error instead).
    pub fn restart(&self) {
        self.try_restart()
            .unwrap_or_else(|e| panic!("the in-memory S3 server cannot restart: {e}"));
    }

    /// [`MemoryS3::restart`], returning what went wrong.
    pub fn try_restart(&self) -> std::io::Result<()> {
        if self.running().is_none() {
            self.serve(bind(self.addr.port())?)?;
        }
        Ok(())
    }

    /// Bucket `name`, which the caller says exists.
    fn bucket(&self, name: &str) -> Arc<Bucket> {
        self.store
            .bucket(name)
            .unwrap_or_else(|| panic!("the in-memory S3 server has no bucket {name:?}"))
    }

    /// The accept loop's handle. A poisoned lock is taken as it is: it
    /// only holds that handle, which no panic leaves half changed (and
    /// `Drop` must not panic).
    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the accept loop, if it runs; false if it did not stop in time.
    fn halt(&self) -> bool {
        let Some((stop, stopped)) = self.running().take() else {
            return true;
        };
        let _ = stop.send(());
        stopped.recv_timeout(STOP_TIMEOUT).is_ok()
    }

    /// Runs the accept loop on `listener` until [`MemoryS3::halt`].
    fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        let Some(runtime) = self.runtime.as_ref() else {
            return Ok(());
        };
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
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
                        // Small answers go out at once, not after a delayed ACK.
                        let _ = socket.set_nodelay(true);
                        let service = service.clone();
                        connections.spawn(async move {
                            // A client that closes its connection mid-request
                            // ends this, dropping the request's future.
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
        *self.running() = Some((stop, stopped));
        Ok(())
    }
}

/// A non-blocking listener on 127.0.0.1:`port` (0: any free port). std sets
/// SO_REUSEADDR, so the same port binds again right after a stop.
fn bind(port: u16) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl Drop for MemoryS3 {
    fn drop(&mut self) {
        self.halt();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
