//! Typed configuration, layered: built-in defaults, then `conf.json` (or
//! `--config FILE`), then environment variables `VIDEO_SCHEDULER_<KEY>` with
//! nested keys joined by `__` (`VIDEO_SCHEDULER_STORAGE__ROOT=/srv/videos`).
//!
//! Unknown keys and bad values stop start-up with a message naming the key:
//! a typo in a deletion scheduler's config must not silently fall back to a
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Json, Serialized};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "VIDEO_SCHEDULER_";

/// The file read when `--config` is not given and it exists.
pub const DEFAULT_FILE: &str = "conf.json";

/// Everything the server reads at start-up. Its `Debug` is the redacted
/// dump: no secret reaches a log line or a panic message.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP server; the seed listened on port 9001.
    pub listen: SocketAddr,
    /// `sqlite://PATH`, `mysql://USER:PASS@HOST:PORT/DB` or
    /// `postgres://USER:PASS@HOST:PORT/DB`; the scheme picks the backend.
    pub database_url: String,
    /// Where the video files live and which of them belong to an id: one
    /// target (an object, as before) or a list of named targets, each of
    /// which must have nothing of a video left before its request is done.
    pub storage: Targets,
    /// How often the dispatcher looks for due work it was not told about
    /// (delayed requests, retries, other instances' expired leases).
    pub tick_ms: u64,
    /// Ids claimed per round trip, and deleted/acked per statement.
    pub batch_size: usize,
    /// Executor actors (threads) deleting files in parallel.
    pub executors: usize,
    /// How long a claim is ours; after that another claim may take the id.
    pub lease_secs: u64,
    /// Failed attempts after which a request turns `failed`.
    pub max_attempts: u32,
    /// Backoff after the first failure; doubles per attempt, with jitter.
    pub retry_base_ms: u64,
    /// Cap of the backoff.
    pub retry_max_ms: u64,
    /// Bearer tokens; empty means no authentication.
    pub api_tokens: Vec<String>,
    /// How long shutdown waits for in-flight requests and batches.
    pub shutdown_timeout_secs: u64,
    /// Connections in the pool (on SQLite: readers; writes always use one
    /// writer connection).
    pub pool_size: u32,
    /// How long a client may take to send a whole request (head and body);
    /// a slower one gets 408 and its connection is closed, so trickling
    /// clients cannot hold sockets and memory indefinitely. At least one
    /// second: actix's clock for the head's deadline ticks every 500 ms.
    pub client_request_timeout_ms: u64,
    /// Most HTTP connections open at once (the process stops accepting
    /// beyond it; the kernel's backlog holds the rest).
    pub max_connections: usize,
    /// Most ids this instance hands to its executors per second (0: no
    /// limit), so that a huge backlog does not flood the storage.
    pub max_deletions_per_sec: u32,
    /// What is kept of completed requests.
    pub receipts: ReceiptsConfig,
    /// One log line per HTTP request (target `access`, with its request
    /// id). Off by default: at thousands of requests a second the log
    /// would be mostly access lines.
    pub access_log: bool,
}

/// `receipts` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptsConfig {
    /// Days a receipt is kept after its request completed; 0 writes none.
    pub retention_days: u32,
    /// How often an instance looks for expired receipts to prune (one
    /// instance at a time prunes, see the pruner).
    pub prune_every_secs: u64,
}

impl Default for ReceiptsConfig {
    fn default() -> Self {
        ReceiptsConfig {
            retention_days: 30,
            prune_every_secs: 60,
        }
    }
}

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
    pub fn is_list(&self) -> bool {
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
pub const DEFAULT_TARGET: &str = "default";

impl StorageConfig {
    /// The target's name: its `name`, or [`DEFAULT_TARGET`].
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
/// line or panic message can; [`Config::redacted`] hides it in a dump.
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

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            database_url: "sqlite://video-scheduler.db".into(),
            storage: Targets::default(),
            tick_ms: 1000,
            batch_size: 500,
            executors: 4,
            lease_secs: 60,
            max_attempts: 10,
            retry_base_ms: 1000,
            retry_max_ms: 3_600_000,
            api_tokens: Vec::new(),
            shutdown_timeout_secs: 30,
            pool_size: 8,
            client_request_timeout_ms: 10_000,
            max_connections: 1024,
            max_deletions_per_sec: 0,
            receipts: ReceiptsConfig::default(),
            access_log: false,
        }
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

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Config {}", self.redacted())
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// One line per problem, each starting with the key, then the source.
    #[error("{0}")]
    Load(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// Largest `batch_size`: it is also the number of ids bound in one statement.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// The accepted range of every numeric key, inclusive, checked at start-up
/// (and listed in the README). The bounds keep every derived value (times in
/// milliseconds, `attempts` in an `INTEGER` column) far from overflowing.
pub const RANGES: &[(&str, u64, u64)] = &[
    ("tick_ms", 1, 3_600_000),
    ("batch_size", 1, MAX_BATCH_SIZE as u64),
    ("executors", 1, 1024),
    ("lease_secs", 1, 86_400),
    ("max_attempts", 1, 1_000_000),
    ("retry_base_ms", 1, 86_400_000),
    ("retry_max_ms", 1, 2_592_000_000),
    ("shutdown_timeout_secs", 0, 3600),
    ("pool_size", 1, 1000),
    ("client_request_timeout_ms", 1000, 3_600_000),
    ("max_connections", 1, 1_000_000),
    ("max_deletions_per_sec", 0, 10_000_000),
    ("receipts.retention_days", 0, 36_500),
    ("receipts.prune_every_secs", 1, 86_400),
];

impl Config {
    /// Loads the layered configuration: defaults, then `file` (or
    /// `./conf.json` when it exists), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.into())),
            Some(path) if path.is_dir() => {
                return Err(ConfigError::Load(format!(
                    "config file {} is a directory, not a JSON file",
                    path.display()
                )))
            }
            Some(path) => figment = figment.merge(Json::file_exact(path)),
            None if Path::new(DEFAULT_FILE).is_file() => {
                figment = figment.merge(Json::file_exact(DEFAULT_FILE))
            }
            None => {}
        }
        let storage_listed = figment
            .find_value("storage")
            .is_ok_and(|v| v.as_array().is_some());
        let env = Env::prefixed(ENV_PREFIX).split("__");
        if storage_listed {
            // A nested variable would replace the whole list by one object
            // holding just that key, silently dropping every target.
            let prefix = format!("{ENV_PREFIX}STORAGE");
            if let Some((name, _)) = std::env::vars().find(|(k, _)| k.starts_with(&prefix)) {
                return Err(ConfigError::Load(format!(
                    "storage: {name} cannot override a list of storage targets; \
                     set the targets in the config file"
                )));
            }
        }
        Config::extract(figment.merge(env))
    }

    /// The configuration the layers give, checked.
    fn extract(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as JSON for people (`video-scheduler config`):
    /// secrets and the database password replaced by `***`.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("the config serializes");
        value["database_url"] = crate::db::redact(&self.database_url).into();
        value["api_tokens"] =
            serde_json::Value::Array(self.api_tokens.iter().map(|_| "***".into()).collect());
        let targets: Vec<&mut serde_json::Value> = match &mut value["storage"] {
            serde_json::Value::Array(list) => list.iter_mut().collect(),
            one => vec![one],
        };
        for target in targets {
            for secret in ["secret_access_key", "session_token"] {
                if !target[secret].is_null() {
                    target[secret] = "***".into();
                }
            }
        }
        value
    }

    /// The value of each key of [`RANGES`], in the same order.
    fn numbers(&self) -> [u64; 14] {
        [
            self.tick_ms,
            self.batch_size as u64,
            self.executors as u64,
            self.lease_secs,
            u64::from(self.max_attempts),
            self.retry_base_ms,
            self.retry_max_ms,
            self.shutdown_timeout_secs,
            u64::from(self.pool_size),
            self.client_request_timeout_ms,
            self.max_connections as u64,
            u64::from(self.max_deletions_per_sec),
            u64::from(self.receipts.retention_days),
            self.receipts.prune_every_secs,
        ]
    }

    /// Checks what serde's types cannot: ranges and the storage templates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(reason) = crate::db::Backend::from_url(&self.database_url) {
            return invalid("database_url", reason);
        }
        for (&(key, min, max), value) in RANGES.iter().zip(self.numbers()) {
            if !(min..=max).contains(&value) {
                return invalid(key, format!("must be between {min} and {max}, not {value}"));
            }
        }
        if self.retry_max_ms < self.retry_base_ms {
            return invalid("retry_max_ms", "must be at least retry_base_ms");
        }
        if self.api_tokens.iter().any(|t| t.trim().is_empty()) {
            return invalid("api_tokens", "tokens must not be empty");
        }
        self.validate_storage()
    }

    /// Each target on its own, then the list: names present (in a list),
    /// valid and distinct, and no two targets on the same directory or
    /// bucket (their receipts would count the same bytes twice).
    fn validate_storage(&self) -> Result<(), ConfigError> {
        if self.storage.is_empty() {
            return invalid("storage", "needs at least one target");
        }
        if self.storage.len() > MAX_TARGETS {
            return invalid("storage", format!("at most {MAX_TARGETS} targets"));
        }
        let mut seen: Vec<(&str, String)> = Vec::new();
        for (i, target) in self.storage.iter().enumerate() {
            let at = match self.storage.is_list() {
                true => format!("storage[{i}]"),
                false => "storage".to_owned(),
            };
            match &target.name {
                None if self.storage.is_list() => {
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
pub const MAX_TARGETS: usize = 16;

/// `Err(ConfigError::Invalid)` naming `key`.
fn invalid<T>(key: impl Into<String>, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

impl StorageConfig {
    /// Checks one target; `at` is its key (`storage`, `storage[1]`).
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.paths.is_empty() {
            return invalid(format!("{at}.paths"), "needs at least one template");
        }
        for template in &self.paths {
            crate::storage::template::Template::parse(template).or_else(|reason| {
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
pub const VERSIONING_CHECK_SECS: (u64, u64) = (1, 86_400);

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

/// Figment's errors, rewritten to lead with the dotted key (without the
/// profile name figment prefixes) and to name the file or variables.
fn describe(errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                "(top level)".to_owned()
            } else {
                e.path.join(".").to_lowercase()
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(source) => format!(" (from {source})"),
                    None if m.name.is_empty() => String::new(),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            format!("{key}: {}{source}", e.kind)
        })
        .collect();
    ConfigError::Load(lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_a_dump() {
        let mut config = Config {
            database_url: "mysql://user:db-password@host/db".into(),
            api_tokens: vec!["api-token".into()],
            ..Config::default()
        };
        config.storage[0].secret_access_key = Some(Secret::new("s3-secret"));
        config.storage[0].session_token = Some(Secret::new("s3-session"));
        let shown = format!("{config:?} {}", config.redacted());
        for secret in ["db-password", "api-token", "s3-secret", "s3-session"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(config.redacted()["storage"]["secret_access_key"], "***");
    }

    /// The defaults, then `json` as a config file.
    fn from_json(json: &str) -> Result<Config, ConfigError> {
        Config::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Json::string(json)),
        )
    }

    #[test]
    fn storage_is_one_object_or_a_list_of_named_targets() {
        let one =
            from_json(r#"{"storage": {"root": "/srv/videos", "paths": ["{id}.mp4"]}}"#).unwrap();
        assert!(!one.storage.is_list());
        assert_eq!((one.storage.len(), one.storage[0].name()), (1, "default"));
        assert_eq!(one.storage[0].paths, ["{id}.mp4"]);

        let list = from_json(
            r#"{"storage": [
                {"name": "origin", "kind": "local", "root": "/srv/a", "paths": ["{id}"]},
                {"name": "cache", "root": "/srv/b", "paths": ["{id}/"]}
            ]}"#,
        )
        .unwrap();
        assert!(list.storage.is_list());
        let names: Vec<&str> = list.storage.iter().map(StorageConfig::name).collect();
        assert_eq!(names, ["origin", "cache"]);
        // The dump keeps the form it was given.
        assert!(list.redacted()["storage"].is_array());
        assert!(one.redacted()["storage"].is_object());
    }

    #[test]
    fn each_target_of_a_list_is_checked_and_named_by_its_place() {
        let error = |json: &str| from_json(json).unwrap_err().to_string();
        let unnamed = error(r#"{"storage": [{"root": "/srv/a"}]}"#);
        assert!(
            unnamed.starts_with("storage[0].name: is required"),
            "{unnamed}"
        );
        let twice = error(
            r#"{"storage": [{"name": "a", "root": "/srv/a"}, {"name": "a", "root": "/srv/b"}]}"#,
        );
        assert!(twice.starts_with("storage[1].name:"), "{twice}");
        let same_dir = error(
            r#"{"storage": [{"name": "a", "root": "/srv/a"}, {"name": "b", "root": "/srv/a"}]}"#,
        );
        assert!(same_dir.contains("directory /srv/a"), "{same_dir}");
        let bad_name = error(r#"{"storage": [{"name": "a b", "root": "/srv/a"}]}"#);
        assert!(bad_name.starts_with("storage[0].name:"), "{bad_name}");
        let typo = error(r#"{"storage": [{"name": "a", "root": "/srv/a", "rooot": "x"}]}"#);
        assert!(typo.contains("rooot"), "{typo}");
        let local_versions =
            error(r#"{"storage": [{"name": "a", "root": "/srv/a", "versions": "purge"}]}"#);
        assert!(
            local_versions.starts_with("storage[0].versions: is for storage.kind s3 only"),
            "{local_versions}"
        );
        let unknown_mode = error(r#"{"storage": {"versions": "keep"}}"#);
        assert!(unknown_mode.contains("versions"), "{unknown_mode}");
        let empty = error(r#"{"storage": []}"#);
        assert!(
            empty.starts_with("storage: needs at least one target"),
            "{empty}"
        );
    }

    #[cfg(feature = "s3")]
    #[test]
    fn bypassing_governance_needs_versions_purged() {
        let s3 = |extra: &str| {
            from_json(&format!(
                r#"{{"storage": {{"kind": "s3", "bucket": "v", "endpoint": "http://127.0.0.1:1",
                     "access_key_id": "a", "secret_access_key": "b"{extra}}}}}"#
            ))
        };
        assert!(s3("").is_ok());
        let alone = s3(r#", "bypass_governance": true"#)
            .unwrap_err()
            .to_string();
        assert!(alone.starts_with("storage.bypass_governance:"), "{alone}");
        assert!(s3(r#", "versions": "purge", "bypass_governance": true"#).is_ok());
        let markers = s3(r#", "versions": "markers", "versioning_check_secs": 0"#)
            .unwrap_err()
            .to_string();
        assert!(
            markers.starts_with("storage.versioning_check_secs:"),
            "{markers}"
        );
    }

    #[test]
    fn defaults_are_valid_and_listen_on_the_seed_s_port() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.listen.port(), 9001);
    }
}
