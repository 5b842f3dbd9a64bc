//! Where the machine's CPU went while something was measured: the
//! server's process, the database's processes, the whole machine.

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
            database: database_cpu(backend),
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
    Ok(ticks_to_duration(busy))
}

/// CPU time (user + system) of the database server's processes on this
/// machine: every `postgres` process for PostgreSQL, `mariadbd`/`mysqld`
/// for MariaDB; zero for SQLite, whose work is in the server's own process.
/// Processes that ended meanwhile are not counted: the server's pooled
/// connections live as long as it does.
pub fn database_cpu(backend: Backend) -> Duration {
    let names: &[&str] = match backend {
        Backend::Postgres => &["postgres"],
        Backend::Mysql => &["mariadbd", "mysqld"],
        Backend::Sqlite => return Duration::ZERO,
    };
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((name, used)) = process_ticks(&stat) {
            if names.contains(&name) {
                ticks += used;
            }
        }
    }
    ticks_to_duration(ticks)
}

/// The command name and its user + system clock ticks, from a
/// `/proc/<pid>/stat` line.
pub fn process_ticks(stat: &str) -> Option<(&str, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((name, user + system))
}

pub fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_stat_line_gives_its_name_and_ticks() {
        let line = "42 (postgres: x) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(process_ticks(line), Some(("postgres: x", 12)));
        assert_eq!(process_ticks("garbage"), None);
    }
}
