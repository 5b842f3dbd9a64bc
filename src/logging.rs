//! Logging: env_logger (`RUST_LOG`, default `info`), with one change: the
//! errors actix-http logs for malformed requests and misbehaving clients
//! (`stream error: ...`, before any route or auth runs) are demoted to
//! debug and counted in `video_scheduler_http_protocol_errors_total`, so
//! that a scanner cannot fill the log. They are the client's fault, not the
//! server's.

use std::sync::LazyLock;

use log::{Level, Log, Metadata, Record};
use prometheus::IntCounter;

/// Protocol errors of clients, counted for every [`crate::metrics::Metrics`]
/// registry (one process-wide count: the logger is process-wide too).
pub(crate) static PROTOCOL_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "video_scheduler_http_protocol_errors_total",
        "Malformed requests and broken connections of clients (logged at debug)",
    )
    .expect("valid metric")
});

/// Where actix-http's HTTP/1 connection handling logs.
const ACTIX_H1: &str = "actix_http::h1";

/// Installs the logger; a second call (tests) does nothing.
pub(crate) fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Demoting { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// env_logger, demoting client-caused protocol errors.
struct Demoting {
    inner: env_logger::Logger,
}

impl Log for Demoting {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if record.level() <= Level::Warn && record.target().starts_with(ACTIX_H1) {
            PROTOCOL_ERRORS.inc();
            let demoted = Record::builder()
                .args(*record.args())
                .level(Level::Debug)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build();
            if self.inner.enabled(demoted.metadata()) {
                self.inner.log(&demoted);
            }
            return;
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}
