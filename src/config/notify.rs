//! `webhooks` and `purge`: the sinks that hear of a request's end
//! (README, "Notifications"). Each sink is named; its name is the `sink`
//! of its events in `video_del_event`, in `/v1/events` and the metrics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Secret};

pub use crate::db::models::{CANCELLED, COMPLETED, EVENT_TYPES, FAILED};

/// One webhook receiver (Standard Webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    /// `http://` or `https://`: the only address this sink calls.
    pub url: String,
    /// `whsec_` + base64 key; a list while rotating: every key signs.
    pub secret: Secrets,
    /// The events sent (default: all of them).
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Deliveries to this receiver at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long an answer may take before the delivery counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// `secret`: one or several (rotation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Secrets {
    One(Secret),
    Several(Vec<Secret>),
}

impl Secrets {
    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        match self {
            Secrets::One(one) => std::slice::from_ref(one).iter(),
            Secrets::Several(list) => list.iter(),
        }
    }
}

/// `purge[].kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeKind {
    /// One request per URL with `method` (`PURGE`, `BAN`, ...).
    Http,
    /// Cloudflare's `purge_cache` API, `files` grouped.
    Cloudflare,
}

/// One CDN to purge after each completed deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeConfig {
    pub name: String,
    pub kind: PurgeKind,
    /// URL templates, `{id}` replaced by the video id.
    pub urls: Vec<String>,
    /// `http`: the request's method.
    #[serde(default = "default_method")]
    pub method: String,
    /// `http`: headers sent with each request (their values are secrets:
    /// they often carry a key).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `http`: most requests a second (0: no limit).
    #[serde(default = "default_per_sec")]
    pub max_per_sec: u32,
    /// `cloudflare`: the zone.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// `cloudflare`: an API token allowed to purge the zone.
    #[serde(default)]
    pub api_token: Option<Secret>,
    /// `cloudflare`: where the API is (tests point it at 127.0.0.1).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// `cloudflare`: URLs per call (Cloudflare accepts 30 on most plans).
    #[serde(default = "default_urls_per_call")]
    pub max_urls_per_call: usize,
    /// `cloudflare`: most calls a minute (the free plan allows 5).
    #[serde(default = "default_calls_per_min")]
    pub max_calls_per_min: u32,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn all_events() -> Vec<String> {
    EVENT_TYPES.iter().map(|&e| e.to_owned()).collect()
}
fn default_in_flight() -> usize {
    16
}
fn default_timeout() -> u64 {
    15
}
fn default_method() -> String {
    "PURGE".into()
}
fn default_per_sec() -> u32 {
    50
}
fn default_api_base() -> String {
    "https://api.cloudflare.com/client/v4".into()
}
fn default_urls_per_call() -> usize {
    30
}
fn default_calls_per_min() -> u32 {
    5
}

/// A sample id to check that templates make URLs.
const SAMPLE_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// Checks every sink; the error names the key (`webhooks[0].url`).
pub(super) fn validate(
    webhooks: &[WebhookConfig],
    purge: &[PurgeConfig],
) -> Result<(), ConfigError> {
    let mut names: Vec<String> = Vec::new();
    let mut named = |at: &str, name: &str| {
        if crate::video_id::VideoId::parse(name).is_err() {
            return invalid(
                format!("{at}.name"),
                format!("{name:?}: 1 to 64 characters of [A-Za-z0-9._-]"),
            );
        }
        if names.iter().any(|n| n == name) {
            return invalid(format!("{at}.name"), format!("{name:?} names two sinks"));
        }
        names.push(name.to_owned());
        Ok(())
    };
    for (i, hook) in webhooks.iter().enumerate() {
        let at = format!("webhooks[{i}]");
        named(&at, &hook.name)?;
        validate_webhook(&at, hook)?;
    }
    for (i, sink) in purge.iter().enumerate() {
        let at = format!("purge[{i}]");
        named(&at, &sink.name)?;
        validate_purge(&at, sink)?;
    }
    Ok(())
}

/// One webhook's keys but its name; `at` is its key (`webhooks[0]`).
fn validate_webhook(at: &str, hook: &WebhookConfig) -> Result<(), ConfigError> {
    check_url(&format!("{at}.url"), &hook.url)?;
    let mut secrets = hook.secret.iter().peekable();
    if secrets.peek().is_none() {
        return invalid(format!("{at}.secret"), "needs at least one secret");
    }
    for secret in secrets {
        let key = secret.expose().strip_prefix("whsec_");
        if key.is_none_or(|k| k.is_empty() || standardwebhooks::Webhook::new(k).is_err()) {
            return invalid(
                format!("{at}.secret"),
                "must be \"whsec_\" followed by a base64 key",
            );
        }
    }
    if hook.events.is_empty() {
        return invalid(format!("{at}.events"), "names no event");
    }
    if let Some(unknown) = hook
        .events
        .iter()
        .find(|e| !EVENT_TYPES.contains(&e.as_str()))
    {
        return invalid(
            format!("{at}.events"),
            format!(
                "unknown event {unknown:?} (known: {})",
                EVENT_TYPES.join(", ")
            ),
        );
    }
    in_range(at, hook.max_in_flight, hook.timeout_secs)
}

/// One purge sink's keys but its name; `at` is its key (`purge[0]`).
fn validate_purge(at: &str, sink: &PurgeConfig) -> Result<(), ConfigError> {
    if sink.urls.is_empty() {
        return invalid(format!("{at}.urls"), "needs at least one URL template");
    }
    for url in &sink.urls {
        if !url.contains("{id}") {
            return invalid(format!("{at}.urls"), format!("{url:?} has no {{id}}"));
        }
        check_url(&format!("{at}.urls"), &url.replace("{id}", SAMPLE_ID))?;
    }
    in_range(at, sink.max_in_flight, sink.timeout_secs)?;
    match sink.kind {
        PurgeKind::Http => {
            if reqwest::Method::from_bytes(sink.method.as_bytes()).is_err() {
                return invalid(format!("{at}.method"), "is not an HTTP method");
            }
            for (name, value) in &sink.headers {
                let header = reqwest::header::HeaderName::from_bytes(name.as_bytes());
                let value = reqwest::header::HeaderValue::from_str(value.expose());
                if header.is_err() || value.is_err() {
                    return invalid(format!("{at}.headers.{name}"), "is not a valid header");
                }
            }
        }
        PurgeKind::Cloudflare => {
            if sink.zone_id.as_deref().is_none_or(str::is_empty) {
                return invalid(format!("{at}.zone_id"), "is required for kind cloudflare");
            }
            if sink
                .api_token
                .as_ref()
                .is_none_or(|t| t.expose().is_empty())
            {
                return invalid(format!("{at}.api_token"), "is required for kind cloudflare");
            }
            check_url(&format!("{at}.api_base"), &sink.api_base)?;
            if !(1..=500).contains(&sink.max_urls_per_call) {
                return invalid(format!("{at}.max_urls_per_call"), "must be 1 to 500");
            }
            if sink.max_calls_per_min == 0 {
                return invalid(format!("{at}.max_calls_per_min"), "must be at least 1");
            }
        }
    }
    Ok(())
}

fn in_range(at: &str, in_flight: usize, timeout_secs: u64) -> Result<(), ConfigError> {
    if !(1..=1024).contains(&in_flight) {
        return invalid(format!("{at}.max_in_flight"), "must be 1 to 1024");
    }
    if !(1..=300).contains(&timeout_secs) {
        return invalid(format!("{at}.timeout_secs"), "must be 1 to 300");
    }
    Ok(())
}

/// An absolute `http(s)` URL with a host.
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => invalid(
            key,
            format!(
                "{url:?}: must be an http:// or https:// URL, not {}:",
                u.scheme()
            ),
        ),
        Err(e) => invalid(key, format!("{url:?}: {e}")),
    }
}

/// The config dump's view of the sinks: every secret as `***`.
pub(super) fn redact(value: &mut serde_json::Value) {
    if let Some(hooks) = value["webhooks"].as_array_mut() {
        for hook in hooks {
            hook["secret"] = match &hook["secret"] {
                serde_json::Value::Array(list) => list
                    .iter()
                    .map(|_| serde_json::Value::from("***"))
                    .collect(),
                _ => "***".into(),
            };
        }
    }
    if let Some(sinks) = value["purge"].as_array_mut() {
        for sink in sinks {
            if !sink["api_token"].is_null() {
                sink["api_token"] = "***".into();
            }
            if let Some(headers) = sink["headers"].as_object_mut() {
                headers.values_mut().for_each(|v| *v = "***".into());
            }
        }
    }
}
