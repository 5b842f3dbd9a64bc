//! Object storage: an S3-compatible bucket (AWS S3, MinIO, Ceph RGW,
//! Cloudflare R2, Aliyun OSS).
//!
//! How a batch is erased depends on the bucket's versioning
//! ([`versioning`], read at start-up and every `versioning_check_secs`)
//! and on `storage.versions`:
//! - unversioned: plain deletes remove the objects ([`plain`]);
//! - versioned, `versions` absent: nothing is deleted, the target is
//!   unavailable until the operator chooses;
//! - versioned, `"purge"`: every version and delete marker is deleted by
//!   version id ([`versioned::purge`]);
//! - versioned, `"markers"`: plain deletes hide the keys, the versions stay
//!   and the receipt counts them ([`versioned::markers`]).
//!
//! Requests (one file per kind: [`list`], [`versions`], [`delete`],
//! [`versioning`]) are signed and sent by [`client::Client`] through
//! object_store's signer and HTTP client, and retried here: throttling
//! (503 SlowDown), other 5xx answers, refused connections and requests
//! that got no answer in time, with exponential backoff, for at most the
//! batch's retry budget (deleting the same entry twice is harmless). After
//! the budget the ids go through the usual failure path (attempts,
//! backoff, `failed`).
//!
//! Why the storage owns a small tokio runtime: object_store's client is
//! async and needs tokio's I/O and timers, while the executors are plain
//! threads (so that local deletion, blocking system calls, never runs on
//! the reactor). An executor blocks on one batch, and inside that batch
//! the requests run concurrently on this runtime: no thread is held per
//! request, and `executors` still bounds the batches in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;

mod client;
mod delete;
mod list;
mod plain;
pub(crate) mod raw;
mod versioned;
mod versioning;
mod versions;
mod xml;

use self::client::{connect, Client, RequestError};
use self::delete::Answer;
use self::versioning::{Status, Versioning, Watch};
use super::{
    DeleteError, Erased, OpenError, Target, TargetHealth, TargetResult, Unavailable, Video,
};
use crate::config::{StorageConfig, Versions};
use crate::paths::{self, Template};

/// Listings of one batch in flight at once.
const LISTS_IN_FLIGHT: usize = 32;
/// DeleteObjects requests of one batch in flight at once.
const DELETES_IN_FLIGHT: usize = 8;
/// Longest wait for the bucket's versioning at start-up; without it the
/// server starts anyway, deleting nothing there until it is read.
const START_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Erases the objects of videos in one bucket.
pub(crate) struct S3Storage {
    client: Arc<Client>,
    /// Runs the requests; see the module's doc for why it is ours.
    runtime: tokio::runtime::Runtime,
    templates: Vec<Template>,
    /// The target's name, for its health.
    name: String,
    bucket: String,
    /// `s3 bucket videos at http://...`, for the start-up log.
    description: String,
    /// How long the requests of one batch may be retried before its ids go
    /// through the failure path.
    retry_budget: Duration,
    /// `storage.versions`.
    versions: Option<Versions>,
    /// `storage.bypass_governance`.
    bypass_governance: bool,
    /// The bucket's versioning as last read.
    watch: Arc<Watch>,
}

/// How a batch is erased, from the bucket's versioning and `versions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Plain,
    Purge,
    Markers(Status),
}

impl S3Storage {
    /// Builds the client, reads the bucket's versioning (at most
    /// [`START_CHECK_TIMEOUT`]) and starts keeping it fresh. Refuses a
    /// bucket with MFA Delete on when versions are to be purged.
    /// `retry_budget` bounds the retries of one batch's requests.
    pub(crate) fn open(
        config: &StorageConfig,
        retry_budget: Duration,
    ) -> Result<S3Storage, OpenError> {
        let failed = |key, reason: String| OpenError {
            key,
            reason,
            refused: false,
        };
        let (client, bucket, at) = connect(config, retry_budget)?;
        let client = Arc::new(client);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-client")
            .enable_all()
            .build()
            .map_err(|e| failed("kind", format!("cannot start the S3 client runtime: {e}")))?;
        let watch = Arc::new(Watch::new(
            bucket.clone(),
            Duration::from_secs(config.versioning_check_secs),
        ));
        let first = runtime.block_on(tokio::time::timeout(
            START_CHECK_TIMEOUT,
            watch.refresh(&client, true),
        ));
        match first {
            Ok(Ok(state)) => {
                if state.status != Status::Unversioned
                    && state.mfa_delete
                    && config.versions == Some(Versions::Purge)
                {
                    return Err(OpenError {
                        key: "versions",
                        reason: mfa_delete_on(&bucket),
                        refused: true,
                    });
                }
            }
            Ok(Err(reason)) => log::warn!("{reason}"),
            Err(_) => log::warn!(
                "bucket {bucket}: GetBucketVersioning gave no answer within {START_CHECK_TIMEOUT:?}; \
                 nothing is deleted there until it does"
            ),
        }
        runtime.spawn(watch.clone().keep_fresh(client.clone()));
        Ok(S3Storage {
            client,
            runtime,
            templates: paths::parse_all(&config.paths),
            name: config.name().to_owned(),
            description: format!("s3 bucket {bucket} at {at}"),
            bucket,
            retry_budget,
            versions: config.versions,
            bypass_governance: config.bypass_governance,
            watch,
        })
    }

    /// How a batch is erased on a bucket in `state`; `Err` when nothing may
    /// be deleted there.
    fn strategy(&self, state: Versioning) -> Result<Strategy, Unavailable> {
        let bucket = &self.bucket;
        match (state.status, self.versions) {
            (Status::Unversioned, _) => Ok(Strategy::Plain),
            (status, None) => Err(Unavailable(format!(
                "bucket {bucket} has versioning {}: set storage.versions to \"purge\" (erase \
                 every version) or \"markers\" (hide; versions stay)",
                status.as_str()
            ))),
            (_, Some(Versions::Purge)) if state.mfa_delete => {
                Err(Unavailable(mfa_delete_on(bucket)))
            }
            (_, Some(Versions::Purge)) => Ok(Strategy::Purge),
            (status, Some(Versions::Markers)) => Ok(Strategy::Markers(status)),
        }
    }

    /// Erases `videos` by the strategy the bucket's versioning calls for.
    /// A plain delete answered with a delete marker, or versions found
    /// under a prefix that looked empty (the bucket was switched to
    /// versioning since it was last read), is not counted: the versioning
    /// is read again and the batch erased the way it now needs.
    async fn erase(&self, videos: &[Video<'_>]) -> Result<TargetResult, Unavailable> {
        let started = Instant::now();
        let mut state = self
            .watch
            .current(&self.client)
            .await
            .map_err(Unavailable)?;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.strategy(state)? {
                Strategy::Plain => match plain::erase(self, videos, started).await {
                    Ok(results) => return Ok(results),
                    Err(plain::Versioned(_)) if tries == 1 => {
                        state = self
                            .watch
                            .refresh(&self.client, true)
                            .await
                            .map_err(Unavailable)?;
                    }
                    Err(plain::Versioned(seen)) => {
                        return Err(Unavailable(format!(
                            "bucket {}: {seen}, although GetBucketVersioning says it has no \
                             versioning; nothing is counted as erased there until they agree",
                            self.bucket
                        )))
                    }
                },
                Strategy::Purge => return Ok(versioned::purge(self, videos, started).await),
                Strategy::Markers(status) => {
                    return Ok(versioned::markers(self, videos, status, started).await)
                }
            }
        }
    }

    /// `request`, retried (throttling, 5xx, no answer) within what is left
    /// of the batch's retry budget (counted from `started`); the error is
    /// the last answer's.
    async fn retried<T, F, Fut>(&self, started: Instant, request: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        self.retried_request(started, request)
            .await
            .map_err(|e| e.reason)
    }

    /// [`S3Storage::retried`], with the last answer's whole error.
    async fn retried_request<T, F, Fut>(
        &self,
        started: Instant,
        request: F,
    ) -> Result<T, RequestError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        request
            .retry(self.backoff(started))
            .sleep(tokio::time::sleep)
            .when(|e: &RequestError| e.transient)
            .await
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

    /// Deletes `doomed` in DeleteObjects of up to 1,000 entries, several in
    /// flight; one answer per entry, in order. A request that failed as a
    /// whole (after its retries) fails each of its entries with its reason.
    async fn delete_doomed(&self, doomed: &[Doomed], started: Instant) -> Vec<Answer> {
        let chunks: Vec<_> = futures_util::stream::iter(doomed.chunks(delete::MAX_ENTRIES))
            .enumerate()
            .map(|(n, chunk)| async move {
                let entries: Vec<delete::Entry<'_>> = chunk
                    .iter()
                    .map(|d| delete::Entry {
                        key: &d.key,
                        version_id: d.version_id.as_deref(),
                    })
                    .collect();
                let answers = self
                    .retried(started, || {
                        delete::delete(&self.client, &entries, self.bypass_governance)
                    })
                    .await
                    .unwrap_or_else(|reason| vec![Answer::Failed(reason); chunk.len()]);
                (n, answers)
            })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect()
            .await;
        let mut ordered: Vec<(usize, Vec<Answer>)> = chunks;
        ordered.sort_unstable_by_key(|(n, _)| *n);
        ordered
            .into_iter()
            .flat_map(|(_, answers)| answers)
            .collect()
    }
}

/// Why a bucket with MFA Delete on cannot be purged.
fn mfa_delete_on(bucket: &str) -> String {
    format!(
        "bucket {bucket} has MFA Delete enabled: deleting a version needs an MFA code, which \
         the scheduler cannot give; turn MFA Delete off, or set storage.versions to \"markers\""
    )
}

/// An entry of a batch to delete, and the video it belongs to.
#[derive(Debug, Clone)]
struct Doomed {
    video: usize,
    key: String,
    /// `None`: a plain delete.
    version_id: Option<String>,
}

impl Doomed {
    fn key(video: usize, key: String) -> Doomed {
        Doomed {
            video,
            key,
            version_id: None,
        }
    }

    fn version(video: usize, key: String, version_id: String) -> Doomed {
        Doomed {
            video,
            key,
            version_id: Some(version_id),
        }
    }
}

/// What one video's requests came to.
#[derive(Debug, Clone, Default)]
struct Tally {
    erased: Erased,
    error: Option<DeleteError>,
}

impl Tally {
    /// Keeps the first failure: the video is retried as a whole.
    fn fail(&mut self, path: &str, reason: String) {
        self.error.get_or_insert_with(|| DeleteError {
            path: path.to_owned(),
            reason,
        });
    }

    fn into_result(self) -> Result<Erased, DeleteError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.erased),
        }
    }
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

impl Target for S3Storage {
    fn check(&self) -> Result<(), Unavailable> {
        // The last reading, without a request: a batch reads the
        // versioning again itself when that reading is stale.
        let state = self.watch.last().map_err(Unavailable)?;
        self.strategy(state).map(drop)
    }

    fn delete_batch(&self, videos: &[Video<'_>]) -> Result<TargetResult, Unavailable> {
        self.runtime.block_on(self.erase(videos))
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn health(&self) -> TargetHealth {
        let checked = self.check();
        let versioning = self.watch.last().ok().map(|v| {
            let mfa = if v.mfa_delete { ", MFA Delete" } else { "" };
            format!("{}{mfa}", v.status.as_str())
        });
        TargetHealth {
            name: self.name.clone(),
            kind: "s3",
            ready: checked.is_ok(),
            error: checked.err().map(|e| e.0),
            versioning,
            versions: self.versions.map(Versions::as_str),
        }
    }
}
