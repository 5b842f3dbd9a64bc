//! A PostgreSQL primary and hot standby of a test's own (issue #28):
//! `initdb` a primary, `pg_basebackup -R` a standby from it, both on
//! loopback ports picked at run time, with their data, sockets and logs in a
//! temp dir. Then break it as a failover does: `kill -9` the primary's
//! postmaster, promote the standby.
//!
//! The server programs are Debian's PostgreSQL 15 (`/usr/lib/postgresql/15/bin`,
//! or `PG_BIN`). PostgreSQL refuses to run as root: when the tests run as
//! root, the programs run as the `postgres` user (`setpriv`). Every wait is
//! a poll with a deadline, and a server that does not come up fails the
//! test with its log. Dropping the cluster kills every server (also when
//! the test panicked) and removes the temp dir. The machine's own servers
//! (127.0.0.1:5432) are never touched.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use tempfile::TempDir;

use super::DEADLINE;

/// Where Debian keeps PostgreSQL 15's server programs (`PG_BIN` overrides).
const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

/// How the primary's commits wait for the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// `synchronous_standby_names = '*'`: a commit returns once the standby
    /// has flushed it, so a promoted standby has every acknowledged commit.
    Synchronous,
    /// PostgreSQL's default: a commit returns at once, and a failover may
    /// lose the last ones.
    Asynchronous,
}

/// A primary and its streaming hot standby, killed on drop.
pub struct PgCluster {
    /// Started first; dead after [`PgCluster::kill9_primary`].
    primary: Server,
    /// Keeps its port when promoted: [`PgCluster::standby_url`] then names
    /// the new primary.
    standby: Server,
    /// Data directories, sockets and logs; removed after the servers died.
    dir: TempDir,
}

/// One postgres server of the cluster.
struct Server {
    /// `primary` or `standby`, in messages.
    name: &'static str,
    data: PathBuf,
    port: u16,
    /// The server's stderr: where it says why it did not start.
    log: PathBuf,
    /// `None` until started, and once killed or stopped.
    postmaster: Option<Child>,
}

impl PgCluster {
    /// Starts a primary and a standby streaming from it, and waits until
    /// the primary lists the standby as `replication` says.
    pub fn start(replication: Replication) -> PgCluster {
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            super::run_ok("chown", &["postgres:", dir.path().to_str().unwrap()]);
        }
        let server = |name| Server {
            name,
            data: dir.path().join(name),
            port: free_port(),
            log: dir.path().join(format!("{name}.log")),
            postmaster: None,
        };
        // Built before anything starts, so that a failed step drops (and
        // kills) whatever did start.
        let mut cluster = PgCluster {
            primary: server("primary"),
            standby: server("standby"),
            dir,
        };
        cluster.init_primary(replication);
        cluster.primary.start();
        cluster.clone_standby();
        cluster.standby.start();
        cluster.wait_until_streaming(replication);
        cluster
    }

    /// `initdb` with trust authentication on loopback (replication
    /// included), settings for a fast, small test server.
    fn init_primary(&self, replication: Replication) {
        run(
            as_postgres("initdb")
                .arg("-D")
                .arg(&self.primary.data)
                .args(["-U", "postgres", "--auth=trust", "--no-sync"])
                .args(["-E", "UTF8", "--locale=C", "--no-instructions"]),
            "initdb",
        );
        let sync_names = match replication {
            Replication::Synchronous => "*",
            Replication::Asynchronous => "",
        };
        append(
            &self.primary.data.join("postgresql.conf"),
            &format!(
                "listen_addresses = '127.0.0.1'\n\
                 port = {}\n\
                 unix_socket_directories = '{}'\n\
                 wal_level = replica\n\
                 shared_buffers = 16MB\n\
                 fsync = off\n\
                 synchronous_standby_names = '{sync_names}'\n",
                self.primary.port,
                self.dir.path().display()
            ),
        );
        append(
            &self.primary.data.join("pg_hba.conf"),
            "host replication all 127.0.0.1/32 trust\n",
        );
    }

    /// `pg_basebackup -R` of the running primary: the standby's data
    /// directory with `standby.signal` and `primary_conninfo`.
    fn clone_standby(&self) {
        run(
            as_postgres("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &self.primary.port.to_string()])
                .args(["-U", "postgres", "-D"])
                .arg(&self.standby.data)
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]),
            "pg_basebackup",
        );
        // Its own port; and once promoted it has no standby to wait for
        // (the copied '*' would hold every commit forever).
        append(
            &self.standby.data.join("postgresql.conf"),
            &format!(
                "port = {}\nsynchronous_standby_names = ''\n",
                self.standby.port
            ),
        );
    }

    fn wait_until_streaming(&self, replication: Replication) {
        let state = match replication {
            Replication::Synchronous => "sync",
            Replication::Asynchronous => "async",
        };
        let check = format!(
            "EXISTS (SELECT 1 FROM pg_stat_replication \
             WHERE state = 'streaming' AND sync_state = '{state}')"
        );
        poll("the standby streams from the primary", || {
            query_bool(&self.primary.url("postgres"), &check).unwrap_or(false)
        });
    }

    /// `postgres://postgres@127.0.0.1:PORT/db` of the (first) primary.
    pub fn primary_url(&self, db: &str) -> String {
        self.primary.url(db)
    }

    /// The standby's URL; after [`PgCluster::promote`], the new primary's.
    pub fn standby_url(&self, db: &str) -> String {
        self.standby.url(db)
    }

    /// Both servers, the primary first, in one libpq URL; with `read_write`
    /// libpq connects only to the one that takes writes
    /// (`target_session_attrs=read-write`), otherwise to the first that
    /// answers.
    pub fn multi_host_url(&self, db: &str, read_write: bool) -> String {
        let attrs = if read_write {
            "?target_session_attrs=read-write"
        } else {
            ""
        };
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{db}{attrs}",
            self.primary.port, self.standby.port
        )
    }

    /// Creates `name` on the primary and waits until the standby has it.
    pub fn create_database(&self, name: &str) {
        execute(
            &self.primary.url("postgres"),
            &format!("CREATE DATABASE {name}"),
        );
        poll(&format!("the standby has database {name}"), || {
            PgConnection::establish(&self.standby.url(name)).is_ok()
        });
    }

    /// `kill -9` of the primary's postmaster, as a crash; returns once its
    /// other processes have noticed and exited too, so nothing of it
    /// answers any more.
    pub fn kill9_primary(&mut self) {
        self.primary.kill(libc::SIGKILL);
    }

    /// Promotes the standby (`pg_promote()`), returning once it takes writes.
    pub fn promote(&self) {
        let promoted = query_bool(&self.standby.url("postgres"), "pg_promote(true, 60)")
            .unwrap_or_else(|e| panic!("pg_promote: {e}\n{}", self.standby.log_text()));
        assert!(promoted, "the standby was not promoted within 60 s");
    }

    /// Stops the standby (fast shutdown) and waits until it is gone.
    pub fn stop_standby(&mut self) {
        self.standby.kill(libc::SIGINT);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Both at once, as a crash would; the temp dir goes afterwards.
        self.primary.kill_now();
        self.standby.kill_now();
    }
}

impl Server {
    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the postmaster, logging to `log`, and waits until it takes
    /// connections (a standby: once it is consistent).
    fn start(&mut self) {
        let log = File::create(&self.log).unwrap();
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run postgres: {e}"));
        self.postmaster = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self.postmaster.as_mut().unwrap().try_wait().unwrap() {
                self.postmaster = None;
                panic!("the {} exited ({status}):\n{}", self.name, self.log_text());
            }
            if PgConnection::establish(&self.url("postgres")).is_ok() {
                return;
            }
            if start.elapsed() > DEADLINE {
                panic!("the {} did not start:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the postmaster and waits until it and every
    /// process it had started are gone.
    fn kill(&mut self, signal: libc::c_int) {
        let Some(mut postmaster) = self.postmaster.take() else {
            panic!("the {} is not running", self.name);
        };
        let children = children_of(postmaster.id());
        signal_pid(postmaster.id(), signal);
        poll(&format!("the {} exits", self.name), || {
            postmaster.try_wait().unwrap().is_some()
        });
        poll(&format!("the {}'s processes exit", self.name), || {
            children.iter().all(|&pid| !alive(pid))
        });
    }

    /// SIGKILL to the postmaster and its processes, without waiting for
    /// them to notice; for drop, which must not panic.
    fn kill_now(&mut self) {
        if let Some(mut postmaster) = self.postmaster.take() {
            let children = children_of(postmaster.id());
            let _ = postmaster.kill();
            for pid in children {
                signal_pid(pid, libc::SIGKILL);
            }
            let _ = postmaster.wait();
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// Runs one statement as the cluster's superuser.
fn execute(url: &str, sql: &str) {
    PgConnection::establish(url)
        .map_err(|e| e.to_string())
        .and_then(|mut c| {
            diesel::sql_query(sql)
                .execute(&mut c)
                .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|e| panic!("{url}: {sql}: {e}"));
}

/// `SELECT expr`, a boolean.
fn query_bool(url: &str, expr: &str) -> Result<bool, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(expr))
        .get_result(&mut conn)
        .map_err(|e| e.to_string())
}

/// A server program, run as the `postgres` user when the tests run as root.
fn as_postgres(program: &str) -> Command {
    let bin = std::env::var("PG_BIN").unwrap_or_else(|_| DEFAULT_BIN.to_owned());
    let program = Path::new(&bin).join(program);
    let mut cmd = if running_as_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]);
        cmd.arg(program);
        cmd
    } else {
        Command::new(program)
    };
    // A directory the postgres user may enter (the tests' may be root's).
    cmd.current_dir("/");
    cmd
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a program to completion; fails the test with its output otherwise.
fn run(cmd: &mut Command, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap();
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The processes whose parent is `pid` (a postmaster's backends and
/// auxiliary processes).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat_of(child).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// Whether `pid` runs (a zombie, which nobody may reap here, does not).
fn alive(pid: u32) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != "Z")
}

/// The state and parent of `pid`, from `/proc/PID/stat`: `pid (comm) state
/// ppid ...`, where comm may hold spaces and parentheses.
fn stat_of(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_owned();
    Some((state, fields.next()?.parse().ok()?))
}

fn signal_pid(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory preconditions; a pid that is gone is ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// [`super::wait_until`] with a slower poll: each try here may connect.
fn poll(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
