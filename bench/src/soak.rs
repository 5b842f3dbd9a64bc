//! `--soak`: a long run of ingest and deletion together, at 80% of the
//! capacity measured just before, every `sample` seconds sampling what
//! grows when something leaks: the record p99, the queue depth, the table
//! and index bytes, the server's RSS.
//!
//! The capacity is what the same server erases per second while it also
//! records: `capacity_secs` of ingest as fast as the clients can post (the
//! queue grows), the deletions per second over its last two thirds (from
//! the receipts kept). A drain alone (`--scale`) is faster, but on a
//! machine where recording and deleting share the cores, 80% of it is
//! more than both together can do (measured: the queue grows without end),
//! and a soak must run at a load the service can hold.
//!
//! Ingest is `POST /v1/deletions` of `BODY` fresh ids due now, paced by
//! `CLIENTS` clients on one schedule (a late request is sent at once, and
//! its latency counts from its sending). No files: a missing file counts as
//! deleted. A figure is flat when its median over the last tenth of the
//! run is at most 10% above its median over the second tenth (the first
//! minute of the default ten is the warm-up), plus a floor below which a
//! change is noise: 1 ms of p99, one second of ingest in the queue, 1 MB of
//! table or indexes, 1 MiB of RSS. The receipts are not among them: they
//! are kept for `receipts.retention_days` and grow through any soak
//! shorter than that, by design (`done` in the CSV counts them).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::ensure;
use video_scheduler::db::Backend;

use crate::measure::{percentile, Fixture, Setup};
use crate::plot::{self, Panel, Series};
use crate::rows;
use crate::server::Server;

/// Ids per request.
const BODY: usize = 1_000;
/// Concurrent clients sharing the schedule.
const CLIENTS: usize = 4;

pub struct Params {
    pub secs: u64,
    pub sample_secs: u64,
    /// Ids/s to ingest; `None`: 80% of the capacity.
    pub rate: Option<f64>,
    /// Seconds of the capacity run.
    pub capacity_secs: u64,
}

/// One sample: the `sample` seconds before `t`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub t: f64,
    pub record_p99_ms: f64,
    /// Requests sent in the interval that were not answered 202.
    pub errors: u64,
    /// Ids recorded in the interval.
    pub recorded: u64,
    /// Pending and running requests (`/v1/stats`).
    pub queue: i64,
    pub oldest_due_ms: i64,
    /// Receipts kept: ids erased since the start.
    pub done: i64,
    pub table_mb: f64,
    pub index_mb: f64,
    pub rss_mib: f64,
}

pub struct Run {
    pub capacity: f64,
    pub rate: f64,
    pub samples: Vec<Sample>,
}

/// One record request: when it was sent (seconds into the run), its
/// latency, and whether it was answered 202.
type Sent = (f64, f64, bool);

pub fn measure(setup: &Setup, params: &Params) -> anyhow::Result<Run> {
    let capacity = match params.rate {
        Some(_) => f64::NAN,
        None => {
            let sample_secs = (params.capacity_secs / 10).max(1);
            let samples = phase(setup, None, params.capacity_secs, sample_secs)?;
            let (from, to) = (&samples[samples.len() / 3], &samples[samples.len() - 1]);
            (to.done - from.done) as f64 / (to.t - from.t)
        }
    };
    let rate = params.rate.unwrap_or(capacity * 0.8);
    eprintln!(
        "soak: {rate:.0} ids/s for {} s (capacity {capacity:.0}/s)",
        params.secs
    );
    let samples = phase(setup, Some(rate), params.secs, params.sample_secs)?;
    Ok(Run {
        capacity,
        rate,
        samples,
    })
}

/// A fresh server recording `rate` ids/s (`None`: as fast as the clients
/// can) for `secs`, sampled every `sample_secs`.
fn phase(
    setup: &Setup,
    rate: Option<f64>,
    secs: u64,
    sample_secs: u64,
) -> anyhow::Result<Vec<Sample>> {
    let fx = Fixture::new(setup)?;
    let server = fx.start(setup)?;
    let url = server.url("/v1/deletions");
    let sent: Mutex<Vec<Sent>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let interval = rate.map_or(0.0, |rate| BODY as f64 / rate);
    let start = Instant::now();
    let samples = std::thread::scope(|s| -> anyhow::Result<Vec<Sample>> {
        for client in 0..CLIENTS {
            let (sent, stop, url) = (&sent, &stop, &url);
            s.spawn(move || ingest(client, start, interval, url, sent, stop));
        }
        let sampler = Sampler {
            fx: &fx,
            backend: setup.backend,
            server: &server,
            sent: &sent,
            start,
        };
        let result = sampler.run(secs, sample_secs);
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    server.stop()?;
    Ok(samples)
}

/// One client: its share of the schedule until `stop`.
fn ingest(
    client: usize,
    start: Instant,
    interval: f64,
    url: &str,
    sent: &Mutex<Vec<Sent>>,
    stop: &AtomicBool,
) {
    let agent = ureq::Agent::new();
    for k in 0.. {
        let slot = (k * CLIENTS + client) as f64 * interval;
        let due = start + Duration::from_secs_f64(slot);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let ids: Vec<String> = (0..BODY)
            .map(|i| format!("soak-{client}-{k}-{i}"))
            .collect();
        let began = Instant::now();
        let ok = agent
            .post(url)
            .send_json(serde_json::json!({ "ids": ids }))
            .is_ok_and(|r| r.status() == 202);
        let latency = began.elapsed().as_secs_f64() * 1000.0;
        let at = began.duration_since(start).as_secs_f64();
        sent.lock().expect("not poisoned").push((at, latency, ok));
    }
}

/// What a phase samples.
struct Sampler<'a> {
    fx: &'a Fixture,
    backend: Backend,
    server: &'a Server,
    sent: &'a Mutex<Vec<Sent>>,
    start: Instant,
}

impl Sampler<'_> {
    /// Samples every `sample_secs` for `secs`.
    fn run(&self, secs: u64, sample_secs: u64) -> anyhow::Result<Vec<Sample>> {
        let agent = ureq::Agent::new();
        let stats_url = self.server.url("/v1/stats");
        let mut samples = Vec::new();
        let mut seen = 0;
        for k in 1..=secs / sample_secs {
            let at = self.start + Duration::from_secs(sample_secs * k);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let interval: Vec<Sent> = {
                let sent = self.sent.lock().expect("not poisoned");
                let new = sent[seen..].to_vec();
                seen = sent.len();
                new
            };
            let mut latencies: Vec<f64> = interval.iter().map(|r| r.1).collect();
            latencies.sort_by(f64::total_cmp);
            let stats = stats(&agent, &stats_url)?;
            let number = |key: &str| stats[key].as_i64().unwrap_or(0);
            let sizes = rows::sizes(&self.fx.db, self.backend)?;
            let sample = Sample {
                t: self.start.elapsed().as_secs_f64(),
                record_p99_ms: percentile(&latencies, 0.99),
                errors: interval.iter().filter(|r| !r.2).count() as u64,
                recorded: (interval.iter().filter(|r| r.2).count() * BODY) as u64,
                queue: number("pending") + number("running"),
                oldest_due_ms: number("oldest_due_age_ms"),
                done: number("done"),
                table_mb: sizes.table as f64 / 1e6,
                index_mb: sizes.indexes as f64 / 1e6,
                rss_mib: self.server.rss_mib()?,
            };
            eprintln!("soak {:?}: {sample:?}", self.backend);
            samples.push(sample);
        }
        ensure!(
            samples.len() >= 10,
            "a soak needs at least 10 samples: run longer or sample more often"
        );
        Ok(samples)
    }
}

/// `/v1/stats`, asked again while it answers 503 (the server bounds its
/// reads: a database stalled by a checkpoint gets a 503, which is the
/// service working as meant, not the end of the soak), for up to a minute.
fn stats(agent: &ureq::Agent, url: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match agent.get(url).call() {
            Ok(response) => return Ok(response.into_json()?),
            Err(ureq::Error::Status(503, _)) if Instant::now() < deadline => {
                eprintln!("soak: /v1/stats answered 503; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A figure's name, its value in a sample, and its noise floor.
type Figure = (&'static str, fn(&Sample) -> f64, fn(&Run) -> f64);

fn figures() -> [Figure; 5] {
    [
        ("record p99, ms", |s| s.record_p99_ms, |_| 1.0),
        ("queue depth", |s| s.queue as f64, |r| r.rate),
        ("table, MB", |s| s.table_mb, |_| 1.0),
        ("indexes, MB", |s| s.index_mb, |_| 1.0),
        ("RSS, MiB", |s| s.rss_mib, |_| 1.0),
    ]
}

/// Median of the second tenth of the samples, median of the last tenth,
/// and whether the second is within 10% (plus the floor) of the first.
/// Medians, not means: a leak moves every sample, a stall of a few
/// seconds (a checkpoint, a neighbour on the machine) moves one or two.
pub fn growth(run: &Run, value: fn(&Sample) -> f64, floor: f64) -> (f64, f64, bool) {
    let n = run.samples.len();
    let tenth = (n / 10).max(1);
    let median = |part: &[Sample]| {
        let mut values: Vec<f64> = part.iter().map(value).collect();
        values.sort_by(f64::total_cmp);
        percentile(&values, 0.5)
    };
    let early = median(&run.samples[tenth..2 * tenth]);
    let late = median(&run.samples[n - tenth..]);
    (early, late, late <= early * 1.1 + floor)
}

/// The soak's verdicts as a Markdown table, one column per backend.
pub fn table(params: &Params, runs: &[(Backend, Run)]) -> String {
    let mut out = format!(
        "Soak: {} s per backend, sampled every {} s; {BODY} ids per request, {CLIENTS} clients.\n\n| figure |",
        params.secs, params.sample_secs
    );
    for (backend, _) in runs {
        let _ = write!(out, " {backend:?}: second tenth -> last tenth (medians) |");
    }
    out.push_str("\n| --- |");
    for _ in runs {
        out.push_str(" --- |");
    }
    let _ = write!(
        out,
        "\n| capacity (erased/s while recording) -> ingest, ids/s |"
    );
    for (_, run) in runs {
        let recorded: u64 = run.samples.iter().map(|s| s.recorded).sum();
        let secs = run.samples.last().map_or(1.0, |s| s.t);
        let _ = write!(
            out,
            " {:.0} -> {:.0} (achieved {:.0}) |",
            run.capacity,
            run.rate,
            recorded as f64 / secs
        );
    }
    let _ = write!(out, "\n| record errors |");
    for (_, run) in runs {
        let _ = write!(
            out,
            " {} |",
            run.samples.iter().map(|s| s.errors).sum::<u64>()
        );
    }
    for (name, value, floor) in figures() {
        let _ = write!(out, "\n| {name} |");
        for (_, run) in runs {
            let (early, late, flat) = growth(run, value, floor(run));
            let verdict = if flat { "flat" } else { "GROWS" };
            let _ = write!(out, " {early:.1} -> {late:.1}, {verdict} |");
        }
    }
    out.push('\n');
    out
}

/// The columns of `soak.csv`.
const COLUMNS: &str = "backend,capacity,rate,t_secs,record_p99_ms,errors,recorded,queue,\
                       oldest_due_ms,done,table_mb,index_mb,rss_mib";

/// Runs read back from `soak.csv` files (`--replot`: to draw runs made
/// apart, or again).
pub fn read(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<(Backend, Run)>> {
    let mut runs: Vec<(Backend, Run)> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)?;
        for (n, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            anyhow::ensure!(f.len() == 13, "{}:{}: 13 columns", path.display(), n + 1);
            let backend = match f[0] {
                "Sqlite" => Backend::Sqlite,
                "Mysql" => Backend::Mysql,
                "Postgres" => Backend::Postgres,
                other => anyhow::bail!("{}:{}: backend {other:?}", path.display(), n + 1),
            };
            let number = |i: usize| -> anyhow::Result<f64> { Ok(f[i].parse::<f64>()?) };
            let sample = Sample {
                t: number(3)?,
                record_p99_ms: number(4)?,
                errors: number(5)? as u64,
                recorded: number(6)? as u64,
                queue: number(7)? as i64,
                oldest_due_ms: number(8)? as i64,
                done: number(9)? as i64,
                table_mb: number(10)?,
                index_mb: number(11)?,
                rss_mib: number(12)?,
            };
            match runs.iter_mut().find(|(b, _)| *b == backend) {
                Some((_, run)) => run.samples.push(sample),
                None => runs.push((
                    backend,
                    Run {
                        capacity: number(1)?,
                        rate: number(2)?,
                        samples: vec![sample],
                    },
                )),
            }
        }
    }
    Ok(runs)
}

/// `soak.csv` and `soak.svg` into `dir`.
pub fn write(dir: &Path, runs: &[(Backend, Run)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut csv = String::from(COLUMNS);
    csv.push('\n');
    for (backend, run) in runs {
        for s in &run.samples {
            let _ = writeln!(
                csv,
                "{backend:?},{:.0},{:.0},{:.1},{:.2},{},{},{},{},{},{:.2},{:.2},{:.1}",
                run.capacity,
                run.rate,
                s.t,
                s.record_p99_ms,
                s.errors,
                s.recorded,
                s.queue,
                s.oldest_due_ms,
                s.done,
                s.table_mb,
                s.index_mb,
                s.rss_mib
            );
        }
    }
    std::fs::write(dir.join("soak.csv"), csv)?;
    let panel = |title: &str, y_label: &str, value: fn(&Sample) -> f64| Panel {
        title: title.into(),
        y_label: y_label.into(),
        series: runs
            .iter()
            .map(|(backend, run)| Series {
                name: format!("{backend:?}"),
                points: run.samples.iter().map(|s| (s.t, value(s))).collect(),
            })
            .collect(),
    };
    let panels = [
        panel("Record p99 (POST of 1,000 ids)", "ms", |s| s.record_p99_ms),
        panel("Queue depth (pending + running)", "requests", |s| {
            s.queue as f64
        }),
        panel("Table + indexes", "MB", |s| s.table_mb + s.index_mb),
        panel("Server RSS", "MiB", |s| s.rss_mib),
    ];
    plot::write_svg(&dir.join("soak.svg"), "seconds", false, &panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[f64]) -> Run {
        Run {
            capacity: 1.0,
            rate: 1.0,
            samples: values
                .iter()
                .map(|&v| Sample {
                    rss_mib: v,
                    ..Sample::default()
                })
                .collect(),
        }
    }

    #[test]
    fn growth_compares_the_second_tenth_with_the_last() {
        // The first tenth (a warm-up of 50) is not compared.
        let mut values = vec![50.0; 10];
        values.extend(vec![20.0; 80]);
        values.extend(vec![22.0; 10]);
        assert_eq!(
            growth(&run(&values), |s| s.rss_mib, 0.0),
            (20.0, 22.0, true)
        );
        // One stall at the end is not growth; most of the last tenth is.
        *values.last_mut().unwrap() = 400.0;
        assert!(growth(&run(&values), |s| s.rss_mib, 0.0).2);
        for v in &mut values[94..] {
            *v = 40.0;
        }
        assert!(!growth(&run(&values), |s| s.rss_mib, 0.0).2);
        // Within the floor: flat.
        assert!(growth(&run(&values), |s| s.rss_mib, 20.0).2);
    }
}
