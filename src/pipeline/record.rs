//! RecordActor: inserts new requests with group commit.
//!
//! Callers' requests are queued while a commit is in flight; the next commit
//! takes the whole queue in one transaction, so under load many requests
//! share one fsync, and each caller is answered only after its rows are
//! committed. With no load a request commits alone, at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::dispatcher::{DispatcherActor, Leased, Nudge};
use super::fast_lane::FastLane;
use crate::clock::now_ms;
use crate::db::models::{Claimed, Priority, Source};
use crate::db::queries::{self, record::Lease, record::RecordRequest};
use crate::db::{Db, DbError};
use crate::metrics::Metrics;
use crate::video_id::VideoId;

/// The fast lane's rows of a group commit at `now`, as a claim would have
/// returned them: the `leased` ids, with their request's source.
fn leased_batch(requests: &[RecordRequest], leased: &[String], now: i64) -> Vec<Claimed> {
    if leased.is_empty() {
        return Vec::new();
    }
    let leased: HashSet<&str> = leased.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    requests
        .iter()
        .flat_map(|r| r.ids.iter().map(move |id| (r, id.as_str())))
        .filter(|(_, id)| leased.contains(id) && seen.insert(*id))
        .map(|(r, id)| Claimed {
            id: id.to_owned(),
            paths: None,
            attempts: 0,
            created_at: now,
            source: r.source.as_str().to_owned(),
            request_id: r.request_id.clone(),
        })
        .collect()
}

/// Where a caller waits for its commit: new rows (`None` when uncounted).
type Reply = oneshot::Sender<Result<Option<usize>, DbError>>;

/// The single entry point of new requests into the table.
pub(crate) struct RecordActor {
    db: Db,
    dispatcher: Addr<DispatcherActor>,
    metrics: Arc<Metrics>,
    /// The fast lane, with this instance's `locked_by` and lease (none
    /// with `fast_lane: false`).
    fast_lane: Option<(FastLane, Arc<str>, Duration)>,
    /// Requests waiting for the next commit.
    queue: Vec<(RecordRequest, Reply)>,
    /// A commit is in flight: new requests queue for the next one, which is
    /// what groups them.
    committing: bool,
}

impl RecordActor {
    pub(crate) fn new(
        db: Db,
        dispatcher: Addr<DispatcherActor>,
        metrics: Arc<Metrics>,
    ) -> RecordActor {
        RecordActor {
            db,
            dispatcher,
            metrics,
            fast_lane: None,
            queue: Vec::new(),
            committing: false,
        }
    }

    /// Takes the fast lane when it has room: `owner`'s leases, `lease`
    /// long (none: no lane).
    pub(crate) fn with_fast_lane(
        self,
        fast_lane: Option<(FastLane, Arc<str>, Duration)>,
    ) -> RecordActor {
        RecordActor { fast_lane, ..self }
    }

    /// The lease for a group commit of `requests` at `now`, if its ids due
    /// now all fit in the fast lane's room (which it then takes).
    fn fast_lane_lease(&self, requests: &[RecordRequest], now: i64) -> Option<(Arc<str>, i64)> {
        let (lane, owner, lease) = self.fast_lane.as_ref()?;
        let due_now: usize = requests
            .iter()
            .filter(|r| r.not_before <= now)
            .map(|r| r.ids.len())
            .sum();
        lane.take(due_now)
            .then(|| (owner.clone(), now + lease.as_millis() as i64))
    }

    fn commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.queue.is_empty() {
            return;
        }
        self.committing = true;
        let (requests, replies): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.queue).into_iter().unzip();
        let db = self.db.clone();
        let (now, started) = (now_ms(), Instant::now());
        let lease = self.fast_lane_lease(&requests, now);
        let leasing = lease.is_some();
        // Urgent ids (new, or pending ones made urgent and due now): the
        // next claim looks for urgent rows first.
        let urgent = requests.iter().any(|r| !r.urgent.is_empty());
        let write = async move {
            let due_now = requests.iter().any(|r| r.not_before <= now);
            // `require_synchronous_replication`: nothing is committed that
            // a failover may lose.
            if let Some(refused) = db.durability_refusal() {
                return (Err(refused), due_now, Vec::new());
            }
            let result = db
                .write_async(move |conn| {
                    let lease = lease.as_ref().map(|(owner, until)| Lease {
                        owner,
                        until: *until,
                    });
                    let recorded =
                        queries::record::record_many_leased(conn, &requests, now, lease)?;
                    let leased = leased_batch(&requests, &recorded.leased, now);
                    Ok((recorded, leased))
                })
                .await;
            match result {
                Ok((recorded, leased)) => (Ok(recorded), due_now, leased),
                Err(e) => (Err(e), due_now, Vec::new()),
            }
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |(result, due_now, leased), act, ctx| {
                    act.committing = false;
                    // The fast lane's batch (maybe empty: the lane reopens when
                    // the dispatcher has it); new rows due now that it did
                    // not take are claimed, at once.
                    let in_lane = leased.len();
                    if leasing {
                        act.dispatcher.do_send(Leased {
                            batch: leased,
                            started,
                        });
                    }
                    let unclaimed =
                        matches!(&result, Ok(recorded) if due_now && recorded.total > in_lane);
                    if unclaimed || (urgent && result.is_ok()) {
                        act.dispatcher.do_send(Nudge { urgent });
                    }
                    // Failures are logged by `Db` (once per outage) or by the
                    // handler answering 500, not here.
                    match result {
                        Ok(recorded) => {
                            act.metrics.recorded.inc_by(recorded.total as u64);
                            for (reply, n) in replies.into_iter().zip(recorded.new_rows) {
                                let _ = reply.send(Ok(n));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    act.commit(ctx);
                }),
        );
    }
}

impl Actor for RecordActor {
    type Context = Context<Self>;
}

/// Record deletion requests for these ids, not to run before `not_before`.
/// Answered once the rows are committed.
#[derive(Message)]
#[rtype(result = "Result<Option<Recorded>, DbError>")]
pub(crate) struct Record {
    ids: Vec<VideoId>,
    not_before: i64,
    counted: bool,
    source: Source,
    request_id: Option<String>,
    /// Every id is urgent, or none.
    urgent: bool,
}

impl Record {
    /// A request whose answer says how many ids were new. Duplicates are
    /// dropped; ids are sorted so every transaction touches keys in the same
    /// order.
    pub(crate) fn new(mut ids: Vec<VideoId>, not_before: i64) -> Record {
        ids.sort_unstable();
        ids.dedup();
        Record {
            ids,
            not_before,
            counted: true,
            source: Source::V1,
            request_id: None,
            urgent: false,
        }
    }

    /// The priority of every id (normal unless said).
    pub(crate) fn priority(self, priority: Priority) -> Record {
        Record {
            urgent: priority == Priority::Urgent,
            ..self
        }
    }

    /// Where the request came from, and its `X-Request-Id`: kept with its
    /// rows and in their receipts.
    pub(crate) fn from(self, source: Source, request_id: Option<String>) -> Record {
        Record {
            source,
            request_id,
            ..self
        }
    }

    /// A request whose answer is only "committed" (`None` counts): it can
    /// share one INSERT with the other uncounted requests of its group.
    pub(crate) fn uncounted(ids: Vec<VideoId>, not_before: i64) -> Record {
        Record {
            counted: false,
            ..Record::new(ids, not_before)
        }
    }
}

/// How many ids of a counted [`Record`] were new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Recorded {
    /// New rows.
    pub accepted: usize,
    /// Ids that were already in the table, left as they were.
    pub already_queued: usize,
}

impl Handler<Record> for RecordActor {
    type Result = ResponseFuture<Result<Option<Recorded>, DbError>>;

    fn handle(&mut self, msg: Record, ctx: &mut Context<Self>) -> Self::Result {
        let total = msg.ids.len();
        let (tx, rx) = oneshot::channel();
        let urgent = match msg.urgent {
            true => msg.ids.clone(),
            false => Vec::new(),
        };
        self.queue.push((
            RecordRequest {
                urgent,
                ids: msg.ids,
                not_before: msg.not_before,
                counted: msg.counted,
                source: msg.source,
                request_id: msg.request_id,
                paths: Vec::new(),
            },
            tx,
        ));
        self.commit(ctx);
        Box::pin(async move {
            match rx.await {
                Ok(Ok(new_rows)) => Ok(new_rows.map(|accepted| Recorded {
                    accepted,
                    already_queued: total - accepted,
                })),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(DbError::Unavailable("the recorder stopped".into())),
            }
        })
    }
}

/// Record deletion requests whose ids name paths of their own
/// (`items[].paths`), in a transaction of their own (see
/// [`queries::record::record_with_paths`]). Answered once committed: how many ids
/// were new, or why the request was refused (nothing recorded then).
#[derive(Message)]
#[rtype(result = "Result<Result<Recorded, String>, DbError>")]
pub(crate) struct RecordWithPaths {
    request: RecordRequest,
}

impl RecordWithPaths {
    /// `items`: each id with the paths its request named (maybe none). An
    /// id given twice gets the paths of both; ids are sorted so that every
    /// transaction touches keys in the same order.
    pub(crate) fn new(
        items: Vec<(VideoId, Vec<String>)>,
        not_before: i64,
        source: Source,
        request_id: Option<String>,
    ) -> RecordWithPaths {
        let mut merged: std::collections::BTreeMap<VideoId, Vec<String>> = Default::default();
        for (id, paths) in items {
            let kept = merged.entry(id).or_default();
            for path in paths {
                if !kept.contains(&path) {
                    kept.push(path);
                }
            }
        }
        let (ids, paths) = merged.into_iter().unzip();
        RecordWithPaths {
            request: RecordRequest {
                ids,
                not_before,
                counted: true,
                source,
                request_id,
                paths,
                urgent: Vec::new(),
            },
        }
    }

    /// The ids whose item is urgent.
    pub(crate) fn urgent(mut self, mut ids: Vec<VideoId>) -> RecordWithPaths {
        ids.sort_unstable();
        ids.dedup();
        self.request.urgent = ids;
        self
    }
}

impl RecordWithPaths {
    /// The request as [`queries::record::record_with_paths`] takes it (the CLI
    /// records without the actor).
    pub(crate) fn into_request(self) -> RecordRequest {
        self.request
    }
}

impl Handler<RecordWithPaths> for RecordActor {
    type Result = ResponseFuture<Result<Result<Recorded, String>, DbError>>;

    fn handle(&mut self, msg: RecordWithPaths, _: &mut Context<Self>) -> Self::Result {
        let (db, dispatcher, metrics) = (
            self.db.clone(),
            self.dispatcher.clone(),
            self.metrics.clone(),
        );
        let request = msg.request;
        let total = request.ids.len();
        Box::pin(async move {
            let now = now_ms();
            let due_now = request.not_before <= now;
            let urgent = !request.urgent.is_empty();
            if let Some(refused) = db.durability_refusal() {
                return Err(refused);
            }
            let recorded = db
                .write_async(move |conn| queries::record::record_with_paths(conn, &request, now))
                .await?;
            Ok(recorded.map(|accepted| {
                metrics.recorded.inc_by(accepted as u64);
                if (due_now && accepted > 0) || urgent {
                    dispatcher.do_send(Nudge { urgent });
                }
                Recorded {
                    accepted,
                    already_queued: total - accepted,
                }
            }))
        })
    }
}
