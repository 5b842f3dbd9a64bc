//! A MariaDB server set read-only (`SET GLOBAL read_only = 1`, as an
//! operator or a failover tool does to an old primary) is an outage to an
//! instance connected as an ordinary user: records answer 503 with
//! `Retry-After`, never 500, and `/readyz` 503 naming the read-only
//! server; writes are taken again once it is writable. The server is one
//! of the test's own (a one-node cluster of the Galera harness: a
//! `mariadbd` on a loopback port), never the machine's, and the user has
//! no privilege that bypasses `read_only` (root's would).
//! Ignored by a plain `cargo test` (it needs galera-4); `.ci/run` runs it.

use crate::common::galera::Galera;
use crate::common::{start_in, wait_until, workspace_at, Backend};
use serde_json::json;

#[test]
#[ignore = "needs a MariaDB of the test's own (Debian: galera-4); .ci/run runs it"]
fn a_read_only_mariadb_is_a_503_naming_it_until_it_takes_writes_again() {
    let node = Galera::start(1);
    node.create_database("scheduler");
    node.execute(1, "CREATE USER app@'%'");
    node.execute(1, "GRANT ALL ON scheduler.* TO app@'%'");
    let url = node.url(1, "scheduler").replacen("root@", "app@", 1);
    let (ws, config) = workspace_at(Backend::Mysql, &url);
    let app = start_in(ws, config);
    assert_eq!(app.record(&["before"], json!({})).status, 202);

    node.execute(1, "SET GLOBAL read_only = 1");
    for i in 0..5 {
        let reply = app.record(&[&format!("during-{i}")], json!({}));
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.retry_after.is_some(), "{reply:?}");
        assert_eq!(reply.json()["code"], "unavailable", "{}", reply.body);
    }
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("read-only"), "{}", ready.body);

    node.execute(1, "SET GLOBAL read_only = 0");
    wait_until("records are taken again", || {
        app.record(&["after"], json!({})).status == 202
    });
    assert_eq!(app.get("/readyz").status, 200);
}
