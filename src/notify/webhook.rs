//! Webhooks per the Standard Webhooks specification: each event posted as
//! `{"type", "timestamp", "data"}` with `webhook-id` (`evt_` + the event's
//! id: the same on every retry, so a receiver can drop a duplicate),
//! `webhook-timestamp` (when this try was sent, which receivers check
//! against replays) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
//! id.timestamp.body>`, one per configured secret while they rotate).

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{describe, excerpt, status_of, Outcome};
use crate::config::WebhookConfig;
use crate::db::models::Event;

pub(super) struct Webhook {
    url: String,
    keys: Vec<standardwebhooks::Webhook>,
    client: reqwest::Client,
    /// Requests at once: `max_in_flight` permits.
    permits: Arc<Semaphore>,
}

impl Webhook {
    pub(super) fn new(
        config: &WebhookConfig,
        in_flight: usize,
        client: reqwest::Client,
    ) -> Webhook {
        let keys = config
            .secret
            .iter()
            .map(|s| {
                let key = s.expose().strip_prefix("whsec_").unwrap_or(s.expose());
                standardwebhooks::Webhook::new(key).expect("checked by the config")
            })
            .collect();
        Webhook {
            url: config.url.clone(),
            keys,
            client,
            permits: Arc::new(Semaphore::new(in_flight)),
        }
    }

    /// Posts the events, at most `max_in_flight` at once for the sink
    /// (whatever the claims they came in).
    pub(super) async fn deliver(&self, events: Vec<Event>) -> Vec<Outcome> {
        futures_util::future::join_all(events.iter().map(|e| self.post(e))).await
    }

    async fn post(&self, event: &Event) -> Outcome {
        let _permit = self.permits.acquire().await.expect("never closed");
        let id = message_id(event.id);
        let body = body(event);
        let timestamp = crate::clock::now_ms() / 1000;
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|key| {
                key.sign(&id, timestamp, body.as_bytes())
                    .expect("UTF-8 body")
            })
            .collect();
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(body)
            .send()
            .await;
        let ids = vec![event.id];
        match sent {
            Ok(answer) if answer.status().is_success() => Outcome::Delivered {
                ids,
                status: status_of(answer.status()),
            },
            Ok(answer) => {
                let status = answer.status();
                let text = answer.text().await.unwrap_or_default();
                Outcome::Failed {
                    ids,
                    status: status_of(status),
                    error: format!("answered {status}: {}", excerpt(&text)),
                }
            }
            Err(e) => Outcome::Failed {
                ids,
                status: None,
                error: describe(&e),
            },
        }
    }
}

/// The `webhook-id` of an event.
pub(crate) fn message_id(event: i64) -> String {
    format!("evt_{event}")
}

/// The body: `{"type", "timestamp", "data"}`, `data` as stored.
pub(crate) fn body(event: &Event) -> String {
    format!(
        r#"{{"type":{},"timestamp":{},"data":{}}}"#,
        serde_json::Value::from(event.kind.as_str()),
        serde_json::Value::from(crate::schedule::rfc3339(event.occurred_at)),
        event.data
    )
}
