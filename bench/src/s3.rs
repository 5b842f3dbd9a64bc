//! The object storage figure: an S3-compatible server in the benchmark's
//! process, the scheduler draining ids with three objects each against it,
//! and the raw limit: the same keys deleted by a bare loop of DeleteObjects
//! requests of 1,000 keys.
//!
//! Why not s3s-fs (the tests' server): its ListObjectsV2 walks the whole
//! bucket directory for every request, so 20,000 prefix listings over
//! 240,000 objects would measure that walk. This server speaks the same
//! protocol (s3s: HTTP, SigV4 authentication, XML) over an ordered map, so
//! a listing costs what it costs S3: a range of the key space.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::{ensure, Context};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::ObjectStore;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use video_scheduler::clock::now_ms;
use video_scheduler::config::{Secret, StorageConfig, StorageKind};

use crate::measure::{ids, Fixture, Setup};

const ACCESS_KEY: &str = "bench-access-key";
const SECRET_KEY: &str = "bench-secret-key";
const BUCKET: &str = "videos";
/// HLS segments under `hls/{id}/`.
const SEGMENTS: usize = 10;
/// Objects per id: the video, the thumbnail, the segments.
pub const OBJECTS_PER_ID: usize = 2 + SEGMENTS;

/// One bucket in memory: key -> size. Clones share the map; listings
/// read it concurrently, as S3 serves them.
#[derive(Clone, Default)]
struct Bucket {
    objects: Arc<RwLock<BTreeMap<String, i64>>>,
}

#[async_trait::async_trait]
impl S3 for Bucket {
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = input.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        let from = match (&input.continuation_token, &input.start_after) {
            (Some(token), _) => token.clone(),
            (None, Some(after)) => after.clone(),
            (None, None) => String::new(),
        };
        let start = if from.as_str() > prefix.as_str() {
            from.clone()
        } else {
            prefix.clone()
        };
        // The page's keys under the read lock; the answer built outside it.
        let (page, truncated) = {
            let objects = self.objects.read().unwrap();
            let mut page: Vec<(String, i64)> = Vec::with_capacity(max_keys);
            let mut truncated = false;
            for (key, size) in objects.range(start..) {
                if !key.starts_with(&prefix) {
                    break;
                }
                if key.as_str() == from {
                    continue;
                }
                if page.len() == max_keys {
                    truncated = true;
                    break;
                }
                page.push((key.clone(), *size));
            }
            (page, truncated)
        };
        let now = Timestamp::from(SystemTime::now());
        let contents: Vec<Object> = page
            .into_iter()
            .map(|(key, size)| Object {
                key: Some(key),
                size: Some(size),
                last_modified: Some(now.clone()),
                ..Default::default()
            })
            .collect();
        let next = truncated
            .then(|| contents.last().and_then(|o| o.key.clone()))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            key_count: Some(contents.len() as i32),
            max_keys: Some(max_keys as i32),
            is_truncated: Some(truncated),
            contents: (!contents.is_empty()).then_some(contents),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            name: Some(input.bucket),
            prefix: input.prefix,
            ..Default::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let mut objects = self.objects.write().unwrap();
        let deleted = req
            .input
            .delete
            .objects
            .into_iter()
            .map(|object| {
                objects.remove(&object.key);
                DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                }
            })
            .collect();
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..Default::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        match req.input.bucket.as_str() {
            BUCKET => Ok(S3Response::new(HeadBucketOutput::default())),
            _ => Err(s3_error!(NoSuchBucket)),
        }
    }
}

/// The server, on its own runtime (two threads: the machine's cores are
/// shared with the scheduler under measurement, as a real server's would
/// not be; both figures pay the same).
pub struct MemS3 {
    pub addr: SocketAddr,
    bucket: Bucket,
    /// Serves the requests; dropped with the server.
    _runtime: tokio::runtime::Runtime,
}

impl MemS3 {
    pub fn start() -> anyhow::Result<MemS3> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-s3")
            .enable_all()
            .build()?;
        let bucket = Bucket::default();
        let mut builder = S3ServiceBuilder::new(bucket.clone());
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(MemS3 {
            addr,
            bucket,
            _runtime: runtime,
        })
    }

    /// Puts the objects of `ids` straight into the map (no requests).
    pub fn seed(&self, ids: &[String]) {
        let mut objects = self.bucket.objects.write().unwrap();
        for key in ids.iter().flat_map(|id| keys(id)) {
            objects.insert(key, 1);
        }
    }

    pub fn len(&self) -> usize {
        self.bucket.objects.read().unwrap().len()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The storage section of a scheduler config for this server.
    pub fn storage_config(&self) -> StorageConfig {
        StorageConfig {
            kind: StorageKind::S3,
            paths: vec![
                "videos/{id}.mp4".into(),
                "thumbs/{id}.jpg".into(),
                "hls/{id}/".into(),
            ],
            bucket: Some(BUCKET.into()),
            endpoint: Some(self.endpoint()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(Secret::new(SECRET_KEY)),
            ..StorageConfig::default()
        }
    }
}

/// Every object of `id`.
fn keys(id: &str) -> Vec<String> {
    let mut keys = vec![format!("videos/{id}.mp4"), format!("thumbs/{id}.jpg")];
    keys.extend((0..SEGMENTS).map(|s| format!("hls/{id}/seg-{s:04}.ts")));
    keys
}

/// Drain: `n` due ids with their objects; from the server's start until
/// every row and object is gone. Returns (seconds, ids/s).
pub fn drain(setup: &Setup, n: usize) -> anyhow::Result<(f64, f64)> {
    let s3 = MemS3::start()?;
    let mut fx = Fixture::new(setup)?;
    fx.config.storage[0] = s3.storage_config();
    let ids = ids("s3", n);
    s3.seed(&ids);
    fx.queue(&ids, now_ms())?;
    let start = Instant::now();
    let server = fx.start(setup)?;
    fx.wait_drained(start)?;
    let secs = start.elapsed().as_secs_f64();
    server.stop()?;
    ensure!(s3.len() == 0, "rows gone but {} objects left", s3.len());
    Ok((secs, n as f64 / secs))
}

/// The raw limit: the same keys, known in advance, deleted by a bare loop
/// of DeleteObjects requests of 1,000 keys, one at a time, through the same
/// client library and settings. Returns ids/s.
pub fn raw_limit(n: usize) -> anyhow::Result<f64> {
    let s3 = MemS3::start()?;
    let ids = ids("s3raw", n);
    s3.seed(&ids);
    let store = AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()?;
    let keys: Vec<Path> = ids
        .iter()
        .flat_map(|id| keys(id))
        .map(|k| Path::parse(k).context("key"))
        .collect::<anyhow::Result<_>>()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = Instant::now();
    client.block_on(async {
        for chunk in keys.chunks(1000) {
            let paths = chunk.iter().cloned().map(Ok).collect::<Vec<_>>();
            let results: Vec<_> = store
                .delete_stream(futures_util::stream::iter(paths).boxed())
                .collect()
                .await;
            for result in results {
                result?;
            }
        }
        anyhow::Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(s3.len() == 0, "{} objects left", s3.len());
    Ok(n as f64 / secs)
}

/// Versions of each key in the purge figure.
pub const PURGE_VERSIONS: usize = 3;
/// In-flight requests of the reference loop: as many as the scheduler's
/// (its listings and DeleteObjects of one batch), so that the comparison
/// measures what the scheduler adds (claims, acks, receipts, per-video
/// bookkeeping), not a difference in concurrency.
const RAW_LISTS_IN_FLIGHT: usize = 32;
const RAW_DELETES_IN_FLIGHT: usize = 8;

/// A bucket with versioning Enabled, in memory (s3-memory: s3s over an
/// ordered map of versions), `n` ids' keys with three versions each.
fn versioned(ids: &[String]) -> s3_memory::MemoryS3 {
    let s3 = s3_memory::MemoryS3::start();
    s3.set_versioning(s3_memory::BUCKET, s3_memory::Versioning::Enabled);
    for id in ids {
        for _ in 0..PURGE_VERSIONS {
            s3.put(s3_memory::BUCKET, &format!("videos/{id}.mp4"), b"v");
        }
    }
    s3
}

/// The scheduler's storage for it: one key per id, every version purged.
fn purge_config(s3: &s3_memory::MemoryS3) -> StorageConfig {
    StorageConfig {
        kind: StorageKind::S3,
        paths: vec!["videos/{id}.mp4".into()],
        bucket: Some(s3_memory::BUCKET.into()),
        endpoint: Some(s3.endpoint()),
        access_key_id: Some(s3_memory::ACCESS_KEY.into()),
        secret_access_key: Some(Secret::new(s3_memory::SECRET_KEY)),
        versions: Some(video_scheduler::config::Versions::Purge),
        ..StorageConfig::default()
    }
}

/// Purge drain: `n` due ids whose keys have three versions each on a
/// versioned bucket; from the server's start until every row and version
/// is gone. Returns ids/s.
pub fn purge_drain(setup: &Setup, n: usize) -> anyhow::Result<f64> {
    let ids = ids("purge", n);
    let s3 = versioned(&ids);
    let mut fx = Fixture::new(setup)?;
    fx.config.storage[0] = purge_config(&s3);
    fx.queue(&ids, now_ms())?;
    let start = Instant::now();
    let server = fx.start(setup)?;
    fx.wait_drained(start)?;
    let secs = start.elapsed().as_secs_f64();
    server.stop()?;
    let left = s3.entries(s3_memory::BUCKET, "").len();
    ensure!(left == 0, "rows gone but {left} versions left");
    Ok(n as f64 / secs)
}

/// The purge's reference: the same keys, known in advance, each listed by
/// ListObjectVersions and its versions deleted by DeleteObjects of 1,000
/// entries, through the scheduler's own client (`RawClient`), as many
/// requests in flight as the scheduler sends. Returns ids/s.
pub fn purge_raw(n: usize) -> anyhow::Result<f64> {
    use video_scheduler::RawClient;
    let ids = ids("purgeraw", n);
    let s3 = versioned(&ids);
    let client = RawClient::new(&purge_config(&s3)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let keys: Vec<String> = ids.iter().map(|id| format!("videos/{id}.mp4")).collect();
    let start = Instant::now();
    runtime.block_on(async {
        let listed: Vec<Result<Vec<(String, String)>, String>> = futures_util::stream::iter(&keys)
            .map(|key| client.versions(key))
            .buffer_unordered(RAW_LISTS_IN_FLIGHT)
            .collect()
            .await;
        let mut doomed = Vec::with_capacity(keys.len() * PURGE_VERSIONS);
        for versions in listed {
            doomed.extend(versions.map_err(anyhow::Error::msg)?);
        }
        let deleted: Vec<Result<(), String>> = futures_util::stream::iter(doomed.chunks(1000))
            .map(|chunk| client.delete_versions(chunk))
            .buffer_unordered(RAW_DELETES_IN_FLIGHT)
            .collect()
            .await;
        for result in deleted {
            result.map_err(anyhow::Error::msg)?;
        }
        anyhow::Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let left = s3.entries(s3_memory::BUCKET, "").len();
    ensure!(left == 0, "{left} versions left");
    Ok(n as f64 / secs)
}
