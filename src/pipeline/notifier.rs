//! NotifierActor: delivers the outbox (`video_del_event`) to its sinks.
//!
//! Woken every [`POLL`] (events of other instances, retries coming due,
//! expired leases) and by a [`Nudge`] from an executor whose ack wrote
//! events, it first makes the acks' announcements (`video_del_announce`)
//! into events ([`announce::fan_out`]), then claims each sink's due events
//! with a lease (the deletions'
//! rule: a dead instance's events come due again when it ends), delivers
//! them ([`crate::notify::Sink::deliver`]) and writes the outcome:
//! delivered, due again after a backoff, or dead once `webhook_retry_hours`
//! of backoff have passed. Each sink has its own bound on events in flight,
//! so a slow or dead receiver holds only its own events; deliveries are at
//! least once and in no promised order.
//!
//! Erasure first: while this instance's dispatcher has a backlog (its
//! claims come back full and no `max_deletions_per_sec` throttles them,
//! see [`Backlog`]), the notifier yields the machine and the database to
//! the drain: it makes one announcement into events and claims once per
//! sink every [`YIELD_ROUND`], and catches up at full speed when the
//! backlog is gone. Announcements of a drain are then sent right after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::clock::now_ms;
use crate::db::models::Event;
use crate::db::queries::{announce, events};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::notify::{Outcome, Sink};

/// How often every sink looks for due events it was not told about.
const POLL: Duration = Duration::from_millis(500);
/// The first retry's delay; each further one doubles, up to [`MAX_DELAY`].
const FIRST_DELAY_MS: i64 = 5_000;
const MAX_DELAY_MS: i64 = 3_600_000;
/// Announcements made into events per transaction: two acks' worth of a
/// drain (1,000 rows at the default batch size, each once per sink).
const FAN_OUT: usize = 2;
/// While the dispatcher has a backlog: one announcement made into events,
/// and one claim per sink, this often.
const YIELD_ROUND: Duration = Duration::from_secs(1);
/// A backlog is assumed for this long after the last full claim.
const BACKLOG_HOLD_MS: i64 = 250;

/// The dispatcher's word that this instance is draining a backlog: its
/// claims came back full, with no rate limit on them. Shared by the
/// dispatcher (which sets it) and the notifier (which yields while it
/// holds).
#[derive(Debug, Clone, Default)]
pub(crate) struct Backlog(Arc<AtomicI64>);

impl Backlog {
    /// A claim came back full: more is due at once.
    pub(crate) fn full_claim(&self) {
        self.0.store(now_ms() + BACKLOG_HOLD_MS, Ordering::Relaxed);
    }

    /// Whether a full claim came in the last [`BACKLOG_HOLD_MS`].
    pub(crate) fn draining(&self) -> bool {
        now_ms() < self.0.load(Ordering::Relaxed)
    }
}

/// An executor's ack wrote events: claim now rather than at the next poll.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Nudge;

/// Stops claiming (shutdown); deliveries under way finish or their
/// events' leases run out.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopNotifier;

/// One sink's state in this instance.
struct Lane {
    sink: Arc<Sink>,
    /// Events claimed and not yet written back.
    in_flight: usize,
    /// A claim is under way (one at a time per sink).
    claiming: bool,
    /// Claim again as soon as the current claim or delivery ends: the last
    /// claim was full, or a nudge came meanwhile.
    again: bool,
    /// When the last claim started (yielding to a backlog: one a round).
    last_claim: Option<Instant>,
}

pub(crate) struct NotifierActor {
    db: Db,
    owner: Arc<str>,
    lanes: HashMap<String, Lane>,
    /// Which sinks want which events: announcements become events of these.
    outbox: Arc<events::Sinks>,
    /// Set by the dispatcher while it drains a backlog.
    backlog: Backlog,
    /// A fan-out is under way (one at a time).
    fanning: bool,
    /// When the last fan-out started (yielding to a backlog: one a round).
    last_fan_out: Option<Instant>,
    metrics: Arc<Metrics>,
    /// Backoff beyond which an event is dead.
    window_ms: i64,
    stopped: bool,
}

impl NotifierActor {
    pub(crate) fn new(
        db: Db,
        owner: Arc<str>,
        (sinks, outbox): (Vec<Arc<Sink>>, Arc<events::Sinks>),
        backlog: Backlog,
        metrics: Arc<Metrics>,
        retry_hours: f64,
    ) -> NotifierActor {
        let lanes = sinks
            .into_iter()
            .map(|sink| {
                let lane = Lane {
                    sink: sink.clone(),
                    in_flight: 0,
                    claiming: false,
                    again: false,
                    last_claim: None,
                };
                (sink.name.clone(), lane)
            })
            .collect();
        NotifierActor {
            db,
            owner,
            lanes,
            outbox,
            backlog,
            fanning: false,
            last_fan_out: None,
            metrics,
            window_ms: (retry_hours * 3_600_000.0) as i64,
            stopped: false,
        }
    }

    fn wake_all(&mut self, ctx: &mut Context<Self>) {
        self.fan_out(ctx);
        let names: Vec<String> = self.lanes.keys().cloned().collect();
        for name in names {
            self.claim(&name, ctx);
        }
    }

    /// Whether something last started at `last` must wait: the dispatcher
    /// drains a backlog and this round's turn was taken.
    fn yielding(&self, last: Option<Instant>) -> bool {
        self.backlog.draining() && last.is_some_and(|at| at.elapsed() < YIELD_ROUND)
    }

    /// Makes announcements into events, [`FAN_OUT`] at a time until none
    /// is left, then claims: the new events are due at once.
    fn fan_out(&mut self, ctx: &mut Context<Self>) {
        if self.stopped || self.fanning || self.yielding(self.last_fan_out) {
            return;
        }
        self.fanning = true;
        self.last_fan_out = Some(Instant::now());
        let limit = match self.backlog.draining() {
            true => 1,
            false => FAN_OUT,
        };
        let (db, outbox) = (self.db.clone(), self.outbox.clone());
        let making = async move {
            db.write_relaxed_async(move |c| announce::fan_out(c, &outbox, limit))
                .await
        };
        ctx.spawn(making.into_actor(self).map(move |made, act, ctx| {
            act.fanning = false;
            match made {
                Ok((0, _)) => {}
                Ok((taken, _)) => {
                    if taken == limit {
                        act.fan_out(ctx);
                    }
                    let names: Vec<String> = act.lanes.keys().cloned().collect();
                    for name in names {
                        act.claim(&name, ctx);
                    }
                }
                Err(e) if e.is_unavailable() => {}
                Err(e) => log::warn!("making announcements into events failed: {e}"),
            }
        }));
    }

    /// Claims `name`'s due events, as many as it has room for.
    fn claim(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some(lane) = self.lanes.get_mut(name) else {
            return;
        };
        let room = lane.sink.capacity.saturating_sub(lane.in_flight);
        if self.stopped || room == 0 || lane.claiming {
            lane.again = true;
            return;
        }
        let last_claim = lane.last_claim;
        if self.yielding(last_claim) {
            return;
        }
        let lane = self.lanes.get_mut(name).expect("looked up above");
        lane.claiming = true;
        lane.again = false;
        lane.last_claim = Some(Instant::now());
        let limit = room.min(lane.sink.per_claim);
        let (sink, db, owner) = (lane.sink.clone(), self.db.clone(), self.owner.clone());
        let claiming = async move {
            if let Some(limit) = &sink.per_claim_limit {
                limit.until_ready().await;
            }
            let lease_ms = sink.lease.as_millis() as i64;
            let name = sink.name.clone();
            db.write_relaxed_async(move |c| {
                let now = now_ms();
                events::claim(c, &owner, &name, now, now + lease_ms, limit)
            })
            .await
        };
        let name = name.to_owned();
        ctx.spawn(claiming.into_actor(self).map(move |claimed, act, ctx| {
            let Some(lane) = act.lanes.get_mut(&name) else {
                return;
            };
            lane.claiming = false;
            match claimed {
                Ok(events) if !events.is_empty() => {
                    lane.again |= events.len() == limit;
                    lane.in_flight += events.len();
                    let (sink, again) = (lane.sink.clone(), lane.again);
                    act.deliver(sink, events, ctx);
                    if again {
                        act.claim(&name, ctx);
                    }
                }
                Ok(_) => {}
                // Outages are logged once by `Db`; the next poll claims.
                Err(e) if e.is_unavailable() => {}
                Err(e) => log::warn!("claiming events of sink {name} failed: {e}"),
            }
        }));
    }

    /// Delivers claimed events and writes what happened to them.
    fn deliver(&mut self, sink: Arc<Sink>, claimed: Vec<Event>, ctx: &mut Context<Self>) {
        let (db, owner) = (self.db.clone(), self.owner.clone());
        let (metrics, window_ms) = (self.metrics.clone(), self.window_ms);
        let count = claimed.len();
        let delivering = async move {
            let started = Instant::now();
            let tries: Tries = claimed
                .iter()
                .map(|e| (e.id, (e.tries, e.occurred_at)))
                .collect();
            let outcomes = sink.deliver(claimed).await;
            let now = now_ms();
            count_outcomes(&metrics, &sink.name, &outcomes, &tries, now);
            let name = sink.name.clone();
            let outcomes = Arc::new(outcomes);
            let written = outcomes.clone();
            let written = db
                .write_relaxed_async(move |c| {
                    write_outcomes(c, &owner, &written, &tries, now, window_ms)
                })
                .await
                .map(|dead| (outcomes, dead));
            (name, written, started.elapsed())
        };
        ctx.spawn(
            delivering
                .into_actor(self)
                .map(move |(name, written, took), act, ctx| {
                    if let Some(lane) = act.lanes.get_mut(&name) {
                        lane.in_flight = lane.in_flight.saturating_sub(count);
                    }
                    match written {
                        Ok((outcomes, dead)) => {
                            let failed: Vec<&Outcome> = outcomes
                                .iter()
                                .filter(|o| matches!(o, Outcome::Failed { .. }))
                                .collect();
                            if let Some(Outcome::Failed { error, .. }) = failed.first() {
                                log::warn!(
                            "sink {name}: {} of {count} events not delivered ({dead} now dead) \
                             in {took:.1?}: {error}",
                            failed.len()
                        );
                            }
                            act.metrics.events.deliveries_of(&name, "dead", dead);
                        }
                        Err(e) if e.is_unavailable() => {}
                        Err(e) => log::warn!(
                            "sink {name}: the outcome of {count} deliveries was not written \
                     (they are delivered again when their lease ends): {e}"
                        ),
                    }
                    act.claim(&name, ctx);
                }),
        );
    }
}

/// Tries so far and time of each claimed event, by id.
type Tries = HashMap<i64, (i32, i64)>;

/// Counts deliveries, and the latency of those delivered.
fn count_outcomes(metrics: &Metrics, sink: &str, outcomes: &[Outcome], tries: &Tries, now: i64) {
    for outcome in outcomes {
        let (label, ids) = match outcome {
            Outcome::Delivered { ids, .. } => ("delivered", ids),
            Outcome::Failed { ids, .. } => ("failed", ids),
        };
        metrics.events.deliveries_of(sink, label, ids.len());
        if label == "delivered" {
            for id in ids {
                let occurred = tries.get(id).map_or(now, |t| t.1);
                metrics.events.latency_of(sink, now - occurred);
            }
        }
    }
}

/// Writes what deliveries found: delivered, due again after a backoff, or
/// dead. Returns how many died.
fn write_outcomes(
    c: &mut crate::db::Conn,
    owner: &str,
    outcomes: &[Outcome],
    tries: &Tries,
    now: i64,
    window_ms: i64,
) -> diesel::QueryResult<usize> {
    let mut dead = 0;
    // Delivered ones in one statement per status (usually one).
    let mut delivered: std::collections::BTreeMap<Option<i32>, Vec<i64>> = Default::default();
    for outcome in outcomes {
        if let Outcome::Delivered { ids, status } = outcome {
            delivered.entry(*status).or_default().extend(ids);
        }
    }
    for (status, ids) in delivered {
        events::delivered(c, owner, &ids, status, now)?;
    }
    for outcome in outcomes {
        match outcome {
            Outcome::Delivered { .. } => {}
            Outcome::Failed { ids, status, error } => {
                for id in ids {
                    let tried = tries.get(id).map_or(0, |t| t.0) + 1;
                    let retry_at = retry_delay(tried, window_ms).map(|d| now + d);
                    dead += usize::from(retry_at.is_none());
                    events::failed(c, owner, &[*id], *status, error, retry_at)?;
                }
            }
        }
    }
    Ok(dead)
}

/// How long after its `tried`-th failed try an event is tried again: 5 s,
/// doubling, at most an hour, with up to 10% of jitter; `None` once the
/// delays so far reach `window_ms` (the event is dead).
pub(crate) fn retry_delay(tried: i32, window_ms: i64) -> Option<i64> {
    let nominal = |n: i32| {
        FIRST_DELAY_MS
            .saturating_mul(1 << (n - 1).clamp(0, 20))
            .min(MAX_DELAY_MS)
    };
    let waited: i64 = (1..tried).map(nominal).sum();
    let next = nominal(tried);
    if waited + next > window_ms {
        return None;
    }
    Some(next + fastrand::i64(0..=next / 10))
}

impl Actor for NotifierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.wake_all(ctx);
        ctx.run_interval(POLL, |act, ctx| act.wake_all(ctx));
    }
}

impl Handler<Nudge> for NotifierActor {
    type Result = ();

    fn handle(&mut self, _: Nudge, ctx: &mut Self::Context) {
        self.wake_all(ctx);
    }
}

impl Handler<StopNotifier> for NotifierActor {
    type Result = ();

    fn handle(&mut self, _: StopNotifier, _: &mut Self::Context) {
        self.stopped = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_holds_for_a_moment_after_the_last_full_claim() {
        let backlog = Backlog::default();
        assert!(!backlog.draining());
        backlog.full_claim();
        assert!(backlog.draining());
        backlog.0.store(now_ms() - 1, Ordering::Relaxed);
        assert!(!backlog.draining());
    }

    #[test]
    fn retries_double_from_five_seconds_to_an_hour_until_the_window_ends() {
        let window = 72 * 3_600_000;
        let first = retry_delay(1, window).unwrap();
        assert!((5_000..=5_500).contains(&first), "{first}");
        let second = retry_delay(2, window).unwrap();
        assert!((10_000..=11_000).contains(&second), "{second}");
        let late = retry_delay(15, window).unwrap();
        assert!((3_600_000..=3_960_000).contains(&late), "{late}");
        // 5 + 10 + 20 s waited; the next 40 s would pass a 60 s window.
        assert!(retry_delay(3, 60_000).is_some());
        assert_eq!(retry_delay(4, 60_000), None);
        assert_eq!(retry_delay(1, 4_000), None);
    }
}
