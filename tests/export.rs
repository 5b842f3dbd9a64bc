//! `video-scheduler receipts` streams: 100,000 receipts go out as JSON lines
//! in completion order with the process's memory bounded: under 64 MiB, and
//! no more than an export of an hour's worth (3,600) needs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::process::write_config;
use common::{workspace, Backend};
use video_scheduler::db::Db;

backend_tests!(the_export_of_100000_receipts_streams_in_completion_order);

const RECEIPTS: i64 = 100_000;
/// Completion times: one receipt a second from this instant on.
const FIRST: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn the_export_of_100000_receipts_streams_in_completion_order(backend: Backend) {
    let (ws, config) = workspace(backend);
    let db = Db::connect(&config.database_url, 1).unwrap();
    db.migrate().unwrap();
    // Inserted in an order unlike the completion order.
    common::insert_receipts(
        &db,
        (0..RECEIPTS).map(|i| {
            let completed = FIRST + (RECEIPTS - 1 - i) * 1000;
            format!(
                "('video-{i:06}', {completed}, {completed}, 1, 3, 0, 'instance', 'v1', 'req-{i}')"
            )
        }),
    );
    let config_file = write_config(&config, ws.dir.path(), "conf.json");

    // (lines, first id, last id, peak RSS in KiB)
    let export = |args: &[&str]| -> (usize, Option<String>, Option<String>, i64) {
        let mut child = common::binary()
            .arg("--config")
            .arg(&config_file)
            .arg("receipts")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut lines, mut first, mut last, mut previous) = (0, None, None, i64::MIN);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let receipt: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let completed =
                chrono::DateTime::parse_from_rfc3339(receipt["completed_at"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis();
            assert!(completed >= previous, "in completion order");
            previous = completed;
            let id = receipt["id"].as_str().unwrap().to_owned();
            first.get_or_insert_with(|| id.clone());
            last = Some(id);
            lines += 1;
        }
        let (success, peak) = wait_with_peak_rss(&mut child);
        assert!(success);
        (lines, first, last, peak)
    };
    let (lines, first, last, peak_all) = export(&[]);
    assert_eq!(lines, RECEIPTS as usize);
    assert_eq!(first.as_deref(), Some("video-099999"), "oldest first");
    assert_eq!(last.as_deref(), Some("video-000000"));

    // One hour of completions: [01:00, 02:00).
    let (lines, _, _, peak_hour) = export(&[
        "--since",
        "2026-01-01T01:00:00Z",
        "--until",
        "2026-01-01T02:00:00+00:00",
    ]);
    assert_eq!(lines, 3600);

    let (all_mib, hour_mib) = (peak_all as f64 / 1024.0, peak_hour as f64 / 1024.0);
    eprintln!(
        "{backend:?}: peak RSS {all_mib:.1} MiB for 100,000 receipts, {hour_mib:.1} MiB for 3,600"
    );
    assert!(all_mib < 64.0, "the export used {all_mib:.1} MiB");
    assert!(
        all_mib < hour_mib + 8.0,
        "memory grows with the receipts: {all_mib:.1} MiB against {hour_mib:.1} MiB"
    );
}

/// Waits for `child` and returns whether it succeeded and its own peak
/// resident set in KiB (`wait4` reports the rusage of that one child).
fn wait_with_peak_rss(child: &mut std::process::Child) -> (bool, i64) {
    let mut status = 0;
    // SAFETY: wait4 on our own child, not reaped yet; it writes only the
    // status and the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    (
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage.ru_maxrss,
    )
}
