//! Where video files live, and how one batch of videos is erased.
//!
//! `storage` in the configuration is one target or a list of named
//! targets (the origin bucket, its replica, a local cache). Each is a
//! [`Target`]: local disk ([`local`]) or an S3 bucket ([`s3`]). The
//! pipeline only sees [`Storage`], all of them together: a video is
//! erased when every target has nothing of it left, and a target that
//! cannot be used safely stops the work of all of them.
//!
//! On each target a video's paths are its `paths` templates
//! ([`crate::paths`]) rendered for its id, plus the paths its request
//! named itself. A path that does not exist counts as erased.

pub(crate) mod local;
#[cfg(feature = "s3")]
pub(crate) mod s3;

use std::sync::Arc;

use crate::config::{Config, StorageConfig, StorageKind};
use crate::erasure::{Removed, TargetErased};
use crate::video_id::VideoId;

pub(crate) use local::LocalStorage;

/// What to erase of one request: the id its templates are rendered with,
/// and the paths the request named.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Video<'a> {
    pub id: &'a VideoId,
    pub paths: &'a [crate::paths::PathSpec],
}

/// What erasing one video found on one target: the receipt's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Erased {
    /// Paths (templated or named) that had something, now gone.
    pub deleted: u32,
    /// Paths that had nothing (count as erased).
    pub missing: u32,
    /// Files (local) or objects (keys) removed.
    pub objects: u32,
    /// Object versions and delete markers deleted by version id
    /// (`versions: "purge"`).
    pub versions: u32,
    /// Versions left behind a delete marker (`versions: "markers"`).
    pub versions_kept: u32,
}

/// A deletion of one id that did not happen; the message goes to
/// `last_error` and the id is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub(crate) struct DeleteError {
    /// The path relative to the storage root (or the object key), after
    /// `target NAME: ` when several targets are configured.
    pub path: String,
    pub reason: String,
}

/// The storage as a whole cannot be used safely right now (a root is not
/// the directory opened at start-up, a marker is missing, a bucket turned
/// versioned): nothing was deleted, and no id is at fault, so none loses
/// an attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unavailable(pub String);

/// One result per video of a batch, in the batch's order.
pub(crate) type BatchResult = Vec<Result<Removed, DeleteError>>;

/// One target's results, per video of a batch, in the batch's order.
pub(crate) type TargetResult = Vec<Result<Erased, DeleteError>>;

/// A target's state, for `/readyz`, `/v1/stats`, the metrics and the
/// dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct TargetHealth {
    pub name: String,
    /// `local` or `s3`.
    pub kind: &'static str,
    /// Whether deleting there is safe now.
    pub ready: bool,
    /// Why not, when not ready.
    pub error: Option<String>,
    /// S3: the bucket's versioning as last read (`unversioned`, `Enabled`,
    /// `Suspended`; null until read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versioning: Option<String>,
    /// S3: `storage.versions` (`purge`, `markers`; null when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<&'static str>,
}

/// One place videos are erased from. Calls block the calling thread (an
/// executor thread, never the async reactor).
pub(crate) trait Target: Send + Sync + 'static {
    /// Whether deleting is safe now; cheap enough to call before every
    /// batch and from `/readyz` (no request to a remote server).
    fn check(&self) -> Result<(), Unavailable>;

    /// Erases every path of each video. `Err` when the target as a whole
    /// cannot be used: then nothing was deleted there.
    fn delete_batch(&self, videos: &[Video<'_>]) -> Result<TargetResult, Unavailable>;

    /// What and where, for the start-up log: `local directory /srv/videos`.
    fn describe(&self) -> String;

    /// Its state now.
    fn health(&self) -> TargetHealth;
}

/// Every configured target, in order.
pub(crate) struct Storage {
    targets: Vec<(Arc<str>, Box<dyn Target>)>,
    /// Configured as a list: messages name the target.
    listed: bool,
}

impl Storage {
    /// Targets as configured (`listed`: named in messages).
    pub(crate) fn new(targets: Vec<(Arc<str>, Box<dyn Target>)>, listed: bool) -> Storage {
        Storage { targets, listed }
    }

    /// `message`, naming the target when there are several.
    fn about(&self, name: &str, message: impl std::fmt::Display) -> String {
        match self.listed {
            true => format!("target {name}: {message}"),
            false => message.to_string(),
        }
    }

    /// Whether deleting is safe on every target now: the first that is not
    /// says why.
    pub(crate) fn check(&self) -> Result<(), Unavailable> {
        for (name, target) in &self.targets {
            target
                .check()
                .map_err(|e| Unavailable(self.about(name, e)))?;
        }
        Ok(())
    }

    /// Erases each video on every target (several targets at once, one
    /// thread each). A video is done when every target erased it; a
    /// target that failed fails the video, naming the target. Nothing is
    /// deleted anywhere when a target is known to be unusable; a target
    /// found unusable during the batch makes the whole batch `Err` (what
    /// the others deleted is deleted again, harmlessly, by the retry).
    pub(crate) fn delete_batch(&self, videos: &[Video<'_>]) -> Result<BatchResult, Unavailable> {
        self.check()?;
        let per_target: Vec<Result<TargetResult, Unavailable>> = match self.targets.as_slice() {
            [(_, one)] => vec![one.delete_batch(videos)],
            targets => std::thread::scope(|scope| {
                let running: Vec<_> = targets
                    .iter()
                    .map(|(_, target)| scope.spawn(|| target.delete_batch(videos)))
                    .collect();
                running
                    .into_iter()
                    .map(|t| {
                        t.join().unwrap_or_else(|_| {
                            Err(Unavailable("the target's deletion panicked".into()))
                        })
                    })
                    .collect()
            }),
        };
        let mut results: Vec<(Removed, Vec<DeleteError>)> =
            vec![(Removed::default(), Vec::new()); videos.len()];
        for ((name, _), target_results) in self.targets.iter().zip(per_target) {
            let target_results = target_results.map_err(|e| Unavailable(self.about(name, e)))?;
            for ((removed, errors), result) in results.iter_mut().zip(target_results) {
                match result {
                    Ok(erased) => {
                        removed.deleted += erased.deleted;
                        removed.missing += erased.missing;
                        removed.targets.push(TargetErased {
                            name: name.to_string(),
                            objects: erased.objects,
                            versions: erased.versions,
                            missing: erased.missing,
                            versions_kept: erased.versions_kept,
                        });
                    }
                    Err(e) => errors.push(DeleteError {
                        path: self.about(name, &e.path),
                        reason: e.reason,
                    }),
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|(removed, mut errors)| match errors.len() {
                0 => Ok(removed),
                1 => Err(errors.remove(0)),
                _ => {
                    // Every failing target, so one retry's `last_error`
                    // says all that is wrong.
                    let first = errors.remove(0);
                    let rest: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    Err(DeleteError {
                        path: first.path,
                        reason: format!("{}; {}", first.reason, rest.join("; ")),
                    })
                }
            })
            .collect())
    }

    /// What and where, for the start-up log.
    pub(crate) fn describe(&self) -> String {
        let described: Vec<String> = self
            .targets
            .iter()
            .map(|(name, t)| self.about(name, t.describe()))
            .collect();
        described.join(", ")
    }

    /// Every target's state, in order.
    pub(crate) fn health(&self) -> Vec<TargetHealth> {
        self.targets.iter().map(|(_, t)| t.health()).collect()
    }
}

/// Why a storage could not be opened at start-up; the message names the
/// config key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct OpenError {
    /// The config key at fault, under `storage.`.
    pub key: &'static str,
    pub reason: String,
    /// The target refuses the configuration as it is (a bucket with MFA
    /// Delete to purge): a restart cannot help, unlike a root not mounted
    /// yet. The binary exits 2, as for a bad configuration.
    pub refused: bool,
}

/// Opens every target that `config.storage` names. Blocks (an S3 target
/// reads its bucket's versioning): call it off the async reactor.
pub(crate) fn open(config: &Config) -> Result<Storage, OpenError> {
    let mut targets: Vec<(Arc<str>, Box<dyn Target>)> = Vec::new();
    for target in config.storage.iter() {
        let name: Arc<str> = target.name().into();
        let opened =
            open_target(target, config.lease_secs).map_err(|e| match config.storage.is_list() {
                true => OpenError {
                    reason: format!("target {name}: {}", e.reason),
                    ..e
                },
                false => e,
            })?;
        targets.push((name, opened));
    }
    Ok(Storage::new(targets, config.storage.is_list()))
}

fn open_target(target: &StorageConfig, lease_secs: u64) -> Result<Box<dyn Target>, OpenError> {
    match target.kind {
        StorageKind::Local => Ok(Box::new(LocalStorage::open(target)?)),
        #[cfg(feature = "s3")]
        StorageKind::S3 => Ok(Box::new(s3::S3Storage::open(
            target,
            retry_budget(lease_secs),
        )?)),
        #[cfg(not(feature = "s3"))]
        StorageKind::S3 => {
            let _ = lease_secs;
            Err(OpenError {
                key: "kind",
                reason: "storage.kind s3 needs a binary built with `--features s3`".into(),
                refused: true,
            })
        }
    }
}

/// How long the requests of one batch may be retried (object storage): a
/// third of the lease, so that a batch retried to the end still acks well
/// before another instance may claim its ids, and at most a minute.
#[cfg(feature = "s3")]
pub(crate) fn retry_budget(lease_secs: u64) -> std::time::Duration {
    use std::time::Duration;
    Duration::from_secs(lease_secs / 3).clamp(Duration::from_secs(1), Duration::from_secs(60))
}
