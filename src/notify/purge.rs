//! CDN purges after `deletion.completed`: `http` sends `method` (`PURGE`,
//! `BAN`, ...) to each templated URL, at most `max_per_sec` requests a
//! second; `cloudflare` posts the URLs of several videos to the zone's
//! `purge_cache` as `files`, at most `max_urls_per_call` a call and
//! `max_calls_per_min` calls a minute (the notifier waits for the permit
//! before it claims a call's worth of events).

use std::sync::Arc;

use governor::DefaultDirectRateLimiter;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{describe, excerpt, status_of, Outcome};
use crate::config::{PurgeConfig, PurgeKind};
use crate::db::models::Event;

pub(super) struct Purge {
    kind: PurgeKind,
    urls: Vec<String>,
    method: reqwest::Method,
    headers: HeaderMap,
    client: reqwest::Client,
    /// `http`: per request.
    limit: Option<Arc<DefaultDirectRateLimiter>>,
    /// `cloudflare`: `{api_base}/zones/{zone_id}/purge_cache`.
    endpoint: String,
    /// `http`: events purged at once (`max_in_flight` permits).
    permits: Arc<tokio::sync::Semaphore>,
}

impl Purge {
    pub(super) fn new(
        config: &PurgeConfig,
        client: reqwest::Client,
        limit: Option<Arc<DefaultDirectRateLimiter>>,
        in_flight: usize,
    ) -> Purge {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        let mut endpoint = String::new();
        if let (PurgeKind::Cloudflare, Some(zone), Some(token)) =
            (config.kind, &config.zone_id, &config.api_token)
        {
            endpoint = format!(
                "{}/zones/{zone}/purge_cache",
                config.api_base.trim_end_matches('/')
            );
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
        }
        Purge {
            kind: config.kind,
            urls: config.urls.clone(),
            method: reqwest::Method::from_bytes(config.method.as_bytes())
                .unwrap_or(reqwest::Method::POST),
            headers,
            client,
            limit,
            endpoint,
            permits: Arc::new(tokio::sync::Semaphore::new(in_flight)),
        }
    }

    /// The URLs of one event's video.
    fn urls_of<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = String> + 'a {
        self.urls.iter().map(|t| t.replace("{id}", &event.subject))
    }

    pub(super) async fn deliver(&self, events: Vec<Event>) -> Vec<Outcome> {
        match self.kind {
            PurgeKind::Http => {
                futures_util::future::join_all(events.iter().map(|e| self.purge_one(e))).await
            }
            PurgeKind::Cloudflare => vec![self.cloudflare(&events).await],
        }
    }

    /// Every URL of one event; it is purged when each answered 2xx, or 404
    /// (not in the cache: a cache-purge module's answer for what it does not
    /// hold).
    async fn purge_one(&self, event: &Event) -> Outcome {
        let _permit = self.permits.acquire().await.expect("never closed");
        let ids = vec![event.id];
        let mut status = None;
        for url in self.urls_of(event) {
            if let Some(limit) = &self.limit {
                limit.until_ready().await;
            }
            let sent = self
                .client
                .request(self.method.clone(), &url)
                .headers(self.headers.clone())
                .send()
                .await;
            match sent {
                Ok(answer)
                    if answer.status().is_success()
                        || answer.status() == reqwest::StatusCode::NOT_FOUND =>
                {
                    status = status_of(answer.status());
                }
                Ok(answer) => {
                    let code = answer.status();
                    let text = answer.text().await.unwrap_or_default();
                    let url = without_query(&url);
                    return Outcome::Failed {
                        ids,
                        status: status_of(code),
                        error: format!("{} {url} answered {code}: {}", self.method, excerpt(&text)),
                    };
                }
                Err(e) => {
                    return Outcome::Failed {
                        ids,
                        status: None,
                        error: format!("{} {}: {}", self.method, without_query(&url), describe(&e)),
                    }
                }
            }
        }
        Outcome::Delivered { ids, status }
    }

    /// One `purge_cache` call for every URL of `events`.
    async fn cloudflare(&self, events: &[Event]) -> Outcome {
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        let files: Vec<String> = events.iter().flat_map(|e| self.urls_of(e)).collect();
        let sent = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "files": files }).to_string())
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => {
                return Outcome::Failed {
                    ids,
                    status: None,
                    error: format!("purge_cache: {}", describe(&e)),
                }
            }
        };
        let code = answer.status();
        let text = answer.text().await.unwrap_or_default();
        let success = serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|v| v["success"] == serde_json::Value::Bool(true));
        match code.is_success() && success {
            true => Outcome::Delivered {
                ids,
                status: status_of(code),
            },
            false => Outcome::Failed {
                ids,
                status: status_of(code),
                error: format!("purge_cache answered {code}: {}", excerpt(&text)),
            },
        }
    }
}

/// A URL for `last_error` and the log: its query left out (it may carry a
/// key).
fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}
