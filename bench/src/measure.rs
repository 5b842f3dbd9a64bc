//! One function per measurement. Each starts from a fresh database and a
//! fresh video root, so that none disturbs the next.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use tempfile::TempDir;
use video_scheduler::clock::now_ms;
use video_scheduler::config::{Config, StorageConfig};
use video_scheduler::db::queries::{self, record::RecordRequest};
use video_scheduler::db::{Backend, Db};
use video_scheduler::video_id::VideoId;

use crate::server::{BenchDb, Server};

/// What every measurement needs.
pub struct Setup {
    pub bin: PathBuf,
    pub backend: Backend,
    /// MariaDB/PostgreSQL server URL (ignored for SQLite).
    pub server_url: String,
    pub batch_size: usize,
    pub executors: usize,
    /// Server `fast_lane`.
    pub fast_lane: bool,
}

/// A fresh database, video root and config, removed on drop.
pub struct Fixture {
    pub dir: TempDir,
    pub db: Db,
    pub config: Config,
    _bench_db: BenchDb,
}

impl Fixture {
    pub fn new(setup: &Setup) -> anyhow::Result<Fixture> {
        let dir = tempfile::Builder::new()
            .prefix("vs-bench")
            .tempdir_in(bench_tmp())?;
        let bench_db = BenchDb::create(setup.backend, &setup.server_url, dir.path())?;
        let db = Db::connect(&bench_db.url, 2)?;
        db.migrate()?;
        let root = dir.path().join("videos");
        std::fs::create_dir_all(&root)?;
        let config = Config {
            listen: "127.0.0.1:0".parse()?,
            database_url: bench_db.url.clone(),
            storage: StorageConfig {
                root,
                ..StorageConfig::default()
            }
            .into(),
            batch_size: setup.batch_size,
            executors: setup.executors,
            fast_lane: setup.fast_lane,
            ..Config::default()
        };
        Ok(Fixture {
            dir,
            db,
            config,
            _bench_db: bench_db,
        })
    }

    pub fn root(&self) -> &Path {
        &self.config.storage[0].root
    }

    /// Queues `ids`, due at `not_before`, in transactions of 10,000.
    pub fn queue(&self, ids: &[String], not_before: i64) -> anyhow::Result<()> {
        for chunk in ids.chunks(10_000) {
            let ids = chunk
                .iter()
                .map(|id| VideoId::parse(id))
                .collect::<Result<Vec<_>, _>>()?;
            let requests = [RecordRequest {
                ids,
                not_before,
                counted: false,
                source: video_scheduler::db::models::Source::Cli,
                request_id: None,
                paths: Vec::new(),
                urgent: Vec::new(),
            }];
            self.db
                .write(|c| queries::record::record_many(c, &requests, now_ms()))?;
        }
        Ok(())
    }

    /// Creates an empty file per id.
    pub fn create_files(&self, ids: &[String]) -> anyhow::Result<()> {
        for id in ids {
            std::fs::File::create(self.root().join(id))?;
        }
        Ok(())
    }

    pub fn start(&self, setup: &Setup) -> anyhow::Result<Server> {
        Server::start(&setup.bin, &self.config, self.dir.path())
    }

    /// Waits until no row is left (at most 10 minutes after `start`).
    pub fn wait_drained(&self, start: Instant) -> anyhow::Result<()> {
        let deadline = start + Duration::from_secs(600);
        // The kept counts are a few rows: polling them every 2 ms costs the
        // measured server and database next to nothing, where looking for a
        // row would scan the dead rows the drain leaves (PostgreSQL) at
        // every poll. The table is checked once they say it is empty.
        loop {
            let queued = self.db.read(queries::counts::totals)?.queued;
            if queued <= 0 && !self.db.read(queries::manage::any_row)? {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "drain did not finish in 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    fn files_left(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(self.root())?.count())
    }
}

/// Temp files go under target/ (a real disk), not a tmpfs /tmp.
fn bench_tmp() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:08}")).collect()
}

/// Drain: `n` due ids with real empty files; from the server's start until
/// every row and file is gone, with receipts written (the default) or not
/// (`receipts.retention_days = 0`). Returns (seconds, deletions/s).
pub fn drain(setup: &Setup, n: usize, receipts: bool) -> anyhow::Result<(f64, f64)> {
    let mut fx = Fixture::new(setup)?;
    if !receipts {
        fx.config.receipts.retention_days = 0;
    }
    let ids = ids("drain", n);
    fx.create_files(&ids)?;
    fx.queue(&ids, now_ms())?;
    let start = Instant::now();
    let server = fx.start(setup)?;
    let before = crate::cpu::CpuShares::now(setup.backend, &server)?;
    fx.wait_drained(start)?;
    let secs = start.elapsed().as_secs_f64();
    before.report("drain", setup.backend, &server)?;
    server.stop()?;
    ensure!(fx.files_left()? == 0, "rows gone but files left");
    Ok((secs, n as f64 / secs))
}

/// The raw limit on the same machine and database: a bare loop of unlink
/// plus batched DELETEs (one statement per `batch_size` ids, autocommit, with
/// the commit settings of the server's own acks). Returns deletions/s.
pub fn raw_limit(setup: &Setup, n: usize) -> anyhow::Result<f64> {
    let fx = Fixture::new(setup)?;
    let ids = ids("raw", n);
    fx.create_files(&ids)?;
    fx.queue(&ids, now_ms())?;
    let root = fx.root().to_owned();
    let start = Instant::now();
    for chunk in ids.chunks(setup.batch_size) {
        for id in chunk {
            std::fs::remove_file(root.join(id))?;
        }
        fx.db
            .write_relaxed(|c| queries::manage::delete_ids(c, chunk))?;
    }
    let secs = start.elapsed().as_secs_f64();
    ensure!(!fx.db.read(queries::manage::any_row)?, "rows left");
    Ok(n as f64 / secs)
}

/// Ingest on the seed route with wrk: unique ids, `connections` keep-alive
/// connections for `secs`. Returns (requests/s, p50 ms, p99 ms, non-2xx).
pub fn ingest_seed(
    setup: &Setup,
    secs: u64,
    connections: usize,
) -> anyhow::Result<(f64, f64, f64, u64)> {
    let fx = Fixture::new(setup)?;
    let server = fx.start(setup)?;
    let script = fx.dir.path().join("ids.lua");
    std::fs::write(
        &script,
        r#"
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
local n = 0
function request()
  n = n + 1
  return wrk.format("GET", "/video-delete-record/w" .. tid .. "-" .. n)
end
"#,
    )?;
    let before = crate::cpu::CpuShares::now(setup.backend, &server)?;
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(server.url("/"))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    before.report("seed route", setup.backend, &server)?;
    server.stop()?;
    wrk_figures(&text)
}

/// Requests/s, p50 and p99 in ms, and failed requests (non-2xx answers and
/// socket errors) from wrk's output. Anything missing or unreadable fails
/// the run: a figure that cannot be read must not count as zero errors.
fn wrk_figures(text: &str) -> anyhow::Result<(f64, f64, f64, u64)> {
    let number = |name: &str| -> anyhow::Result<f64> {
        let value = field(text, name)?;
        value
            .parse()
            .with_context(|| format!("{name} {value:?} is not a number in:\n{text}"))
    };
    let rps = number("Requests/sec:")?;
    let p50 = wrk_ms(&field(text, "50%")?)?;
    let p99 = wrk_ms(&field(text, "99%")?)?;
    // wrk prints these lines only when there are such errors.
    let mut errors = 0;
    if text.contains("Non-2xx or 3xx responses:") {
        errors += number("Non-2xx or 3xx responses:")? as u64;
    }
    if let Some(line) = text
        .lines()
        .find(|l| l.trim().starts_with("Socket errors:"))
    {
        for part in line.trim()["Socket errors:".len()..].split(',') {
            let count = part.split_whitespace().nth(1).unwrap_or("");
            errors += count
                .parse::<u64>()
                .with_context(|| format!("unreadable socket errors {line:?}"))?;
        }
    }
    Ok((rps, p50, p99, errors))
}

fn field(text: &str, name: &str) -> anyhow::Result<String> {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(name)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        })
        .with_context(|| format!("no {name:?} in wrk output:\n{text}"))
}

/// wrk prints `1.23ms`, `456.78us` or `1.02s`.
fn wrk_ms(value: &str) -> anyhow::Result<f64> {
    for (unit, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] {
        if let Some(number) = value.strip_suffix(unit) {
            return Ok(number.parse::<f64>()? * factor);
        }
    }
    bail!("unknown wrk duration {value:?}")
}

/// Ingest on the batch route: `clients` concurrent clients posting
/// `batch`-id bodies (delayed an hour, so nothing is deleted meanwhile).
/// Returns ids/s.
pub fn ingest_batch(
    setup: &Setup,
    total: usize,
    batch: usize,
    clients: usize,
) -> anyhow::Result<f64> {
    let fx = Fixture::new(setup)?;
    let server = fx.start(setup)?;
    let bodies: Vec<Vec<u8>> = ids("batch", total)
        .chunks(batch)
        .map(|chunk| serde_json::to_vec(&serde_json::json!({ "ids": chunk, "delay_secs": 3600 })))
        .collect::<Result<_, _>>()?;
    let url = server.url("/v1/deletions");
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let (bodies, url) = (&bodies, &url);
                s.spawn(move || -> anyhow::Result<()> {
                    let agent = ureq::Agent::new();
                    for body in bodies.iter().skip(c).step_by(clients) {
                        let response = agent
                            .post(url)
                            .set("content-type", "application/json")
                            .send_bytes(body)?;
                        ensure!(response.status() == 202, "status {}", response.status());
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("client thread")?;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    server.stop()?;
    Ok(total as f64 / secs)
}

/// Latency on an idle server: time from the 200 of the seed route to the
/// file being gone, `samples` times; then idle CPU over `idle_secs` on the
/// same server with nothing due. Returns (p50 ms, p99 ms, idle % of a core).
pub fn latency_and_idle(
    setup: &Setup,
    samples: usize,
    idle_secs: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    let fx = Fixture::new(setup)?;
    let server = fx.start(setup)?;
    let agent = ureq::Agent::new();
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = format!("lat-{i}");
        let path = fx.root().join(&id);
        std::fs::File::create(&path)?;
        let response = agent
            .get(&server.url(&format!("/video-delete-record/{id}")))
            .call()?;
        ensure!(response.status() == 200);
        let acked = Instant::now();
        let deadline = acked + Duration::from_secs(10);
        while path.exists() {
            ensure!(Instant::now() < deadline, "{id} not deleted within 10 s");
            std::thread::sleep(Duration::from_micros(100));
        }
        latencies.push(acked.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the last acks land, then measure a quiet server.
    std::thread::sleep(Duration::from_millis(500));
    let before = server.cpu_time()?;
    std::thread::sleep(Duration::from_secs(idle_secs));
    let used = server.cpu_time()? - before;
    server.stop()?;
    latencies.sort_by(f64::total_cmp);
    let idle = used.as_secs_f64() / idle_secs as f64 * 100.0;
    Ok((
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        idle,
    ))
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `GET /v1/stats` with `rows` requests pending (not yet due) beside, as
/// the dashboard and a Prometheus scrape call it. The rows are generated by
/// the database itself (`rows::generate`), then counted once into the
/// kept counts. Returns (p50 ms, p99 ms) over `calls` calls.
pub fn stats_latency(setup: &Setup, rows: usize, calls: usize) -> anyhow::Result<(f64, f64)> {
    let fx = Fixture::new(setup)?;
    let started = Instant::now();
    crate::rows::generate(
        &fx.db,
        setup.backend,
        "stats",
        rows as u64,
        now_ms() + 86_400_000,
    )?;
    let counted = fx.db.write(queries::counts::recount)?;
    ensure!(
        counted.queued == rows as i64,
        "{} rows, not {rows}",
        counted.queued
    );
    eprintln!(
        "stats: {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let server = fx.start(setup)?;
    let agent = ureq::Agent::new();
    let url = server.url("/v1/stats");
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let stats: serde_json::Value = agent.get(&url).call()?.into_json()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        ensure!(stats["pending"] == rows, "stats said {stats}");
    }
    server.stop()?;
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.50), percentile(&times, 0.99)))
}

/// Peak RSS of a server with `rows` pending rows not yet due, after it has
/// ticked, answered stats and listed a page for a few seconds. MiB.
pub fn peak_rss(setup: &Setup, rows: usize) -> anyhow::Result<f64> {
    let fx = Fixture::new(setup)?;
    fx.queue(&ids("rss", rows), now_ms() + 86_400_000)?;
    let server = fx.start(setup)?;
    let agent = ureq::Agent::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for path in ["/v1/stats", "/v1/deletions?limit=1000", "/metrics"] {
            ensure!(agent.get(&server.url(path)).call()?.status() == 200);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss = server.peak_rss_mib()?;
    server.stop()?;
    Ok(rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "Running 1s test @ http://127.0.0.1:1/
  Latency Distribution
     50%    1.23ms
     99%  456.00us
  1000 requests in 1.00s, 100.00KB read
Requests/sec:   1000.50
";

    #[test]
    fn wrk_figures_are_read_and_errors_are_summed() {
        assert_eq!(wrk_figures(CLEAN).unwrap(), (1000.5, 1.23, 0.456, 0));
        let failing = format!(
            "{CLEAN}  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 4\n"
        );
        assert_eq!(wrk_figures(&failing).unwrap().3, 10);
    }

    #[test]
    fn unreadable_wrk_output_fails_the_run() {
        assert!(wrk_figures("").is_err());
        assert!(wrk_figures(&CLEAN.replace("1000.50", "lots")).is_err());
        assert!(wrk_figures(&format!("{CLEAN}  Non-2xx or 3xx responses: many\n")).is_err());
        assert!(wrk_figures(&format!("{CLEAN}  Socket errors: connect x\n")).is_err());
        assert!(wrk_figures(&CLEAN.replace("99%", "98%")).is_err());
    }
}
