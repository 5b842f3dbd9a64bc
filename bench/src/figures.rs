//! The backends' measures as one table: a row per measure with its
//! target, a column per backend.

use std::fmt::Write as _;

use video_scheduler::db::Backend;

use crate::{s3, Args};

/// One backend's figures.
#[derive(Debug, Default)]
pub struct Figures {
    pub drain_secs: f64,
    pub drain_rate: f64,
    pub drain_rate_no_receipts: f64,
    pub raw_rate: f64,
    pub seed_rps: f64,
    pub seed_p50: f64,
    pub seed_p99: f64,
    pub seed_errors: u64,
    pub batch_rate: f64,
    pub latency_p50: f64,
    pub latency_p99: f64,
    pub idle_cpu: f64,
    pub rss_mib: f64,
    pub stats_p50: f64,
    pub stats_p99: f64,
    pub s3_drain_rate: f64,
    pub s3_raw_rate: f64,
    pub purge_rate: f64,
    pub purge_raw_rate: f64,
}

/// One row of the table: its name, its target, and its value from a
/// backend's figures.
type Row = (&'static str, &'static str, fn(&Figures) -> String);

/// The table's rows, in order.
fn rows() -> [Row; 21] {
    [
        ("drain, deletions/s", "50k SQLite, 20k others", |f| {
            format!("{:.0}", f.drain_rate)
        }),
        ("drain without receipts, deletions/s", "", |f| {
            format!("{:.0}", f.drain_rate_no_receipts)
        }),
        ("drain with / without receipts", ">= 0.9", |f| {
            format!("{:.2}", f.drain_rate / f.drain_rate_no_receipts)
        }),
        ("drain, seconds", "", |f| format!("{:.2}", f.drain_secs)),
        ("raw limit (unlink + batched DELETE), /s", "", |f| {
            format!("{:.0}", f.raw_rate)
        }),
        ("drain / raw limit", ">= 0.5", |f| {
            format!("{:.2}", f.drain_rate / f.raw_rate)
        }),
        ("seed route, requests/s", ">= 20k", |f| {
            format!("{:.0}", f.seed_rps)
        }),
        ("seed route, p50 / p99 ms", "p99 < 10", |f| {
            format!("{:.2} / {:.2}", f.seed_p50, f.seed_p99)
        }),
        ("seed route, non-2xx", "0", |f| f.seed_errors.to_string()),
        ("batch route, ids/s", ">= 200k", |f| {
            format!("{:.0}", f.batch_rate)
        }),
        ("latency 200 -> file gone, p50 / p99 ms", "< 50", |f| {
            format!("{:.2} / {:.2}", f.latency_p50, f.latency_p99)
        }),
        ("idle CPU, % of a core", "< 1", |f| {
            format!("{:.2}", f.idle_cpu)
        }),
        ("peak RSS with pending rows, MiB", "< 64", |f| {
            format!("{:.1}", f.rss_mib)
        }),
        (
            "GET /v1/stats beside the pending rows, p50 / p99 ms",
            "< 10",
            |f| format!("{:.2} / {:.2}", f.stats_p50, f.stats_p99),
        ),
        ("object storage drain, ids/s", "", |f| {
            format!("{:.0}", f.s3_drain_rate)
        }),
        ("object storage drain, objects/s", "", |f| {
            format!("{:.0}", f.s3_drain_rate * s3::OBJECTS_PER_ID as f64)
        }),
        (
            "object storage raw limit (DeleteObjects loop), ids/s",
            "",
            |f| format!("{:.0}", f.s3_raw_rate),
        ),
        ("object storage drain / raw limit", ">= 0.7", |f| {
            format!("{:.2}", f.s3_drain_rate / f.s3_raw_rate)
        }),
        ("versioned bucket purge (3 versions each), ids/s", "", |f| {
            format!("{:.0}", f.purge_rate)
        }),
        (
            "versioned purge raw limit (ListObjectVersions + versioned DeleteObjects), ids/s",
            "",
            |f| format!("{:.0}", f.purge_raw_rate),
        ),
        ("versioned purge / raw limit", ">= 0.7", |f| {
            format!("{:.2}", f.purge_rate / f.purge_raw_rate)
        }),
    ]
}

/// The figures as a Markdown table (readable as plain text too).
pub fn table(args: &Args, results: &[(Backend, Figures)]) -> String {
    let mut out = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Machine: {} cores, {cpu}. Date: {}. n = {}, batch_size = {}, executors = {}, wrk {} connections for {} s, {} batch-route ids, {} latency samples, {} pending rows for RSS, {} pending rows for stats, {} ids from object storage, {} ids purged from a versioned bucket.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        chrono_date(),
        args.n,
        args.batch_size,
        args.executors,
        args.connections,
        args.ingest_secs,
        args.batch_ids,
        args.samples,
        args.rss_rows,
        args.stats_rows,
        args.s3_n,
        args.purge_n,
    );
    let _ = write!(out, "| measure | target |");
    for (backend, _) in results {
        let _ = write!(out, " {backend:?} |");
    }
    let _ = write!(out, "\n| --- | --- |");
    for _ in results {
        let _ = write!(out, " ---: |");
    }
    out.push('\n');
    for (name, target, value) in rows() {
        let _ = write!(out, "| {name} | {target} |");
        for (_, figures) in results {
            let _ = write!(out, " {} |", value(figures));
        }
        out.push('\n');
    }
    out
}

/// Today's date, UTC.
fn chrono_date() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}
