//! One batch's work as a plain function: erase the claimed ids from every
//! storage target ([`Storage`]), then decide per id what the ack does
//! (remove the row, or reschedule / fail it). No actor, no database: a
//! unit test drives it with a real storage in a temp directory.

use crate::db::models::{Claimed, Done, Failure};
use crate::erasure::Outcome;
use crate::paths::PathSpec;
use crate::storage::{Storage, Unavailable, Video};
use crate::video_id::VideoId;

use super::retry::RetryPolicy;

/// What one batch came to, before its ack.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Verdict {
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
/// which did not check), or whose stored paths are not valid paths
/// (written by hand), is never used as a path: it fails for good at once.
/// `Err` when the storage as a whole cannot be used: nothing was deleted and
/// no id is at fault (the caller gives the leases back without using an
/// attempt).
pub(crate) fn execute(
    storage: &Storage,
    batch: &[Claimed],
    policy: &RetryPolicy,
    now: i64,
) -> Result<Verdict, Unavailable> {
    let mut verdict = Verdict::default();
    let mut valid: Vec<(VideoId, Vec<PathSpec>, &Claimed)> = Vec::with_capacity(batch.len());
    for claimed in batch {
        match VideoId::parse(&claimed.id)
            .map_err(|e| e.to_string())
            .and_then(|id| Ok((id, stored_paths(claimed.paths.as_deref())?)))
        {
            Ok((id, paths)) => valid.push((id, paths, claimed)),
            Err(e) => verdict
                .failures
                .push(policy.permanent(claimed, format!("{e}; not deleted"))),
        }
    }
    let videos: Vec<Video<'_>> = valid
        .iter()
        .map(|(id, paths, _)| Video { id, paths })
        .collect();
    let results = storage.delete_batch(&videos)?;
    for ((_, _, claimed), result) in valid.iter().zip(results) {
        match result {
            Ok(removed) => {
                match removed.outcome() {
                    Outcome::Deleted => verdict.deleted += 1,
                    Outcome::Missing => verdict.missing += 1,
                }
                verdict.done.push(Done {
                    claimed: (*claimed).clone(),
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

/// The paths a request named, as stored (a JSON list of path strings),
/// checked again: a row written by hand must not lead outside a root.
fn stored_paths(stored: Option<&str>) -> Result<Vec<PathSpec>, String> {
    let Some(json) = stored else {
        return Ok(Vec::new());
    };
    let texts: Vec<String> =
        serde_json::from_str(json).map_err(|e| format!("stored paths are not a JSON list: {e}"))?;
    texts
        .iter()
        .map(|text| {
            PathSpec::parse_request(text)
                .map_err(|reason| format!("stored path {text:?}: {reason}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::storage::{LocalStorage, Target};

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

    fn local(root: &std::path::Path, paths: &[&str], name: Option<&str>) -> LocalStorage {
        LocalStorage::open(&StorageConfig {
            name: name.map(str::to_owned),
            root: root.to_owned(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..StorageConfig::default()
        })
        .unwrap()
    }

    /// One local target, as a single `storage` object configures it.
    fn storage(root: &std::path::Path, paths: &[&str]) -> Storage {
        let target: Box<dyn Target> = Box::new(local(root, paths, None));
        Storage::new(vec![("default".into(), target)], false)
    }

    /// `(id, deleted, missing)` of each done id.
    fn done(verdict: &Verdict) -> Vec<(&str, u32, u32)> {
        verdict
            .done
            .iter()
            .map(|d| (d.claimed.id.as_str(), d.removed.deleted, d.removed.missing))
            .collect()
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

        assert_eq!(
            done(&verdict),
            [("both", 2, 0), ("half", 1, 1), ("gone", 0, 2)]
        );
        let both = &verdict.done[0].removed.targets;
        assert_eq!(
            (both.len(), both[0].name.as_str(), both[0].objects),
            (1, "default", 2)
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
        let target: Box<dyn Target> = Box::new(LocalStorage::open(&config).unwrap());
        let store = Storage::new(vec![("default".into(), target)], false);
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

    #[test]
    fn paths_a_request_named_are_deleted_besides_the_templates_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = storage(root, &["{id}.mp4"]);
        for file in [
            "v1.mp4",
            "web/3f2a-720.mp4",
            "hls/3f2a/0.ts",
            "hls/3f2a/1.ts",
        ] {
            std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
            std::fs::write(root.join(file), b"").unwrap();
        }
        let mut v1 = claimed("v1", 0);
        v1.paths = Some(r#"["web/3f2a-720.mp4","hls/3f2a/","web/none.mp4"]"#.into());
        let verdict = execute(&store, &[v1], &policy(), 0).unwrap();
        assert_eq!(done(&verdict), [("v1", 3, 1)]);
        let target = &verdict.done[0].removed.targets[0];
        // The video, the rendition, and the two segments of the directory.
        assert_eq!((target.objects, target.missing), (4, 1));
        assert!(!root.join("web/3f2a-720.mp4").exists() && !root.join("hls/3f2a").exists());
    }

    #[test]
    fn stored_paths_that_are_not_valid_paths_fail_for_good_and_touch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("videos");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.path().join("outside"), b"").unwrap();
        let store = storage(&root, &["{id}"]);
        let mut hostile = claimed("v1", 0);
        hostile.paths = Some(r#"["../outside"]"#.into());
        let mut garbled = claimed("v2", 0);
        garbled.paths = Some("not json".into());
        let verdict = execute(&store, &[hostile, garbled], &policy(), 0).unwrap();
        assert!(verdict.done.is_empty());
        let failures: Vec<(&str, bool)> = verdict
            .failures
            .iter()
            .map(|f| (f.id.as_str(), f.retry_at.is_some()))
            .collect();
        assert_eq!(failures, [("v1", false), ("v2", false)]);
        assert!(
            verdict.failures[0].error.contains("../outside"),
            "{}",
            verdict.failures[0].error
        );
        assert!(dir.path().join("outside").exists());
    }

    #[test]
    fn with_several_targets_an_id_is_done_only_when_every_target_erased_it() {
        let dir = tempfile::tempdir().unwrap();
        let (origin, cache) = (dir.path().join("origin"), dir.path().join("cache"));
        std::fs::create_dir_all(&origin).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        let targets: Vec<(std::sync::Arc<str>, Box<dyn Target>)> = vec![
            (
                "origin".into(),
                Box::new(local(&origin, &["{id}"], Some("origin"))),
            ),
            (
                "cache".into(),
                Box::new(local(&cache, &["{id}"], Some("cache"))),
            ),
        ];
        let store = Storage::new(targets, true);
        std::fs::write(origin.join("ok"), b"").unwrap();
        std::fs::write(origin.join("stuck"), b"").unwrap();
        // A non-empty directory where the cache expects a file.
        std::fs::create_dir_all(cache.join("stuck/inside")).unwrap();

        let verdict = execute(
            &store,
            &[claimed("ok", 0), claimed("stuck", 0)],
            &policy(),
            0,
        )
        .unwrap();
        assert_eq!(done(&verdict), [("ok", 1, 1)]);
        let names: Vec<(&str, u32, u32)> = verdict.done[0]
            .removed
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.objects, t.missing))
            .collect();
        assert_eq!(names, [("origin", 1, 0), ("cache", 0, 1)]);
        let error = &verdict.failures[0].error;
        assert!(error.starts_with("target cache: stuck: "), "{error}");
        assert!(
            !origin.join("stuck").exists(),
            "the other target deleted it"
        );
    }
}
