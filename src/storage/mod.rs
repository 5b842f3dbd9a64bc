//! Where video files live, and how one batch of videos is deleted.
//!
//! The pipeline only sees [`Storage`]; [`open`] picks the kind named by
//! `storage.kind`. Every kind deletes the paths that the `storage.paths`
//! [`template`]s give for an id; a path that does not exist counts as
//! deleted.

pub mod local;
#[cfg(feature = "s3")]
pub mod s3;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, StorageKind};
use crate::video_id::VideoId;

pub use local::LocalStorage;

/// What deleting one video's paths found: how many existed and are now
/// gone, and how many were not there (both count as done).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub deleted: u32,
    pub missing: u32,
}

/// The video as a whole, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// At least one of its paths existed and is now gone.
    Deleted,
    /// None of its paths existed: counts as deleted.
    Missing,
}

impl Removed {
    pub fn outcome(&self) -> Outcome {
        if self.deleted > 0 {
            Outcome::Deleted
        } else {
            Outcome::Missing
        }
    }
}

/// A deletion of one id that did not happen; the message goes to
/// `last_error` and the id is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DeleteError {
    /// The path relative to the storage root (or the object key).
    pub path: String,
    pub reason: String,
}

/// The storage as a whole cannot be used safely right now (its root is not
/// the directory opened at start-up, its marker is missing): nothing was
/// deleted, and no id is at fault, so none loses an attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// One result per id of a batch, in the batch's order.
pub type BatchResult = Vec<Result<Removed, DeleteError>>;

/// A place videos are deleted from. Calls block the calling thread (an
/// executor thread, never the async reactor).
pub trait Storage: Send + Sync + 'static {
    /// Whether deleting is safe now; cheap enough to call before every
    /// batch and from `/readyz`.
    fn check(&self) -> Result<(), Unavailable>;

    /// Deletes every templated path of each id. `Err` when the storage as a
    /// whole cannot be used: then nothing was deleted.
    fn delete_batch(&self, ids: &[VideoId]) -> Result<BatchResult, Unavailable>;

    /// What and where, for the start-up log: `local directory /srv/videos`.
    fn describe(&self) -> String;
}

/// Why a storage could not be opened at start-up; the message names the
/// config key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct OpenError {
    /// The config key at fault, under `storage.`.
    pub key: &'static str,
    pub reason: String,
}

/// Opens the storage that `config.storage` names.
pub fn open(config: &Config) -> Result<Arc<dyn Storage>, OpenError> {
    match config.storage.kind {
        StorageKind::Local => Ok(Arc::new(LocalStorage::open(&config.storage)?)),
        #[cfg(feature = "s3")]
        StorageKind::S3 => Ok(Arc::new(s3::S3Storage::open(
            &config.storage,
            retry_budget(config.lease_secs),
        )?)),
        #[cfg(not(feature = "s3"))]
        StorageKind::S3 => Err(OpenError {
            key: "kind",
            reason: "storage.kind s3 needs a binary built with `--features s3`".into(),
        }),
    }
}

/// How long the requests of one batch may be retried (object storage): a
/// third of the lease, so that a batch retried to the end still acks well
/// before another instance may claim its ids, and at most a minute.
pub fn retry_budget(lease_secs: u64) -> Duration {
    Duration::from_secs(lease_secs / 3).clamp(Duration::from_secs(1), Duration::from_secs(60))
}
