//! The real binary as a child process, for kill -9, SIGTERM and restarts.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use video_scheduler::config::Config;

use super::{Client, DEADLINE};

/// `video-scheduler serve` running as a child process.
pub struct ServerProcess {
    client: Client,
    child: Child,
    /// Everything it logged so far.
    log: Arc<Mutex<String>>,
    /// Set when its stderr closed: `log` then holds every line.
    log_closed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::ops::Deref for ServerProcess {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Writes `config` as JSON next to its database, for `--config`.
pub fn write_config(config: &Config, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    path
}

impl ServerProcess {
    /// Starts the binary with `config` (its `listen` should be port 0) and
    /// waits until it logs the address it listens on.
    pub fn start(config: &Config, config_file: &Path) -> ServerProcess {
        Self::start_client(config_file, &[], |addr| Client {
            addr,
            config: config.clone(),
            #[cfg(feature = "s3")]
            s3: None,
        })
    }

    /// [`ServerProcess::start`] on a workspace (its S3 server too), with
    /// `env` added to the process's environment.
    pub fn start_in(
        ws: &super::Workspace,
        config: &Config,
        config_file: &Path,
        env: &[(&str, &str)],
    ) -> ServerProcess {
        Self::start_client(config_file, env, |addr| ws.client(addr, config.clone()))
    }

    fn start_client(
        config_file: &Path,
        env: &[(&str, &str)],
        client: impl FnOnce(SocketAddr) -> Client,
    ) -> ServerProcess {
        let mut command = super::binary();
        // Only what a test gives: never credentials from the caller's shell.
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            command.env_remove(var);
        }
        let mut child = command
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config_file)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let log_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = log_closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split(',').next().unwrap_or_default();
                    let _ = tx.send(addr.parse::<SocketAddr>());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            closed.store(true, std::sync::atomic::Ordering::Release);
        });
        let addr = match rx.recv_timeout(DEADLINE) {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                panic!("the server did not start:\n{}", log.lock().unwrap());
            }
        };
        ServerProcess {
            client: client(addr),
            child,
            log,
            log_closed,
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit; returns its status and its log.
    pub fn terminate(self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM)
    }

    /// SIGINT (Ctrl-C), then waits for the exit; returns its status and log.
    pub fn interrupt(self) -> (ExitStatus, String) {
        self.signal(libc::SIGINT)
    }

    fn signal(mut self, signal: libc::c_int) -> (ExitStatus, String) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let status = self.wait_exit();
        // The log is complete once the reader thread saw stderr close.
        super::wait_until("the server's stderr is closed", || {
            self.log_closed.load(std::sync::atomic::Ordering::Acquire)
        });
        (status, self.log())
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the server did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A workspace whose id `slow` takes a while to delete (a directory of
/// 30,000 files, template `hls/{id}/`), with a 2 s lease and a 50 ms
/// tick, for a kill -9 in the middle of a deletion: the config, the
/// directory and its number of files.
pub fn slow_deletion(backend: super::Backend) -> (super::Workspace, Config, PathBuf, usize) {
    let (ws, mut config) = super::workspace(backend);
    config.lease_secs = 2;
    config.tick_ms = 50;
    config.storage[0].paths = vec!["hls/{id}/".into()];
    let dir = config.storage[0].root.join("hls/slow");
    std::fs::create_dir_all(&dir).unwrap();
    let files = 30_000;
    for i in 0..files {
        std::fs::write(dir.join(format!("seg-{i:05}.ts")), b"").unwrap();
    }
    (ws, config, dir, files)
}
