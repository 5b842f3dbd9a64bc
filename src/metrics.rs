//! Prometheus metrics of one process, served at `/metrics`.
//!
//! Counters are kept in memory and cost nothing per scrape; nothing here
//! scans the table.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The counters the pipeline updates.
pub struct Metrics {
    registry: Registry,
    /// Per id and outcome: `deleted` (files removed), `missing` (nothing was
    /// there: counts as deleted), `failed` (an attempt failed).
    pub deletions: IntCounterVec,
    /// New requests committed (ids already queued are not counted).
    pub recorded: IntCounter,
    /// Batches executed.
    pub batches: IntCounter,
    /// Wall time of a batch: deletions plus its ack.
    pub batch_seconds: Histogram,
    /// Claims that failed (database unavailable).
    pub claim_errors: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let deletions = IntCounterVec::new(
            Opts::new(
                "video_scheduler_deletions_total",
                "Deletion attempts by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let recorded = IntCounter::new(
            "video_scheduler_recorded_total",
            "New deletion requests committed",
        )
        .expect("valid metric");
        let batches = IntCounter::new("video_scheduler_batches_total", "Batches executed")
            .expect("valid metric");
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "video_scheduler_batch_seconds",
                "Time to delete and ack one batch",
            )
            .buckets(prometheus::exponential_buckets(0.001, 4.0, 8).expect("valid buckets")),
        )
        .expect("valid metric");
        let claim_errors =
            IntCounter::new("video_scheduler_claim_errors_total", "Claims that failed")
                .expect("valid metric");
        for outcome in ["deleted", "missing", "failed"] {
            deletions.with_label_values(&[outcome]);
        }
        for collector in [
            Box::new(deletions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(recorded.clone()),
            Box::new(batches.clone()),
            Box::new(batch_seconds.clone()),
            Box::new(claim_errors.clone()),
            Box::new(crate::logging::PROTOCOL_ERRORS.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Metrics {
            registry,
            deletions,
            recorded,
            batches,
            batch_seconds,
            claim_errors,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
