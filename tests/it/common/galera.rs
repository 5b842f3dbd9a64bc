//! A MariaDB Galera cluster of a test's own (issue #28): `size` nodes of
//! Debian's MariaDB 10.11 (`/usr/sbin/mariadbd`) with galera-4, each with
//! its data directory, socket, pid file and error log in a temp dir, on
//! loopback ports picked at run time (SQL, group communication, IST and
//! rsync SST: four per node), so parallel tests and runs never collide.
//! Every `mariadbd` gets `--no-defaults` (nothing under /etc/mysql is read)
//! and runs as the `mysql` user; the machine's own MariaDB (127.0.0.1:3306)
//! is never touched.
//!
//! Start-up is quick because no node needs a full state transfer: once
//! per test process a template data directory is made (`mariadb-install-db`,
//! then one bootstrap of a one-node cluster and a clean shutdown, so that
//! InnoDB holds a Galera position), and every node starts from a copy of
//! it: the first with `--wsrep-new-cluster`, the others join one after the
//! other and catch up by IST. A node killed with `kill -9` is restarted as
//! `mysqld_safe` would: `--wsrep-recover` reads its last position from
//! InnoDB, and `--wsrep-start-position` makes it rejoin by IST.
//!
//! The group communication timeouts are shorter than Galera's defaults
//! (a dead or cut-off node is dropped from the view within about 3 s
//! instead of 5 to 15) to keep the tests short. Every wait is a poll with
//! a deadline, and a node that does not come up fails the test with its
//! error log. Dropping the cluster kills every node (also after a panic)
//! and removes the temp dir.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use diesel::{Connection, MysqlConnection, RunQueryDsl};
use tempfile::TempDir;

use super::DEADLINE;

const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

/// Galera's group communication, faster than its defaults (suspect a
/// silent peer after 5 s, drop it after 15 s) but with room for a loaded
/// 2-core machine running several clusters at once.
const EVS_TIMEOUTS: &str = "evs.keepalive_period=PT0.5S; evs.inactive_check_period=PT0.5S; \
     evs.suspect_timeout=PT3S; evs.inactive_timeout=PT5S; evs.install_timeout=PT5S; \
     evs.join_retrans_period=PT0.2S";

/// A Galera cluster of a test's own, killed on drop. Nodes are numbered
/// from 1, as in their names (`node1`) and `wsrep_cluster_size`.
pub struct Galera {
    nodes: Vec<Node>,
    /// Data directories, sockets and logs; removed after the nodes died.
    dir: TempDir,
}

/// One `mariadbd` of the cluster.
struct Node {
    /// `node1`, ...: its `wsrep_node_name` and its directory's name.
    name: String,
    /// Holds `data/`, the socket, the pid file and the logs.
    dir: PathBuf,
    ports: Ports,
    /// `gcomm://` and every node's group communication address.
    cluster_address: String,
    /// `None` until started, and once killed.
    process: Option<Child>,
    /// Cut off with `gmcast.isolate=1`, not yet healed.
    isolated: bool,
}

/// A node's loopback ports.
#[derive(Clone, Copy)]
struct Ports {
    sql: u16,
    gcomm: u16,
    ist: u16,
    sst: u16,
}

impl Galera {
    /// Starts `size` nodes and waits until each is `Synced` in a cluster
    /// of `size`.
    pub fn start(size: usize) -> Galera {
        assert!(size >= 1);
        let template = template();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<Ports> = free_ports(4 * size)
            .chunks(4)
            .map(|p| Ports {
                sql: p[0],
                gcomm: p[1],
                ist: p[2],
                sst: p[3],
            })
            .collect();
        let cluster_address = gcomm_address(&ports);
        // Built before anything starts, so that a failed step drops (and
        // kills) whatever did start.
        let mut cluster = Galera {
            nodes: (1..=size)
                .map(|n| Node::new(dir.path(), n, ports[n - 1], &cluster_address))
                .collect(),
            dir,
        };
        for node in &cluster.nodes {
            copy_dir(&template.join("data"), &node.data());
        }
        chown_mysql(cluster.dir.path());
        let started = Instant::now();
        cluster.nodes[0].start(&["--wsrep-new-cluster".to_owned()]);
        cluster.nodes[0].wait_until("it is Synced", || cluster.nodes[0].synced());
        for n in 2..=size {
            cluster.join(n);
        }
        cluster.wait_all_synced();
        eprintln!(
            "galera: {size} nodes Synced {:?} after the first started",
            started.elapsed()
        );
        cluster
    }

    /// Starts node `n` and waits until node 1 counts it in the view (not
    /// until it is synced): the next node may then join at once, without
    /// two joins disturbing each other.
    fn join(&mut self, n: usize) {
        self.nodes[n - 1].start(&[]);
        let first = &self.nodes[0];
        self.nodes[n - 1].wait_until(&format!("node1 counts {n} nodes"), || {
            first.status_num("wsrep_cluster_size") >= n as u64
        });
    }

    /// `mysql://root@127.0.0.1:PORT/db` of node `n` (root, no password).
    pub fn url(&self, n: usize, db: &str) -> String {
        self.node(n).url(db)
    }

    /// Creates database `name` on a node that is in the cluster, and waits
    /// until every node in the cluster has it.
    pub fn create_database(&self, name: &str) {
        let live: Vec<&Node> = self.nodes.iter().filter(|n| n.in_cluster()).collect();
        let sql = format!("CREATE DATABASE {name} CHARACTER SET utf8mb4");
        execute(&live[0].url("mysql"), &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        for node in live {
            poll(&format!("{} has database {name}", node.name), || {
                MysqlConnection::establish(&node.url(name)).is_ok()
            });
        }
    }

    /// Runs one statement on node `n`, as root.
    pub fn execute(&self, n: usize, sql: &str) {
        let node = self.node(n);
        execute(&node.url("mysql"), sql).unwrap_or_else(|e| panic!("{}: {sql}: {e}", node.name));
    }

    /// `SHOW STATUS` variable `var` of node `n` (`wsrep_cluster_size`,
    /// `wsrep_local_state_comment`, ...); `None` if the node does not
    /// answer.
    pub fn status(&self, n: usize, var: &str) -> Option<String> {
        self.node(n).status(var)
    }

    /// Cuts node `n` off the others (`gmcast.isolate=1`) and waits until
    /// it is out of the primary component and the others form one without
    /// it. Its `mariadbd` keeps running and answering: a commit in flight
    /// fails with 1180 (`Not connected to Primary Component`), and then
    /// every statement that touches a table with 1047 (`WSREP has not yet
    /// prepared node for application use`).
    pub fn isolate(&mut self, n: usize) {
        self.set_isolated(n, true);
        let node = self.node(n);
        poll(
            &format!("{} is out of the primary component", node.name),
            || {
                node.status("wsrep_cluster_status")
                    .is_some_and(|s| s != "Primary")
            },
        );
        self.wait_all_synced();
    }

    /// Undoes [`Galera::isolate`]: waits until node `n` has rejoined and
    /// every node is `Synced` again.
    pub fn heal(&mut self, n: usize) {
        self.set_isolated(n, false);
        self.wait_all_synced();
    }

    fn set_isolated(&mut self, n: usize, isolated: bool) {
        let sql = format!(
            "SET GLOBAL wsrep_provider_options = 'gmcast.isolate={}'",
            u8::from(isolated)
        );
        self.execute(n, &sql);
        self.node_mut(n).isolated = isolated;
    }

    /// `kill -9` of node `n` (and of any state transfer it was running);
    /// returns once the other nodes have a view without it.
    pub fn kill9(&mut self, n: usize) {
        self.node_mut(n).kill_now();
        self.wait_all_synced();
    }

    /// Restarts node `n` after [`Galera::kill9`] as `mysqld_safe` does
    /// (`--wsrep-recover`, then `--wsrep-start-position`), waits until
    /// every node is `Synced`, and checks that it caught up by IST, not by
    /// a full state transfer. Returns how long it took.
    pub fn restart(&mut self, n: usize) -> Duration {
        let started = Instant::now();
        let node = self.node_mut(n);
        assert!(node.process.is_none(), "{} is running", node.name);
        let position = node.recover();
        let log_before = node.error_log_bytes().len();
        node.start(&[format!("--wsrep-start-position={position}")]);
        self.wait_all_synced();
        let node = self.node(n);
        let since = String::from_utf8_lossy(&node.error_log_bytes()[log_before..]).into_owned();
        assert!(
            since.contains("rsync IST completed on joiner"),
            "{} did not rejoin by IST:\n{}",
            node.name,
            tail(&since, 80)
        );
        started.elapsed()
    }

    /// Waits until node `n` is `Synced` and sees every node that is in
    /// the cluster (running, not cut off).
    pub fn wait_synced(&self, n: usize) {
        let size = self.nodes.iter().filter(|n| n.in_cluster()).count() as u64;
        let node = self.node(n);
        node.wait_until(&format!("it is Synced in a cluster of {size}"), || {
            node.synced() && node.status_num("wsrep_cluster_size") == size
        });
    }

    fn wait_all_synced(&self) {
        for n in 1..=self.nodes.len() {
            if self.node(n).in_cluster() {
                self.wait_synced(n);
            }
        }
    }

    fn node(&self, n: usize) -> &Node {
        assert!((1..=self.nodes.len()).contains(&n), "no node {n}");
        &self.nodes[n - 1]
    }

    fn node_mut(&mut self, n: usize) -> &mut Node {
        assert!((1..=self.nodes.len()).contains(&n), "no node {n}");
        &mut self.nodes[n - 1]
    }
}

impl Drop for Galera {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill_now();
        }
    }
}

impl Node {
    fn new(parent: &Path, number: usize, ports: Ports, cluster_address: &str) -> Node {
        let name = format!("node{number}");
        let dir = parent.join(&name);
        std::fs::create_dir(&dir).unwrap();
        Node {
            name,
            dir,
            ports,
            cluster_address: cluster_address.to_owned(),
            process: None,
            isolated: false,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.ports.sql)
    }

    fn in_cluster(&self) -> bool {
        self.process.is_some() && !self.isolated
    }

    /// The command line of this node; `extra` last, so that it overrides.
    fn command(&self, extra: &[String]) -> Command {
        let Ports {
            sql,
            gcomm,
            ist,
            sst,
        } = self.ports;
        let dir = self.dir.display();
        let mut cmd = Command::new(MARIADBD);
        // `--no-defaults` must come first.
        cmd.arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", self.data().display()))
            .arg(format!("--socket={dir}/mysqld.sock"))
            .arg(format!("--pid-file={dir}/mysqld.pid"))
            .arg(format!("--log-error={dir}/error.log"))
            .arg(format!("--port={sql}"))
            .arg("--bind-address=127.0.0.1")
            .args(["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"])
            .args(["--innodb-flush-log-at-trx-commit=2", "--binlog-format=ROW"])
            .args(["--innodb-autoinc-lock-mode=2", "--wsrep-on=ON"])
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg("--wsrep-cluster-name=vs_test")
            .arg(format!("--wsrep-node-name={}", self.name))
            .arg(format!("--wsrep-node-address=127.0.0.1:{gcomm}"))
            .arg(format!("--wsrep-cluster-address={}", self.cluster_address))
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{gcomm}; \
                 ist.recv_addr=127.0.0.1:{ist}; gcache.size=32M; {EVS_TIMEOUTS}"
            ))
            .arg("--wsrep-sst-method=rsync")
            .arg(format!("--wsrep-sst-receive-address=127.0.0.1:{sst}"))
            .args(extra)
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `mariadbd` (in a process group of its own, so that a kill
    /// also ends the state transfer scripts it runs); does not wait.
    fn start(&mut self, extra: &[String]) {
        let out = File::create(self.dir.join("stdout.log")).unwrap();
        let child = self
            .command(extra)
            .process_group(0)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {MARIADBD}: {e}"));
        self.process = Some(child);
    }

    /// `mariadbd --wsrep-recover`: the Galera position (`uuid:seqno`) of
    /// what InnoDB committed, which a node killed with `kill -9` does not
    /// leave in `grastate.dat`.
    fn recover(&self) -> String {
        let log = self.dir.join("recover.log");
        let _ = std::fs::remove_file(&log);
        let recover = [
            "--wsrep-recover".to_owned(),
            format!("--log-error={}", log.display()),
        ];
        let output = self.command(&recover).output().unwrap();
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        assert!(
            output.status.success(),
            "{} --wsrep-recover failed ({}):\n{}",
            self.name,
            output.status,
            tail(&text, 80)
        );
        let position = text
            .lines()
            .rev()
            .find_map(|l| l.split("WSREP: Recovered position: ").nth(1))
            .map(str::trim);
        position
            .unwrap_or_else(|| panic!("{} recovered no position:\n{}", self.name, tail(&text, 80)))
            .to_owned()
    }

    /// Polls `condition` until it holds; fails with the error log when the
    /// node exits meanwhile or [`DEADLINE`] passes.
    fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        let pid = self.process.as_ref().map(Child::id);
        while !condition() {
            if pid.is_some_and(|pid| !alive(pid)) {
                panic!(
                    "{} exited, waiting until {what}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "{}: timed out waiting until {what}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn synced(&self) -> bool {
        self.status("wsrep_local_state_comment").as_deref() == Some("Synced")
            && self.status("wsrep_cluster_status").as_deref() == Some("Primary")
    }

    fn status(&self, var: &str) -> Option<String> {
        show_status(&self.url("mysql"), var).ok().flatten()
    }

    /// A numeric status variable; 0 if the node does not answer.
    fn status_num(&self, var: &str) -> u64 {
        self.status(var).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// SIGKILL to the node's process group, then reaps it; for drop too,
    /// so it never panics.
    fn kill_now(&mut self) {
        if let Some(mut child) = self.process.take() {
            // SAFETY: kill has no memory preconditions; the group is the
            // one this child leads (`process_group(0)`).
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.isolated = false;
    }

    fn error_log_bytes(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("error.log")).unwrap_or_default()
    }

    fn error_log(&self) -> String {
        String::from_utf8_lossy(&self.error_log_bytes()).into_owned()
    }

    /// The end of the error log and what `mariadbd` printed: why it did
    /// not start.
    fn log_tail(&self) -> String {
        let stdout = std::fs::read(self.dir.join("stdout.log")).unwrap_or_default();
        format!(
            "{}\n--- stdout/stderr:\n{}",
            tail(&self.error_log(), 80),
            String::from_utf8_lossy(&stdout)
        )
    }
}

/// The template data directory, made once per test process and removed
/// when it exits (also when making it failed half-way).
fn template() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static MADE: OnceLock<()> = OnceLock::new();
    extern "C" fn remove_template() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let dir = DIR.get_or_init(|| {
        // SAFETY: registers a plain function with no preconditions.
        unsafe {
            libc::atexit(remove_template);
        }
        tempfile::Builder::new()
            .prefix("vs-galera-template-")
            .tempdir()
            .unwrap()
            .keep()
    });
    MADE.get_or_init(|| make_template(dir));
    dir
}

/// `mariadb-install-db` into `dir/data`, then one start of it as a
/// one-node cluster and a clean shutdown: InnoDB then holds the cluster's
/// position, which nodes copied from it start at.
fn make_template(dir: &Path) {
    chown_mysql(dir);
    let started = Instant::now();
    let data = dir.join("data");
    let output = Command::new(INSTALL_DB)
        .arg("--no-defaults")
        .arg("--user=mysql")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"])
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {INSTALL_DB}: {e}"));
    assert!(
        output.status.success(),
        "{INSTALL_DB} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let ports = free_ports(4);
    let ports = Ports {
        sql: ports[0],
        gcomm: ports[1],
        ist: ports[2],
        sst: ports[3],
    };
    let mut node = Node {
        name: "template".to_owned(),
        dir: dir.to_owned(),
        ports,
        cluster_address: gcomm_address(&[ports]),
        process: None,
        isolated: false,
    };
    node.start(&["--wsrep-new-cluster".to_owned()]);
    node.wait_until("it is Synced", || node.synced());
    shut_down(&mut node);
    for file in ["galera.cache", "gvwstate.dat"] {
        let _ = std::fs::remove_file(data.join(file));
    }
    eprintln!(
        "galera: template data directory made in {:?}",
        started.elapsed()
    );
}

/// SIGTERM, and waits until `mariadbd` has exited (a clean shutdown).
fn shut_down(node: &mut Node) {
    let mut child = node.process.take().expect("running");
    // SAFETY: signalling our own child, not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    poll(&format!("{} shuts down", node.name), || {
        child.try_wait().unwrap().is_some()
    });
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}: {status}:\n{}",
        node.name,
        node.log_tail()
    );
}

/// Runs one statement.
fn execute(url: &str, sql: &str) -> Result<(), String> {
    let mut conn = MysqlConnection::establish(url).map_err(|e| e.to_string())?;
    diesel::sql_query(sql)
        .execute(&mut conn)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `SHOW STATUS LIKE var`: its value, `None` if there is no such variable.
fn show_status(url: &str, var: &str) -> Result<Option<String>, String> {
    use diesel::sql_types::Text;
    #[derive(diesel::QueryableByName)]
    struct Variable {
        #[diesel(sql_type = Text, column_name = Value)]
        value: String,
    }
    let mut conn = MysqlConnection::establish(url).map_err(|e| e.to_string())?;
    let rows: Vec<Variable> = diesel::sql_query(format!("SHOW STATUS LIKE '{var}'"))
        .load(&mut conn)
        .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().next().map(|v| v.value))
}

/// `gcomm://` with every node's group communication address.
fn gcomm_address(ports: &[Ports]) -> String {
    let peers: Vec<String> = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.gcomm))
        .collect();
    format!("gcomm://{}", peers.join(","))
}

/// `count` distinct loopback ports nobody listens on now.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// `cp -a`: keeps the `mysql` owner and modes.
fn copy_dir(from: &Path, to: &Path) {
    super::run_ok("cp", &["-a", from.to_str().unwrap(), to.to_str().unwrap()]);
}

/// Gives `dir` and everything in it to the `mysql` user, which
/// `mariadbd --user=mysql` runs as.
fn chown_mysql(dir: &Path) {
    super::run_ok("chown", &["-R", "mysql:mysql", dir.to_str().unwrap()]);
}

/// Whether `pid` runs (a zombie, not reaped yet, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// [`super::wait_until`] with a slower poll: each try here may connect.
fn poll(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
