//! Bare requests, for the benchmark's reference loop: the scheduler's own
//! ListObjectVersions and versioned DeleteObjects (same client, signer and
//! parsers), without a queue, a database, retries or per-video
//! bookkeeping. What the scheduler adds on top is then what a comparison
//! with this loop measures.

use std::time::Duration;

use super::delete::{self, Answer, Entry};
use super::{client::Client, connect, versions};
use crate::config::StorageConfig;
use crate::storage::OpenError;

/// A bucket's client for bare requests.
pub struct RawClient {
    client: Client,
}

impl RawClient {
    /// The client the scheduler would build for `config`.
    pub fn new(config: &StorageConfig) -> Result<RawClient, OpenError> {
        let (client, _, _) = connect(config, Duration::from_secs(30))?;
        Ok(RawClient { client })
    }

    /// Every version and delete marker under `prefix`: `(key, version id)`.
    pub async fn versions(&self, prefix: &str) -> Result<Vec<(String, String)>, String> {
        let mut found = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let from = after.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
            let page = versions::page(&self.client, prefix, from)
                .await
                .map_err(|e| e.reason)?;
            found.extend(page.entries.into_iter().map(|e| (e.key, e.version_id)));
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(found),
            }
        }
    }

    /// Deletes these versions (at most 1,000) in one DeleteObjects; an
    /// error if any was not deleted.
    pub async fn delete_versions(&self, versions: &[(String, String)]) -> Result<(), String> {
        let entries: Vec<Entry<'_>> = versions
            .iter()
            .map(|(key, version)| Entry {
                key,
                version_id: Some(version),
            })
            .collect();
        let answers = delete::delete(&self.client, &entries, false)
            .await
            .map_err(|e| e.reason)?;
        match answers.into_iter().find_map(|a| match a {
            Answer::Failed(reason) => Some(reason),
            Answer::Deleted { .. } => None,
        }) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}
