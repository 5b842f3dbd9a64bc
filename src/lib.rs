//! video-scheduler: a durable deletion scheduler for a video platform.
//!
//! Upload and management services record "video X is deleted"; the request
//! is committed to the `video_del_rec` table, and an actor pipeline deletes
//! the video's files in the background, in batches, with retries.
//!
//! A request's path through the crate:
//!
//! 1. [`http`]: `GET /video-delete-record/{vid}` (the seed's route) or
//!    `POST /v1/deletions` validates ids into [`video_id::VideoId`]s and
//!    sends a `Record` to the [`pipeline::record::RecordActor`], which
//!    group-commits concurrent requests and answers after the commit.
//! 2. [`pipeline::timer::TimerActor`] ticks, and the RecordActor nudges, the
//!    [`pipeline::dispatcher::DispatcherActor`], which claims due ids with a
//!    lease ([`db::queries::claim`]) and hands batches to
//!    [`pipeline::executor::ExecutorActor`]s on a `SyncArbiter`.
//! 3. An executor runs [`pipeline::batch::execute`]: each id's files are
//!    erased from every target of [`storage::Storage`], and the batch is acked
//!    ([`db::queries::ack`]): done rows deleted, failed ones rescheduled by
//!    [`pipeline::retry::RetryPolicy`].
//!
//! Modules:
//! - [`config`]: typed configuration (conf.json + `VIDEO_SCHEDULER_*`).
//! - [`db`]: pools, migrations, and all SQL in [`db::queries`].
//! - [`pipeline`]: the actors, one per file with their messages.
//! - [`storage`]: [`storage::Storage`] (every configured target; a video is
//!   erased when each has nothing of it left), the [`storage::Target`]
//!   trait, path templates and request-named paths, local disk (paths
//!   under a root, never escaping it), and S3 buckets (feature `s3`: one
//!   file per request kind, signed by object_store; versioned buckets
//!   purged by version id or hidden by markers, as configured).
//! - [`schedule`]: a schedule (delay, RFC 3339 time) into epoch ms and back.
//! - [`http`]: routes, auth, limits; [`error`] maps errors to HTTP once.
//! - [`metrics`]: Prometheus counters, served at `/metrics`; [`activity`]:
//!   deletions per 10 s for the dashboard's chart.
//! - [`logging`]: env_logger, with client-caused protocol errors demoted.
//! - [`cli`]: `serve`, `migrate`, `enqueue`, `stats`, `retry --failed`.

// Builds without SQLite (`--no-default-features --features postgres`, or
// `mysql`) leave the other backends' helpers and imports unused. They
// compile and work; CI checks that they build, and lints the default
// (SQLite) and all-features builds strictly.
#![cfg_attr(
    not(feature = "sqlite"),
    allow(
        unused_imports,
        unused_variables,
        dead_code,
        unreachable_patterns,
        irrefutable_let_patterns
    )
)]

pub mod activity;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod schedule;
pub mod storage;
pub mod video_id;

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
    let db = Db::connect(&config.database_url, config.pool_size)?;
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
        access_log: config.access_log,
        instance: pipeline.owner.clone(),
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
