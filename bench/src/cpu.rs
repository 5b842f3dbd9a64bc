//! Where the machine's CPU went while something was measured.

use std::time::{Duration, Instant};

use anyhow::Context;
use video_scheduler::db::Backend;

use crate::server::Server;

/// Where the machine's CPU went between two moments: the server, the
/// database's processes, and everything else (the load generator), as
/// shares of all cores (`/proc/stat`), so that a rate short of its target
/// says whether the cores were full and who had them.
pub struct CpuShares {
    at: Instant,
    busy: Duration,
    server: Duration,
    database: Duration,
}

impl CpuShares {
    pub fn now(backend: Backend, server: &Server) -> anyhow::Result<CpuShares> {
        Ok(CpuShares {
            at: Instant::now(),
            busy: machine_busy()?,
            server: server.cpu_time()?,
            database: crate::rows::database_cpu(backend),
        })
    }

    /// Prints the shares since `self`.
    pub fn report(&self, what: &str, backend: Backend, server: &Server) -> anyhow::Result<()> {
        let after = CpuShares::now(backend, server)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let whole = after.at.duration_since(self.at).as_secs_f64() * cores;
        let share = |d: Duration| d.as_secs_f64() / whole * 100.0;
        let (busy, server, database) = (
            share(after.busy.saturating_sub(self.busy)),
            share(after.server.saturating_sub(self.server)),
            share(after.database.saturating_sub(self.database)),
        );
        eprintln!(
            "{what}, CPU of {cores} cores: busy {busy:.0}% (server {server:.0}%, database {database:.0}%, the rest {:.0}%)",
            busy - server - database
        );
        Ok(())
    }
}

/// CPU time every core spent not idle (user, nice, system, irq, softirq,
/// steal), from /proc/stat.
fn machine_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    Ok(crate::rows::ticks_to_duration(busy))
}
