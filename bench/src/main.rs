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
//! `--galera`, `--notify`, `--scale` and `--soak` measure a cluster, the
//! notifications, the drain as the table grows to ten million rows, and a
//! long run of ingest and deletion instead (galera.rs, notify.rs, scale.rs,
//! soak.rs); the last two write a CSV and an SVG plot into `--out`.

mod cpu;
mod figures;
mod galera;
mod measure;
mod notify;
mod plot;
mod rows;
mod s3;
mod scale;
mod server;
mod soak;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use figures::Figures;
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
    /// Instead of the backends' measures: the drain at each `--points`,
    /// each from a fresh database the database itself fills (no files), with
    /// `--window` ids drained per point, then urgent ids recorded behind
    /// what is left; `scale.csv` and `scale.svg` into `--out`.
    #[arg(long)]
    scale: bool,
    /// `--scale`: `DUE[+NOT_DUE][@THROTTLE]` each (rows due now, rows due
    /// in a month beside them, `max_deletions_per_sec`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,100000,1000000,10000000,1000000+10000000,1000000@1000"
    )]
    points: Vec<scale::Point>,
    /// `--scale`: ids drained per point (at most half its due rows).
    #[arg(long, default_value_t = 200_000)]
    window: u64,
    /// Instead of the backends' measures: ingest at 80% of the capacity
    /// (ids erased per second while recording as fast as the clients can,
    /// measured first for `--capacity-secs`) for `--soak-secs`, sampled
    /// every `--sample-secs`; `soak.csv` and `soak.svg` into `--out`.
    #[arg(long)]
    soak: bool,
    /// `--soak`: seconds of the run.
    #[arg(long, default_value_t = 600)]
    soak_secs: u64,
    /// `--soak`: seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// `--soak`: ids/s to ingest instead of 80% of the measured capacity.
    #[arg(long)]
    soak_rate: Option<f64>,
    /// `--soak`: draw and tabulate these `soak.csv` files (runs made
    /// apart, one backend each) instead of measuring.
    #[arg(long)]
    replot: Vec<PathBuf>,
    /// `--soak`: seconds of the capacity run.
    #[arg(long, default_value_t = 60)]
    capacity_secs: u64,
    /// `--scale` and `--soak`: the directory of their CSV and SVG files
    /// (`docs/`, or `target/bench-out` with `--quick`).
    #[arg(long)]
    out: Option<PathBuf>,
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

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.quicken();
    }
    let out_dir = args.out_dir();
    let backends = args.backends();
    let bin = args.server.clone().map_or_else(server::build_server, Ok)?;
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
    if args.scale {
        let mut results = Vec::new();
        for backend in backends {
            for &point in &args.points {
                results.push((
                    backend,
                    scale::measure(&setup(backend), point, args.window)?,
                ));
            }
        }
        scale::write(&out_dir, &results)?;
        return output(&args, &scale::table(&results));
    }
    if args.soak {
        let params = soak::Params {
            secs: args.soak_secs,
            sample_secs: args.sample_secs,
            rate: args.soak_rate,
            capacity_secs: args.capacity_secs,
        };
        let mut runs = soak::read(&args.replot)?;
        if args.replot.is_empty() {
            for backend in backends {
                runs.push((backend, soak::measure(&setup(backend), &params)?));
                // Written after each backend: a later one failing keeps it.
                soak::write(&out_dir, &runs)?;
            }
        }
        soak::write(&out_dir, &runs)?;
        return output(&args, &soak::table(&params, &runs));
    }
    let mut results = Vec::new();
    for backend in backends {
        eprintln!("== {backend:?}");
        let f = measure_backend(&args, &setup(backend))?;
        results.push((backend, f));
    }
    output(&args, &figures::table(&args, &results))
}

impl Args {
    /// `--quick`: small sizes everywhere.
    fn quicken(&mut self) {
        self.n = 2_000;
        self.drain_runs = 1;
        self.ingest_secs = 1;
        self.connections = 8;
        self.batch_ids = 20_000;
        self.samples = 10;
        self.idle_secs = 1;
        self.rss_rows = 10_000;
        self.s3_n = 500;
        self.purge_n = 500;
        self.stats_rows = 20_000;
        self.events = 1_000;
        self.notify_secs = 2;
        self.points = ["2000", "2000+2000", "2000@100"]
            .map(|p| p.parse().expect("a valid point"))
            .to_vec();
        self.window = 1_000;
        self.soak_secs = 10;
        self.sample_secs = 1;
        self.capacity_secs = 10;
    }

    /// `--out`, or `docs/` (`target/bench-out` for a quick run).
    fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            root.join(match self.quick {
                true => "target/bench-out",
                false => "docs",
            })
        })
    }

    fn backends(&self) -> Vec<Backend> {
        if self.backend.contains(&Which::All) {
            return vec![Backend::Sqlite, Backend::Mysql, Backend::Postgres];
        }
        self.backend
            .iter()
            .map(|w| match w {
                Which::Sqlite => Backend::Sqlite,
                Which::Mysql => Backend::Mysql,
                Which::Postgres | Which::All => Backend::Postgres,
            })
            .collect()
    }
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
