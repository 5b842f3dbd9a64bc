//! The binary: configuration layering and errors, and the operator commands.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use video_scheduler::config::Config;
use video_scheduler::db::{queries, Db};

fn bin() -> Command {
    crate::common::binary()
}

/// Writes `conf` as the config file in `dir` and returns its path.
fn write_config(dir: &Path, conf: Value) -> std::path::PathBuf {
    let path = dir.join("conf.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    path
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn db_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

#[test]
fn an_unknown_key_stops_start_up_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (conf, key) in [
        (json!({ "tick_msec": 5 }), "tick_msec"),
        (
            json!({ "storage": { "root": "v", "pathz": [] } }),
            "storage.pathz",
        ),
    ] {
        let config = write_config(dir.path(), conf);
        let (code, _, stderr) = run(bin().arg("--config").arg(&config).arg("serve"));
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("configuration: {key}: unknown field")),
            "{stderr}"
        );
    }
    let config = write_config(dir.path(), json!({}));
    let (code, _, stderr) = run(bin()
        .arg("--config")
        .arg(&config)
        .env("VIDEO_SCHEDULER_TICKS", "5"));
    assert_eq!(code, 2);
    assert!(stderr.contains("ticks: unknown field"), "{stderr}");
}

#[test]
fn a_bad_value_stops_start_up_with_a_message_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (conf, key) in [
        (json!({ "executors": "four" }), "executors: invalid type"),
        (
            json!({ "executors": 0 }),
            "executors: must be between 1 and 1024, not 0",
        ),
        // Values that used to overflow once converted: each key has a range.
        (
            json!({ "max_attempts": 3_000_000_000u64 }),
            "max_attempts: must be between 1 and 1000000",
        ),
        (
            json!({ "lease_secs": u64::MAX }),
            "lease_secs: must be between 1 and 86400",
        ),
        (
            json!({ "retry_base_ms": 0 }),
            "retry_base_ms: must be between",
        ),
        (json!({ "tick_ms": 3_600_001 }), "tick_ms: must be between"),
        (json!({ "pool_size": -1 }), "pool_size: invalid"),
        (
            json!({ "max_connections": 0 }),
            "max_connections: must be between",
        ),
        (
            json!({ "client_request_timeout_ms": 10 }),
            "client_request_timeout_ms: must be between 1000",
        ),
        (
            json!({ "storage": { "root": "/" } }),
            "storage.root: must not be the file system root",
        ),
        (
            json!({ "storage": { "root": "/tmp/../" } }),
            "storage.root: must not be the file system root",
        ),
        (
            json!({ "storage": { "marker": "../marker" } }),
            "storage.marker: \"../marker\": must be a file name",
        ),
        (json!({ "listen": "nowhere" }), "listen: "),
        (json!({ "batch_size": 20000 }), "batch_size: "),
        (json!({ "database_url": "oracle://x" }), "database_url: "),
        (
            json!({ "storage": { "paths": ["../{id}"] } }),
            "storage.paths: \"../{id}\": must not contain ..",
        ),
        (
            json!({ "storage": { "paths": ["/srv/{id}"] } }),
            "storage.paths: \"/srv/{id}\": must be relative",
        ),
        (
            json!({ "storage": { "paths": ["thumbs/static.jpg"] } }),
            "storage.paths: ",
        ),
    ] {
        let config = write_config(dir.path(), conf.clone());
        let (code, _, stderr) = run(bin().arg("--config").arg(&config));
        assert_eq!(code, 2, "{conf}: {stderr}");
        assert!(
            stderr.contains(&format!("configuration: {key}")),
            "{conf}: {stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_given_with_config_is_an_error() {
    let (code, _, stderr) = run(bin().args(["--config", "/nonexistent/conf.json", "migrate"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/conf.json does not exist"),
        "{stderr}"
    );
}

#[test]
fn environment_variables_override_conf_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        json!({ "database_url": db_url(dir.path(), "from-file.db") }),
    );
    let (code, stdout, stderr) = run(bin().arg("--config").arg(&config).arg("migrate").env(
        "VIDEO_SCHEDULER_DATABASE_URL",
        db_url(dir.path(), "from-env.db"),
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("9 migrations applied"), "{stdout}");
    assert!(dir.path().join("from-env.db").exists());
    assert!(!dir.path().join("from-file.db").exists());

    // Nested keys join with `__`, and their values are validated too.
    let (code, _, stderr) = run(bin().arg("--config").arg(&config).arg("migrate").env(
        "VIDEO_SCHEDULER_STORAGE__PATHS",
        "[\"{id}\", \"../{id}.mp4\"]",
    ));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("storage.paths: \"../{id}.mp4\""),
        "{stderr}"
    );

    // The layered result, read through the library with the same rules.
    let loaded = Config::load(Some(&config)).unwrap();
    assert_eq!(loaded.database_url, db_url(dir.path(), "from-file.db"));
}

#[test]
fn enqueue_stats_and_retry_work_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        json!({ "database_url": db_url(dir.path(), "cli.db") }),
    );
    let (code, _, stderr) = run(bin().arg("--config").arg(&config).arg("migrate"));
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = run(bin().arg("--config").arg(&config).args([
        "enqueue",
        "--delay-secs",
        "3600",
        "a1",
        "a2",
        "a1",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "accepted 2, already queued 0");

    let mut child = bin()
        .arg("--config")
        .arg(&config)
        .args(["enqueue", "--delay-secs", "3600"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a2\nb1\n\n  b2  \n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "accepted 2, already queued 1"
    );

    // One bad id rejects the whole input.
    let (code, _, stderr) = run(bin()
        .arg("--config")
        .arg(&config)
        .args(["enqueue", "c1", "../etc"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("\"../etc\": invalid video id"), "{stderr}");

    let (code, stdout, _) = run(bin().arg("--config").arg(&config).arg("stats"));
    assert_eq!(code, 0);
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["pending"], 4, "{stats}");

    // Fail one request for good, then bring it back with `retry --failed`.
    let db = Db::connect(&db_url(dir.path(), "cli.db"), 1).unwrap();
    let claimed = crate::common::claim_as(&db, "test", 1);
    crate::common::fail_for_good(&db, "test", &claimed[0]);

    let (code, stdout, stderr) = run(bin().arg("--config").arg(&config).arg("retry"));
    assert_ne!(code, 0, "retry needs --failed: {stdout}");
    assert!(stderr.contains("--failed"), "{stderr}");
    let (code, stdout, _) = run(bin()
        .arg("--config")
        .arg(&config)
        .args(["retry", "--failed"]));
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "1 failed requests moved back to pending");
    let stats = db
        .read(|c| queries::counts::stats(c, crate::common::two_hours_ahead()))
        .unwrap();
    assert_eq!((stats.pending, stats.failed), (4, 0));
}

/// The server's own words reach the operator at once: not a pool timeout,
/// not "no backend accepted this URL".
#[cfg(any(feature = "mysql", feature = "postgres"))]
#[test]
fn a_database_that_refuses_the_login_is_reported_as_such() {
    let mut cases = Vec::new();
    if cfg!(feature = "mysql") {
        cases.push((
            "mysql://root:wrong-password@127.0.0.1:3306/test",
            "Access denied for user 'root'",
        ));
    }
    if cfg!(feature = "postgres") {
        cases.push((
            "postgres://no_such_role@127.0.0.1:5432/test",
            "role \"no_such_role\" does not exist",
        ));
    }
    for (url, expected) in cases {
        let (code, _, stderr) = run(bin()
            .arg("migrate")
            .env("VIDEO_SCHEDULER_DATABASE_URL", url));
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            !stderr.contains("wrong-password"),
            "the password is not printed: {stderr}"
        );
        assert!(
            !stderr.contains("timed out"),
            "reported without waiting for the pool: {stderr}"
        );
    }
}

#[test]
fn only_serve_and_migrate_change_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        json!({ "database_url": db_url(dir.path(), "fresh.db") }),
    );
    for args in [
        &["stats"][..],
        &["enqueue", "a1"],
        &["retry", "--failed"],
        &["cancel", "--invalid"],
    ] {
        let (code, _, stderr) = run(bin().arg("--config").arg(&config).args(args));
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("database schema is behind, run `video-scheduler migrate`"),
            "{args:?}: {stderr}"
        );
    }
    let db = Db::connect(&db_url(dir.path(), "fresh.db"), 1).unwrap();
    assert!(
        !db.is_migrated().unwrap(),
        "no operator command migrated the database"
    );
}

#[test]
fn a_port_in_use_is_one_clean_error_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        json!({
            "listen": addr.to_string(),
            "database_url": db_url(dir.path(), "port.db"),
            "storage": { "root": dir.path().join("videos") },
        }),
    );
    let (code, _, stderr) = run(bin()
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE"));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("error: listen {addr}: Address already in use (os error 98)")
    );
}

#[test]
fn operator_mistakes_get_a_message_that_names_them() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the video root should be.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let config = write_config(
        dir.path(),
        json!({
            "listen": "127.0.0.1:0",
            "database_url": db_url(dir.path(), "mistakes.db"),
            "storage": { "root": file },
        }),
    );
    let (code, _, stderr) = run(bin().arg("--config").arg(&config));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: storage.root is not a directory: {}",
            file.display()
        )),
        "{stderr}"
    );

    // A directory given as the config file.
    let (code, _, stderr) = run(bin().arg("--config").arg(dir.path()).arg("migrate"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "config file {} is a directory, not a JSON file",
            dir.path().display()
        )),
        "{stderr}"
    );

    // A huge invalid line on stdin is quoted back cut short.
    let config = write_config(
        dir.path(),
        json!({ "database_url": db_url(dir.path(), "mistakes.db") }),
    );
    let mut child = bin()
        .arg("--config")
        .arg(&config)
        .arg("enqueue")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = "x/".repeat(2_000_000);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(line.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("... (4000000 bytes): invalid video id"),
        "{stderr}"
    );
    assert!(stderr.len() < 400, "{} bytes of stderr", stderr.len());
}

#[test]
fn the_config_dump_shows_the_layered_config_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // A URL with a password needs a server backend compiled in.
    let (url, shown) = if cfg!(feature = "mysql") {
        (
            "mysql://app:db-password@127.0.0.1:3306/videos".to_owned(),
            "mysql://app:***@127.0.0.1:3306/videos".to_owned(),
        )
    } else {
        let url = db_url(dir.path(), "dump.db");
        (url.clone(), url)
    };
    let config = write_config(
        dir.path(),
        json!({ "database_url": url, "api_tokens": ["api-token"] }),
    );
    let (code, stdout, stderr) = run(bin()
        .arg("--config")
        .arg(&config)
        .arg("config")
        .env("VIDEO_SCHEDULER_TICK_MS", "250"));
    assert_eq!(code, 0, "{stderr}");
    let dump: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(dump["tick_ms"], 250, "the environment is layered in");
    assert_eq!(dump["database_url"], shown);
    assert_eq!(dump["api_tokens"], json!(["***"]));
    assert!(!stdout.contains("db-password") && !stdout.contains("api-token"));
}

#[cfg(feature = "s3")]
#[test]
fn object_storage_secrets_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        json!({
            "storage": {
                "kind": "s3",
                "bucket": "videos",
                "endpoint": "http://127.0.0.1:1",
                "access_key_id": "AKIDEXAMPLE",
                "secret_access_key": "s3-secret-value",
                "session_token": "s3-session-value",
                "paths": ["videos/{id}.mp4"],
            },
        }),
    );
    let (code, stdout, _) = run(bin().arg("--config").arg(&config).arg("config"));
    assert_eq!(code, 0);
    let dump: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(dump["storage"]["secret_access_key"], "***");
    assert_eq!(dump["storage"]["session_token"], "***");
    assert_eq!(dump["storage"]["access_key_id"], "AKIDEXAMPLE");

    // A server that starts with them does not log them either.
    let config = write_config(
        dir.path(),
        json!({
            "listen": "127.0.0.1:0",
            "database_url": db_url(dir.path(), "s3.db"),
            "storage": {
                "kind": "s3",
                "bucket": "videos",
                "endpoint": "http://127.0.0.1:1",
                "access_key_id": "AKIDEXAMPLE",
                "secret_access_key": "s3-secret-value",
                "paths": ["videos/{id}.mp4"],
            },
        }),
    );
    let mut child = bin()
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on http://") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        log.contains("deleting from s3 bucket videos at http://127.0.0.1:1"),
        "{log}"
    );
    assert!(!log.contains("s3-secret-value"), "{log}");
}

#[test]
fn storage_keys_of_the_other_kind_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![(
        json!({ "storage": { "kind": "local", "bucket": "videos" } }),
        "storage.bucket: is for storage.kind s3 only",
    )];
    if cfg!(feature = "s3") {
        cases.push((
            json!({ "storage": { "kind": "s3", "paths": ["{id}"] } }),
            "storage.bucket: is required for storage.kind s3",
        ));
        cases.push((
            json!({ "storage": { "kind": "s3", "bucket": "v", "marker": ".m" } }),
            "storage.marker: is for storage.kind local only",
        ));
        cases.push((
            json!({ "storage": { "kind": "s3", "bucket": "v", "endpoint": "127.0.0.1:9000" } }),
            "storage.endpoint: must start with http:// or https://",
        ));
        cases.push((
            json!({ "storage": { "kind": "s3", "bucket": "v", "access_key_id": "a" } }),
            "storage.secret_access_key: access_key_id and secret_access_key go together",
        ));
    } else {
        cases.push((
            json!({ "storage": { "kind": "s3", "bucket": "v" } }),
            "storage.kind: s3 needs a binary built with `--features s3`",
        ));
    }
    for (conf, message) in cases {
        let config = write_config(dir.path(), conf.clone());
        let (code, _, stderr) = run(bin().arg("--config").arg(&config).arg("config"));
        assert_eq!(code, 2, "{conf}: {stderr}");
        assert!(stderr.contains(message), "{conf}: {stderr}");
    }
}

#[test]
fn enqueue_urgent_records_takedowns_and_moves_a_queued_id_to_the_front() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        json!({ "database_url": db_url(dir.path(), "urgent.db") }),
    );
    let cli = |args: &[&str]| {
        let (code, stdout, stderr) = run(bin().arg("--config").arg(&config).args(args));
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    };
    cli(&["migrate"]);
    cli(&["enqueue", "--delay-secs", "3600", "later", "normal"]);
    let stdout = cli(&["enqueue", "--urgent", "later", "takedown"]);
    assert_eq!(stdout.trim(), "accepted 1, already queued 1");
    let stats: Value = serde_json::from_str(&cli(&["stats"])).unwrap();
    assert_eq!(
        (&stats["pending"], &stats["urgent_due"]),
        (&json!(3), &json!(2)),
        "`later` is urgent and due now, `normal` still waits: {stats}"
    );
}
