//! Erasing on a bucket without versioning: plain deletes remove the
//! objects.
//!
//! A batch becomes as few requests as the API allows: every prefix of the
//! batch is listed (ListObjectsV2, keys only, paged by 1,000), then the keys
//! of all its videos, named and listed, go out in DeleteObjects requests of
//! up to 1,000 keys. A key that does not exist counts as deleted: S3
//! answers the same for both, so `missing` here only counts prefixes that
//! held no object. A per-key error fails only its video.
//!
//! Should a delete come back as a delete marker, the bucket has been
//! switched to versioning since it was last read: the batch is not counted
//! as erased ([`Versioned`]), and the caller reads the versioning again.
//! A prefix found empty deletes nothing, so nothing would show it: when
//! `storage.versions` is set (the operator granted listing versions), each
//! such prefix is looked at once more with ListObjectVersions, and a
//! version there means the same. (With `versions` absent, a prefix emptied
//! of its current objects in the minute after the bucket was switched to
//! versioning counts as missing until the next reading: the README says
//! so.)

use std::time::Instant;

use futures_util::StreamExt;

use super::delete::Answer;
use super::list::{self, Begin};
use super::versions;
use super::{Doomed, S3Storage, Tally, LISTS_IN_FLIGHT};
use crate::paths::{self, Template};
use crate::storage::{TargetResult, Video};

/// Keys of other videos read in a row before a key-range walk jumps to the
/// next prefix of the batch with a new request.
const GAP_KEYS: usize = 100;
/// Such gaps after which a walk stops: the prefixes are sparse, and are
/// listed one request each instead.
const GAPS_BEFORE_PER_PREFIX: usize = 2;

/// A plain delete made a delete marker, or an empty prefix holds versions
/// (or could not be looked at): the bucket may be versioned now. Says
/// what was seen.
#[derive(Debug)]
pub(super) struct Versioned(pub String);

/// Erases `videos` with plain deletes.
pub(super) async fn erase(
    s3: &S3Storage,
    videos: &[Video<'_>],
    started: Instant,
) -> Result<TargetResult, Versioned> {
    let mut tallies = vec![Tally::default(); videos.len()];
    let mut doomed: Vec<Doomed> = Vec::new();
    // Directories named by the request: listed one by one (templates'
    // directories are listed by template, below, to walk them together).
    let mut named_dirs: Vec<(usize, String)> = Vec::new();
    for (i, video) in videos.iter().enumerate() {
        for spec in paths::video_paths(&s3.templates, video.id, video.paths) {
            if !spec.dir {
                // S3 cannot tell a missing key from a deleted one.
                tallies[i].erased.deleted += 1;
                tallies[i].erased.objects += 1;
                doomed.push(Doomed::key(i, spec.path));
            } else if !s3
                .templates
                .iter()
                .any(|t| t.dir && t.render(video.id) == spec.path)
            {
                named_dirs.push((i, format!("{}/", spec.path)));
            }
        }
    }
    let listed = list_directories(s3, videos, named_dirs, started).await;
    if s3.versions.is_some() {
        let empty: Vec<&str> = listed
            .iter()
            .filter(|(_, _, keys)| keys.as_ref().is_ok_and(Vec::is_empty))
            .map(|(_, prefix, _)| prefix.as_str())
            .collect();
        if let Some(seen) = holds_versions(s3, &empty, started).await {
            return Err(Versioned(seen));
        }
    }
    for (i, prefix, keys) in listed {
        match keys {
            Ok(keys) if keys.is_empty() => tallies[i].erased.missing += 1,
            Ok(keys) => {
                tallies[i].erased.deleted += 1;
                tallies[i].erased.objects += keys.len() as u32;
                doomed.extend(keys.into_iter().map(|key| Doomed::key(i, key)));
            }
            Err(reason) => tallies[i].fail(&prefix, reason),
        }
    }
    let answers = s3.delete_doomed(&doomed, started).await;
    let mut marker_made = None;
    for (doomed, answer) in doomed.iter().zip(answers) {
        match answer {
            Answer::Deleted {
                marker_created: true,
            } => marker_made = Some(&doomed.key),
            Answer::Deleted { .. } => {}
            Answer::Failed(reason) => tallies[doomed.video].fail(&doomed.key, reason),
        }
    }
    if let Some(key) = marker_made {
        return Err(Versioned(format!("deleting {key} made a delete marker")));
    }
    Ok(tallies.into_iter().map(Tally::into_result).collect())
}

/// What shows a version or a delete marker under one of these prefixes
/// (found empty by ListObjectsV2), if anything does. A server without the
/// operation (501) has no versions; a listing that fails otherwise counts
/// (in doubt): the versioning is read again and the batch erased the way
/// it says.
async fn holds_versions(s3: &S3Storage, prefixes: &[&str], started: Instant) -> Option<String> {
    let found: Vec<Option<String>> = futures_util::stream::iter(prefixes)
        .map(|prefix| async move {
            match s3
                .retried_request(started, || versions::page(&s3.client, prefix, None))
                .await
            {
                Ok(page) if page.entries.is_empty() => None,
                Ok(_) => Some(format!("{prefix} holds versions")),
                Err(e) if e.not_implemented => None,
                Err(e) => Some(format!("{prefix}: {}", e.reason)),
            }
        })
        .buffer_unordered(LISTS_IN_FLIGHT)
        .collect()
        .await;
    found.into_iter().flatten().next()
}

/// A prefix of a video (`(video, prefix, its keys)`).
type Listed = (usize, String, Result<Vec<String>, String>);

/// The keys under every directory path of `videos`: each directory
/// template's prefixes together (sorted, walked when dense), then the
/// directories the requests named, one listing each.
async fn list_directories(
    s3: &S3Storage,
    videos: &[Video<'_>],
    named_dirs: Vec<(usize, String)>,
    started: Instant,
) -> Vec<Listed> {
    let mut listed: Vec<Listed> = Vec::new();
    for template in s3.templates.iter().filter(|t| t.dir) {
        // The prefixes of this template, sorted as S3 lists keys.
        let mut prefixes: Vec<(String, usize)> = videos
            .iter()
            .enumerate()
            .map(|(i, video)| (format!("{}/", template.render(video.id)), i))
            .collect();
        prefixes.sort_unstable();
        let sorted: Vec<&str> = prefixes.iter().map(|(p, _)| p.as_str()).collect();
        let keys = list_prefixes(s3, template, &sorted, started).await;
        for ((prefix, i), keys) in prefixes.into_iter().zip(keys) {
            listed.push((i, prefix, keys));
        }
    }
    let named: Vec<Listed> = futures_util::stream::iter(named_dirs)
        .map(|(i, prefix)| async move {
            let keys = list(s3, &prefix, started).await;
            (i, prefix, keys)
        })
        .buffer_unordered(LISTS_IN_FLIGHT)
        .collect()
        .await;
    listed.extend(named);
    listed
}

/// The keys under each of `prefixes` (sorted, each ending in `/`), in the
/// same order.
///
/// One ListObjectsV2 per prefix is the floor when the prefixes are
/// sparse in the bucket (a batch's videos among many live ones). When
/// they are dense (a mass purge: the keys between them are theirs),
/// walking the key range from the first prefix reads them all in pages
/// of 1,000 keys instead. So the walk goes first, and gives up for
/// per-prefix listings once it meets [`GAPS_BEFORE_PER_PREFIX`] gaps of
/// more than [`GAP_KEYS`] foreign keys.
async fn list_prefixes(
    s3: &S3Storage,
    template: &Template,
    prefixes: &[&str],
    started: Instant,
) -> Vec<Result<Vec<String>, String>> {
    let mut listed: Vec<Result<Vec<String>, String>> = vec![Ok(Vec::new()); prefixes.len()];
    let mut next = 0;
    if let Some(base) = template.static_dir() {
        next = walk(s3, base, prefixes, &mut listed, started).await;
    }
    let rest: Vec<_> = futures_util::stream::iter(next..prefixes.len())
        .map(|at| async move { (at, list(s3, prefixes[at], started).await) })
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
    s3: &S3Storage,
    base: &str,
    prefixes: &[&str],
    listed: &mut [Result<Vec<String>, String>],
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
            let Ok(page) = page(s3, &base, begin, started).await else {
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
                    if let Ok(keys) = &mut listed[at] {
                        keys.push(key);
                    }
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

/// Every key under `prefix` (ListObjectsV2, followed page by page).
async fn list(s3: &S3Storage, prefix: &str, started: Instant) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let begin = token.as_deref().map_or(Begin::Start, Begin::Token);
        let page = page(s3, prefix, begin, started).await?;
        keys.extend(page.keys);
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(keys),
        }
    }
}

/// One page of a listing, retried (throttling, 5xx, no answer) within
/// what is left of the batch's retry budget.
async fn page(
    s3: &S3Storage,
    prefix: &str,
    begin: Begin<'_>,
    started: Instant,
) -> Result<list::Page, String> {
    s3.retried(started, || list::page(&s3.client, prefix, begin))
        .await
}
