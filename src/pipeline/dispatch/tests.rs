//! The dispatcher's decisions, one situation per test.

use super::*;
use BatchOutcome::{NotRun, Ran};
use ClaimOutcome::{Batch, Paused, Urgent};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Batches of 10, a tick of 100 ms, `capacity` executors.
fn dispatch(capacity: usize, max_per_sec: u32) -> Dispatch {
    let (batch_size, lease, tick) = (10, Duration::from_secs(60), ms(100));
    let settings = Settings {
        batch_size,
        lease,
        capacity,
        tick,
        max_per_sec,
    };
    Dispatch::new(settings)
}

fn failed(unavailable: bool) -> ClaimOutcome {
    let error = "boom".into();
    ClaimOutcome::Failed { unavailable, error }
}

fn refused() -> BatchOutcome {
    let reason = "no marker".into();
    BatchOutcome::StorageUnavailable { reason }
}

fn recovered(cause: Cause, after_ms: u64, failures: u32) -> Report {
    let after = ms(after_ms);
    Report::Recovered {
        cause,
        after,
        failures,
    }
}

/// Wakes `d`, claims at `now` and gets `outcome` back: what it reported.
fn claim(d: &mut Dispatch, now: Instant, outcome: ClaimOutcome) -> Vec<Report> {
    d.wake();
    d.next_claim(now).expect("a claim is allowed");
    d.claim_returned(now, outcome)
}

/// Claims a full batch at `now` and hands it out: its number.
fn full_batch(d: &mut Dispatch, now: Instant, first: u32) -> u64 {
    assert!(claim(d, now, Batch { len: 10 }).is_empty());
    d.batch_started((first..first + 10).map(|i| i.to_string()).collect())
}

#[test]
fn a_claim_is_ordered_only_when_work_may_be_due_and_one_at_a_time() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    assert_eq!(d.next_claim(t), None, "nothing woke it");
    d.wake();
    assert_eq!(
        d.next_claim(t),
        Some(ClaimOrder {
            limit: 10,
            urgent_only: false,
            urgent: true
        })
    );
    d.wake();
    assert_eq!(d.next_claim(t), None, "a claim is in flight");
    assert!(d.claim_returned(t, Batch { len: 3 }).is_empty());
    assert!(d.next_claim(t).is_some(), "woken while claiming");
    d.claim_returned(t, Batch { len: 3 });
    assert_eq!(d.next_claim(t), None, "a short batch: nothing more due");
}

#[test]
fn a_full_batch_claims_again_at_once_while_an_executor_is_free() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    let first = full_batch(&mut d, t, 0);
    full_batch(&mut d, t, 10);
    assert_eq!(d.next_claim(t), None, "both executors are busy");
    assert_eq!(d.batch_returned(first, t, Ran), None);
    assert!(d.next_claim(t).is_some(), "the full batch left more due");
}

#[test]
fn the_rate_limit_caps_a_claim_at_a_second_s_worth() {
    let t = Instant::now();
    for (per_sec, limit) in [(0, 10), (4, 4), (10, 10), (50, 10)] {
        let mut d = dispatch(2, per_sec);
        d.wake();
        assert_eq!(
            d.next_claim(t),
            Some(ClaimOrder {
                limit,
                urgent_only: false,
                urgent: true
            }),
            "{per_sec}/s"
        );
        d.claim_returned(t, Batch { len: limit });
        assert!(d.next_claim(t).is_some(), "{limit} of {limit} is full");
    }
}

#[test]
fn trouble_backs_off_two_four_eight_ticks_up_to_the_cap() {
    let (mut now, mut d) = (Instant::now(), dispatch(1, 0));
    for pause in [200, 400, 800, 1000, 1000] {
        claim(&mut d, now, failed(true));
        d.wake();
        assert_eq!(d.next_claim(now + ms(pause - 1)), None, "{pause} ms");
        now += ms(pause);
    }
    assert_eq!(backoff(Duration::from_secs(9), 3), Duration::from_secs(9));
    assert_eq!(backoff(ms(100), u32::MAX), MAX_OUTAGE_BACKOFF);
}

#[test]
fn recovery_is_reported_once_with_the_streak_s_numbers_and_resets_the_backoff() {
    let (t, mut d) = (Instant::now(), dispatch(1, 0));
    for at in [0, 200, 600] {
        assert!(claim(&mut d, t + ms(at), failed(true)).is_empty());
    }
    let back = claim(&mut d, t + ms(1400), Batch { len: 0 });
    assert_eq!(back, [recovered(Cause::Database, 1400, 3)]);
    assert!(claim(&mut d, t + ms(1400), Batch { len: 0 }).is_empty());
    claim(&mut d, t + ms(2000), failed(true));
    d.wake();
    assert_eq!(d.next_claim(t + ms(2199)), None);
    assert!(d.next_claim(t + ms(2200)).is_some(), "two ticks again");
}

#[test]
fn a_claim_error_is_reported_once_a_streak_and_an_outage_never() {
    let (t, mut d) = (Instant::now(), dispatch(1, 0));
    let first = claim(&mut d, t, failed(false));
    assert_eq!(
        first,
        [Report::ClaimFailed {
            error: "boom".into()
        }]
    );
    assert!(claim(&mut d, t + ms(200), failed(false)).is_empty());
    assert_eq!(claim(&mut d, t + ms(600), Batch { len: 0 }).len(), 1);
    assert!(claim(&mut d, t + ms(600), failed(true)).is_empty());
    assert!(claim(&mut d, t + ms(800), failed(false)).is_empty());
}

#[test]
fn storage_trouble_is_not_ended_by_a_claim_nor_database_trouble_by_a_batch() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    let a = full_batch(&mut d, t, 0);
    let b = full_batch(&mut d, t, 10);
    let said = d.batch_returned(a, t, refused());
    assert!(matches!(said, Some(Report::StorageUnavailable { .. })));
    d.wake();
    assert_eq!(d.next_claim(t + ms(199)), None, "backs off");
    let c = full_batch(&mut d, t + ms(200), 20);
    assert_eq!(d.batch_returned(c, t + ms(200), refused()), None, "once");
    let back = d.batch_returned(b, t + ms(300), Ran);
    assert_eq!(back, Some(recovered(Cause::Storage, 300, 2)));

    let a = full_batch(&mut d, t + ms(300), 0);
    claim(&mut d, t + ms(300), failed(true));
    assert_eq!(d.batch_returned(a, t + ms(300), Ran), None);
    d.wake();
    assert_eq!(d.next_claim(t + ms(499)), None, "the database is still out");
}

/// One trouble at a time: the last failure's cause is the one that
/// must succeed to end it, and its line counts the whole streak.
#[test]
fn a_failure_of_the_other_cause_takes_the_streak_over() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    let a = full_batch(&mut d, t, 0);
    let b = full_batch(&mut d, t, 10);
    assert!(d.batch_returned(a, t, refused()).is_some());
    let error = claim(&mut d, t + ms(200), failed(false));
    assert!(error.is_empty(), "not said: a streak is on");
    assert_eq!(d.batch_returned(b, t + ms(300), Ran), None);
    let back = claim(&mut d, t + ms(600), Batch { len: 0 });
    assert_eq!(back, [recovered(Cause::Database, 600, 2)]);
}

#[test]
fn pause_and_resume_are_reported_once_each() {
    let (t, mut d) = (Instant::now(), dispatch(1, 0));
    assert_eq!(claim(&mut d, t, Paused), [Report::Paused]);
    assert!(claim(&mut d, t, Paused).is_empty());
    assert_eq!(claim(&mut d, t, Batch { len: 0 }), [Report::Resumed]);
    assert!(claim(&mut d, t, Batch { len: 0 }).is_empty());
    claim(&mut d, t, failed(true));
    let reports = claim(&mut d, t + ms(200), Paused);
    assert_eq!(
        reports,
        [recovered(Cause::Database, 200, 1), Report::Paused]
    );
}

#[test]
fn after_stopping_nothing_is_claimed_and_idle_comes_with_the_last_batch() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    let a = full_batch(&mut d, t, 0);
    d.next_claim(t).expect("the full batch asks for more");
    d.stop();
    d.batch_returned(a, t, Ran);
    assert!(!d.idle(), "a claim is in flight");
    d.claim_returned(t, Batch { len: 10 });
    let b = d.batch_started(vec!["b".into()]);
    assert!(!d.idle(), "the batch claimed before the stop runs");
    d.wake();
    assert_eq!(d.next_claim(t), None, "stopping, though more is due");
    d.batch_returned(b, t, NotRun);
    assert!(d.idle());
}

#[test]
fn releasing_gives_back_every_running_batch_s_ids() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    full_batch(&mut d, t, 0);
    let b = full_batch(&mut d, t, 10);
    d.stop();
    let mut ids = d.release_in_flight();
    ids.sort_by_key(|id| id.parse::<u32>().unwrap());
    assert_eq!(ids, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(d.idle() && d.release_in_flight().is_empty());
    assert_eq!(d.batch_returned(b, t, Ran), None, "late: harmless");
}

#[test]
fn a_conflicted_claim_claims_again_at_once_and_is_no_trouble() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    assert!(claim(&mut d, t, ClaimOutcome::Conflicted).is_empty());
    assert!(d.next_claim(t).is_some(), "no backoff after a conflict");
    d.claim_returned(t, failed(true));
    d.wake();
    assert_eq!(d.next_claim(t), None, "an outage backs off");
    let later = t + ms(10_000);
    let reports = claim(&mut d, later, ClaimOutcome::Conflicted);
    assert!(
        reports.is_empty(),
        "a conflict neither ends nor adds trouble"
    );
    assert!(d.next_claim(later).is_some(), "claims again at once");
    let reports = d.claim_returned(later, Batch { len: 0 });
    assert_eq!(reports, [recovered(Cause::Database, 10_000, 1)]);
}

#[test]
fn urgent_rows_are_claimed_while_a_batch_waits_for_the_rate_limiter() {
    let (t, mut d) = (Instant::now(), dispatch(2, 4));
    d.wake();
    let normal = ClaimOrder {
        limit: 4,
        urgent_only: false,
        urgent: true,
    };
    assert_eq!(d.next_claim(t), Some(normal));
    d.claim_returned(t, Batch { len: 4 });
    d.throttle_began();
    assert_eq!(
        d.next_claim(t),
        None,
        "that claim looked for urgent rows first and found none"
    );
    d.nudge(true);
    let urgent = ClaimOrder {
        limit: 10,
        urgent_only: true,
        urgent: true,
    };
    assert_eq!(d.next_claim(t), Some(urgent), "urgent ids recorded here");
    d.claim_returned(t, Urgent { len: 1 });
    assert_eq!(d.next_claim(t), None, "no more urgent rows: no spinning");
    d.wake();
    assert_eq!(
        d.next_claim(t),
        Some(urgent),
        "a tick looks for urgent rows"
    );
    d.claim_returned(t, Urgent { len: 10 });
    assert_eq!(d.next_claim(t), Some(urgent), "a full urgent batch: more");
    d.claim_returned(t, Urgent { len: 0 });
    d.stop();
    assert!(!d.idle(), "a throttled batch is still to be handed over");
    d.throttle_ended();
    assert!(d.idle());
}

#[test]
fn urgent_rows_found_by_a_normal_claim_leave_the_backlog_to_claim_next() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    claim(&mut d, t, Urgent { len: 1 });
    assert_eq!(
        d.next_claim(t),
        Some(ClaimOrder {
            limit: 10,
            urgent_only: false,
            urgent: false
        }),
        "normal rows may be due behind the urgent one (the urgent rows were all taken)"
    );
    d.claim_returned(t, Batch { len: 3 });
    assert_eq!(d.next_claim(t), None);
}

#[test]
fn the_fast_lane_is_open_only_to_free_executors_with_nothing_else_due() {
    let (t, mut d) = (Instant::now(), dispatch(2, 0));
    assert_eq!(d.fast_lane_room(), 20, "two free executors of 10");
    let first = full_batch(&mut d, t, 0);
    assert_eq!(d.fast_lane_room(), 0, "the full batch left more due");
    d.next_claim(t).unwrap();
    assert_eq!(
        d.fast_lane_room(),
        0,
        "a claim is in flight, an executor busy"
    );
    d.claim_returned(t, Batch { len: 3 });
    d.wake();
    d.next_claim(t).unwrap();
    assert_eq!(
        d.fast_lane_room(),
        0,
        "a claim in flight takes the free executor"
    );
    d.claim_returned(t, Batch { len: 0 });
    assert_eq!(d.fast_lane_room(), 10, "one executor is free");
    d.batch_returned(first, t, Ran);
    assert_eq!(d.fast_lane_room(), 20);
    claim(&mut d, t, Paused);
    assert_eq!(d.fast_lane_room(), 0, "paused");
    claim(&mut d, t, Batch { len: 0 });
    assert_eq!(d.fast_lane_room(), 20, "resumed");
    claim(&mut d, t, failed(true));
    assert_eq!(d.fast_lane_room(), 0, "in trouble");

    let throttled = dispatch(2, 100);
    assert_eq!(
        throttled.fast_lane_room(),
        0,
        "the lane would pass the limit"
    );
    let mut stopping = dispatch(2, 0);
    stopping.stop();
    assert_eq!(stopping.fast_lane_room(), 0);
}

#[test]
fn urgent_rows_are_looked_for_after_a_tick_an_urgent_nudge_or_a_full_urgent_claim() {
    let (t, mut d) = (Instant::now(), dispatch(1, 0));
    let order = |d: &mut Dispatch| d.next_claim(t).expect("a claim").urgent;
    d.wake();
    assert!(order(&mut d), "at start, and after every tick");
    d.claim_returned(t, Batch { len: 10 });
    assert!(!order(&mut d), "the last claim found no urgent row");
    d.claim_returned(t, Batch { len: 10 });
    d.nudge(false);
    assert!(!order(&mut d), "normal ids recorded here");
    d.nudge(true);
    d.claim_returned(t, Batch { len: 10 });
    assert!(order(&mut d), "urgent ids recorded while claiming");
    d.claim_returned(t, Urgent { len: 10 });
    assert!(order(&mut d), "a full urgent claim: more may wait");
    d.claim_returned(t, Urgent { len: 2 });
    d.wake();
    assert!(order(&mut d), "a tick: recorded elsewhere, or come due");
    d.claim_returned(t, Paused);
    d.nudge(false);
    assert!(order(&mut d), "a paused claim did not look");
    d.claim_returned(t, failed(true));
    d.nudge(false);
    let after_backoff = d.next_claim(t + ms(10_000)).expect("a claim");
    assert!(after_backoff.urgent, "neither did a failed one");
}
