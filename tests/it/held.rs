//! One instance's database traffic held at a chosen moment of its work,
//! past its lease, while another instance drains beside it (MariaDB,
//! PostgreSQL): once when its first claim's answer comes back (the rows
//! are leased to it, nothing deleted yet), once when its first ack goes
//! out (its batch's files deleted, nothing acked). The proxy begins the
//! hold when the first bytes naming an id pass that way, so the moment is
//! the same on every run.
//!
//! Either way the held instance notices (logs the outage, `/readyz` 503
//! within a second); the other takes the expired leases over before the
//! rest of the backlog and finishes everything; once healed, the held
//! instance deletes nothing it no longer holds and acks nothing: one
//! receipt per id, each written once, all by the other instance, and those
//! of the taken-over ids counting two claims.

use std::time::Duration;

use crate::common::proxy::Direction;
use crate::common::{wait_until, Backend};
use crate::partition::{all_done, deletions, drain, instance, tuned, unready_within};
use diesel::prelude::*;
use video_scheduler::db::schema::video_del_receipt::dsl as r;

#[cfg(feature = "postgres")]
#[test]
#[ignore = "a hold past the lease; .ci/run runs it"]
fn postgres_an_instance_held_between_claim_and_delete_deletes_nothing_it_lost() {
    held_at(Backend::Postgres, Moment::ClaimCommitted);
}

#[cfg(feature = "postgres")]
#[test]
#[ignore = "a hold past the lease; .ci/run runs it"]
fn postgres_an_instance_held_between_delete_and_ack_writes_no_second_receipt() {
    held_at(Backend::Postgres, Moment::FilesDeleted);
}

#[cfg(feature = "mysql")]
#[test]
#[ignore = "a hold past the lease; .ci/run runs it"]
fn mysql_an_instance_held_between_claim_and_delete_deletes_nothing_it_lost() {
    held_at(Backend::Mysql, Moment::ClaimCommitted);
}

#[cfg(feature = "mysql")]
#[test]
#[ignore = "a hold past the lease; .ci/run runs it"]
fn mysql_an_instance_held_between_delete_and_ack_writes_no_second_receipt() {
    held_at(Backend::Mysql, Moment::FilesDeleted);
}

/// When the held instance's traffic stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Its first claim is committed; the answer has not reached it.
    ClaimCommitted,
    /// Its first batch's files are deleted; the ack has not been sent.
    FilesDeleted,
}

impl Moment {
    /// The bytes that mark the moment on `backend`'s wire, in order.
    /// PostgreSQL: a claim is one statement, committed by the server
    /// whether or not its answer (naming ids) gets through; an ack is the
    /// first statement sending ids. MySQL: a claim selects (its answer
    /// names ids), then leases (sending them) and commits: the hold begins
    /// with the first answer after the COMMIT went; an ack begins with a
    /// SELECT of its own spelling (diesel's).
    fn steps(self, backend: Backend) -> Vec<(Direction, &'static [u8])> {
        use Direction::{FromDatabase, ToDatabase};
        match (self, backend) {
            (Moment::ClaimCommitted, Backend::Mysql) => vec![
                (ToDatabase, b"drain-"),
                (ToDatabase, b"COMMIT"),
                (FromDatabase, b""),
            ],
            (Moment::ClaimCommitted, _) => vec![(FromDatabase, b"drain-")],
            (Moment::FilesDeleted, Backend::Mysql) => {
                vec![(ToDatabase, b"SELECT `video_del_rec`.`id` FROM")]
            }
            (Moment::FilesDeleted, _) => vec![(ToDatabase, b"drain-")],
        }
    }
}

/// A receipt as this test reads it.
#[derive(Debug, Queryable)]
struct Receipt {
    id: String,
    completed_at: i64,
    deleted: i32,
    missing: i32,
    claims: i32,
    acked_by: String,
    completions: i32,
}

/// Instance A's traffic is held from `moment` until instance B has
/// finished every row.
fn held_at(backend: Backend, moment: Moment) {
    let (ws, mut config) = tuned(backend);
    let root = config.storage[0].root.clone();
    if backend == Backend::Postgres {
        // The proxy reads the markers in the clear.
        let sep = if config.database_url.contains('?') {
            '&'
        } else {
            '?'
        };
        config.database_url = format!("{}{sep}sslmode=disable", config.database_url);
    }
    let (a, proxy) = instance(&ws, &config, "a", true);
    let proxy = proxy.unwrap();
    proxy.hold_when(&moment.steps(backend));
    let (b, _) = instance(&ws, &config, "b", false);
    let ids = drain(&b, &root, 1500);

    wait_until("A is held", || proxy.holding());
    wait_until("A logs the outage", || {
        a.log().contains("database unavailable")
    });
    unready_within(&a, Duration::from_millis(1000));
    let db = all_done(&ws);
    // What A deleted while it held its leases (a batch under way when the
    // hold began is finished, by now, without its ack).
    let deleted_by_a = deletions(&[&a]);

    proxy.restore();
    wait_until("A is back", || a.log().contains("database is back"));
    // A claims again (finding nothing) only after its held work is over:
    // a ready answer means its connections work again.
    wait_until("A is ready", || ureq::get(&a.url("/readyz")).call().is_ok());
    assert_eq!(
        deletions(&[&a]),
        deleted_by_a,
        "A deleted after its lease was lost"
    );

    let receipts: Vec<Receipt> = db
        .read(|c| {
            r::video_del_receipt
                .select((
                    r::id,
                    r::completed_at,
                    r::deleted,
                    r::missing,
                    r::claims,
                    r::acked_by,
                    r::completions,
                ))
                .load(c)
        })
        .unwrap();
    assert_eq!(receipts.len(), ids.len(), "one receipt per id");
    let acked_by: std::collections::HashSet<&str> =
        receipts.iter().map(|x| x.acked_by.as_str()).collect();
    assert_eq!(acked_by.len(), 1, "all acked by B: {acked_by:?}");
    for receipt in &receipts {
        assert_eq!(receipt.completions, 1, "{receipt:?}");
        assert_eq!(receipt.deleted + receipt.missing, 1, "{receipt:?}");
        assert!(!root.join(&receipt.id).exists(), "{}", receipt.id);
    }
    let taken_over: Vec<&Receipt> = receipts.iter().filter(|x| x.claims >= 2).collect();
    assert!(!taken_over.is_empty(), "A's rows were taken over");
    // What A deleted before the hold, B found missing; every such receipt
    // says it was taken over. Held at the claim, A deleted nothing.
    for receipt in receipts.iter().filter(|x| x.missing > 0) {
        assert!(receipt.claims >= 2, "{receipt:?}");
    }
    let missing = receipts.iter().filter(|x| x.missing > 0).count();
    match moment {
        Moment::ClaimCommitted => assert_eq!(missing, 0),
        Moment::FilesDeleted => assert!(missing > 0, "A deleted its batch before the ack"),
    }
    // B took the expired leases before the rest of the backlog: without
    // that, they would have come last (their `not_before` is the lease's
    // end, later than every row recorded before).
    let last_takeover = taken_over.iter().map(|x| x.completed_at).max().unwrap();
    let after = receipts
        .iter()
        .filter(|x| x.completed_at > last_takeover)
        .count();
    eprintln!(
        "held at {moment:?} ({backend:?}): {} taken over ({missing} found missing), \
         {after} receipts written after the last of them",
        taken_over.len()
    );
    assert!(after >= 100, "{after} receipts after the takeover");
}
