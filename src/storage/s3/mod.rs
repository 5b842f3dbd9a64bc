//! Object storage: an S3-compatible bucket (AWS S3, MinIO, Ceph RGW,
//! Cloudflare R2, Aliyun OSS) through the `object_store` crate.
//!
//! A batch becomes as few requests as the API allows: every `hls/{id}/`
//! prefix of the batch is listed (ListObjectsV2, paged by 1,000), then the
//! keys of all its ids, templated and listed, go out in DeleteObjects
//! requests of up to 1,000 keys. A key that does not exist counts as
//! deleted: S3 answers the same for both, so `missing` here only counts
//! prefixes that held no object. A per-key error fails only its id.
//!
//! Retries: for DeleteObjects, `object_store` retries throttling (503
//! SlowDown), other 5xx answers and refused connections with exponential
//! backoff, for at most the batch's retry budget. A DeleteObjects whose
//! answer timed out is not retried by it (a POST), so it is retried here,
//! within the same budget: deleting the same keys twice is harmless.
//! Listings are sent by [`list`] (keys only, see there why) and retried
//! here with the same backoff, on throttling, 5xx and no answer, within
//! what is left of the budget. After the budget the ids go through the
//! usual failure path (attempts, backoff, `failed`).
//!
//! Why the storage owns a small tokio runtime: `object_store` is async and
//! needs tokio's I/O and timers, while the executors are plain threads (so
//! that local deletion, blocking system calls, never runs on the reactor).
//! An executor blocks on one batch, and inside that batch the list and
//! delete requests run concurrently on this runtime: no thread is held per
//! request, and `executors` still bounds the batches in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

mod list;

use self::list::{Begin, ListError, Lister};
use super::template::{self, Template};
use super::{BatchResult, DeleteError, OpenError, Removed, Storage, Unavailable};
use crate::config::StorageConfig;
use crate::video_id::VideoId;

/// Most keys in one DeleteObjects request (the S3 API's limit).
pub const MAX_KEYS_PER_DELETE: usize = 1000;
/// Prefix listings of one batch in flight at once.
const LISTS_IN_FLIGHT: usize = 32;
/// Keys of other videos read in a row before a key-range walk jumps to the
/// next prefix of the batch with a new request.
const GAP_KEYS: usize = 100;
/// Such gaps after which a walk stops: the prefixes are sparse, and are
/// listed one request each instead.
const GAPS_BEFORE_PER_PREFIX: usize = 2;
/// DeleteObjects requests of one batch in flight at once.
const DELETES_IN_FLIGHT: usize = 8;
/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Deletes the objects of videos in one bucket.
pub struct S3Storage {
    store: Arc<AmazonS3>,
    /// Lists prefixes (object_store's listing reads more than keys).
    lister: Lister,
    /// Runs the requests; see the module's doc for why it is ours.
    runtime: tokio::runtime::Runtime,
    templates: Vec<Template>,
    /// `s3 bucket videos at http://...`, for the start-up log.
    description: String,
    /// How long the requests of one batch may be retried before its ids go
    /// through the failure path.
    retry_budget: Duration,
}

impl S3Storage {
    /// Builds the client (no request is made). `retry_budget` bounds the
    /// retries of one request.
    pub fn open(config: &StorageConfig, retry_budget: Duration) -> Result<S3Storage, OpenError> {
        let failed = |key, reason: String| OpenError { key, reason };
        let bucket = config.bucket.clone().unwrap_or_default();
        // The standard AWS_* variables first; the configuration wins.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        if let Some(endpoint) = &config.endpoint {
            // A custom endpoint (MinIO, RGW, R2...): path-style requests,
            // http:// allowed when the endpoint says so.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        } else if builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token.expose());
        }
        let has_keys = builder
            .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
            .is_some()
            && builder
                .get_config_value(&AmazonS3ConfigKey::SecretAccessKey)
                .is_some();
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if !has_keys && endpoint.is_some() {
            // Without keys object_store would ask the EC2 metadata service,
            // which a MinIO or R2 deployment does not have.
            return Err(failed(
                "access_key_id",
                "storage.access_key_id and storage.secret_access_key (or AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY) are needed for a custom storage.endpoint"
                    .into(),
            ));
        }
        let options = ClientOptions::new()
            .with_allow_http(
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            )
            .with_timeout(REQUEST_TIMEOUT.min(retry_budget.max(Duration::from_secs(1))))
            .with_connect_timeout(CONNECT_TIMEOUT);
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_default();
        let virtual_hosted = builder
            .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let store = builder
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: usize::MAX,
                retry_timeout: retry_budget,
            })
            .with_client_options(options.clone())
            .build()
            .map_err(|e| failed("bucket", format!("storage.kind s3: {e}")))?;
        let store = Arc::new(store);
        let http = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| failed("endpoint", format!("storage.kind s3: {e}")))?;
        let lister = Lister::new(
            http,
            store.clone(),
            list::bucket_url(endpoint.as_deref(), virtual_hosted, &bucket, &region),
            region,
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-client")
            .enable_all()
            .build()
            .map_err(|e| failed("kind", format!("cannot start the S3 client runtime: {e}")))?;
        let at = endpoint.unwrap_or_else(|| "AWS".into());
        Ok(S3Storage {
            store,
            lister,
            runtime,
            templates: template::parse_all(&config.paths),
            description: format!("s3 bucket {bucket} at {at}"),
            retry_budget,
        })
    }

    async fn delete_all(&self, ids: &[VideoId]) -> BatchResult {
        let mut outcomes: Vec<Outcome> = vec![Outcome::default(); ids.len()];
        // Every key to delete, with the index of its id.
        let mut keys: Vec<(usize, Path)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            for template in self.templates.iter().filter(|t| !t.dir) {
                let rendered = template.render(id);
                match Path::parse(&rendered) {
                    Ok(path) => {
                        // S3 cannot tell a missing key from a deleted one.
                        outcomes[i].removed.deleted += 1;
                        keys.push((i, path));
                    }
                    Err(e) => outcomes[i].fail(&rendered, e.to_string()),
                }
            }
        }
        let started = Instant::now();
        for template in self.templates.iter().filter(|t| t.dir) {
            // The prefixes of this template, sorted as S3 lists keys.
            let mut prefixes: Vec<(String, usize)> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (format!("{}/", template.render(id)), i))
                .collect();
            prefixes.sort_unstable();
            let sorted: Vec<&str> = prefixes.iter().map(|(p, _)| p.as_str()).collect();
            let listed = self.list_prefixes(template, &sorted, started).await;
            for ((prefix, i), listed) in prefixes.iter().zip(listed) {
                match listed {
                    Ok(objects) if objects.is_empty() => outcomes[*i].removed.missing += 1,
                    Ok(objects) => {
                        outcomes[*i].removed.deleted += 1;
                        keys.extend(objects.into_iter().map(|path| (*i, path)));
                    }
                    Err(reason) => outcomes[*i].fail(prefix, reason),
                }
            }
        }
        let deleted: Vec<_> = futures_util::stream::iter(keys.chunks(MAX_KEYS_PER_DELETE))
            .map(|chunk| async move { (chunk, self.delete_chunk(chunk, started).await) })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect()
            .await;
        for (chunk, result) in deleted {
            match result {
                Ok(per_key) => {
                    for ((i, path), error) in chunk.iter().zip(per_key) {
                        if let Some(reason) = error {
                            outcomes[*i].fail(path.as_ref(), reason);
                        }
                    }
                }
                Err(reason) => {
                    for (i, path) in chunk {
                        outcomes[*i].fail(path.as_ref(), reason.clone());
                    }
                }
            }
        }
        outcomes.into_iter().map(Outcome::into_result).collect()
    }

    /// The objects under each of `prefixes` (sorted, each ending in `/`),
    /// in the same order.
    ///
    /// One ListObjectsV2 per prefix is the floor when the prefixes are
    /// sparse in the bucket (a batch's videos among many live ones). When
    /// they are dense (a mass purge: the keys between them are theirs),
    /// walking the key range from the first prefix reads them all in pages
    /// of 1,000 keys instead. So the walk goes first, and gives up for
    /// per-prefix listings once it meets [`GAPS_BEFORE_PER_PREFIX`] gaps of
    /// more than [`GAP_KEYS`] foreign keys.
    async fn list_prefixes(
        &self,
        template: &Template,
        prefixes: &[&str],
        started: Instant,
    ) -> Vec<Result<Vec<Path>, String>> {
        let mut listed: Vec<Result<Vec<Path>, String>> = vec![Ok(Vec::new()); prefixes.len()];
        let mut next = 0;
        if let Some(base) = template.static_dir() {
            next = self.walk(base, prefixes, &mut listed, started).await;
        }
        let rest: Vec<_> = futures_util::stream::iter(next..prefixes.len())
            .map(|at| async move { (at, self.list(prefixes[at], started).await) })
            .buffer_unordered(LISTS_IN_FLIGHT)
            .collect()
            .await;
        for (at, result) in rest {
            listed[at] = result;
        }
        listed
    }

    /// Walks the keys under `base` from the first of `prefixes`, handing
    /// each key to the prefix it starts with. Returns the index of the
    /// first prefix not covered (all of them when the walk went to the end).
    async fn walk(
        &self,
        base: &str,
        prefixes: &[&str],
        listed: &mut [Result<Vec<Path>, String>],
        started: Instant,
    ) -> usize {
        let base = match base.trim_end_matches('/') {
            "" => String::new(),
            base => format!("{base}/"),
        };
        let mut at = 0;
        let mut gaps = 0;
        'restart: while at < prefixes.len() {
            // Keys after the prefix without its `/` include all of its own.
            let after = prefixes[at].trim_end_matches('/');
            let mut token: Option<String> = None;
            let mut foreign = 0;
            loop {
                let begin = token.as_deref().map_or(Begin::After(after), Begin::Token);
                let Ok(page) = self.page(&base, begin, started).await else {
                    // The prefixes from `at` on are listed one by one.
                    return at;
                };
                for key in page.keys {
                    // Past a prefix's range: it has all its keys.
                    while at < prefixes.len()
                        && key.as_str() > prefixes[at]
                        && !key.starts_with(prefixes[at])
                    {
                        at += 1;
                    }
                    if at == prefixes.len() {
                        return at;
                    }
                    if key.starts_with(prefixes[at]) {
                        foreign = 0;
                        collect(&mut listed[at], key);
                        continue;
                    }
                    foreign += 1;
                    if foreign > GAP_KEYS {
                        gaps += 1;
                        if gaps >= GAPS_BEFORE_PER_PREFIX {
                            return at;
                        }
                        continue 'restart;
                    }
                }
                match page.next {
                    Some(next) => token = Some(next),
                    None => return prefixes.len(),
                }
            }
        }
        at
    }

    /// Every object under `prefix` (ListObjectsV2, followed page by page).
    async fn list(&self, prefix: &str, started: Instant) -> Result<Vec<Path>, String> {
        let mut listed = Ok(Vec::new());
        let mut token: Option<String> = None;
        loop {
            let begin = token.as_deref().map_or(Begin::Start, Begin::Token);
            let page = self.page(prefix, begin, started).await?;
            for key in page.keys {
                collect(&mut listed, key);
            }
            match page.next {
                Some(next) => token = Some(next),
                None => return listed,
            }
        }
    }

    /// One page of a listing, retried (throttling, 5xx, no answer) within
    /// what is left of the batch's retry budget.
    async fn page(
        &self,
        prefix: &str,
        begin: Begin<'_>,
        started: Instant,
    ) -> Result<list::Page, String> {
        (|| self.lister.page(prefix, begin))
            .retry(self.backoff(started))
            .sleep(tokio::time::sleep)
            .when(|e: &ListError| e.transient)
            .await
            .map_err(|e| e.reason)
    }

    /// Retries until the batch's retry budget (counted from `started`) is
    /// spent, with the backoff object_store uses for its own.
    fn backoff(&self, started: Instant) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_total_delay(Some(self.retry_budget.saturating_sub(started.elapsed())))
            .without_max_times()
    }

    /// Deletes up to 1,000 keys in one DeleteObjects request. `Ok` holds
    /// one entry per key, `Some(reason)` where that key failed; `Err` when
    /// the whole request failed (after retries within the budget).
    async fn delete_chunk(
        &self,
        chunk: &[(usize, Path)],
        started: Instant,
    ) -> Result<Vec<Option<String>>, String> {
        let attempt = || async {
            let paths: Vec<object_store::Result<Path>> =
                chunk.iter().map(|(_, path)| Ok(path.clone())).collect();
            let results: Vec<object_store::Result<Path>> = self
                .store
                .delete_stream(futures_util::stream::iter(paths).boxed())
                .collect()
                .await;
            per_key(chunk.len(), results)
        };
        attempt
            .retry(self.backoff(started))
            .sleep(tokio::time::sleep)
            // object_store retried everything else already; only a timed-out
            // answer is worth another try here.
            .when(|e: &BatchError| e.timed_out)
            .await
            .map_err(|e| e.reason)
    }
}

/// A DeleteObjects request that failed as a whole.
#[derive(Debug)]
struct BatchError {
    reason: String,
    /// No answer in time: the request may or may not have been applied.
    timed_out: bool,
}

/// Splits `delete_stream`'s results for one request into one entry per key.
/// A request that failed as a whole yields a single error (whatever the
/// number of keys) that does not name a key; a per-key failure names its
/// key ("DeleteObjects request failed for key K: ...").
fn per_key(
    keys: usize,
    results: Vec<object_store::Result<Path>>,
) -> Result<Vec<Option<String>>, BatchError> {
    let whole = results.len() != keys
        || results
            .iter()
            .any(|r| matches!(r, Err(e) if !e.to_string().contains("request failed for key")));
    if whole {
        let error = results.into_iter().find_map(Result::err);
        return Err(BatchError {
            timed_out: error.as_ref().is_some_and(is_timeout),
            reason: error.map_or_else(
                || "DeleteObjects returned fewer results than keys".into(),
                |e| describe(&e),
            ),
        });
    }
    Ok(results
        .into_iter()
        .map(|r| r.err().map(|e| describe(&e)))
        .collect())
}

/// Whether the request got no answer in time.
fn is_timeout(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return http.kind() == HttpErrorKind::Timeout;
        }
        source = error.source();
    }
    false
}

/// The error with its causes: object_store's own text stops at "error
/// sending request"; the reason (`Connection refused`, `operation timed
/// out`) is in its sources.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Adds a listed key to its prefix's objects; a key object_store cannot
/// name (so cannot delete) fails the prefix, as its own listing would.
fn collect(listed: &mut Result<Vec<Path>, String>, key: String) {
    match (Path::parse(&key), &mut *listed) {
        (Ok(path), Ok(objects)) => objects.push(path),
        (Err(e), Ok(_)) => *listed = Err(format!("listed key {key}: {e}")),
        (_, Err(_)) => {}
    }
}

/// What one id's requests came to.
#[derive(Debug, Clone, Default)]
struct Outcome {
    removed: Removed,
    error: Option<DeleteError>,
}

impl Outcome {
    /// Keeps the first failure: the id is retried as a whole.
    fn fail(&mut self, path: &str, reason: String) {
        self.error.get_or_insert_with(|| DeleteError {
            path: path.to_owned(),
            reason,
        });
    }

    fn into_result(self) -> Result<Removed, DeleteError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.removed),
        }
    }
}

impl Storage for S3Storage {
    fn check(&self) -> Result<(), Unavailable> {
        // Nothing to check without a request: a bucket cannot be "mounted
        // over", and request failures fail their ids.
        Ok(())
    }

    fn delete_batch(&self, ids: &[VideoId]) -> Result<BatchResult, Unavailable> {
        Ok(self.runtime.block_on(self.delete_all(ids)))
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
