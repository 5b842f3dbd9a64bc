//! The `storage` section: one target (an object) or a list of named
//! targets, each checked on its own and against the others.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// `storage`: one target, written as an object (every conf.json written
/// before several targets existed), or a list of named targets. Derefs to
/// the targets, in the configured order.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    targets: Vec<StorageConfig>,
    /// Written as a list: each target has a `name`, and messages name it.
    listed: bool,
}

impl Targets {
    /// The single-object form.
    pub fn one(target: StorageConfig) -> Targets {
        Targets {
            targets: vec![target],
            listed: false,
        }
    }

    /// The list form: named targets.
    pub fn list(targets: Vec<StorageConfig>) -> Targets {
        Targets {
            targets,
            listed: true,
        }
    }

    /// Whether the configuration lists named targets (rather than one
    /// object).
    pub(crate) fn is_list(&self) -> bool {
        self.listed
    }
}

impl Default for Targets {
    fn default() -> Self {
        Targets::one(StorageConfig::default())
    }
}

impl std::ops::Deref for Targets {
    type Target = [StorageConfig];

    fn deref(&self) -> &[StorageConfig] {
        &self.targets
    }
}

impl std::ops::DerefMut for Targets {
    fn deref_mut(&mut self) -> &mut [StorageConfig] {
        &mut self.targets
    }
}

impl From<StorageConfig> for Targets {
    fn from(target: StorageConfig) -> Self {
        Targets::one(target)
    }
}

impl Serialize for Targets {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.listed, self.targets.as_slice()) {
            (false, [one]) => one.serialize(serializer),
            (_, targets) => targets.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Targets {
    /// An object or a list, each target read by `StorageConfig`'s own
    /// (strict) deserializer, so that an unknown key or a bad value is
    /// reported with its path (`storage.1.bucket`) as anywhere else.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Targets;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a storage object, or a list of named storage objects")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Targets, A::Error> {
                StorageConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Targets::one)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Targets, A::Error> {
                Vec::<StorageConfig>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(Targets::list)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One storage target: where the files are (`kind`), and which belong to
/// an id (`paths`). `root` and `marker` are for `local`; `bucket` to
/// `bypass_governance` for `s3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The target's name in receipts, `last_error`, `/readyz`, the stats
    /// and the metrics; required in a list, `default` for a single object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: StorageKind,
    /// Templates relative to the root (or keys in the bucket); `{id}` is
    /// replaced by the video id and a trailing `/` names a directory removed
    /// recursively (or a prefix: every object under it).
    pub paths: Vec<String>,
    /// `local`: the directory every deletion stays inside.
    pub root: PathBuf,
    /// `local`: a file name that must exist in the root before anything is
    /// deleted (e.g. `.video-scheduler-root`): an empty mount point or a
    /// directory recreated in place of the real one then deletes nothing.
    pub marker: Option<String>,
    /// `s3`: the bucket.
    pub bucket: Option<String>,
    /// `s3`: e.g. `http://127.0.0.1:9000` for MinIO (path-style requests);
    /// AWS when absent (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// `s3`: the region; `AWS_REGION`, else `us-east-1`, when absent.
    pub region: Option<String>,
    /// `s3`: credentials; when absent, the standard `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` variables (and, on
    /// AWS without an endpoint, the instance's role).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// `s3`: what to do on a bucket with versioning Enabled or Suspended,
    /// where a plain delete only adds a delete marker. Absent: nothing is
    /// deleted there (the storage counts as unavailable until this is set).
    pub versions: Option<Versions>,
    /// `s3`: how often the bucket's versioning is read again
    /// (GetBucketVersioning), so that a bucket switched to versioning
    /// under a running server is seen before it can make a receipt false.
    pub versioning_check_secs: u64,
    /// `s3`, `versions: "purge"`: send `x-amz-bypass-governance-retention`
    /// so that versions under governance-mode retention are erased too
    /// (compliance mode and legal holds are never bypassed).
    pub bypass_governance: bool,
}

/// `storage.versions`: how a versioned bucket is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Versions {
    /// Every version and delete marker of the video's keys is deleted by
    /// version id: the bytes are gone.
    Purge,
    /// Plain deletes: a delete marker hides each key, its versions stay
    /// (billed, restorable). The receipt says how many were kept.
    Markers,
}

impl Versions {
    pub fn as_str(self) -> &'static str {
        match self {
            Versions::Purge => "purge",
            Versions::Markers => "markers",
        }
    }
}

/// The name of the target of a single-object `storage`.
pub(crate) const DEFAULT_TARGET: &str = "default";

impl StorageConfig {
    /// The target's name: its `name`, or `default`.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_TARGET)
    }
}

/// Storage kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Files under `storage.root`.
    Local,
    /// Objects in an S3-compatible bucket.
    S3,
}

/// A secret from the configuration: its `Debug` never shows it, so no log
/// line or panic message can; `Config::redacted` hides it in a dump.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            name: None,
            kind: StorageKind::Local,
            root: PathBuf::from("videos"),
            paths: vec!["{id}".into()],
            marker: None,
            bucket: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            versions: None,
            versioning_check_secs: 60,
            bypass_governance: false,
        }
    }
}

impl Targets {
    /// Each target on its own, then the list: names present (in a list),
    /// valid and distinct, and no two targets on the same directory or
    /// bucket (their receipts would count the same bytes twice).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.is_empty() {
            return invalid("storage", "needs at least one target");
        }
        if self.len() > MAX_TARGETS {
            return invalid("storage", format!("at most {MAX_TARGETS} targets"));
        }
        let mut seen: Vec<(&str, String)> = Vec::new();
        for (i, target) in self.iter().enumerate() {
            let at = match self.is_list() {
                true => format!("storage[{i}]"),
                false => "storage".to_owned(),
            };
            match &target.name {
                None if self.is_list() => {
                    return invalid(
                        format!("{at}.name"),
                        "is required for each target of a list",
                    )
                }
                None => {}
                Some(name) if crate::video_id::VideoId::parse(name).is_err() => {
                    return invalid(
                        format!("{at}.name"),
                        format!("{name:?}: 1 to 64 characters of [A-Za-z0-9._-]"),
                    )
                }
                Some(_) => {}
            }
            target.validate(&at)?;
            let place = target.place();
            if let Some((other, _)) = seen
                .iter()
                .find(|(name, p)| *p == place || *name == target.name())
            {
                return invalid(
                    format!("{at}.name"),
                    format!(
                        "{:?}: the same name or {} as target {other:?}",
                        target.name(),
                        place
                    ),
                );
            }
            seen.push((target.name(), place));
        }
        Ok(())
    }
}

/// Most targets in `storage`.
pub(crate) const MAX_TARGETS: usize = 16;

impl StorageConfig {
    /// Checks one target; `at` is its key (`storage`, `storage[1]`).
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.paths.is_empty() {
            return invalid(format!("{at}.paths"), "needs at least one template");
        }
        for template in &self.paths {
            crate::paths::Template::parse(template).or_else(|reason| {
                invalid(format!("{at}.paths"), format!("{template:?}: {reason}"))
            })?;
        }
        let (min, max) = VERSIONING_CHECK_SECS;
        if !(min..=max).contains(&self.versioning_check_secs) {
            return invalid(
                format!("{at}.versioning_check_secs"),
                format!(
                    "must be between {min} and {max}, not {}",
                    self.versioning_check_secs
                ),
            );
        }
        match self.kind {
            StorageKind::Local => self.validate_local(at),
            StorageKind::S3 => self.validate_s3(at),
        }
    }

    /// Where the target's bytes are, to tell two targets apart: the
    /// directory (resolved when it exists), or the endpoint and bucket.
    fn place(&self) -> String {
        match self.kind {
            StorageKind::Local => {
                let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
                format!("directory {}", root.display())
            }
            StorageKind::S3 => format!(
                "bucket {} at {}",
                self.bucket.as_deref().unwrap_or_default(),
                self.endpoint.as_deref().unwrap_or("AWS")
            ),
        }
    }

    fn validate_s3(&self, at: &str) -> Result<(), ConfigError> {
        if !cfg!(feature = "s3") {
            return invalid(
                format!("{at}.kind"),
                "s3 needs a binary built with `--features s3`",
            );
        }
        if self.marker.is_some() {
            return invalid(format!("{at}.marker"), "is for storage.kind local only");
        }
        match self.bucket.as_deref() {
            None | Some("") => {
                return invalid(format!("{at}.bucket"), "is required for storage.kind s3")
            }
            Some(bucket) if bucket.contains('/') => {
                return invalid(format!("{at}.bucket"), "is a bucket name, without /")
            }
            Some(_) => {}
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return invalid(
                    format!("{at}.endpoint"),
                    "must start with http:// or https://",
                );
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return invalid(
                format!("{at}.secret_access_key"),
                "access_key_id and secret_access_key go together",
            );
        }
        if self.bypass_governance && self.versions != Some(Versions::Purge) {
            return invalid(
                format!("{at}.bypass_governance"),
                "only applies with versions \"purge\" (versions are deleted by id only then)",
            );
        }
        Ok(())
    }

    fn validate_local(&self, at: &str) -> Result<(), ConfigError> {
        let s3_only = [
            ("bucket", self.bucket.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("region", self.region.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("session_token", self.session_token.is_some()),
            ("versions", self.versions.is_some()),
            ("bypass_governance", self.bypass_governance),
        ];
        if let Some((key, _)) = s3_only.iter().find(|(_, set)| *set) {
            return invalid(format!("{at}.{key}"), "is for storage.kind s3 only");
        }
        if self.root.as_os_str().is_empty() {
            return invalid(format!("{at}.root"), "must not be empty");
        }
        if is_filesystem_root(&self.root) {
            return invalid(
                format!("{at}.root"),
                "must not be the file system root: deletions stay inside a directory of videos",
            );
        }
        if let Some(marker) = &self.marker {
            let plain = !marker.is_empty()
                && !matches!(marker.as_str(), "." | "..")
                && !marker.contains(['/', '\0']);
            if !plain {
                return invalid(
                    format!("{at}.marker"),
                    format!("{marker:?}: must be a file name inside the root, without /"),
                );
            }
        }
        Ok(())
    }
}

/// Accepted range of `storage.versioning_check_secs`, inclusive.
pub(crate) const VERSIONING_CHECK_SECS: (u64, u64) = (1, 86_400);

/// `/`, however spelled (`//`, `/./..`), or a path that resolves to it.
fn is_filesystem_root(path: &Path) -> bool {
    use std::path::Component;
    let lexically_root = path.has_root()
        && path.components().all(|c| {
            matches!(
                c,
                Component::RootDir | Component::CurDir | Component::ParentDir
            )
        });
    lexically_root || std::fs::canonicalize(path).is_ok_and(|resolved| resolved == Path::new("/"))
}
