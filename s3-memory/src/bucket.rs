//! The data model: buckets of keys, each key with its versions and delete
//! markers, as S3 keeps them, and the rules that change them (PutObject,
//! and one DeleteObjects entry).
//!
//! A bucket is an ordered map key -> history, so a listing costs a range of
//! the key space from its prefix or marker on, as it does on S3, never a
//! walk of the whole bucket. Histories are oldest first (a new version is
//! pushed, not inserted); listings read them backwards, newest first.
//!
//! Every version carries a sequence number, increasing across the server.
//! Our version ids start with it, so a `version-id-marker` naming a version
//! deleted since the previous page still says where the next page starts
//! (AWS's ids are opaque but behave the same: a client that lists a page,
//! deletes it and asks for the next one does not get an error).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::SystemTime;

use hyper::body::Bytes;

/// The id of a version written while versioning is not Enabled.
pub const NULL_VERSION: &str = "null";

/// A bucket's versioning state, as GetBucketVersioning reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never versioned: no `Status` at all. A write replaces the key's
    /// "null" version; a delete removes it.
    Unversioned,
    /// Every write adds a version with a fresh id; a delete without a
    /// version id adds a delete marker.
    Enabled,
    /// Versions written while Enabled stay; a write replaces the "null"
    /// version, a delete replaces it with a "null" delete marker.
    Suspended,
}

/// Object Lock protection of one version: what makes a DeleteObjects entry
/// naming it fail with AccessDenied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Retention that a request with `x-amz-bypass-governance-retention:
    /// true` may override.
    Governance {
        /// The version is protected until then.
        until: SystemTime,
    },
    /// Retention nobody overrides.
    Compliance {
        /// The version is protected until then.
        until: SystemTime,
    },
    /// Protected with no end date, whatever the retention.
    LegalHold,
}

/// One version or delete marker, as ListObjectVersions would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The object key.
    pub key: String,
    /// The version id: 32 hex digits, or "null".
    pub version_id: String,
    /// A delete marker, not an object version.
    pub marker: bool,
    /// The newest entry of its key (`IsLatest`).
    pub latest: bool,
}

/// Retention mode of a version, without its date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bypassable with `x-amz-bypass-governance-retention`.
    Governance,
    /// Not bypassable.
    Compliance,
}

/// The Object Lock settings of one version: S3 keeps a retention and a
/// legal hold independently, and either one protects the version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Protection {
    /// Retention mode and date, if any.
    pub retention: Option<(Mode, SystemTime)>,
    /// Legal hold on.
    pub legal_hold: bool,
}

impl From<Lock> for Protection {
    fn from(lock: Lock) -> Protection {
        match lock {
            Lock::Governance { until } => Protection {
                retention: Some((Mode::Governance, until)),
                legal_hold: false,
            },
            Lock::Compliance { until } => Protection {
                retention: Some((Mode::Compliance, until)),
                legal_hold: false,
            },
            Lock::LegalHold => Protection {
                retention: None,
                legal_hold: true,
            },
        }
    }
}

impl Protection {
    /// Whether a request may remove the version now.
    fn allows_removal(&self, now: SystemTime, bypass_governance: bool) -> bool {
        if self.legal_hold {
            return false;
        }
        match self.retention {
            Some((Mode::Compliance, until)) => until <= now,
            Some((Mode::Governance, until)) => until <= now || bypass_governance,
            None => true,
        }
    }
}

/// One version of a key, or a delete marker.
#[derive(Debug, Clone)]
pub struct Version {
    /// 32 hex digits (the sequence number, then random ones), or "null".
    pub id: String,
    /// Where it sits in the key's history: greater is newer.
    seq: u64,
    /// A delete marker (no body).
    pub marker: bool,
    /// The object's bytes (empty for a marker).
    pub body: Bytes,
    /// Hex MD5 of the body: the ETag S3 gives a single-part upload.
    pub etag: String,
    /// When it was written (`LastModified`).
    pub modified: SystemTime,
    /// Object Lock settings.
    pub protection: Protection,
}

/// Every version of one key, oldest first.
#[derive(Debug, Default)]
struct History {
    /// Sorted by `seq`, oldest first: the last one is the latest.
    versions: Vec<Version>,
    /// The sequence number of the key's latest "null" version, kept after
    /// that version is gone, so a `version-id-marker` of "null" still
    /// places the next page.
    null_seq: Option<u64>,
}

impl History {
    fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.id == id)
    }
}

/// A listed entry with what a listing answer shows of it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The object key.
    pub key: String,
    /// The version or marker.
    pub version: Version,
    /// The newest entry of its key.
    pub latest: bool,
}

/// One page of a listing, in order.
#[derive(Debug, Default)]
pub struct Page {
    /// The entries of the page.
    pub entries: Vec<Listed>,
    /// More entries follow the last one.
    pub truncated: bool,
}

/// What a DeleteObjects entry that succeeded did, for its `Deleted` answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The version id the request named, echoed.
    pub version_id: Option<String>,
    /// A delete marker was added, or the version removed was one.
    pub delete_marker: bool,
    /// The id of that delete marker.
    pub marker_version_id: Option<String>,
}

/// Why a DeleteObjects entry failed: its `Error` answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// The S3 error code.
    pub code: &'static str,
    /// The message, as AWS words it.
    pub message: &'static str,
}

/// AWS's answer for a version under Object Lock.
const LOCKED: Refused = Refused {
    code: "AccessDenied",
    message: "Access Denied because object protected by object lock.",
};

/// A `version-id-marker` that cannot be placed.
#[derive(Debug, PartialEq, Eq)]
pub enum BadMarker {
    /// Given without a `key-marker`.
    WithoutKeyMarker,
    /// Not a version id this server makes.
    Invalid,
}

/// The state of one bucket, behind its lock.
#[derive(Debug)]
pub struct State {
    /// Versioning as last set.
    pub versioning: Versioning,
    /// MFA delete: `None` never configured (GetBucketVersioning shows no
    /// `MfaDelete`), else Enabled or Disabled.
    pub mfa_delete: Option<bool>,
    /// Key -> history; keys with no version left are removed.
    keys: BTreeMap<String, History>,
}

/// One bucket: concurrent listings share the read lock; writes (puts,
/// a DeleteObjects request's entries) take the write lock briefly.
#[derive(Debug)]
pub struct Bucket {
    /// The bucket's state.
    pub state: RwLock<State>,
}

impl Default for Bucket {
    fn default() -> Bucket {
        Bucket {
            state: RwLock::new(State {
                versioning: Versioning::Unversioned,
                mfa_delete: None,
                keys: BTreeMap::new(),
            }),
        }
    }
}

/// Hands out sequence numbers and version ids for the whole server.
#[derive(Debug)]
pub struct Clock {
    /// The last sequence number handed out.
    next: AtomicU64,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            next: AtomicU64::new(1),
        }
    }
}

impl Clock {
    fn tick(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// A new version id: 16 hex digits of the sequence number, 16 random.
    fn version(&self) -> (u64, String) {
        let seq = self.tick();
        (seq, format!("{seq:016x}{:016x}", fastrand::u64(..)))
    }
}

/// The sequence number inside a version id of ours; `None` for anything
/// else (including "null").
fn seq_of(id: &str) -> Option<u64> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&id[..16], 16).ok()
}

/// Whether `id` is a version id this server could have made.
pub fn valid_version_id(id: &str) -> bool {
    id == NULL_VERSION || seq_of(id).is_some()
}

/// Hex MD5 of `body`.
fn md5_hex(body: &[u8]) -> String {
    use s3s::crypto::Checksum as _;
    s3s::crypto::Md5::checksum(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The keys from `prefix` on, strictly after `after` when it is given and
/// not before the prefix.
fn range_bounds<'a>(prefix: &'a str, after: Option<&'a str>) -> (Bound<&'a str>, Bound<&'a str>) {
    match after {
        Some(after) if after >= prefix => (Bound::Excluded(after), Bound::Unbounded),
        _ => (Bound::Included(prefix), Bound::Unbounded),
    }
}

impl State {
    /// Stores a version as PutObject does under the current versioning;
    /// returns its id ("null" unless Enabled).
    pub fn put(&mut self, clock: &Clock, key: &str, body: Bytes, protection: Protection) -> String {
        let history = self.keys.entry(key.to_owned()).or_default();
        let (seq, id) = match self.versioning {
            Versioning::Enabled => clock.version(),
            Versioning::Unversioned | Versioning::Suspended => {
                if let Some(i) = history.position(NULL_VERSION) {
                    history.versions.remove(i);
                }
                let seq = clock.tick();
                history.null_seq = Some(seq);
                (seq, NULL_VERSION.to_owned())
            }
        };
        history.versions.push(Version {
            id: id.clone(),
            seq,
            marker: false,
            etag: md5_hex(&body),
            body,
            modified: SystemTime::now(),
            protection,
        });
        id
    }

    /// The latest version of `key`, marker or not.
    pub fn latest(&self, key: &str) -> Option<&Version> {
        self.keys.get(key).and_then(History::latest)
    }

    /// The version `id` of `key`, and whether it is the latest.
    pub fn version(&self, key: &str, id: &str) -> Option<(&Version, bool)> {
        let history = self.keys.get(key)?;
        let i = history.position(id)?;
        Some((&history.versions[i], i + 1 == history.versions.len()))
    }

    /// ListObjectsV2: up to `max` keys under `prefix` (after `after`) whose
    /// latest entry is an object, each with that latest version.
    pub fn current_page(&self, prefix: &str, after: Option<&str>, max: usize) -> Page {
        let mut page = Page::default();
        for (key, history) in self.keys.range::<str, _>(range_bounds(prefix, after)) {
            if !key.starts_with(prefix) {
                break;
            }
            let Some(latest) = history.latest().filter(|v| !v.marker) else {
                continue;
            };
            if page.entries.len() == max {
                page.truncated = true;
                break;
            }
            page.entries.push(Listed {
                key: key.clone(),
                version: latest.clone(),
                latest: true,
            });
        }
        page
    }

    /// ListObjectVersions: up to `max` versions and delete markers under
    /// `prefix`, keys in byte order, newest first within a key, from the
    /// markers on. `key_marker` alone starts after every version of that
    /// key; with `version_marker`, after that version of that key.
    pub fn versions_page(
        &self,
        prefix: &str,
        key_marker: Option<&str>,
        version_marker: Option<&str>,
        max: usize,
    ) -> Result<Page, BadMarker> {
        let mut page = Page::default();
        let mut push = |key: &str, version: &Version, latest: bool| {
            if page.entries.len() == max {
                page.truncated = true;
                return false;
            }
            page.entries.push(Listed {
                key: key.to_owned(),
                version: version.clone(),
                latest,
            });
            true
        };
        if let Some(marker) = version_marker {
            let key = key_marker.ok_or(BadMarker::WithoutKeyMarker)?;
            if !valid_version_id(marker) {
                return Err(BadMarker::Invalid);
            }
            // The rest of the marker's key: what is older than the marker.
            let history = self.keys.get(key).filter(|_| key.starts_with(prefix));
            if let Some(history) = history {
                let seq = match history.position(marker) {
                    Some(i) => Some(history.versions[i].seq),
                    None if marker == NULL_VERSION => history.null_seq,
                    None => seq_of(marker),
                };
                let newest = history.versions.len();
                for (i, version) in history.versions.iter().enumerate().rev() {
                    if seq.is_some_and(|seq| version.seq < seq)
                        && !push(key, version, i + 1 == newest)
                    {
                        return Ok(page);
                    }
                }
            }
        }
        for (key, history) in self.keys.range::<str, _>(range_bounds(prefix, key_marker)) {
            if !key.starts_with(prefix) {
                break;
            }
            let newest = history.versions.len();
            for (i, version) in history.versions.iter().enumerate().rev() {
                if !push(key, version, i + 1 == newest) {
                    return Ok(page);
                }
            }
        }
        Ok(page)
    }

    /// Every version and delete marker under `prefix`.
    pub fn entries(&self, prefix: &str) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (key, history) in self.keys.range::<str, _>(range_bounds(prefix, None)) {
            if !key.starts_with(prefix) {
                break;
            }
            let newest = history.versions.len();
            entries.extend(
                history
                    .versions
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, v)| Entry {
                        key: key.clone(),
                        version_id: v.id.clone(),
                        marker: v.marker,
                        latest: i + 1 == newest,
                    }),
            );
        }
        entries
    }

    /// One DeleteObjects entry: removes version `version_id` of `key`, or,
    /// without a version id, does what the versioning state says (removes
    /// the "null" version, adds a delete marker, or both).
    pub fn delete(
        &mut self,
        clock: &Clock,
        key: &str,
        version_id: Option<&str>,
        bypass_governance: bool,
        now: SystemTime,
    ) -> Result<Deleted, Refused> {
        match version_id {
            Some(id) => self.remove_version(key, id, bypass_governance, now),
            None => match self.versioning {
                Versioning::Unversioned => {
                    self.remove_version(key, NULL_VERSION, bypass_governance, now)?;
                    Ok(Deleted::default())
                }
                Versioning::Enabled => {
                    let (seq, id) = clock.version();
                    self.push_marker(key, seq, id.clone());
                    Ok(Deleted {
                        version_id: None,
                        delete_marker: true,
                        marker_version_id: Some(id),
                    })
                }
                Versioning::Suspended => {
                    self.remove_version(key, NULL_VERSION, bypass_governance, now)?;
                    let seq = clock.tick();
                    self.push_marker(key, seq, NULL_VERSION.to_owned());
                    if let Some(history) = self.keys.get_mut(key) {
                        history.null_seq = Some(seq);
                    }
                    Ok(Deleted {
                        version_id: None,
                        delete_marker: true,
                        marker_version_id: Some(NULL_VERSION.to_owned()),
                    })
                }
            },
        }
    }

    fn push_marker(&mut self, key: &str, seq: u64, id: String) {
        self.keys
            .entry(key.to_owned())
            .or_default()
            .versions
            .push(Version {
                id,
                seq,
                marker: true,
                body: Bytes::new(),
                etag: String::new(),
                modified: SystemTime::now(),
                protection: Protection::default(),
            });
    }

    /// Removes exactly version `id` of `key`; a version that does not
    /// exist is "deleted" too, as on S3.
    fn remove_version(
        &mut self,
        key: &str,
        id: &str,
        bypass_governance: bool,
        now: SystemTime,
    ) -> Result<Deleted, Refused> {
        if !valid_version_id(id) {
            return Err(Refused {
                code: "NoSuchVersion",
                message: "The specified version does not exist.",
            });
        }
        let mut deleted = Deleted {
            version_id: Some(id.to_owned()),
            ..Deleted::default()
        };
        let Some(history) = self.keys.get_mut(key) else {
            return Ok(deleted);
        };
        let Some(i) = history.position(id) else {
            return Ok(deleted);
        };
        if !history.versions[i]
            .protection
            .allows_removal(now, bypass_governance)
        {
            return Err(LOCKED);
        }
        let removed = history.versions.remove(i);
        if removed.marker {
            deleted.delete_marker = true;
            deleted.marker_version_id = Some(removed.id);
        }
        if history.versions.is_empty() {
            self.keys.remove(key);
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ids(state: &State, prefix: &str) -> Vec<(String, String, bool)> {
        state
            .entries(prefix)
            .into_iter()
            .map(|e| (e.key, e.version_id, e.marker))
            .collect()
    }

    fn bucket(versioning: Versioning) -> State {
        State {
            versioning,
            mfa_delete: None,
            keys: BTreeMap::new(),
        }
    }

    #[test]
    fn version_ids_carry_their_sequence_and_sort_with_it() {
        let clock = Clock::default();
        let (a, first) = clock.version();
        let (b, second) = clock.version();
        assert!(a < b && first < second);
        assert_eq!(seq_of(&first), Some(a));
        assert!(valid_version_id(&first) && valid_version_id("null"));
        assert!(!valid_version_id("v1") && !valid_version_id(&"g".repeat(32)));
    }

    #[test]
    fn a_marker_of_a_version_deleted_since_still_places_the_next_page() {
        let clock = Clock::default();
        let mut state = bucket(Versioning::Enabled);
        let versions: Vec<String> = (0..5)
            .map(|_| state.put(&clock, "k", Bytes::new(), Protection::default()))
            .collect();
        let now = SystemTime::now();
        // Page one ends at the fourth newest; it is deleted before page two.
        state
            .delete(&clock, "k", Some(&versions[1]), false, now)
            .unwrap();
        let page = state
            .versions_page("", Some("k"), Some(&versions[1]), 10)
            .unwrap();
        let listed: Vec<&str> = page.entries.iter().map(|e| e.version.id.as_str()).collect();
        assert_eq!(listed, [versions[0].as_str()]);
    }

    #[test]
    fn a_null_marker_whose_version_is_gone_continues_below_it() {
        let clock = Clock::default();
        let mut state = bucket(Versioning::Unversioned);
        state.put(&clock, "k", Bytes::new(), Protection::default());
        state.versioning = Versioning::Enabled;
        let newer = state.put(&clock, "k", Bytes::new(), Protection::default());
        state.versioning = Versioning::Suspended;
        state.put(&clock, "k", Bytes::new(), Protection::default());
        state.versioning = Versioning::Enabled;
        let newest = state.put(&clock, "k", Bytes::new(), Protection::default());
        // k: newest, null, newer.
        let order: Vec<String> = ids(&state, "").into_iter().map(|e| e.1).collect();
        assert_eq!(order, [newest.as_str(), "null", newer.as_str()]);
        state
            .delete(&clock, "k", Some("null"), false, SystemTime::now())
            .unwrap();
        let page = state
            .versions_page("", Some("k"), Some("null"), 10)
            .unwrap();
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].version.id, newer);
    }

    #[test]
    fn locks_protect_until_their_date_and_governance_yields_to_a_bypass() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let governance = Protection::from(Lock::Governance { until: later });
        assert!(!governance.allows_removal(now, false));
        assert!(governance.allows_removal(now, true));
        assert!(governance.allows_removal(later, false));
        let compliance = Protection::from(Lock::Compliance { until: later });
        assert!(!compliance.allows_removal(now, true));
        assert!(compliance.allows_removal(later, false));
        assert!(!Protection::from(Lock::LegalHold).allows_removal(later, true));
    }

    #[test]
    fn etag_is_the_hex_md5_of_the_body() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
