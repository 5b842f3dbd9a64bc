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
    /// Where the video files live and which of them belong to an id.
    pub storage: StorageConfig,
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

/// `storage` section: where the files are (`kind`), and which belong to an
/// id (`paths`). `root` and `marker` are for `local`; `bucket` to
/// `session_token` for `s3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
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
            storage: StorageConfig::default(),
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
    Invalid { key: &'static str, reason: String },
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
        let config: Config = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(describe)?;
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
        for secret in ["secret_access_key", "session_token"] {
            if !value["storage"][secret].is_null() {
                value["storage"][secret] = "***".into();
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
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if let Err(reason) = crate::db::Backend::from_url(&self.database_url) {
            return invalid("database_url", &reason);
        }
        for (&(key, min, max), value) in RANGES.iter().zip(self.numbers()) {
            if !(min..=max).contains(&value) {
                return invalid(
                    key,
                    &format!("must be between {min} and {max}, not {value}"),
                );
            }
        }
        if self.retry_max_ms < self.retry_base_ms {
            return invalid("retry_max_ms", "must be at least retry_base_ms");
        }
        if self.api_tokens.iter().any(|t| t.trim().is_empty()) {
            return invalid("api_tokens", "tokens must not be empty");
        }
        self.storage.validate()
    }
}

impl StorageConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.paths.is_empty() {
            return invalid("storage.paths", "needs at least one template".into());
        }
        for template in &self.paths {
            crate::storage::template::Template::parse(template).map_err(|reason| {
                ConfigError::Invalid {
                    key: "storage.paths",
                    reason: format!("{template:?}: {reason}"),
                }
            })?;
        }
        match self.kind {
            StorageKind::Local => self.validate_local(),
            StorageKind::S3 => self.validate_s3(),
        }
    }

    fn validate_s3(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if !cfg!(feature = "s3") {
            return invalid(
                "storage.kind",
                "s3 needs a binary built with `--features s3`",
            );
        }
        if self.marker.is_some() {
            return invalid("storage.marker", "is for storage.kind local only");
        }
        match self.bucket.as_deref() {
            None | Some("") => return invalid("storage.bucket", "is required for storage.kind s3"),
            Some(bucket) if bucket.contains('/') => {
                return invalid("storage.bucket", "is a bucket name, without /")
            }
            Some(_) => {}
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return invalid("storage.endpoint", "must start with http:// or https://");
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return invalid(
                "storage.secret_access_key",
                "access_key_id and secret_access_key go together",
            );
        }
        Ok(())
    }

    fn validate_local(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let s3_only = [
            ("storage.bucket", self.bucket.is_some()),
            ("storage.endpoint", self.endpoint.is_some()),
            ("storage.region", self.region.is_some()),
            ("storage.access_key_id", self.access_key_id.is_some()),
            (
                "storage.secret_access_key",
                self.secret_access_key.is_some(),
            ),
            ("storage.session_token", self.session_token.is_some()),
        ];
        if let Some((key, _)) = s3_only.iter().find(|(_, set)| *set) {
            return invalid(key, "is for storage.kind s3 only".into());
        }
        if self.root.as_os_str().is_empty() {
            return invalid("storage.root", "must not be empty".into());
        }
        if is_filesystem_root(&self.root) {
            return invalid(
                "storage.root",
                "must not be the file system root: deletions stay inside a directory of videos"
                    .into(),
            );
        }
        if let Some(marker) = &self.marker {
            let plain = !marker.is_empty()
                && !matches!(marker.as_str(), "." | "..")
                && !marker.contains(['/', '\0']);
            if !plain {
                return invalid(
                    "storage.marker",
                    format!("{marker:?}: must be a file name inside the root, without /"),
                );
            }
        }
        Ok(())
    }
}

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
        config.storage.secret_access_key = Some(Secret::new("s3-secret"));
        config.storage.session_token = Some(Secret::new("s3-session"));
        let shown = format!("{config:?} {}", config.redacted());
        for secret in ["db-password", "api-token", "s3-secret", "s3-session"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(config.redacted()["storage"]["secret_access_key"], "***");
    }

    #[test]
    fn defaults_are_valid_and_listen_on_the_seed_s_port() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.listen.port(), 9001);
    }
}
