//! Erasing on a versioned bucket (versioning Enabled or Suspended), where
//! a plain delete only hides a key behind a delete marker.
//!
//! Both modes first list every version and delete marker of each path
//! (ListObjectVersions: the key itself for a file path, everything under
//! it for a directory path), one listing per path, many in flight.
//! - `purge` deletes each listed entry by its version id, in DeleteObjects
//!   of up to 1,000 entries: a video is done only when every entry came
//!   back `Deleted`. A version under Object Lock retention or legal hold
//!   is refused by the server and fails its video, naming the key, the
//!   version and the server's code.
//! - `markers` deletes, without a version id, each key whose latest entry
//!   is an object (a key already hidden is left), and counts the versions
//!   that stay behind the markers.

use std::collections::HashSet;
use std::time::Instant;

use futures_util::StreamExt;

use super::delete::Answer;
use super::versioning::Status;
use super::versions::{self, Entry};
use super::{Doomed, S3Storage, Tally, LISTS_IN_FLIGHT};
use crate::paths::{self, PathSpec};
use crate::storage::{TargetResult, Video};

/// Every path of every video, listed: `(video, path, its entries)`.
type Listed = Vec<(usize, PathSpec, Result<Vec<Entry>, String>)>;

/// Deletes every version and delete marker of `videos`' paths.
pub(super) async fn purge(s3: &S3Storage, videos: &[Video<'_>], started: Instant) -> TargetResult {
    let mut tallies = vec![Tally::default(); videos.len()];
    let mut doomed: Vec<Doomed> = Vec::new();
    for (i, spec, entries) in list_all(s3, videos, started).await {
        match entries {
            Err(reason) => tallies[i].fail(&spec.to_text(), reason),
            Ok(entries) if entries.is_empty() => tallies[i].erased.missing += 1,
            Ok(entries) => {
                let erased = &mut tallies[i].erased;
                erased.deleted += 1;
                erased.objects += distinct_keys(&entries);
                erased.versions += entries.len() as u32;
                doomed.extend(
                    entries
                        .into_iter()
                        .map(|e| Doomed::version(i, e.key, e.version_id)),
                );
            }
        }
    }
    let answers = s3.delete_doomed(&doomed, started).await;
    for (doomed, answer) in doomed.iter().zip(answers) {
        if let Answer::Failed(reason) = answer {
            tallies[doomed.video].fail(&doomed.key, reason);
        }
    }
    tallies.into_iter().map(Tally::into_result).collect()
}

/// Hides each key of `videos`' paths behind a delete marker, counting the
/// versions kept. On a Suspended bucket the marker replaces the key's
/// `null` version, which is then not kept.
pub(super) async fn markers(
    s3: &S3Storage,
    videos: &[Video<'_>],
    status: Status,
    started: Instant,
) -> TargetResult {
    let mut tallies = vec![Tally::default(); videos.len()];
    let mut doomed: Vec<Doomed> = Vec::new();
    for (i, spec, entries) in list_all(s3, videos, started).await {
        let entries = match entries {
            Ok(entries) => entries,
            Err(reason) => {
                tallies[i].fail(&spec.to_text(), reason);
                continue;
            }
        };
        // Entries come newest first within a key; a key's current entry
        // says whether it is visible.
        let visible: HashSet<&str> = entries
            .iter()
            .filter(|e| e.latest && !e.marker)
            .map(|e| e.key.as_str())
            .collect();
        let kept = entries
            .iter()
            .filter(|e| !e.marker)
            .filter(|e| {
                // A plain delete on a Suspended bucket removes the `null`
                // version of a key it hides.
                !(status == Status::Suspended
                    && e.version_id == "null"
                    && visible.contains(e.key.as_str()))
            })
            .count() as u32;
        let erased = &mut tallies[i].erased;
        erased.versions_kept += kept;
        if visible.is_empty() {
            erased.missing += 1;
            continue;
        }
        erased.deleted += 1;
        erased.objects += visible.len() as u32;
        let mut keys: Vec<&str> = visible.into_iter().collect();
        keys.sort_unstable();
        doomed.extend(keys.into_iter().map(|key| Doomed::key(i, key.to_owned())));
    }
    let answers = s3.delete_doomed(&doomed, started).await;
    for (doomed, answer) in doomed.iter().zip(answers) {
        if let Answer::Failed(reason) = answer {
            tallies[doomed.video].fail(&doomed.key, reason);
        }
    }
    tallies.into_iter().map(Tally::into_result).collect()
}

/// Lists every path of every video, many at once.
async fn list_all(s3: &S3Storage, videos: &[Video<'_>], started: Instant) -> Listed {
    let paths: Vec<(usize, PathSpec)> = videos
        .iter()
        .enumerate()
        .flat_map(|(i, video)| {
            paths::video_paths(&s3.templates, video.id, video.paths)
                .into_iter()
                .map(move |spec| (i, spec))
        })
        .collect();
    futures_util::stream::iter(paths)
        .map(|(i, spec)| async move {
            let entries = list_versions(s3, &spec, started).await;
            (i, spec, entries)
        })
        .buffer_unordered(LISTS_IN_FLIGHT)
        .collect()
        .await
}

/// Every version and delete marker of one path: the key itself for a
/// file path, every key under it for a directory path.
async fn list_versions(
    s3: &S3Storage,
    spec: &PathSpec,
    started: Instant,
) -> Result<Vec<Entry>, String> {
    let prefix = match spec.dir {
        true => format!("{}/", spec.path),
        false => spec.path.clone(),
    };
    let mut found = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let from = after.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
        let page = s3
            .retried(started, || versions::page(&s3.client, &prefix, from))
            .await?;
        if spec.dir {
            found.extend(page.entries);
        } else {
            // The key is the first of all keys it prefixes: once another
            // key shows, every version of this one has been listed.
            let mut past = false;
            for entry in page.entries {
                match entry.key == spec.path {
                    true => found.push(entry),
                    false => past = true,
                }
            }
            if past {
                return Ok(found);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(found),
        }
    }
}

fn distinct_keys(entries: &[Entry]) -> u32 {
    let keys: HashSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    keys.len() as u32
}
