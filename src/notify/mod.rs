//! The sinks of the outbox (README, "Notifications"): what delivering a
//! claimed set of events to one sink does. A webhook posts each event,
//! signed per Standard Webhooks (`webhook.rs`); a purge sink asks a CDN to
//! forget each erased video's URLs (`purge.rs`: one request per URL, or
//! Cloudflare's `purge_cache` with URLs grouped). The NotifierActor
//! (`pipeline/notifier.rs`) claims, calls [`Sink::deliver`] and writes the
//! outcome.
//!
//! Only the URLs of the configuration are called: an event carries a video
//! id and data, never an address. Secrets and tokens go into headers and
//! nowhere else (no log line, no error, no event's `last_error`).

mod purge;
mod webhook;

pub(crate) use webhook::message_id;

use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{Config, PurgeConfig, PurgeKind};
use crate::db::models::Event;

/// One configured sink, ready to deliver.
pub(crate) struct Sink {
    pub name: String,
    /// Events claimed ahead by this instance and not yet written back.
    pub capacity: usize,
    /// Events per claim.
    pub per_claim: usize,
    /// How long a claimed event stays leased to this instance: its
    /// delivery (waits for the rate limit included) ends well before.
    pub lease: Duration,
    /// Waited on before each claim (Cloudflare: one call per claim).
    pub per_claim_limit: Option<Arc<DefaultDirectRateLimiter>>,
    kind: Kind,
}

enum Kind {
    Webhook(webhook::Webhook),
    Purge(purge::Purge),
}

/// What a delivery found for some of its events.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Delivered: the receiver answered 2xx (`status`).
    Delivered { ids: Vec<i64>, status: Option<i32> },
    /// Not delivered: to be tried again (or dead).
    Failed {
        ids: Vec<i64>,
        status: Option<i32>,
        error: String,
    },
}

impl Sink {
    /// Every sink of `config`, with one HTTP client per sink (its own
    /// connection pool and timeout).
    pub(crate) fn all(config: &Config) -> Vec<Arc<Sink>> {
        let client = |timeout_secs: u64, in_flight: usize| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(timeout_secs))
                .connect_timeout(Duration::from_secs(timeout_secs.min(5)))
                .pool_max_idle_per_host(in_flight)
                // Never follow a receiver elsewhere: only configured URLs
                // are called.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("video-scheduler/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("an HTTP client with rustls builds")
        };
        let mut sinks = Vec::new();
        for hook in &config.webhooks {
            sinks.push(Arc::new(Sink {
                name: hook.name.clone(),
                capacity: 2 * ahead(hook.max_in_flight),
                per_claim: ahead(hook.max_in_flight),
                lease: lease(
                    hook.timeout_secs,
                    (2 * ahead(hook.max_in_flight)).div_ceil(hook.max_in_flight),
                    Duration::ZERO,
                ),
                per_claim_limit: None,
                kind: Kind::Webhook(webhook::Webhook::new(
                    hook,
                    hook.max_in_flight,
                    client(hook.timeout_secs, hook.max_in_flight),
                )),
            }));
        }
        for sink in &config.purge {
            let http = client(sink.timeout_secs, sink.max_in_flight);
            sinks.push(Arc::new(Sink::purge(sink, http)));
        }
        sinks
    }

    /// A purge sink: its claims, lease and rate limits.
    fn purge(sink: &PurgeConfig, http: reqwest::Client) -> Sink {
        let (per_claim, rounds, waits, per_claim_limit, limit) = match sink.kind {
            PurgeKind::Http => {
                let per_claim = ahead(sink.max_in_flight);
                let limit = (sink.max_per_sec > 0).then(|| {
                    let per_sec = std::num::NonZeroU32::new(sink.max_per_sec).expect("above 0");
                    Arc::new(RateLimiter::direct(Quota::per_second(per_sec)))
                });
                // Every URL of the two claims it may hold, at the rate
                // allowed.
                let urls = (2 * per_claim * sink.urls.len()) as u64;
                let waits = match sink.max_per_sec {
                    0 => Duration::ZERO,
                    n => Duration::from_millis(urls * 1000 / u64::from(n)),
                };
                let rounds = (2 * per_claim).div_ceil(sink.max_in_flight) * sink.urls.len();
                (per_claim, rounds, waits, None, limit)
            }
            PurgeKind::Cloudflare => {
                // A call's worth of events: its URLs fill one call.
                let per_claim = (sink.max_urls_per_call / sink.urls.len()).max(1);
                // At most `max_calls_per_min` calls in any minute: one
                // permit, replenished every 60 s / n (a burst of n would
                // allow almost 2n in a minute).
                let period = Duration::from_millis(60_000 / u64::from(sink.max_calls_per_min) + 1);
                let limit = Quota::with_period(period).expect("a period above 0");
                (
                    per_claim,
                    1,
                    Duration::ZERO,
                    Some(Arc::new(RateLimiter::direct(limit))),
                    None,
                )
            }
        };
        Sink {
            name: sink.name.clone(),
            capacity: match sink.kind {
                PurgeKind::Http => 2 * per_claim,
                PurgeKind::Cloudflare => per_claim * sink.max_in_flight,
            },
            per_claim,
            lease: lease(sink.timeout_secs, rounds, waits),
            per_claim_limit,
            kind: Kind::Purge(purge::Purge::new(sink, http, limit, sink.max_in_flight)),
        }
    }

    /// Delivers `events` (claimed for this sink): what happened to each.
    pub(crate) async fn deliver(&self, events: Vec<Event>) -> Vec<Outcome> {
        match &self.kind {
            Kind::Webhook(hook) => hook.deliver(events).await,
            Kind::Purge(purge) => purge.deliver(events).await,
        }
    }
}

/// The outbox's sinks of `config`: which events each wants.
pub(crate) fn outbox_sinks(config: &Config) -> crate::db::queries::events::Sinks {
    let webhooks: Vec<(String, Vec<String>)> = config
        .webhooks
        .iter()
        .map(|h| (h.name.clone(), h.events.clone()))
        .collect();
    let purges: Vec<String> = config.purge.iter().map(|p| p.name.clone()).collect();
    crate::db::queries::events::Sinks::new(&webhooks, &purges)
}

/// Most events claimed at once for one sink.
const MAX_PER_CLAIM: usize = 200;

/// Events a sink claims at once: four of its requests at once, so that
/// claims and the writes of their outcomes are few (one each per claim),
/// at most [`MAX_PER_CLAIM`]. A sink holds at most two claims' worth, so
/// that one is claimed while the other is delivered.
fn ahead(in_flight: usize) -> usize {
    (4 * in_flight).min(MAX_PER_CLAIM)
}

/// A claim's lease: for each of its `rounds` of requests (its events over
/// the requests at once), twice the answer's timeout (connect and answer);
/// the rate limit's waits; and 5 s for the outcome's write.
fn lease(timeout_secs: u64, rounds: usize, waits: Duration) -> Duration {
    Duration::from_secs(2 * timeout_secs * rounds as u64 + 5) + waits
}

/// An HTTP status as stored (`last_status`).
fn status_of(status: reqwest::StatusCode) -> Option<i32> {
    Some(i32::from(status.as_u16()))
}

/// A request's error for `last_error`: what went wrong, without the URL's
/// query (reqwest's message names the URL, whose query may hold a key).
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "no answer within the timeout"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "redirected (redirects are not followed)"
    } else if error.is_body() || error.is_decode() {
        "the answer's body could not be read"
    } else {
        "the request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut cause = String::new();
    while let Some(e) = source {
        cause = e.to_string();
        source = e.source();
    }
    match cause.is_empty() {
        true => what.to_owned(),
        false => format!("{what}: {cause}"),
    }
}

/// The first bytes of an answer's body, for `last_error`.
fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let mut end = body.len().min(MAX);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].trim().to_owned()
}
