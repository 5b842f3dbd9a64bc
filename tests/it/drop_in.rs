//! Drop-in for the Go course's scheduler: its table is adopted with the rows
//! it left, and its api service's calls are answered as before.

use std::process::Command;

use crate::common::{spawn_app, start_in, wait_until, workspace, Backend};
use diesel::RunQueryDsl;

backend_tests!(a_seed_table_with_pending_rows_is_adopted_and_drained);

/// The seed's table, as its DDL created it on each backend: only `id`.
fn seed_ddl(backend: Backend) -> &'static str {
    match backend {
        Backend::Mysql => {
            "CREATE TABLE video_del_rec (\
                 id varchar(64) NOT NULL, \
                 PRIMARY KEY (id)\
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        }
        Backend::Postgres | Backend::Sqlite => {
            "CREATE TABLE video_del_rec (id varchar(64) PRIMARY KEY)"
        }
    }
}

/// A version-4 UUID string, as the course's api service makes ids.
fn uuid() -> String {
    let hex = |n: usize| {
        (0..n)
            .map(|_| format!("{:x}", fastrand::u8(..16)))
            .collect::<String>()
    };
    format!(
        "{}-{}-4{}-{}{}-{}",
        hex(8),
        hex(4),
        hex(3),
        ["8", "9", "a", "b"][fastrand::usize(..4)],
        hex(3),
        hex(12)
    )
}

fn a_seed_table_with_pending_rows_is_adopted_and_drained(backend: Backend) {
    let (ws, config) = workspace(backend);
    let root = config.storage[0].root.clone();
    std::fs::create_dir_all(&root).unwrap();

    // The Go scheduler's database: its table and 1,000 pending ids with files,
    // plus one id it accepted unchecked, which must never become a path.
    let seed = video_scheduler::db::Db::connect(&config.database_url, 1).unwrap();
    let ids: Vec<String> = (0..1000).map(|_| uuid()).collect();
    seed.write(|c| diesel::sql_query(seed_ddl(backend)).execute(c))
        .unwrap();
    for chunk in ids.chunks(250) {
        let values: Vec<String> = chunk.iter().map(|id| format!("('{id}')")).collect();
        let insert = format!(
            "INSERT INTO video_del_rec (id) VALUES {}",
            values.join(", ")
        );
        seed.write(|c| diesel::sql_query(&insert).execute(c))
            .unwrap();
    }
    seed.write(|c| {
        diesel::sql_query("INSERT INTO video_del_rec (id) VALUES ('../escape')").execute(c)
    })
    .unwrap();
    for id in &ids {
        std::fs::write(root.join(id), b"mp4").unwrap();
    }
    let outside = ws.dir.path().join("escape");
    std::fs::write(&outside, b"outside the root").unwrap();
    drop(seed);

    let app = start_in(ws, config);
    wait_until("every seed file is deleted", || {
        ids.iter().all(|id| !root.join(id).exists())
    });
    wait_until("only the unusable id is left", || app.row_count() == 1);
    let unusable = app.get("/v1/deletions?state=failed").json();
    assert_eq!(unusable["items"][0]["id"], "../escape");
    let error = unusable["items"][0]["last_error"].as_str().unwrap();
    assert!(error.starts_with("invalid video id"), "{error}");
    // The priority column came with its default: adopted rows are normal.
    assert_eq!(unusable["items"][0]["priority"], "normal");
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside the root");

    // The adopted table has our schema and keeps working.
    assert_eq!(app.get("/readyz").status, 200);
    let fresh = uuid();
    app.create_file(&fresh);
    let reply = app.get(&format!("/video-delete-record/{fresh}"));
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    wait_until("a new request is deleted", || !root.join(&fresh).exists());
    let delayed = app.record(&["after-switch"], serde_json::json!({ "delay_secs": 3600 }));
    assert_eq!(
        delayed.json(),
        serde_json::json!({ "accepted": 1, "already_queued": 0 })
    );
    assert_eq!(
        app.get("/v1/deletions/after-switch").json()["state"],
        "pending"
    );
    // A takedown of it: urgent, due now, and erased.
    app.create_file("after-switch");
    let urgent = serde_json::json!({ "priority": "urgent" });
    assert_eq!(app.record(&["after-switch"], urgent).status, 202);
    wait_until("the takedown is erased", || {
        app.get("/v1/deletions/after-switch").json()["state"] == "done"
    });
    assert!(!root.join("after-switch").exists());
}

/// The course's api service, in Go: `http.Get(scheduler +
/// "/video-delete-record/" + uuid)` for 2,000 uuids, 32 at a time.
#[test]
#[ignore = "needs Go (Debian: golang-go); .ci/run installs it and runs this test"]
fn the_go_api_service_client_gets_200_with_empty_bodies_and_the_files_go() {
    let app = spawn_app(Backend::Sqlite, |_| {});
    let ids: Vec<String> = (0..2000).map(|_| uuid()).collect();
    for id in &ids {
        std::fs::write(app.root().join(id), b"mp4").unwrap();
    }
    let ids_file = app.root().parent().unwrap().join("ids.txt");
    std::fs::write(&ids_file, ids.join("\n")).unwrap();

    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go-client/main.go");
    let output = Command::new("go")
        .args(["run", client, "-concurrency", "32", "-base"])
        .arg(format!("http://{}", app.addr))
        .arg("-ids")
        .arg(&ids_file)
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .output()
        .expect("go is installed (apt-get install golang-go)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "2000 ok, 0 bad");
    wait_until("every file is deleted", || {
        ids.iter().all(|id| !app.root().join(id).exists())
    });
    wait_until("every row is gone", || app.row_count() == 0);
}
