//! Prometheus metrics of one process, served at `/metrics`.
//!
//! Counters and histograms are kept in memory and cost nothing per scrape.
//! The gauges of the queue (requests by state, the oldest due request, the
//! pause) are set from `/v1/stats`'s query at each scrape: a few index
//! probes and a sum over the kept counts, never a scan of the table.

use prometheus::{
    exponential_buckets, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::db::models::Stats;

/// The metrics the pipeline and the HTTP server update.
pub(crate) struct Metrics {
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
    /// Ids recorded due now and handed to executors without a claim (the
    /// fast lane).
    pub fast_lane: IntCounter,
    /// Time of one claim (one statement, or two on MySQL).
    pub claim_seconds: Histogram,
    /// Time of one ack (its transaction).
    pub ack_seconds: Histogram,
    /// Requests by state (`pending`, `running`, `failed`) and receipts
    /// (`done`), as of the last scrape.
    pub requests: IntGaugeVec,
    /// Seconds since the oldest claimable request became due (0: none).
    pub oldest_due_seconds: IntGauge,
    /// Urgent requests due now, and seconds since the oldest of them
    /// became due (0: none).
    pub urgent_due: IntGauge,
    pub oldest_urgent_due_seconds: IntGauge,
    /// 1 while an operator has paused deletions.
    pub paused: IntGauge,
    /// HTTP requests by route template and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by route template.
    pub http_seconds: HistogramVec,
    /// Per storage target: 1 while deleting there is safe, as of the last
    /// scrape.
    pub storage_ready: IntGaugeVec,
    /// Per storage target and what (`objects`, `versions`, `versions_kept`):
    /// what completed requests erased there (or left behind a delete
    /// marker).
    pub erased: IntCounterVec,
    /// The database's conflicts and replication.
    pub db: DbMetrics,
    /// The outbox and its deliveries.
    pub events: EventMetrics,
    /// Deletions per 10 s over the last 15 minutes, for the dashboard.
    pub activity: crate::activity::Activity,
}

/// The database's side: write conflicts and what its replication promises.
pub(crate) struct DbMetrics {
    /// Write transactions rolled back by a conflict with another writer
    /// (and run again), by statement: `claim`, `ack`, `record`, ... Copied
    /// from the database handle's own counts at each scrape.
    pub conflicts: IntCounterVec,
    /// PostgreSQL: standbys streaming from the primary, by `sync`
    /// (`all`, `synchronous`), as last read (every minute).
    pub standbys: IntGaugeVec,
    /// Galera: the cluster's size as this instance's node sees it, and 1
    /// while the node is in the primary component and synced.
    pub galera_cluster_size: IntGauge,
    pub galera_ready: IntGauge,
    /// How far the database server's clock is ahead of this instance's.
    pub clock_skew: Gauge,
}

impl DbMetrics {
    fn new() -> DbMetrics {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        DbMetrics {
            conflicts: counter_vec(
                "video_scheduler_db_conflicts_total",
                "Write transactions rolled back by a conflict with another writer \
                 (deadlock, Galera certification failure) and run again, by statement",
                &["statement"],
            ),
            standbys: gauge_vec(
                "video_scheduler_db_standbys",
                "PostgreSQL standbys streaming from the primary (all, synchronous), as last read",
                &["sync"],
            ),
            galera_cluster_size: gauge(
                "video_scheduler_galera_cluster_size",
                "Galera nodes in the cluster as this instance's node sees it (0: not Galera)",
            ),
            galera_ready: gauge(
                "video_scheduler_galera_ready",
                "1 while this instance's Galera node is in the primary component and synced",
            ),
            clock_skew: Gauge::new(
                "video_scheduler_db_clock_skew_seconds",
                "How far the database server's clock is ahead of this instance's \
                 (leases are set by this clock and checked by the server's)",
            )
            .expect("valid metric"),
        }
    }
}

/// The outbox: its depth per sink, deliveries, their latency.
pub(crate) struct EventMetrics {
    /// Events per sink and state (`pending`, `dead`), as of the last scrape.
    pub outbox: IntGaugeVec,
    /// Deliveries per sink and outcome (`delivered`, `failed`, `dead`).
    pub deliveries: IntCounterVec,
    /// From the event (an ack, a cancel) to its delivery, per sink.
    pub latency: HistogramVec,
}

impl EventMetrics {
    fn new() -> EventMetrics {
        EventMetrics {
            outbox: gauge_vec(
                "video_scheduler_outbox_events",
                "Outbox events per sink and state (pending, dead), as of the last scrape",
                &["sink", "state"],
            ),
            deliveries: counter_vec(
                "video_scheduler_event_deliveries_total",
                "Event deliveries per sink and outcome (delivered, failed, dead)",
                &["sink", "outcome"],
            ),
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "video_scheduler_event_delivery_seconds",
                    "From an event (the ack, the cancel) to its delivery, per sink",
                )
                .buckets(seconds_buckets()),
                &["sink"],
            )
            .expect("valid metric"),
        }
    }

    pub(crate) fn deliveries_of(&self, sink: &str, outcome: &str, n: usize) {
        self.deliveries
            .with_label_values(&[sink, outcome])
            .inc_by(n as u64);
    }

    pub(crate) fn latency_of(&self, sink: &str, ms: i64) {
        self.latency
            .with_label_values(&[sink])
            .observe(ms.max(0) as f64 / 1000.0);
    }

    /// Sets the depth gauges; every configured sink shows, 0 when empty.
    pub(crate) fn set_outbox(
        &self,
        sinks: &[String],
        summary: &[crate::db::queries::events::SinkSummary],
    ) {
        for sink in sinks {
            let found = summary.iter().find(|s| &s.sink == sink);
            for (state, n) in [
                ("pending", found.map_or(0, |s| s.pending)),
                ("dead", found.map_or(0, |s| s.dead)),
            ] {
                self.outbox.with_label_values(&[sink, state]).set(n);
            }
        }
    }
}

/// Buckets from 0.5 ms to about 33 s, four times apart.
fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 4.0, 9).expect("valid buckets")
}

/// A counter with labels.
fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// A gauge with labels.
fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// A histogram of seconds.
fn histogram(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(seconds_buckets()))
        .expect("valid metric")
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let metrics = Metrics {
            deletions: counter_vec(
                "video_scheduler_deletions_total",
                "Deletion attempts by outcome",
                &["outcome"],
            ),
            recorded: counter(
                "video_scheduler_recorded_total",
                "New deletion requests committed",
            ),
            batches: counter("video_scheduler_batches_total", "Batches executed"),
            batch_seconds: histogram(
                "video_scheduler_batch_seconds",
                "Time to delete and ack one batch",
            ),
            claim_errors: counter("video_scheduler_claim_errors_total", "Claims that failed"),
            fast_lane: counter(
                "video_scheduler_fast_lane_total",
                "Ids recorded due now and deleted without a claim (the fast lane)",
            ),
            claim_seconds: histogram("video_scheduler_claim_seconds", "Time of one claim"),
            ack_seconds: histogram("video_scheduler_ack_seconds", "Time of one ack"),
            requests: gauge_vec(
                "video_scheduler_requests",
                "Deletion requests by state (done: receipts kept)",
                &["state"],
            ),
            oldest_due_seconds: gauge(
                "video_scheduler_oldest_due_seconds",
                "Age of the oldest claimable request (0 when nothing is due)",
            ),
            urgent_due: gauge(
                "video_scheduler_urgent_due",
                "Urgent requests due now (claimed before every normal one)",
            ),
            oldest_urgent_due_seconds: gauge(
                "video_scheduler_oldest_urgent_due_seconds",
                "Age of the oldest urgent due request (0 when none is due)",
            ),
            paused: gauge(
                "video_scheduler_paused",
                "1 while deletions are paused by an operator",
            ),
            http_requests: counter_vec(
                "video_scheduler_http_requests_total",
                "HTTP requests by route template and status",
                &["route", "status"],
            ),
            http_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "video_scheduler_http_request_seconds",
                    "HTTP request latency by route template",
                )
                .buckets(seconds_buckets()),
                &["route"],
            )
            .expect("valid metric"),
            storage_ready: gauge_vec(
                "video_scheduler_storage_ready",
                "1 while deleting on the storage target is safe",
                &["target"],
            ),
            erased: counter_vec(
                "video_scheduler_erased_total",
                "What completed requests erased per storage target: objects, versions \
                 (by version id), versions_kept (behind a delete marker)",
                &["target", "what"],
            ),
            db: DbMetrics::new(),
            events: EventMetrics::new(),
            activity: crate::activity::Activity::default(),
            registry: Registry::new(),
        };
        metrics.register();
        metrics
    }

    /// Registers every metric, the labelled ones with their known labels
    /// at zero (a scrape shows them before the first event).
    fn register(&self) {
        for outcome in ["deleted", "missing", "failed"] {
            self.deletions.with_label_values(&[outcome]);
        }
        for state in ["pending", "running", "failed", "done"] {
            self.requests.with_label_values(&[state]);
        }
        for statement in ["claim", "ack", "record"] {
            self.db.conflicts.with_label_values(&[statement]);
        }
        for sync in ["all", "synchronous"] {
            self.db.standbys.with_label_values(&[sync]);
        }
        for collector in [
            Box::new(self.deletions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.recorded.clone()),
            Box::new(self.batches.clone()),
            Box::new(self.batch_seconds.clone()),
            Box::new(self.claim_errors.clone()),
            Box::new(self.fast_lane.clone()),
            Box::new(self.claim_seconds.clone()),
            Box::new(self.ack_seconds.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.oldest_due_seconds.clone()),
            Box::new(self.urgent_due.clone()),
            Box::new(self.oldest_urgent_due_seconds.clone()),
            Box::new(self.paused.clone()),
            Box::new(self.http_requests.clone()),
            Box::new(self.http_seconds.clone()),
            Box::new(self.storage_ready.clone()),
            Box::new(self.erased.clone()),
            Box::new(self.db.conflicts.clone()),
            Box::new(self.db.standbys.clone()),
            Box::new(self.db.galera_cluster_size.clone()),
            Box::new(self.db.galera_ready.clone()),
            Box::new(self.db.clock_skew.clone()),
            Box::new(self.events.outbox.clone()),
            Box::new(self.events.deliveries.clone()),
            Box::new(self.events.latency.clone()),
            Box::new(crate::logging::PROTOCOL_ERRORS.clone()),
        ] {
            self.registry
                .register(collector)
                .expect("metric registered once");
        }
    }

    /// Sets the queue's gauges from `stats`.
    pub(crate) fn set_queue(&self, stats: &Stats) {
        for (state, n) in [
            ("pending", stats.pending),
            ("running", stats.running),
            ("failed", stats.failed),
            ("done", stats.done),
        ] {
            self.requests.with_label_values(&[state]).set(n);
        }
        self.oldest_due_seconds
            .set(stats.oldest_due_age_ms.unwrap_or(0) / 1000);
        self.urgent_due.set(stats.urgent_due);
        self.oldest_urgent_due_seconds
            .set(stats.oldest_urgent_due_age_ms.unwrap_or(0) / 1000);
        self.paused.set(i64::from(stats.paused));
    }

    /// Brings the conflict counters up to the database handle's `totals`.
    pub(crate) fn set_conflicts(&self, totals: &[(&'static str, u64)]) {
        for (statement, total) in totals {
            let counter = self.db.conflicts.with_label_values(&[statement]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Sets the replication's gauges from a reading.
    pub(crate) fn set_replication(&self, replication: &crate::db::models::Replication) {
        use crate::db::models::Replication;
        let (all, synchronous, size, ready) = match replication {
            Replication::None => (0, 0, 0, false),
            Replication::Postgres {
                standbys,
                synchronous,
                ..
            } => (*standbys, *synchronous, 0, false),
            Replication::Galera {
                cluster_size,
                primary,
                state,
            } => (0, 0, *cluster_size, *primary && state == "Synced"),
        };
        self.db.standbys.with_label_values(&["all"]).set(all);
        self.db
            .standbys
            .with_label_values(&["synchronous"])
            .set(synchronous);
        self.db.galera_cluster_size.set(size);
        self.db.galera_ready.set(i64::from(ready));
    }

    /// Sets each target's readiness gauge.
    pub(crate) fn set_targets(&self, targets: &[crate::storage::TargetHealth]) {
        for target in targets {
            self.storage_ready
                .with_label_values(&[target.name.as_str()])
                .set(i64::from(target.ready));
        }
    }

    /// Counts what one batch's completed requests erased, per target.
    pub(crate) fn count_erased(&self, done: &[crate::db::models::Done]) {
        let mut totals: std::collections::BTreeMap<&str, [u64; 3]> = Default::default();
        for d in done {
            for t in &d.removed.targets {
                let total = totals.entry(t.name.as_str()).or_default();
                total[0] += u64::from(t.objects);
                total[1] += u64::from(t.versions);
                total[2] += u64::from(t.versions_kept);
            }
        }
        for (target, [objects, versions, kept]) in totals {
            for (what, n) in [
                ("objects", objects),
                ("versions", versions),
                ("versions_kept", kept),
            ] {
                self.erased.with_label_values(&[target, what]).inc_by(n);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
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
