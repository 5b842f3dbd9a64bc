//! `bench --galera`: three instances on a 3-node MariaDB Galera cluster of
//! the benchmark's own, each on its own node, against the same three
//! instances all on one node, in one run (issue #28's target: spread at
//! least 0.8 of one node). Also the write conflicts per 1,000 claims, as
//! the instances count their claims' (each rerun) and as the cluster counts
//! all of them (`wsrep_local_cert_failures` + `wsrep_local_bf_aborts`
//! over the nodes: the same figure for any server binary, so `--server`
//! compares an older one), and how the work split between the instances.
//!
//! The cluster is the tests' own harness (`tests/it/common/galera.rs`):
//! Debian's `mariadbd` and `galera-4`, run as the `mysql` user on loopback
//! ports picked at run time, killed on drop.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use video_scheduler::clock::now_ms;

use crate::measure::{ids, Fixture, Setup};
use crate::server::Server;

/// The tests' Galera harness, as is; what it takes from the tests' common
/// module is below.
#[path = "../../tests/it/common/galera.rs"]
#[allow(dead_code)]
mod cluster;

/// How long the harness waits for a node.
const DEADLINE: Duration = Duration::from_secs(120);

fn run_ok(cmd: &str, args: &[&str]) {
    let status = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(status.success(), "{cmd} {args:?}");
}

#[allow(dead_code)]
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where the three instances connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// All three on node 1.
    OneNode,
    /// Instance i on node i.
    Spread,
}

/// One drain's figures.
#[derive(Debug)]
pub struct Run {
    pub layout: Layout,
    pub rate: f64,
    pub claims: f64,
    pub conflicts: f64,
    /// Certification failures and brute-force aborts over the nodes.
    pub cluster_conflicts: f64,
    /// Deletions per instance.
    pub split: Vec<f64>,
}

/// Drains `n` ids once per layout, alternating `runs` times, on one
/// cluster.
pub fn measure(bin: &Path, n: usize, runs: usize, batch_size: usize) -> anyhow::Result<Vec<Run>> {
    let galera = cluster::Galera::start(3);
    let mut figures = Vec::new();
    for _ in 0..runs {
        for layout in [Layout::OneNode, Layout::Spread] {
            let run = drain(&galera, bin, n, batch_size, layout)?;
            eprintln!("galera {layout:?}: {run:?}");
            figures.push(run);
        }
    }
    Ok(figures)
}

fn drain(
    galera: &cluster::Galera,
    bin: &Path,
    n: usize,
    batch_size: usize,
    layout: Layout,
) -> anyhow::Result<Run> {
    let setup = Setup {
        bin: bin.to_owned(),
        backend: video_scheduler::db::Backend::Mysql,
        server_url: galera.url(1, "mysql"),
        batch_size,
        executors: 4,
        fast_lane: true,
    };
    let fx = Fixture::new(&setup)?;
    let name = fx
        .config
        .database_url
        .rsplit('/')
        .next()
        .context("db name")?;
    let ids = ids("galera", n);
    fx.create_files(&ids)?;
    fx.queue(&ids, now_ms())?;
    let conflicts_before = cluster_conflicts(galera);
    let start = Instant::now();
    let servers = (1..=3)
        .map(|i| {
            let mut config = fx.config.clone();
            let node = match layout {
                Layout::OneNode => 1,
                Layout::Spread => i,
            };
            config.database_url = galera.url(node, name);
            let dir = fx.dir.path().join(format!("instance{i}"));
            std::fs::create_dir_all(&dir)?;
            Server::start(bin, &config, &dir)
        })
        .collect::<anyhow::Result<Vec<Server>>>()?;
    fx.wait_drained(start)?;
    let secs = start.elapsed().as_secs_f64();
    let sum = |name: &str| -> anyhow::Result<f64> { servers.iter().map(|s| metric(s, name)).sum() };
    let run = Run {
        layout,
        rate: n as f64 / secs,
        claims: sum("video_scheduler_claim_seconds_count")?,
        conflicts: sum("video_scheduler_db_conflicts_total{statement=\"claim\"}")?,
        cluster_conflicts: cluster_conflicts(galera) - conflicts_before,
        split: servers
            .iter()
            .map(|s| metric(s, "video_scheduler_deletions_total{outcome=\"deleted\"}"))
            .collect::<anyhow::Result<_>>()?,
    };
    for server in servers {
        server.stop()?;
    }
    Ok(run)
}

/// Write conflicts the cluster counted so far, over its nodes.
fn cluster_conflicts(galera: &cluster::Galera) -> f64 {
    (1..=3)
        .flat_map(|n| ["wsrep_local_cert_failures", "wsrep_local_bf_aborts"].map(|v| (n, v)))
        .filter_map(|(n, var)| galera.status(n, var)?.parse::<f64>().ok())
        .sum()
}

/// A sample's value from `server`'s `/metrics` (0 when absent).
fn metric(server: &Server, name: &str) -> anyhow::Result<f64> {
    let text = ureq::get(&server.url("/metrics")).call()?.into_string()?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0))
}

/// The figures as a Markdown table, with the medians' ratio.
pub fn table(runs: &[Run]) -> String {
    let median = |layout: Layout| {
        let mut rates: Vec<f64> = runs
            .iter()
            .filter(|r| r.layout == layout)
            .map(|r| r.rate)
            .collect();
        rates.sort_by(f64::total_cmp);
        let mid = rates.len() / 2;
        match rates.len() % 2 {
            0 => (rates[mid - 1] + rates[mid]) / 2.0,
            _ => rates[mid],
        }
    };
    let mut out = String::from(
        "| layout | drain (deletions/s) | claims | claim conflicts (instances) | per 1,000 claims | conflicts (cluster) | per 1,000 claims | deletions per instance |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in runs {
        out += &format!(
            "| {:?} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:?} |\n",
            r.layout,
            r.rate,
            r.claims,
            r.conflicts,
            1000.0 * r.conflicts / r.claims.max(1.0),
            r.cluster_conflicts,
            1000.0 * r.cluster_conflicts / r.claims.max(1.0),
            r.split
        );
    }
    out += &format!(
        "\nspread / one node (medians): {:.2}\n",
        median(Layout::Spread) / median(Layout::OneNode)
    );
    out
}
