//! One batch's work as a plain function: delete the claimed ids through the
//! [`Storage`] trait, then decide per id what the ack does (remove the row,
//! or reschedule / fail it). No actor, no database: a unit test drives it
//! with a real storage in a temp directory.

use crate::db::models::{Claimed, Done, Failure};
use crate::storage::{Outcome, Storage, Unavailable};
use crate::video_id::VideoId;

use super::retry::RetryPolicy;

/// What one batch came to, before its ack.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Ids whose paths are all gone: their rows are removed.
    pub done: Vec<Done>,
    /// Ids whose deletion failed: rescheduled with a backoff, or `failed`.
    pub failures: Vec<Failure>,
    /// Ids with at least one path removed.
    pub deleted: usize,
    /// Ids with nothing left to remove (counted as deleted).
    pub missing: usize,
}

/// Deletes the files of `batch` and decides the fate of each id at `now`.
///
/// An id that is not a valid id (left in the table by the Go scheduler,
/// which did not check) is never used as a path: it fails for good at once.
/// `Err` when the storage as a whole cannot be used: nothing was deleted and
/// no id is at fault (the caller gives the leases back without using an
/// attempt).
pub fn execute(
    storage: &dyn Storage,
    batch: &[Claimed],
    policy: &RetryPolicy,
    now: i64,
) -> Result<Verdict, Unavailable> {
    let mut verdict = Verdict::default();
    let mut valid: Vec<(VideoId, &Claimed)> = Vec::with_capacity(batch.len());
    for claimed in batch {
        match VideoId::parse(&claimed.id) {
            Ok(id) => valid.push((id, claimed)),
            Err(e) => verdict
                .failures
                .push(policy.permanent(claimed, format!("{e}; not deleted"))),
        }
    }
    let ids: Vec<VideoId> = valid.iter().map(|(id, _)| id.clone()).collect();
    let results = storage.delete_batch(&ids)?;
    for ((_, claimed), result) in valid.into_iter().zip(results) {
        match result {
            Ok(removed) => {
                match removed.outcome() {
                    Outcome::Deleted => verdict.deleted += 1,
                    Outcome::Missing => verdict.missing += 1,
                }
                verdict.done.push(Done {
                    claimed: claimed.clone(),
                    removed,
                });
            }
            Err(e) => verdict
                .failures
                .push(policy.failure(claimed, e.to_string(), now)),
        }
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::storage::{LocalStorage, Removed};

    fn claimed(id: &str, attempts: i32) -> Claimed {
        Claimed {
            id: id.into(),
            attempts,
            ..Claimed::default()
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 2,
            base_ms: 1000,
            max_ms: 1000,
        }
    }

    fn storage(root: &std::path::Path, paths: &[&str]) -> LocalStorage {
        LocalStorage::open(&StorageConfig {
            root: root.to_owned(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..StorageConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn each_id_is_done_retried_or_failed_by_what_its_deletion_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = storage(root, &["{id}", "{id}.jpg"]);
        std::fs::write(root.join("both"), b"").unwrap();
        std::fs::write(root.join("both.jpg"), b"").unwrap();
        std::fs::write(root.join("half"), b"").unwrap();
        // A non-empty directory where a file is expected: root cannot remove it.
        std::fs::create_dir_all(root.join("stuck/inside")).unwrap();

        let batch = [
            claimed("both", 0),
            claimed("half", 0),
            claimed("gone", 0),
            claimed("stuck", 0),
            claimed("stuck-last", 1),
            claimed("../escape", 0),
        ];
        std::fs::create_dir_all(root.join("stuck-last/x")).unwrap();
        let verdict = execute(&store, &batch, &policy(), 10_000).unwrap();

        let done: Vec<(&str, Removed)> = verdict
            .done
            .iter()
            .map(|d| (d.claimed.id.as_str(), d.removed))
            .collect();
        assert_eq!(
            done,
            [
                (
                    "both",
                    Removed {
                        deleted: 2,
                        missing: 0
                    }
                ),
                (
                    "half",
                    Removed {
                        deleted: 1,
                        missing: 1
                    }
                ),
                (
                    "gone",
                    Removed {
                        deleted: 0,
                        missing: 2
                    }
                ),
            ]
        );
        assert_eq!((verdict.deleted, verdict.missing), (2, 1));
        let failures: Vec<(&str, i32, bool)> = verdict
            .failures
            .iter()
            .map(|f| (f.id.as_str(), f.attempts, f.retry_at.is_some()))
            .collect();
        assert_eq!(
            failures,
            [
                ("../escape", 1, false),
                ("stuck", 1, true),
                ("stuck-last", 2, false),
            ]
        );
        assert!(verdict.failures[1].error.starts_with("stuck: "));
        assert!(!root.join("both").exists() && !root.join("half").exists());
    }

    #[test]
    fn an_unusable_storage_deletes_nothing_and_blames_no_id() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("videos");
        let mut config = StorageConfig {
            root: root.clone(),
            ..StorageConfig::default()
        };
        config.marker = Some(".video-scheduler-root".into());
        let store = LocalStorage::open(&config).unwrap();
        std::fs::write(root.join("kept"), b"").unwrap();

        let unavailable = execute(&store, &[claimed("kept", 0)], &policy(), 0).unwrap_err();
        assert!(
            unavailable.0.contains(".video-scheduler-root"),
            "{unavailable}"
        );
        assert!(root.join("kept").exists());

        std::fs::write(root.join(".video-scheduler-root"), b"").unwrap();
        let verdict = execute(&store, &[claimed("kept", 0)], &policy(), 0).unwrap();
        assert_eq!(verdict.deleted, 1);
        assert!(!root.join("kept").exists());
    }
}
