//! The benchmark of video-scheduler: one command, every backend.
//!
//! ```sh
//! cargo run --release -p video-scheduler-bench -- --backend all --markdown bench.md
//! ```
//!
//! It builds the release server binary (all backends), then for each
//! backend starts it as a separate process and measures drain, the raw limit
//! of the same machine and database, ingest on the seed and batch routes,
//! recording-to-deletion latency, idle CPU and peak RSS with a million
//! pending rows. Every measurement starts from a fresh database.
//! `--galera` and `--notify` measure a cluster and the notifications
//! instead (galera.rs, notify.rs).

mod galera;
mod measure;
mod notify;
mod s3;
mod server;

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use measure::Setup;
use video_scheduler::db::Backend;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Measure video-scheduler on SQLite, MariaDB and PostgreSQL"
)]
struct Args {
    /// Backends to measure.
    #[arg(long, value_enum, default_value = "all")]
    backend: Vec<Which>,
    /// Ids drained (and removed by the raw loop).
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Drains with receipts and without, each (medians reported).
    #[arg(long, default_value_t = 3)]
    drain_runs: usize,
    /// Server `batch_size`, and the raw loop's DELETE size.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Server `executors`.
    #[arg(long, default_value_t = 4)]
    executors: usize,
    /// Seconds of wrk load on the seed route.
    #[arg(long, default_value_t = 10)]
    ingest_secs: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Ids posted on the batch route (in bodies of 10,000, 4 clients).
    #[arg(long, default_value_t = 400_000)]
    batch_ids: usize,
    /// Latency samples.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Seconds of idle CPU measurement.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Pending rows for the memory measurement.
    #[arg(long, default_value_t = 1_000_000)]
    rss_rows: usize,
    /// Pending rows beside `/v1/stats` for its latency.
    #[arg(long, default_value_t = 10_000_000)]
    stats_rows: usize,
    /// Ids drained from object storage (3 paths, 12 objects each).
    #[arg(long, default_value_t = 20_000)]
    s3_n: usize,
    /// Ids purged from a versioned bucket (one key, 3 versions each).
    #[arg(long, default_value_t = 10_000)]
    purge_n: usize,
    /// Measures to run (all by default); the others show as "-".
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Measure>,
    /// Small sizes everywhere: a smoke run that keeps the benchmark working.
    #[arg(long)]
    quick: bool,
    /// Instead of the backends' measures: three instances on a 3-node
    /// Galera cluster of the benchmark's own (Debian's galera-4, run as the
    /// `mysql` user), one per node against all on one node, `--drain-runs`
    /// times each; `--n` ids per drain.
    #[arg(long)]
    galera: bool,
    /// Instead of the backends' measures: notifications, against a
    /// receiver in the benchmark's process. Per backend: the drain with a
    /// webhook and an http purge sink against without sinks (`--n` ids,
    /// `--drain-runs` times each, and how long after the drain the outbox
    /// was empty), the webhook delivery rate (`--events` events, 64 in
    /// flight), and ack-to-webhook latency at 1,000 deletions/s for
    /// `--notify-secs`.
    #[arg(long)]
    notify: bool,
    /// `--notify`: events of the delivery-rate run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// `--notify`: seconds of recording at 1,000 deletions/s for the
    /// latency.
    #[arg(long, default_value_t = 10)]
    notify_secs: u64,
    /// MariaDB server (a database is created on it and dropped).
    #[arg(
        long,
        env = "BENCH_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306/test"
    )]
    mysql_url: String,
    /// PostgreSQL server (a database is created on it and dropped).
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Measure this server binary instead of building one from the
    /// workspace (to compare two commits in the same hour).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Server `fast_lane: false`: ids recorded due now are claimed like
    /// any other (to measure the lane against its absence).
    #[arg(long)]
    no_fast_lane: bool,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Measure {
    Drain,
    Raw,
    Seed,
    Batch,
    Latency,
    Rss,
    Stats,
    S3,
    S3Purge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    Sqlite,
    Mysql,
    Postgres,
}

/// One backend's figures.
#[derive(Debug, Default)]
struct Figures {
    drain_secs: f64,
    drain_rate: f64,
    drain_rate_no_receipts: f64,
    raw_rate: f64,
    seed_rps: f64,
    seed_p50: f64,
    seed_p99: f64,
    seed_errors: u64,
    batch_rate: f64,
    latency_p50: f64,
    latency_p99: f64,
    idle_cpu: f64,
    rss_mib: f64,
    stats_p50: f64,
    stats_p99: f64,
    s3_drain_rate: f64,
    s3_raw_rate: f64,
    purge_rate: f64,
    purge_raw_rate: f64,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.n = 2_000;
        args.drain_runs = 1;
        args.ingest_secs = 1;
        args.connections = 8;
        args.batch_ids = 20_000;
        args.samples = 10;
        args.idle_secs = 1;
        args.rss_rows = 10_000;
        args.s3_n = 500;
        args.purge_n = 500;
        args.stats_rows = 20_000;
        args.events = 1_000;
        args.notify_secs = 2;
    }
    let backends: Vec<Backend> = if args.backend.contains(&Which::All) {
        vec![Backend::Sqlite, Backend::Mysql, Backend::Postgres]
    } else {
        args.backend
            .iter()
            .map(|w| match w {
                Which::Sqlite => Backend::Sqlite,
                Which::Mysql => Backend::Mysql,
                Which::Postgres | Which::All => Backend::Postgres,
            })
            .collect()
    };
    let bin = match &args.server {
        Some(bin) => bin.clone(),
        None => server::build_server()?,
    };
    if args.galera {
        let runs = galera::measure(&bin, args.n, args.drain_runs, args.batch_size)?;
        return output(&args, &galera::table(&runs));
    }
    let setup = |backend| Setup {
        bin: bin.clone(),
        backend,
        server_url: match backend {
            Backend::Mysql => args.mysql_url.clone(),
            _ => args.postgres_url.clone(),
        },
        batch_size: args.batch_size,
        executors: args.executors,
        fast_lane: !args.no_fast_lane,
    };
    if args.notify {
        let params = notify::Params {
            n: args.n,
            drain_runs: args.drain_runs,
            events: args.events,
            secs: args.notify_secs,
            batch_size: args.batch_size,
            executors: args.executors,
        };
        let mut results = Vec::new();
        for backend in backends {
            eprintln!("== {backend:?} (notifications)");
            results.push((backend, notify::measure(&setup(backend), &params)?));
        }
        return output(&args, &notify::table(&params, &results));
    }
    let mut results = Vec::new();
    for backend in backends {
        eprintln!("== {backend:?}");
        let f = measure_backend(&args, &setup(backend))?;
        results.push((backend, f));
    }
    output(&args, &table(&args, &results))
}

/// Prints `table`, and writes it to `--markdown`'s file.
fn output(args: &Args, table: &str) -> anyhow::Result<()> {
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, table)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Every measure `args` asks for, on one backend.
fn measure_backend(args: &Args, setup: &Setup) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let run = |m: Measure| args.only.is_empty() || args.only.contains(&m);
    if run(Measure::Drain) {
        // With and without receipts, alternating, `--drain-runs` times
        // each: the medians compare runs made under the same conditions.
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..args.drain_runs {
            with.push(measure::drain(setup, args.n, true)?);
            without.push(measure::drain(setup, args.n, false)?.1);
        }
        with.sort_by(|a, b| a.1.total_cmp(&b.1));
        without.sort_by(f64::total_cmp);
        (f.drain_secs, f.drain_rate) = with[with.len() / 2];
        f.drain_rate_no_receipts = without[without.len() / 2];
        eprintln!(
            "drain: {:.0}/s ({:.0}/s without receipts; runs {:?} / {:?})",
            f.drain_rate,
            f.drain_rate_no_receipts,
            with.iter().map(|r| r.1 as u64).collect::<Vec<_>>(),
            without.iter().map(|r| *r as u64).collect::<Vec<_>>()
        );
    }
    if run(Measure::Raw) {
        f.raw_rate = measure::raw_limit(setup, args.n)?;
        eprintln!("raw limit: {:.0}/s", f.raw_rate);
    }
    if run(Measure::Seed) {
        (f.seed_rps, f.seed_p50, f.seed_p99, f.seed_errors) =
            measure::ingest_seed(setup, args.ingest_secs, args.connections)?;
        eprintln!(
            "seed route: {:.0} req/s, p99 {:.2} ms",
            f.seed_rps, f.seed_p99
        );
    }
    if run(Measure::Batch) {
        f.batch_rate = measure::ingest_batch(setup, args.batch_ids, 10_000, 4)?;
        eprintln!("batch route: {:.0} ids/s", f.batch_rate);
    }
    if run(Measure::Latency) {
        (f.latency_p50, f.latency_p99, f.idle_cpu) =
            measure::latency_and_idle(setup, args.samples, args.idle_secs)?;
        eprintln!(
            "latency p99: {:.1} ms, idle {:.2}%",
            f.latency_p99, f.idle_cpu
        );
    }
    if run(Measure::Rss) {
        f.rss_mib = measure::peak_rss(setup, args.rss_rows)?;
        eprintln!("peak RSS: {:.1} MiB", f.rss_mib);
    }
    if run(Measure::Stats) {
        (f.stats_p50, f.stats_p99) = measure::stats_latency(setup, args.stats_rows, 200)?;
        eprintln!(
            "stats with {} rows: p50 {:.2} ms, p99 {:.2} ms",
            args.stats_rows, f.stats_p50, f.stats_p99
        );
    }
    if run(Measure::S3) {
        f.s3_drain_rate = s3::drain(setup, args.s3_n)?.1;
        f.s3_raw_rate = s3::raw_limit(args.s3_n)?;
        eprintln!(
            "s3 drain: {:.0} ids/s, raw {:.0} ids/s",
            f.s3_drain_rate, f.s3_raw_rate
        );
    }
    if run(Measure::S3Purge) {
        f.purge_rate = s3::purge_drain(setup, args.purge_n)?;
        f.purge_raw_rate = s3::purge_raw(args.purge_n)?;
        eprintln!(
            "s3 purge: {:.0} ids/s, raw {:.0} ids/s",
            f.purge_rate, f.purge_raw_rate
        );
    }
    Ok(f)
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
fn table(args: &Args, results: &[(Backend, Figures)]) -> String {
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
