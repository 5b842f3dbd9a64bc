//! `video-scheduler receipts` streams: 100,000 receipts go out as JSON lines
//! in completion order with the process's memory bounded: under 64 MiB, and
//! no more than an export of an hour's worth (3,600) needs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::process::write_config;
use crate::common::{workspace, Backend};
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
    crate::common::insert_receipts(
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
        let mut child = crate::common::binary()
            .arg("--config")
            .arg(&config_file)
            .arg("receipts")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let peak = PeakRss::watch(&child);
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
        let (success, peak) = wait_with_peak_rss(&mut child, peak);
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

/// The peak resident set of a running child, in KiB: the highest `VmHWM`
/// of `/proc/PID/status`, read every millisecond until the child has exited
/// (a zombie's status has no `Vm` lines).
///
/// Not `wait4`'s `ru_maxrss`: `spawn` starts the child with `vfork`
/// (posix_spawn), and when the child execs, the kernel takes the high-water
/// mark of the address space it leaves, this test process's, into the
/// child's `ru_maxrss`. That is the peak of every test run so far in this
/// binary (hundreds of MiB with all the areas in one), not the export's.
struct PeakRss(JoinHandle<i64>);

impl PeakRss {
    /// Starts watching `child`, just spawned: `spawn` returns once the child
    /// has exec'd, so its status already shows its own memory.
    fn watch(child: &Child) -> PeakRss {
        let status = format!("/proc/{}/status", child.id());
        PeakRss(std::thread::spawn(move || {
            let mut peak = 0;
            while let Some(hwm) = std::fs::read_to_string(&status)
                .ok()
                .as_deref()
                .and_then(vm_hwm)
            {
                peak = peak.max(hwm);
                std::thread::sleep(Duration::from_millis(1));
            }
            peak
        }))
    }
}

/// `VmHWM` of a `/proc/PID/status`, in KiB.
fn vm_hwm(status: &str) -> Option<i64> {
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    kib.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// Waits for `child` and returns whether it succeeded and its own peak
/// resident set in KiB, as `peak` saw it.
fn wait_with_peak_rss(child: &mut Child, peak: PeakRss) -> (bool, i64) {
    // The watcher stops when the child is a zombie, before the wait below
    // reaps it: its pid cannot name another process meanwhile.
    let peak = peak.0.join().unwrap();
    (child.wait().unwrap().success(), peak)
}
