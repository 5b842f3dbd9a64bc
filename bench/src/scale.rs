//! `--scale`: the drain as the table grows, from ten thousand to ten
//! million due rows, and with ten million not-due rows beside.
//!
//! Each point starts from a fresh database filled by the database itself
//! (`rows::generate`; PostgreSQL then vacuumed and analysed, as autovacuum
//! would after such a load, and checkpointed, as SQLite's WAL is), with no
//! files on disk: a missing file counts
//! as deleted, so the figures are the scheduler's and the database's, not
//! the file system's (the drain measure has files). The server runs until
//! `window` ids are gone; the rate and the CPU time per 1,000 deletions are
//! taken from the first deletion seen to the window's end, so the start-up
//! is not in them. Then urgent ids are recorded behind what is left, and
//! the time from their 202 to their file being gone is the urgent latency.

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use video_scheduler::clock::now_ms;
use video_scheduler::db::{queries, Backend};

use crate::measure::{percentile, Fixture, Setup};
use crate::plot::{self, Panel, Series};
use crate::rows::{self, Sizes};
use crate::server::Server;

/// Urgent ids recorded at each point, one after another.
const URGENT_PROBES: usize = 5;

/// One point of the curve: `DUE[+NOT_DUE][@THROTTLE]` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub due: u64,
    /// Rows due in a month, beside the due ones.
    pub not_due: u64,
    /// Server `max_deletions_per_sec` (0: none). A throttled point drains
    /// five seconds' worth and measures the urgent ids passing the throttle.
    pub throttle: u32,
}

impl FromStr for Point {
    type Err = String;

    fn from_str(s: &str) -> Result<Point, String> {
        let count = |v: &str| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{v:?} in point {s:?}: {e}"))
        };
        let (rows, throttle) = match s.split_once('@') {
            Some((rows, t)) => (rows, count(t)?),
            None => (s, 0),
        };
        let (due, not_due) = match rows.split_once('+') {
            Some((due, later)) => (count(due)?, count(later)?),
            None => (count(rows)?, 0),
        };
        if due < 2 {
            return Err(format!("point {s:?}: at least 2 due rows"));
        }
        let throttle = u32::try_from(throttle).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Point {
            due,
            not_due,
            throttle,
        })
    }
}

/// What one point measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub point: Point,
    /// Seconds to generate the rows (and vacuum them on PostgreSQL).
    pub fill_secs: f64,
    pub sizes: Sizes,
    pub drained: u64,
    pub secs: f64,
    pub rate: f64,
    /// Milliseconds of CPU per 1,000 deletions: the server process, and
    /// the database's processes (zero for SQLite: in the server's).
    pub server_cpu_per_1k: f64,
    pub database_cpu_per_1k: f64,
    /// Bytes of the receipts table (and its indexes) per million receipts,
    /// after the window's receipts were written.
    pub receipt_bytes_per_million: f64,
    /// Due rows still queued when the urgent ids were recorded.
    pub urgent_behind: u64,
    /// Milliseconds from each urgent id's 202 to its file being gone.
    pub urgent_ms: Vec<f64>,
}

/// Measures `point`, draining at most `window` ids (and at most half the
/// due rows, so that urgent ids still have rows to pass).
pub fn measure(setup: &Setup, point: Point, window: u64) -> anyhow::Result<Figures> {
    let mut fx = Fixture::new(setup)?;
    fx.config.max_deletions_per_sec = point.throttle;
    let mut window = window.min(point.due / 2).max(1);
    if point.throttle > 0 {
        window = window.min(u64::from(point.throttle) * 5);
    }
    let started = Instant::now();
    fill(&fx, setup.backend, point)?;
    let fill_secs = started.elapsed().as_secs_f64();
    let sizes = rows::sizes(&fx.db, setup.backend)?;
    eprintln!(
        "scale {point:?}: filled in {fill_secs:.0} s, table {} MB, indexes {} MB",
        sizes.table / 1_000_000,
        sizes.indexes / 1_000_000
    );

    let server = fx.start(setup)?;
    let drain = drain_window(&fx, setup.backend, &server, point, window)?;
    let receipts = fx.db.read(queries::counts::totals)?.done.max(1) as f64;
    let receipt_sizes = rows::sizes_of(&fx.db, setup.backend, "video_del_receipt")?;
    let urgent_behind = queued(&fx)?.saturating_sub(point.not_due);
    let mut urgent_ms = Vec::with_capacity(URGENT_PROBES);
    for i in 0..URGENT_PROBES {
        let url = server.url("/v1/deletions");
        urgent_ms.push(urgent_probe(&fx, &url, &format!("urgent-{i}"))?);
    }
    server.stop()?;
    let per_1k = |cpu: Duration| cpu.as_secs_f64() * 1e6 / drain.drained.max(1) as f64;
    let figures = Figures {
        point,
        fill_secs,
        sizes,
        drained: drain.drained,
        secs: drain.secs,
        rate: drain.drained as f64 / drain.secs,
        server_cpu_per_1k: per_1k(drain.server_cpu),
        database_cpu_per_1k: per_1k(drain.database_cpu),
        receipt_bytes_per_million: (receipt_sizes.table + receipt_sizes.indexes) as f64 / receipts
            * 1e6,
        urgent_behind,
        urgent_ms,
    };
    eprintln!(
        "scale {point:?}: {:.0} deletions/s over {}, CPU per 1,000: server {:.0} ms, database {:.0} ms; urgent behind {urgent_behind}: max {:.1} ms",
        figures.rate,
        figures.drained,
        figures.server_cpu_per_1k,
        figures.database_cpu_per_1k,
        figures.urgent_ms.iter().copied().fold(0.0, f64::max)
    );
    Ok(figures)
}

/// Fills the fixture's table with `point`'s rows and counts them.
fn fill(fx: &Fixture, backend: Backend, point: Point) -> anyhow::Result<()> {
    let now = now_ms();
    // Due over the last hours, one millisecond apart, the oldest first.
    let due_since = now - point.due as i64 - 1_000;
    rows::generate(&fx.db, backend, "due", point.due, due_since)?;
    let later = now + 30 * 86_400_000;
    rows::generate(&fx.db, backend, "later", point.not_due, later)?;
    // After such a load: what autovacuum would do (PostgreSQL), and the
    // load's pages written out, so that no checkpoint of the fill runs
    // during the measured drain.
    let settle: &[&str] = match backend {
        Backend::Postgres => &["VACUUM ANALYZE video_del_rec", "CHECKPOINT"],
        Backend::Sqlite => &["PRAGMA wal_checkpoint(TRUNCATE)"],
        Backend::Mysql => &[],
    };
    for sql in settle {
        fx.db
            .write(|c| diesel::RunQueryDsl::execute(diesel::sql_query(*sql), c))?;
    }
    let counted = fx.db.write(queries::counts::recount)?;
    let total = point.due + point.not_due;
    ensure!(
        counted.queued == total as i64,
        "{} rows, not {total}",
        counted.queued
    );
    Ok(())
}

/// Pending and running rows, from the kept counts.
fn queued(fx: &Fixture) -> anyhow::Result<u64> {
    Ok(fx.db.read(queries::counts::totals)?.queued.max(0) as u64)
}

/// What the drain of a window did.
struct Drained {
    drained: u64,
    secs: f64,
    server_cpu: Duration,
    database_cpu: Duration,
}

/// From the first deletion seen until `window` ids are gone.
fn drain_window(
    fx: &Fixture,
    backend: Backend,
    server: &Server,
    point: Point,
    window: u64,
) -> anyhow::Result<Drained> {
    let total = point.due + point.not_due;
    let deadline = Instant::now() + Duration::from_secs(600);
    let wait_below = |limit: u64| -> anyhow::Result<u64> {
        loop {
            let left = queued(fx)?;
            if left < limit {
                return Ok(left);
            }
            ensure!(
                Instant::now() < deadline,
                "{point:?}: no progress in 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let first_left = wait_below(total)?;
    let (t0, cpu0, db0) = (
        Instant::now(),
        server.cpu_time()?,
        crate::cpu::database_cpu(backend),
    );
    // The window counts from the first deletion seen: the whole window may
    // not be left by then, when a small point drains between two polls.
    let window = window.min(first_left.saturating_sub(point.not_due));
    ensure!(
        window > 0,
        "{point:?}: every due row was gone before the first poll"
    );
    let last_left = wait_below(first_left - window + 1)?;
    Ok(Drained {
        drained: first_left - last_left,
        secs: t0.elapsed().as_secs_f64(),
        server_cpu: server.cpu_time()? - cpu0,
        database_cpu: crate::cpu::database_cpu(backend).saturating_sub(db0),
    })
}

/// Records `id` urgent with a file of its own; milliseconds from the 202
/// to the file being gone (at most a minute).
fn urgent_probe(fx: &Fixture, url: &str, id: &str) -> anyhow::Result<f64> {
    let path = fx.root().join(id);
    std::fs::File::create(&path)?;
    let response = ureq::post(url).send_json(serde_json::json!({
        "ids": [id],
        "priority": "urgent",
    }))?;
    ensure!(
        response.status() == 202,
        "urgent {id}: {}",
        response.status()
    );
    let recorded = Instant::now();
    while path.exists() {
        if recorded.elapsed() > Duration::from_secs(60) {
            bail!("urgent {id} not erased within a minute");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(recorded.elapsed().as_secs_f64() * 1000.0)
}

/// The figures as CSV, one line per backend and point.
pub fn csv(results: &[(Backend, Figures)]) -> String {
    let mut out = String::from(
        "backend,due,not_due,throttle,fill_secs,table_bytes,index_bytes,\
         table_bytes_per_million_rows,index_bytes_per_million_rows,drained,secs,\
         deletions_per_sec,server_cpu_ms_per_1000,database_cpu_ms_per_1000,\
         receipt_bytes_per_million,urgent_behind,urgent_median_ms,urgent_max_ms\n",
    );
    for (backend, f) in results {
        let rows = (f.point.due + f.point.not_due) as f64 / 1e6;
        let mut urgent = f.urgent_ms.clone();
        urgent.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "{backend:?},{},{},{},{:.1},{},{},{:.0},{:.0},{},{:.3},{:.0},{:.1},{:.1},{:.0},{},{:.1},{:.1}",
            f.point.due,
            f.point.not_due,
            f.point.throttle,
            f.fill_secs,
            f.sizes.table,
            f.sizes.indexes,
            f.sizes.table as f64 / rows,
            f.sizes.indexes as f64 / rows,
            f.drained,
            f.secs,
            f.rate,
            f.server_cpu_per_1k,
            f.database_cpu_per_1k,
            f.receipt_bytes_per_million,
            f.urgent_behind,
            percentile(&urgent, 0.5),
            urgent.last().copied().unwrap_or(f64::NAN),
        );
    }
    out
}

/// The figures as a Markdown table.
pub fn table(results: &[(Backend, Figures)]) -> String {
    let mut out = String::from(
        "| backend | due | not due | throttle /s | deletions/s | CPU ms per 1,000: server + database | table + index MB per million rows | receipts MB per million | urgent behind | urgent max ms |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (backend, f) in results {
        let rows = (f.point.due + f.point.not_due) as f64 / 1e6;
        let _ = writeln!(
            out,
            "| {backend:?} | {} | {} | {} | {:.0} | {:.0} + {:.0} | {:.0} + {:.0} | {:.0} | {} | {:.1} |",
            f.point.due,
            f.point.not_due,
            f.point.throttle,
            f.rate,
            f.server_cpu_per_1k,
            f.database_cpu_per_1k,
            f.sizes.table as f64 / rows / 1e6,
            f.sizes.indexes as f64 / rows / 1e6,
            f.receipt_bytes_per_million / 1e6,
            f.urgent_behind,
            f.urgent_ms.iter().copied().fold(0.0, f64::max),
        );
    }
    out
}

/// `scale.csv` and `scale.svg` into `dir`: the rate and the CPU per 1,000
/// against the due rows, for the unthrottled points with nothing beside
/// (a point with rows beside is drawn as its own series).
pub fn write(dir: &Path, results: &[(Backend, Figures)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("scale.csv"), csv(results))?;
    let series = |value: fn(&Figures) -> f64| {
        let mut out: Vec<Series> = Vec::new();
        for (backend, f) in results.iter().filter(|(_, f)| f.point.throttle == 0) {
            let name = if f.point.not_due == 0 {
                format!("{backend:?}")
            } else {
                format!("{backend:?}, {} not due beside", f.point.not_due)
            };
            match out.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push((f.point.due as f64, value(f))),
                None => out.push(Series {
                    name,
                    points: vec![(f.point.due as f64, value(f))],
                }),
            }
        }
        out
    };
    let panels = [
        Panel {
            title: "Drain rate against due rows".into(),
            y_label: "deletions/s".into(),
            series: series(|f| f.rate),
        },
        Panel {
            title: "CPU per 1,000 deletions (server + database)".into(),
            y_label: "ms".into(),
            series: series(|f| f.server_cpu_per_1k + f.database_cpu_per_1k),
        },
    ];
    plot::write_svg(&dir.join("scale.svg"), "due rows", true, &panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_read_due_rows_beside_and_a_throttle() {
        assert_eq!(
            "1_000_000+10000000@200".parse(),
            Ok(Point {
                due: 1_000_000,
                not_due: 10_000_000,
                throttle: 200
            })
        );
        assert_eq!("10000".parse::<Point>().unwrap().not_due, 0);
        assert!("1".parse::<Point>().is_err());
        assert!("ten".parse::<Point>().is_err());
        assert!("10+x".parse::<Point>().is_err());
    }
}
