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

mod notify;
mod storage;

pub use notify::{
    PurgeConfig, PurgeKind, Secrets, WebhookConfig, CANCELLED, COMPLETED, EVENT_TYPES, FAILED,
};
pub use storage::{Secret, StorageConfig, StorageKind, Targets, Versions};

/// Prefix of the environment variables that override the file.
pub(crate) const ENV_PREFIX: &str = "VIDEO_SCHEDULER_";

/// The file read when `--config` is not given and it exists.
pub(crate) const DEFAULT_FILE: &str = "conf.json";

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
    /// How long a record may wait for its commit before it answers 503
    /// (it may still commit: a retry then answers `already_queued`), so
    /// that a database that stopped answering (a lost synchronous standby,
    /// a partition) never holds callers.
    pub record_timeout_ms: u64,
    /// PostgreSQL: answer records (and `/readyz`) with 503 while the
    /// primary has standbys but none synchronous, so that a 2xx always
    /// means a commit a failover keeps (README, "Past one database
    /// server"). Off: a record is as durable as the primary's commit.
    pub require_synchronous_replication: bool,
    /// Most HTTP connections open at once (the process stops accepting
    /// beyond it; the kernel's backlog holds the rest).
    pub max_connections: usize,
    /// Most ids this instance hands to its executors per second (0: no
    /// limit), so that a huge backlog does not flood the storage.
    pub max_deletions_per_sec: u32,
    /// The fast lane (README, "Fast lane"): ids recorded due now while
    /// executors are free are inserted already leased to this instance and
    /// handed to them in memory, without a claim (SQLite and PostgreSQL).
    pub fast_lane: bool,
    /// What is kept of completed requests.
    pub receipts: ReceiptsConfig,
    /// One log line per HTTP request (target `access`, with its request
    /// id). Off by default: at thousands of requests a second the log
    /// would be mostly access lines.
    pub access_log: bool,
    /// Receivers told of each request's end, signed (Standard Webhooks).
    pub webhooks: Vec<WebhookConfig>,
    /// CDNs purged of each erased video's URLs.
    pub purge: Vec<PurgeConfig>,
    /// How long a webhook's event is retried before it is dead (hours,
    /// fractions allowed).
    pub webhook_retry_hours: f64,
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
            record_timeout_ms: 5_000,
            require_synchronous_replication: false,
            max_connections: 1024,
            max_deletions_per_sec: 0,
            fast_lane: true,
            receipts: ReceiptsConfig::default(),
            access_log: false,
            webhooks: Vec::new(),
            purge: Vec::new(),
            webhook_retry_hours: 72.0,
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
pub(crate) const MAX_BATCH_SIZE: usize = 10_000;

/// The accepted range of every numeric key, inclusive, checked at start-up
/// (and listed in the README). The bounds keep every derived value (times in
/// milliseconds, `attempts` in an `INTEGER` column) far from overflowing.
pub(crate) const RANGES: &[(&str, u64, u64)] = &[
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
    ("record_timeout_ms", 100, 600_000),
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
    pub(crate) fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("the config serializes");
        value["database_url"] = crate::db::url::redact(&self.database_url).into();
        value["api_tokens"] =
            serde_json::Value::Array(self.api_tokens.iter().map(|_| "***".into()).collect());
        notify::redact(&mut value);
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
    fn numbers(&self) -> [u64; 15] {
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
            self.record_timeout_ms,
            self.max_connections as u64,
            u64::from(self.max_deletions_per_sec),
            u64::from(self.receipts.retention_days),
            self.receipts.prune_every_secs,
        ]
    }

    /// Checks what serde's types cannot: ranges and the storage templates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(reason) = crate::db::url::Backend::from_url(&self.database_url) {
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
        if !(self.webhook_retry_hours > 0.0 && self.webhook_retry_hours <= 8760.0) {
            return invalid(
                "webhook_retry_hours",
                format!(
                    "must be above 0 and at most 8760, not {}",
                    self.webhook_retry_hours
                ),
            );
        }
        notify::validate(&self.webhooks, &self.purge)?;
        self.storage.validate()
    }
}

/// `Err(ConfigError::Invalid)` naming `key`.
fn invalid<T>(key: impl Into<String>, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
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
        config.webhooks = vec![serde_json::from_value(serde_json::json!({
            "name": "mgmt", "url": "http://127.0.0.1:1/",
            "secret": ["whsec_aG9vay1zZWNyZXQ=", "whsec_b2xkLXNlY3JldA=="]
        }))
        .unwrap()];
        config.purge = vec![serde_json::from_value(serde_json::json!({
            "name": "cf", "kind": "cloudflare", "zone_id": "z", "api_token": "cf-token",
            "urls": ["https://cdn/{id}"], "headers": { "X-Key": "purge-key" }
        }))
        .unwrap()];
        super::notify::validate(&config.webhooks, &config.purge).unwrap();
        let shown = format!("{config:?} {}", config.redacted());
        for secret in [
            "db-password",
            "api-token",
            "s3-secret",
            "s3-session",
            "aG9vay1zZWNyZXQ",
            "b2xkLXNlY3JldA",
            "cf-token",
            "purge-key",
        ] {
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
