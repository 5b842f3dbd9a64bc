//! `bench --notify`: the notifications' figures (README, "Notifications"),
//! each beside its reference, against a receiver in the benchmark's own
//! process that answers every request 200 at once.
//!
//! Per backend, in one run:
//!
//! 1. **Drain with sinks**: `--n` due ids with files, drained with one
//!    webhook sink and one `http` purge sink (one URL template, `max_per_sec:
//!    0`, the other keys at their defaults: 16 in flight each), against the
//!    same drain without sinks, alternating, `--drain-runs` times each;
//!    medians. A drain ends when every row is gone (as in
//!    [`measure::drain`]); the **outbox lag** is the time from that end until
//!    `GET /v1/events/sinks` (polled every 10 ms) shows no pending event for
//!    any sink: every event delivered and its outcome written.
//! 2. **Delivery rate**: [`delivery`].
//! 3. **Latency**: [`latency`].
//!
//! Every run checks that the receiver got each event (each purge URL) and
//! nothing malformed, that no event died and that no file is left.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper_util::rt::TokioIo;
use video_scheduler::clock::now_ms;
use video_scheduler::config::{PurgeConfig, WebhookConfig};
use video_scheduler::db::Backend;

use crate::measure::{self, ids, percentile, Fixture, Setup};
use crate::server::Server;

/// What `--notify` measures, from the command line.
pub struct Params {
    /// Ids per drain.
    pub n: usize,
    /// Drains with sinks and without, each.
    pub drain_runs: usize,
    /// Ids (so events) of the delivery run.
    pub events: usize,
    /// Seconds of recording at 1,000 deletions/s for the latency.
    pub secs: u64,
    /// For the table's header: the server's `batch_size` and `executors`.
    pub batch_size: usize,
    pub executors: usize,
}

/// One backend's figures.
#[derive(Debug, Default)]
pub struct Figures {
    /// Median drain with both sinks, deletions/s.
    pub drain_with: f64,
    /// Median drain without sinks, deletions/s.
    pub drain_without: f64,
    /// Median outbox lag of the drains with sinks, seconds.
    pub outbox_lag: f64,
    /// Webhook events received per second ([`delivery`]).
    pub delivery: f64,
    /// Ack to webhook received, ms ([`latency`]).
    pub latency_p50: f64,
    pub latency_p99: f64,
}

/// Every `--notify` figure on one backend.
pub fn measure(setup: &Setup, p: &Params) -> anyhow::Result<Figures> {
    let (mut with, mut without, mut lags) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..p.drain_runs {
        let (rate, lag) = drain_with_sinks(setup, p.n)?;
        with.push(rate);
        lags.push(lag);
        without.push(measure::drain(setup, p.n, true)?.1);
    }
    let runs = |v: &[f64]| v.iter().map(|r| *r as u64).collect::<Vec<_>>();
    eprintln!(
        "drain: {:.0}/s with a webhook and a purge sink, {:.0}/s without; outbox empty {:.2} s \
         after the drain (runs {:?} / {:?}, lags {:?})",
        median(&with),
        median(&without),
        median(&lags),
        runs(&with),
        runs(&without),
        lags
    );
    let delivery = delivery(setup, p.events)?;
    eprintln!(
        "webhook delivery: {delivery:.0} events/s ({} events, max_in_flight {DELIVERY_IN_FLIGHT})",
        p.events
    );
    let (latency_p50, latency_p99) = latency(setup, p.secs)?;
    eprintln!("ack -> webhook received: p50 {latency_p50:.1} ms, p99 {latency_p99:.1} ms");
    Ok(Figures {
        drain_with: median(&with),
        drain_without: median(&without),
        outbox_lag: median(&lags),
        delivery,
        latency_p50,
        latency_p99,
    })
}

/// The median as the other drains take it (the upper one of an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One drain of `n` ids with a webhook and an `http` purge sink. Returns
/// (deletions/s, outbox lag in seconds).
fn drain_with_sinks(setup: &Setup, n: usize) -> anyhow::Result<(f64, f64)> {
    let receiver = Receiver::start()?;
    let mut fx = Fixture::new(setup)?;
    fx.config.webhooks = vec![webhook(receiver.addr, None)?];
    fx.config.purge = vec![purge(receiver.addr)?];
    let ids = ids("drain", n);
    fx.create_files(&ids)?;
    fx.queue(&ids, now_ms())?;
    let start = Instant::now();
    let server = fx.start(setup)?;
    fx.wait_drained(start)?;
    let drained = Instant::now();
    let empty = wait_outbox_empty(&server, drained + DEADLINE)?;
    server.stop()?;
    ensure!(no_files(&fx)?, "rows gone but files left");
    receiver.expect(n, n)?;
    let secs = drained.duration_since(start).as_secs_f64();
    Ok((n as f64 / secs, empty.duration_since(drained).as_secs_f64()))
}

/// Webhook deliveries at once in [`delivery`].
const DELIVERY_IN_FLIGHT: usize = 64;

/// Delivery rate: `events` due ids with files, drained with the webhook
/// sink only (`max_in_flight` 64) from the server's start. The rate is the
/// number of distinct events the receiver answered (200) divided by the
/// time between the first and the last it received (receiver's clock), in
/// events/s: the delivery's own pace, whether or not the drain was still
/// under way when it began. Returns events/s.
pub fn delivery(setup: &Setup, events: usize) -> anyhow::Result<f64> {
    let receiver = Receiver::start()?;
    let mut fx = Fixture::new(setup)?;
    fx.config.webhooks = vec![webhook(receiver.addr, Some(DELIVERY_IN_FLIGHT))?];
    let ids = ids("hook", events);
    fx.create_files(&ids)?;
    fx.queue(&ids, now_ms())?;
    let start = Instant::now();
    let server = fx.start(setup)?;
    fx.wait_drained(start)?;
    wait_outbox_empty(&server, Instant::now() + DEADLINE)?;
    server.stop()?;
    ensure!(no_files(&fx)?, "rows gone but files left");
    receiver.expect(events, 0)?;
    let log = receiver.log.lock().unwrap();
    let times = log
        .hits
        .iter()
        .filter(|h| h.webhook_id.is_some())
        .map(|h| h.at_ms);
    let first = times.clone().fold(f64::INFINITY, f64::min);
    let last = times.fold(f64::NEG_INFINITY, f64::max);
    ensure!(
        last > first,
        "all {events} events received in the same instant"
    );
    Ok(events as f64 / ((last - first) / 1000.0))
}

/// Ids per `POST /v1/deletions` in [`latency`], one every 100 ms.
const LATENCY_BATCH: usize = 100;

/// Latency: `secs` seconds of `POST /v1/deletions` of 100 ids due now
/// every 100 ms (1,000 deletions/s, each id with a file), the webhook sink
/// only (its defaults: 16 in flight). For each event (its first receipt),
/// the wall clock when the receiver had read it, in ms, minus its
/// `data.completed_at` (the ack's time, RFC 3339 with ms). Returns (p50 ms,
/// p99 ms).
pub fn latency(setup: &Setup, secs: u64) -> anyhow::Result<(f64, f64)> {
    let receiver = Receiver::start()?;
    let mut fx = Fixture::new(setup)?;
    fx.config.webhooks = vec![webhook(receiver.addr, None)?];
    let ids = ids("lat", secs as usize * 1000);
    fx.create_files(&ids)?;
    let server = fx.start(setup)?;
    let agent = ureq::Agent::new();
    let url = server.url("/v1/deletions");
    let start = Instant::now();
    for (i, chunk) in ids.chunks(LATENCY_BATCH).enumerate() {
        let due = start + Duration::from_millis(100 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let answer: serde_json::Value = agent
            .post(&url)
            .send_json(serde_json::json!({ "ids": chunk }))?
            .into_json()?;
        ensure!(answer["accepted"] == chunk.len(), "answered {answer}");
    }
    let late = start.elapsed().as_secs_f64() - (ids.len() / LATENCY_BATCH) as f64 / 10.0;
    if late > 0.5 {
        eprintln!("latency: the posts ended {late:.1} s late; the rate was below 1,000/s");
    }
    fx.wait_drained(start)?;
    wait_outbox_empty(&server, Instant::now() + DEADLINE)?;
    server.stop()?;
    ensure!(no_files(&fx)?, "rows gone but files left");
    receiver.expect(ids.len(), 0)?;
    let log = receiver.log.lock().unwrap();
    let mut seen = HashSet::new();
    let mut latencies = Vec::with_capacity(ids.len());
    for hit in &log.hits {
        let Some(id) = &hit.webhook_id else { continue };
        if !seen.insert(id) {
            continue;
        }
        let body: serde_json::Value = serde_json::from_slice(&hit.body)?;
        let completed = body["data"]["completed_at"]
            .as_str()
            .with_context(|| format!("no data.completed_at in {body}"))?;
        let completed = chrono::DateTime::parse_from_rfc3339(completed)
            .with_context(|| format!("completed_at {completed:?}"))?;
        latencies.push(hit.at_ms - completed.timestamp_millis() as f64);
    }
    latencies.sort_by(f64::total_cmp);
    Ok((percentile(&latencies, 0.50), percentile(&latencies, 0.99)))
}

/// How long a drain's events may take to be delivered.
const DEADLINE: Duration = Duration::from_secs(600);

/// A webhook sink to the receiver (`max_in_flight` at its default when
/// `None`).
fn webhook(addr: SocketAddr, in_flight: Option<usize>) -> anyhow::Result<WebhookConfig> {
    let mut json = serde_json::json!({
        "name": "hook",
        "url": format!("http://{addr}/hook"),
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    });
    if let Some(n) = in_flight {
        json["max_in_flight"] = n.into();
    }
    Ok(serde_json::from_value(json)?)
}

/// An `http` purge sink to the receiver, one URL per id, no rate limit.
fn purge(addr: SocketAddr) -> anyhow::Result<PurgeConfig> {
    Ok(serde_json::from_value(serde_json::json!({
        "name": "cdn",
        "kind": "http",
        "urls": [format!("http://{addr}/v/{{id}}.mp4")],
        "max_per_sec": 0,
    }))?)
}

/// Polls `/v1/events/sinks` every 10 ms until no sink has a pending event;
/// a dead event fails the run. Returns when it saw the outbox empty.
fn wait_outbox_empty(server: &Server, deadline: Instant) -> anyhow::Result<Instant> {
    let agent = ureq::Agent::new();
    let url = server.url("/v1/events/sinks");
    loop {
        let sinks: serde_json::Value = agent.get(&url).call()?.into_json()?;
        let list = sinks.as_array().context("/v1/events/sinks is not a list")?;
        if let Some(sink) = list.iter().find(|s| s["dead"].as_i64() != Some(0)) {
            bail!("dead events (or no count): {sink}");
        }
        if list.iter().all(|s| s["pending"].as_i64() == Some(0)) {
            return Ok(Instant::now());
        }
        ensure!(Instant::now() < deadline, "events still pending: {sinks}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn no_files(fx: &Fixture) -> anyhow::Result<bool> {
    Ok(std::fs::read_dir(fx.root())?.next().is_none())
}

/// Now, ms since the epoch, with µs in the fraction.
fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One request the receiver answered (200).
struct Hit {
    /// When its body was read, ms since the epoch.
    at_ms: f64,
    /// A webhook's `webhook-id`; `None` for a purge.
    webhook_id: Option<String>,
    body: Bytes,
}

#[derive(Default)]
struct Log {
    hits: Vec<Hit>,
    /// Distinct webhook ids, and distinct purged paths.
    events: HashSet<String>,
    purged: HashSet<String>,
    /// Webhooks without the Standard Webhooks headers, other requests.
    malformed: Vec<String>,
}

/// The sinks' receiver: HTTP/1.1 with keep-alive on its own runtime of
/// four threads, answering 200 with an empty body once it has read the
/// request. `POST /hook` is the webhook, `PURGE /v/{id}.mp4` the purge.
struct Receiver {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    /// Serves the requests; dropped with the receiver.
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> anyhow::Result<Receiver> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("bench-receiver")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let log = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| answer(r, log.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            addr,
            log,
            _runtime: runtime,
        })
    }

    /// Fails unless `events` distinct webhook events and `purges` distinct
    /// purge URLs arrived, and nothing malformed.
    fn expect(&self, events: usize, purges: usize) -> anyhow::Result<()> {
        let log = self.log.lock().unwrap();
        if let Some(first) = log.malformed.first() {
            bail!("{} malformed requests, first: {first}", log.malformed.len());
        }
        ensure!(
            log.events.len() == events && log.purged.len() == purges,
            "received {} events and {} purges, not {events} and {purges}",
            log.events.len(),
            log.purged.len()
        );
        let duplicates = log.hits.len() - events - purges;
        if duplicates > 0 {
            eprintln!("(the receiver got {duplicates} duplicates: at-least-once delivery)");
        }
        Ok(())
    }
}

/// Reads the request, logs it and answers 200.
async fn answer(
    request: hyper::Request<Incoming>,
    log: Arc<Mutex<Log>>,
) -> Result<hyper::Response<String>, hyper::Error> {
    let (parts, mut body) = request.into_parts();
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    let at_ms = wall_ms();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let path = parts.uri.path();
    let mut log = log.lock().unwrap();
    match (parts.method.as_str(), path) {
        ("POST", "/hook")
            if header("webhook-timestamp").is_some()
                && header("webhook-signature").is_some_and(|s| s.starts_with("v1,")) =>
        {
            if let Some(id) = header("webhook-id") {
                log.events.insert(id.to_owned());
                log.hits.push(Hit {
                    at_ms,
                    webhook_id: Some(id.to_owned()),
                    body: Bytes::from(bytes),
                });
            } else {
                log.malformed.push("a webhook without webhook-id".into());
            }
        }
        ("PURGE", p) if p.starts_with("/v/") && p.ends_with(".mp4") => {
            log.purged.insert(p.to_owned());
            log.hits.push(Hit {
                at_ms,
                webhook_id: None,
                body: Bytes::new(),
            });
        }
        (method, p) => log.malformed.push(format!("{method} {p}")),
    }
    Ok(hyper::Response::new(String::new()))
}

/// The figures as a Markdown table, without the machine or the date (the
/// caller adds them).
pub fn table(p: &Params, results: &[(Backend, Figures)]) -> String {
    type Row = (&'static str, &'static str, fn(&Figures) -> String);
    let rows: [Row; 6] = [
        (
            "drain with a webhook and an http purge sink, deletions/s",
            "",
            |f| format!("{:.0}", f.drain_with),
        ),
        ("drain without sinks, deletions/s", "", |f| {
            format!("{:.0}", f.drain_without)
        }),
        ("drain with / without sinks", ">= 0.9", |f| {
            format!("{:.2}", f.drain_with / f.drain_without)
        }),
        ("outbox empty after the drain's end, s", "", |f| {
            format!("{:.2}", f.outbox_lag)
        }),
        (
            "webhook delivery (max_in_flight 64), events/s",
            ">= 5,000",
            |f| format!("{:.0}", f.delivery),
        ),
        (
            "ack -> webhook received at 1,000 deletions/s, p50 / p99 ms",
            "p99 < 100",
            |f| format!("{:.1} / {:.1}", f.latency_p50, f.latency_p99),
        ),
    ];
    let mut out = format!(
        "n = {} per drain, {} drains with sinks and {} without (medians), {} events delivered, \
         latency over {} s at 1,000 deletions/s; batch_size = {}, executors = {}.\n\n\
         | measure | target |",
        p.n, p.drain_runs, p.drain_runs, p.events, p.secs, p.batch_size, p.executors
    );
    for (backend, _) in results {
        let _ = write!(out, " {backend:?} |");
    }
    out += "\n| --- | --- |";
    for _ in results {
        out += " ---: |";
    }
    out.push('\n');
    for (name, target, value) in rows {
        let _ = write!(out, "| {name} | {target} |");
        for (_, figures) in results {
            let _ = write!(out, " {} |", value(figures));
        }
        out.push('\n');
    }
    out
}
