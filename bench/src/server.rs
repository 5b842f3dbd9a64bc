//! The release binary as a child process, and databases of the benchmark's own.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diesel::RunQueryDsl;
use video_scheduler::config::Config;
use video_scheduler::db::{Backend, Db};

/// `video-scheduler serve` under measurement.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Writes `config` to `dir/conf.json`, starts `bin` on it and waits until
    /// it listens. Its log goes to `dir/server.log`.
    pub fn start(bin: &Path, config: &Config, dir: &Path) -> anyhow::Result<Server> {
        let config_file = dir.join("conf.json");
        std::fs::write(
            &config_file,
            serde_json::to_vec_pretty(&older_readable(config)?)?,
        )?;
        let mut command = Command::new(bin);
        for (key, _) in std::env::vars() {
            if key.starts_with("VIDEO_SCHEDULER_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .arg("--config")
            .arg(&config_file)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let log_path = dir.join("server.log");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).ok();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(
                        rest.split(',')
                            .next()
                            .unwrap_or_default()
                            .parse::<SocketAddr>(),
                    );
                }
                if let Some(log) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(log, "{line}");
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(addr)) => Ok(Server { child, addr }),
            _ => {
                let _ = child.kill();
                bail!(
                    "the server did not start; see {}",
                    dir.join("server.log").display()
                )
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// CPU time used so far (user + system), from /proc.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let (_, ticks) = crate::cpu::process_ticks(&stat).context("stat format")?;
        Ok(crate::cpu::ticks_to_duration(ticks))
    }

    /// Peak resident set size (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        self.status_mib("VmHWM:")
    }

    /// Resident set size now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        self.status_mib("VmRSS:")
    }

    /// A `kB` field of /proc/<pid>/status, in MiB.
    fn status_mib(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .with_context(|| format!("no {field}"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("{field} value"))?
            .parse()?;
        Ok(kib / 1024.0)
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                bail!("the server did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A database of the benchmark's own, dropped afterwards: a file for
/// SQLite, a database with a unique name on a MariaDB/PostgreSQL server.
pub struct BenchDb {
    pub url: String,
    server: Option<(String, String, Backend)>,
}

impl BenchDb {
    pub fn create(backend: Backend, server_url: &str, dir: &Path) -> anyhow::Result<BenchDb> {
        if backend == Backend::Sqlite {
            return Ok(BenchDb {
                url: format!("sqlite://{}", dir.join("bench.db").display()),
                server: None,
            });
        }
        let name = format!(
            "vs_bench_{}_{:06x}",
            std::process::id(),
            fastrand::u32(..0xffffff)
        );
        admin(server_url, &format!("CREATE DATABASE {name}"))?;
        let base = &server_url[..server_url
            .rfind('/')
            .context("server URL has no /database")?];
        Ok(BenchDb {
            url: format!("{base}/{name}"),
            server: Some((server_url.to_owned(), name, backend)),
        })
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Some((server, name, backend)) = &self.server {
            let force = if *backend == Backend::Postgres {
                " WITH (FORCE)"
            } else {
                ""
            };
            if let Err(e) = admin(server, &format!("DROP DATABASE IF EXISTS {name}{force}")) {
                eprintln!("could not drop {name}: {e}");
            }
        }
    }
}

fn admin(server_url: &str, sql: &str) -> anyhow::Result<()> {
    let db = Db::connect(server_url, 1)?;
    db.write(|c| diesel::sql_query(sql).execute(c))?;
    Ok(())
}

/// Builds the server binary (release, every backend) and returns its path.
pub fn build_server() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--all-features",
            "--bin",
            "video-scheduler",
        ])
        .status()?;
    if !status.success() {
        bail!("cargo build of the server failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release").join("video-scheduler"))
}

/// `config` as JSON without the keys at their defaults (in each storage
/// target too), so that `--server` can measure an earlier commit, which
/// refuses keys added since as unknown, with the same configuration: the
/// keys the benchmark sets differ from the defaults and stay.
fn older_readable(config: &Config) -> anyhow::Result<serde_json::Value> {
    fn strip_defaults(value: &mut serde_json::Value, defaults: &serde_json::Value) {
        if let Some(fields) = value.as_object_mut() {
            fields.retain(|key, v| defaults.get(key) != Some(v));
        }
    }
    let mut json = serde_json::to_value(config)?;
    let default = serde_json::to_value(video_scheduler::config::StorageConfig::default())?;
    match &mut json["storage"] {
        serde_json::Value::Array(list) => list.iter_mut().for_each(|t| strip_defaults(t, &default)),
        one => strip_defaults(one, &default),
    }
    strip_defaults(&mut json, &serde_json::to_value(Config::default())?);
    Ok(json)
}
