//! video-scheduler: a durable deletion scheduler for a video platform.
//!
//! Upload and management services record "video X is deleted"; the request
//! is committed to the `video_del_rec` table, and an actor pipeline erases
//! the video's files in the background, in batches, with retries, on every
//! configured storage target, and writes a receipt when nothing is left.
//!
//! # One id's path
//!
//! 1. HTTP handler ([`http`]: `seed.rs`, `deletions.rs`) validates the id
//!    ([`video_id`]) and sends `Record` to the `RecordActor`
//!    (`pipeline/record.rs`).
//! 2. RecordActor group-commits it into `video_del_rec`
//!    ([`db::queries::record`]), answers the caller, and nudges the
//!    dispatcher when it is due now; or, while executors are free (the
//!    fast lane), inserts it already leased and hands it to the
//!    dispatcher in memory (`Leased`), skipping step 3's claim.
//! 3. TimerActor (`pipeline/timer.rs`) ticks the DispatcherActor
//!    (`pipeline/dispatcher.rs`; its decisions in `pipeline/dispatch.rs`),
//!    which claims due ids with a lease ([`db::queries::claim`]), urgent
//!    ones first.
//! 4. ExecutorActor (`pipeline/executor.rs`) runs `pipeline/batch.rs`: the
//!    id's paths (`paths`: templates and request-named paths) are erased
//!    on every target of the storage (`storage`: local disk, S3).
//! 5. The batch is acked in one transaction ([`db::queries::ack`]): the row
//!    deleted with its receipt (counts per target, [`erasure`]), or
//!    rescheduled ([`pipeline::retry`]); the same transaction writes the
//!    outbox: one announcement per group of removed rows
//!    ([`db::queries::announce`]), the events of requests failed for good
//!    ([`db::queries::events`]).
//! 6. NotifierActor (`pipeline/notifier.rs`) makes the announcements into
//!    events (one per id and sink), claims the events and delivers them
//!    (`notify`: signed webhooks, CDN purges), yielding to a backlog's
//!    drain.
//!
//! # Modules
//! Leaves (they import nothing of the crate, every layer may import them):
//! [`clock`] (`now_ms`), [`video_id`], [`erasure`] (what an erasure found),
//! `paths` (templates and request paths), [`schedule`] (delays and RFC 3339).
//!
//! - [`config`]: conf.json + `VIDEO_SCHEDULER_*`, checked; `storage` one
//!   target or a list. Knows the database only by its URL ([`db::url`]).
//! - [`db`]: pools, migrations, the outage tracker, what a failure means
//!   (`failure`), write conflicts (`conflicts`), the URL; all SQL in
//!   [`db::queries`], one file per job (record, claim, ack, manage, counts,
//!   receipts, controls, announce, events, vacuum).
//! - `storage`: `Storage` (every target), the `Target` trait, local disk
//!   (`storage/local.rs`: paths beneath a root, never escaping it), S3
//!   (`storage/s3/`, feature `s3`: one file per request kind; versioned
//!   buckets purged or hidden, as configured).
//! - [`pipeline`]: the actors, one per file with their messages.
//! - `notify`: the outbox's sinks (`webhook.rs`: Standard Webhooks signed
//!   posts; `purge.rs`: HTTP purges and Cloudflare's `purge_cache`).
//! - [`http`]: routes, one file per resource, auth, limits; `error` maps
//!   errors to HTTP once; `views` is what a request looks like.
//! - `metrics` (Prometheus, `/metrics`), `activity` (the dashboard's
//!   chart), `logging` (env_logger, protocol errors demoted).
//! - [`cli`]: the commands `serve` (default), `migrate`, `enqueue`,
//!   `stats [--recount]`, `retry --failed`, `cancel --failed|--invalid`,
//!   `pause`, `resume`, `receipts [--since] [--until]`, `events [--dead]`,
//!   `redeliver ID|--dead`, `config`.
//!
//! # Public surface
//! What the binary, the benchmark (`bench/`) and the tests use; everything
//! else is `pub(crate)` or narrower (`unreachable_pub` is on):
//! [`start`] / [`Running`] / [`StartError`], [`cli::main`], [`config`]
//! ([`config::Config`] and its storage types), [`clock::now_ms`],
//! [`db::Db`] and [`db::Backend`], the queries and rows the tests drive
//! ([`db::queries`], [`db::models`], [`db::schema`]), [`erasure`],
//! [`video_id::VideoId`], [`schedule::MAX_DELAY_SECS`],
//! [`pipeline::retry::RetryPolicy`], [`http::route_table`] and
//! [`http::OPEN_ROUTES`], [`OpenError`] (why a storage target refused to
//! open), and the benchmark's bare S3 client (`RawClient`, feature `s3`).

#![warn(unreachable_pub)]

pub(crate) mod activity;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod erasure;
pub(crate) mod error;
pub mod http;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod paths;
pub mod pipeline;
pub mod schedule;
pub(crate) mod storage;
pub mod video_id;

#[cfg(feature = "s3")]
pub use storage::s3::raw::RawClient;
pub use storage::OpenError;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use config::Config;
use db::Db;
use http::AppState;
use pipeline::Pipeline;

/// A server that has bound its port and started its pipeline.
pub struct Running {
    addr: SocketAddr,
    server: Server,
    pipeline: Pipeline,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Storage(#[from] storage::OpenError),
    #[error("listen {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// Opens the database, migrates it, opens the storage, binds the port, then
/// starts the pipeline and the HTTP server. Everything that can fail is done
/// before any actor starts, so a failed start has nothing to tear down.
/// Must run inside an actix system (`actix_web::rt::System`).
pub async fn start(config: Config) -> Result<Running, StartError> {
    let db = Db::connect(&config.database_url, config.pool_size)?
        .requiring_synchronous_replication(config.require_synchronous_replication);
    let migrator = db.clone();
    let applied = actix_web::rt::task::spawn_blocking(move || migrator.migrate())
        .await
        .map_err(|e| db::DbError::Migration(e.to_string()))??;
    for name in applied {
        log::info!("applied migration {name}");
    }
    // Opening an S3 target reads its bucket's versioning: off the reactor.
    let opening = config.clone();
    let storage = Arc::new(
        actix_web::rt::task::spawn_blocking(move || storage::open(&opening))
            .await
            .map_err(|e| storage::OpenError {
                key: "kind",
                reason: format!("opening the storage failed: {e}"),
                refused: false,
            })??,
    );
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|error| StartError::Bind {
            addr: config.listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| StartError::Bind {
        addr: config.listen,
        error,
    })?;
    let metrics = Arc::new(metrics::Metrics::new());
    let pipeline = Pipeline::start(db.clone(), storage.clone(), metrics.clone(), &config);
    let state = web::Data::new(AppState {
        db,
        storage: storage.clone(),
        record: pipeline.record.clone(),
        metrics,
        tokens: config.api_tokens.clone().into(),
        request_timeout: Duration::from_millis(config.client_request_timeout_ms),
        record_timeout: Duration::from_millis(config.record_timeout_ms),
        access_log: config.access_log,
        instance: pipeline.owner.clone(),
        sinks: Arc::new(notify::outbox_sinks(&config)),
    });
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(http::json_errors_under_v1))
            .wrap(from_fn(http::authenticate))
            .wrap(from_fn(http::request_deadline))
            .wrap(from_fn(http::request_id::assign))
            .configure(http::routes)
    })
    .workers(workers)
    // actix counts connections per worker thread.
    .max_connections(config.max_connections.div_ceil(workers))
    // The head; `http::request_deadline` bounds the body with the same time.
    .client_request_timeout(Duration::from_millis(config.client_request_timeout_ms))
    .shutdown_timeout(config.shutdown_timeout_secs)
    // actix-server treats SIGINT as a forced stop; ours are both graceful.
    .shutdown_signal(shutdown_signal())
    .listen(listener)
    .map_err(|error| StartError::Bind {
        addr: config.listen,
        error,
    })?
    .run();
    log::info!(
        "listening on http://{addr}, deleting from {}",
        storage.describe()
    );
    Ok(Running {
        addr,
        server,
        pipeline,
    })
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        log::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => log::info!("SIGINT received; shutting down gracefully"),
        _ = term.recv() => log::info!("SIGTERM received; shutting down gracefully"),
    }
}

impl Running {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server from another task or thread.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM or [`ServerHandle::stop`]: then stops
    /// accepting requests, finishes in-flight requests, and waits for the
    /// batches being executed to be acked.
    pub async fn wait(self, shutdown_timeout: Duration) -> std::io::Result<()> {
        self.server.await?;
        log::info!("HTTP server stopped; waiting for in-flight batches");
        self.pipeline.shutdown(shutdown_timeout).await;
        log::info!("shut down");
        Ok(())
    }
}
