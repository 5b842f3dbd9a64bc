//! Database passwords are never printed: in the URL's userinfo, in a
//! `password=` query parameter, or in PostgreSQL's keyword form, they stay
//! out of `config`, a failed connection's error, the log and `/readyz`.

use std::process::Output;

use serde_json::json;

/// Three passwords, one per place a URL can hold one, each a marker that
/// no message would contain by chance.
const IN_USERINFO: &str = "Pw1-userinfo-7f3a";
const IN_QUERY: &str = "Pw2-query-9c2e";
const IN_KEYWORDS: &str = "Pw3-keywords-41bd";
const MARKERS: [&str; 3] = [IN_USERINFO, IN_QUERY, IN_KEYWORDS];

/// The forms of a URL to `host:port/db`, each holding its marker.
fn forms(host: &str, port: u16, db: &str) -> [String; 3] {
    [
        format!("postgres://postgres:{IN_USERINFO}@{host}:{port}/{db}"),
        format!("postgres://postgres@{host}:{port}/{db}?sslmode=disable&password={IN_QUERY}"),
        format!("host={host} port={port} dbname={db} user=postgres password='{IN_KEYWORDS}'"),
    ]
}

fn assert_no_marker(what: &str, text: &str) {
    for marker in MARKERS {
        assert!(!text.contains(marker), "{marker} in {what}:\n{text}");
    }
}

fn run_with(url: &str, dir: &std::path::Path, command: &str) -> (Option<i32>, String) {
    let conf = dir.join("conf.json");
    let body = json!({ "database_url": url, "storage": { "root": dir.join("videos") } });
    std::fs::write(&conf, body.to_string()).unwrap();
    std::fs::create_dir_all(dir.join("videos")).unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = crate::common::binary()
        .arg("--config")
        .arg(&conf)
        .arg(command)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&stdout) + String::from_utf8_lossy(&stderr);
    (status.code(), out.into_owned())
}

#[test]
fn config_and_a_failed_connection_never_show_a_password() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on 127.0.0.1: nothing listens, the connection is refused.
    for url in forms("127.0.0.1", 1, "videos") {
        let (code, dump) = run_with(&url, dir.path(), "config");
        assert_no_marker("the config dump", &dump);
        let (_, started) = run_with(&url, dir.path(), "serve");
        assert_no_marker("the failed start", &started);
        if cfg!(feature = "postgres") {
            assert_eq!(code, Some(0), "{dump}");
            assert!(dump.contains("***"), "the password is shown masked: {dump}");
            assert!(started.contains("cannot connect"), "{started}");
        } else {
            // Refused for the missing backend, still without the password.
            assert_eq!(code, Some(2), "{dump}");
        }
    }
}

#[test]
fn text_that_is_no_url_is_refused_without_repeating_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("db.internal:5432 secret {IN_KEYWORDS}");
    let (code, out) = run_with(&url, dir.path(), "config");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("database_url") && out.contains("has no scheme"),
        "{out}"
    );
    assert_no_marker("the refusal", &out);
}

/// The server runs through a proxy on each form of the URL (trust
/// authentication lets the password pass unused); the proxy is cut, and
/// neither `/readyz` nor the log shows the password, then it heals.
#[cfg(feature = "postgres")]
#[test]
fn postgres_readyz_and_the_log_of_an_outage_never_show_a_password() {
    use crate::common::process::{write_config, ServerProcess};
    use crate::common::proxy::{through, Proxy};
    use crate::common::{wait_until, workspace, Backend};

    let (ws, mut config) = workspace(Backend::Postgres);
    let (_, target) = through(&config.database_url, "127.0.0.1:1".parse().unwrap());
    std::fs::create_dir_all(&config.storage[0].root).unwrap();
    for url in forms("127.0.0.1", 0, ws.db.name()) {
        let proxy = Proxy::start(target);
        config.database_url = url.replace(":0/", &format!(":{}/", proxy.addr.port()));
        config.database_url = config
            .database_url
            .replace("port=0 ", &format!("port={} ", proxy.addr.port()));
        let file = write_config(&config, ws.dir.path(), "conf.json");
        let server = ServerProcess::start(&config, &file);
        assert_eq!(server.get("/readyz").status, 200, "{}", server.log());
        proxy.cut();
        wait_until("/readyz reports the outage", || {
            server.get("/readyz").status == 503
        });
        // Connections are attempted again (and fail) while it lasts.
        assert_eq!(server.get("/video-delete-record/a").status, 503);
        let ready = server.get("/readyz");
        assert_no_marker("/readyz", &ready.body);
        proxy.restore();
        wait_until("/readyz is 200 again", || {
            server.get("/readyz").status == 200
        });
        let (_, log) = server.terminate();
        assert!(log.contains("database unavailable"), "{log}");
        assert_no_marker("the log", &log);
    }
}
