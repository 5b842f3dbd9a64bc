//! Where video files live, and how one batch of videos is deleted.
//!
//! The pipeline only sees [`Storage`]; [`open`] picks the kind named by
//! `storage.kind`. Every kind deletes the paths that the `storage.paths`
//! [`template`]s give for an id; a path that does not exist counts as
//! deleted.

pub mod local;
pub mod template;

use std::sync::Arc;

use crate::config::{StorageConfig, StorageKind};
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

/// Opens the storage that `config` names.
pub fn open(config: &StorageConfig) -> Result<Arc<dyn Storage>, OpenError> {
    match config.kind {
        StorageKind::Local => Ok(Arc::new(LocalStorage::open(config)?)),
    }
}
