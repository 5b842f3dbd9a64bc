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

/// Everything the server reads at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// `storage` section: local files under one root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// Directory every deletion stays inside.
    pub root: PathBuf,
    /// Templates relative to `root`; `{id}` is replaced by the video id and a
    /// trailing `/` names a directory removed recursively.
    pub paths: Vec<String>,
}

/// Storage backends. Only local files exist today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Local,
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
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: StorageKind::Local,
            root: PathBuf::from("videos"),
            paths: vec!["{id}".into()],
        }
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

impl Config {
    /// Loads the layered configuration: defaults, then `file` (or
    /// `./conf.json` when it exists), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.into())),
            Some(path) => figment = figment.merge(Json::file_exact(path)),
            None if Path::new(DEFAULT_FILE).exists() => {
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
        if self.tick_ms == 0 {
            return invalid("tick_ms", "must be at least 1");
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return invalid("batch_size", "must be between 1 and 10000");
        }
        if self.executors == 0 {
            return invalid("executors", "must be at least 1");
        }
        if self.lease_secs == 0 {
            return invalid("lease_secs", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if self.retry_base_ms == 0 {
            return invalid("retry_base_ms", "must be at least 1");
        }
        if self.retry_max_ms < self.retry_base_ms {
            return invalid("retry_max_ms", "must be at least retry_base_ms");
        }
        if self.pool_size == 0 {
            return invalid("pool_size", "must be at least 1");
        }
        if self.api_tokens.iter().any(|t| t.trim().is_empty()) {
            return invalid("api_tokens", "tokens must not be empty");
        }
        if self.storage.root.as_os_str().is_empty() {
            return invalid("storage.root", "must not be empty");
        }
        if self.storage.paths.is_empty() {
            return invalid("storage.paths", "needs at least one template");
        }
        for template in &self.storage.paths {
            check_template(template).map_err(|reason| ConfigError::Invalid {
                key: "storage.paths",
                reason: format!("{template:?}: {reason}"),
            })?;
        }
        Ok(())
    }
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
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            format!("{key}: {}{source}", e.kind)
        })
        .collect();
    ConfigError::Load(lines.join("; "))
}

/// A storage template must name a path inside the root that depends on the
/// id: relative, no `.`/`..` components, and containing `{id}` (a template
/// without it would delete the same file for every request).
fn check_template(template: &str) -> Result<(), &'static str> {
    if !template.contains("{id}") {
        return Err("must contain {id}");
    }
    let without_id = template.replace("{id}", "");
    if without_id.contains(['{', '}']) {
        return Err("only the placeholder {id} is known");
    }
    if without_id.contains(['\0', '\\']) {
        return Err("must not contain NUL or backslash");
    }
    if template.starts_with('/') {
        return Err("must be relative to storage.root");
    }
    // One pass over the components: `Path::components` would hide an
    // interior `.`, so split the text itself.
    for component in template.trim_end_matches('/').split('/') {
        match component {
            "" => return Err("must not contain empty path components"),
            "." => return Err("must not contain ."),
            ".." => return Err("must not contain .."),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_must_stay_inside_the_root_and_depend_on_the_id() {
        for ok in [
            "{id}",
            "{id}.mp4",
            "thumbs/{id}.jpg",
            "hls/{id}/",
            "{id}/",
            "a/b/{id}",
        ] {
            assert_eq!(check_template(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/abs/{id}",
            "../{id}",
            "a/../{id}",
            "./{id}",
            "a//{id}",
            "static.mp4",
            "{ids}",
            "{id}{x}",
        ] {
            assert!(check_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_valid_and_listen_on_the_seed_s_port() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.listen.port(), 9001);
    }
}
