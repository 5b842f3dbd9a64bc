//! Rows of the tables and the values the queries pass around.

use diesel::prelude::*;

use super::schema::{video_del_rec, video_del_receipt};

/// Lifecycle of a request as users see it.
///
/// `pending` rows are claimed once `not_before` has passed; `running` rows
/// are leased by one instance (`locked_by`) until `locked_until`, after which
/// they are claimable again; `failed` rows ran out of attempts and wait for a
/// retry or a cancel. A finished request has no row at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Running,
    Failed,
}

impl State {
    pub const ALL: [State; 3] = [State::Pending, State::Running, State::Failed];

    /// The value stored in `video_del_rec.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// Where a request came from, kept with it and in its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The seed's route, `/video-delete-record/{vid}` (and rows the Go
    /// scheduler left).
    Seed,
    /// `POST /v1/deletions`.
    V1,
    /// `video-scheduler enqueue`.
    Cli,
}

impl Source {
    /// The value stored in the `source` columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Seed => "seed",
            Source::V1 => "v1",
            Source::Cli => "cli",
        }
    }
}

/// How soon a request is claimed (README, "Priority"): claims take urgent
/// due rows first. Stored as `priority` (0 normal, 1 urgent).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// The bulk: every row recorded without a priority.
    #[default]
    Normal,
    /// A takedown: claimed before every normal row, and not held back by
    /// `max_deletions_per_sec`.
    Urgent,
}

impl Priority {
    /// The value stored in `video_del_rec.priority`.
    pub fn stored(self) -> i16 {
        match self {
            Priority::Normal => 0,
            Priority::Urgent => 1,
        }
    }

    /// The priority of a stored value (anything but 1 is normal).
    pub fn from_stored(value: i16) -> Priority {
        match value {
            1 => Priority::Urgent,
            _ => Priority::Normal,
        }
    }
}

/// One row, as read back for the API.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = video_del_rec)]
pub struct Deletion {
    pub id: String,
    pub state: String,
    /// Paths the request named itself, a JSON list (NULL: none).
    pub paths: Option<String>,
    pub attempts: i32,
    pub created_at: i64,
    /// Its schedule while pending, its lease's end while running.
    pub not_before: Option<i64>,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    pub last_error: Option<String>,
    /// Where it came from, and the `X-Request-Id` it came with.
    pub source: String,
    pub request_id: Option<String>,
    /// 0 normal, 1 urgent ([`Priority`]).
    pub priority: i16,
}

/// A new request; `state` and `attempts` take their column defaults.
#[derive(Debug, Insertable)]
#[diesel(table_name = video_del_rec)]
pub(crate) struct NewDeletion<'a> {
    pub id: &'a str,
    pub created_at: i64,
    pub not_before: i64,
    pub source: &'a str,
    pub request_id: Option<&'a str>,
    /// The paths the request named itself (`items[].paths`), a JSON list
    /// of path strings; NULL when it named none.
    pub paths: Option<&'a str>,
}

/// An id handed to an executor by a claim, with what its deletion and its
/// ack need: the paths its request named, the attempts made so far (the
/// backoff of a failure depends on it) and what its receipt records.
#[derive(Debug, Clone, Default, PartialEq, Eq, QueryableByName)]
#[diesel(table_name = video_del_rec)]
pub struct Claimed {
    pub id: String,
    /// Paths the request named itself, a JSON list (NULL: none): with the
    /// id, what the deletion needs; the rest is for the ack.
    pub paths: Option<String>,
    pub attempts: i32,
    pub created_at: i64,
    pub source: String,
    pub request_id: Option<String>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// An operator paused deletions: nothing was claimed.
    Paused,
    Batch(Vec<Claimed>),
}

/// The proof that a request was carried out: written by the ack that
/// removed its row, kept for `receipts.retention_days`.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Queryable,
    Selectable,
    Insertable,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[diesel(table_name = video_del_receipt)]
pub struct Receipt {
    pub id: String,
    /// When the request was recorded (epoch ms).
    pub requested_at: i64,
    /// When the ack removed its row, its files gone (epoch ms).
    pub completed_at: i64,
    /// Attempts, the successful one included.
    pub attempts: i32,
    /// Templated paths (or keys, or prefixes) removed.
    pub deleted: i32,
    /// Templated paths that were already gone.
    pub missing: i32,
    /// Times the request was claimed, the completing claim included: more
    /// than 1 means an earlier claim did not complete it. One that failed
    /// is counted in `attempts` too; one beyond `attempts` lost its lease
    /// (an instance cut off or slow, its ack lost) or was given back
    /// (shutdown, an unusable storage). Any of them may have deleted files
    /// this one then found missing. 0 for receipts written before it was
    /// counted.
    pub claims: i32,
    /// The instance that acked it (`locked_by`).
    pub acked_by: String,
    /// `seed`, `v1` or `cli`.
    pub source: String,
    /// The `X-Request-Id` of the request that recorded it.
    pub request_id: Option<String>,
    /// What was erased on each storage target, a JSON list of
    /// [`crate::erasure::TargetErased`] (NULL for receipts written before
    /// targets were recorded).
    pub targets: Option<String>,
}

/// Changes to the kept counts, added by the transaction making them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountDelta {
    /// Pending and running rows.
    pub queued: i64,
    pub failed: i64,
    /// Receipts.
    pub done: i64,
}

/// A claimed id whose paths are all gone: its row is removed by the ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub claimed: Claimed,
    /// What its deletion found.
    pub removed: crate::erasure::Removed,
}

/// What a failed deletion does to its row: computed by the executor from the
/// retry policy, written by [`super::queries::ack::ack`].
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: String,
    /// Attempts including this one.
    pub attempts: i32,
    pub error: String,
    /// `Some(when)` to retry, `None` when the request is now `failed`.
    pub retry_at: Option<i64>,
}

/// Counts of one ack, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckCounts {
    /// Rows removed: their files are gone and the lease was still ours.
    pub removed: usize,
    /// Receipts written for them (0 when receipts are off).
    pub receipts: usize,
    pub retried: usize,
    pub failed: usize,
    /// Acks skipped because the lease had moved to another claim.
    pub lost_lease: usize,
}

/// Counts by state, the age of the oldest due request, and whether
/// deletions are paused. Counts are kept by the transactions that change
/// them (`video_del_counts`), not counted per call.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub pending: i64,
    pub running: i64,
    pub failed: i64,
    /// Receipts kept.
    pub done: i64,
    /// Milliseconds since the oldest claimable request became due; `None`
    /// when nothing is due.
    pub oldest_due_age_ms: Option<i64>,
    /// Urgent requests due now (README, "Priority"): claimed before every
    /// normal one. Normal due requests are not counted (that would scan
    /// the backlog); `pending` less this bounds them.
    pub urgent_due: i64,
    /// Milliseconds since the oldest urgent due request became due; `None`
    /// when none is due.
    pub oldest_urgent_due_age_ms: Option<i64>,
    /// An operator paused deletions (`POST /v1/pause`).
    pub paused: bool,
}

/// What the database's replication promises for a commit, as last read
/// from the server (`queries::replication`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Replication {
    /// Not read yet, or nothing to report: SQLite, MySQL/MariaDB without
    /// Galera, a PostgreSQL primary with no standby.
    #[default]
    None,
    /// A PostgreSQL primary: standbys streaming from it, how many of them
    /// are synchronous (a commit waits for them), how many this role may
    /// not see the state of, and whether commits wait for a synchronous
    /// standby at all (`synchronous_standby_names` set, `synchronous_commit`
    /// neither `off` nor `local`).
    Postgres {
        standbys: i64,
        synchronous: i64,
        unknown: i64,
        commits_wait: bool,
    },
    /// A Galera node: the cluster's size as it sees it, whether it is in
    /// the primary component, and its state (`Synced`, `Donor/Desynced`,
    /// `Joining`, ...).
    Galera {
        cluster_size: i64,
        primary: bool,
        state: String,
    },
}

impl Replication {
    /// Why no commit can complete now, if none can: commits wait for a
    /// synchronous standby that is not there, or a Galera node is cut off
    /// or not synced.
    pub fn blocks_commits(&self) -> Option<String> {
        match self {
            Replication::Postgres {
                synchronous: 0,
                unknown: 0,
                commits_wait: true,
                ..
            } => Some(
                "no synchronous standby connected, and commits wait for one \
                 (synchronous_standby_names)"
                    .to_owned(),
            ),
            Replication::Galera { primary: false, .. } => {
                Some("Galera node not in the primary component".to_owned())
            }
            Replication::Galera { state, .. } if state != "Synced" => {
                Some(format!("Galera node not synced (state {state})"))
            }
            _ => None,
        }
    }

    /// Why a commit may not survive a failover now, if it may not: the
    /// primary has standbys, none of them synchronous (for
    /// `require_synchronous_replication`).
    pub fn may_lose_commits(&self) -> Option<String> {
        match self {
            Replication::Postgres {
                standbys,
                synchronous: 0,
                unknown: 0,
                ..
            } if *standbys > 0 => Some(format!(
                "the primary has {standbys} standby(s), none synchronous: a commit \
                 may be lost in a failover (require_synchronous_replication)"
            )),
            _ => None,
        }
    }
}

/// The events a request's end may give, as the webhooks' `type`.
pub const EVENT_TYPES: [&str; 3] = [COMPLETED, FAILED, CANCELLED];
/// Its files are gone (the receipt).
pub const COMPLETED: &str = "deletion.completed";
/// Given up after `max_attempts`.
pub const FAILED: &str = "deletion.failed";
/// Cancelled by an operator.
pub const CANCELLED: &str = "deletion.cancelled";

/// An outbox event's state: `pending` until a delivery succeeds
/// (`delivered`), or until its retries ran out (`dead`, kept with its last
/// error until redelivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    Pending,
    Delivered,
    Dead,
}

impl EventState {
    pub const ALL: [EventState; 3] = [EventState::Pending, EventState::Delivered, EventState::Dead];

    /// The value stored in `video_del_event.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Delivered => "delivered",
            EventState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<EventState> {
        EventState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// A row of `video_del_event`: one event for one sink.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = crate::db::schema::video_del_event)]
pub struct Event {
    pub id: i64,
    pub sink: String,
    /// `deletion.completed`, `deletion.failed` or `deletion.cancelled`.
    pub kind: String,
    /// The video id.
    pub subject: String,
    pub occurred_at: i64,
    /// The body's `data`, JSON.
    pub data: String,
    pub state: String,
    /// Deliveries tried since it was written (or redelivered).
    pub tries: i32,
    pub not_before: i64,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    /// The last answer's HTTP status, when there was one.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// `deletion.completed`'s data: the receipt of the removed row `item` of
/// `announced` (an ack's group of removed rows).
pub(crate) fn completed_data(announced: &Announcement, item: &AnnouncedItem) -> String {
    use crate::schedule::rfc3339;
    let (id, requested_at, attempts, source, request_id) = item;
    let targets: serde_json::Value =
        serde_json::from_str(&announced.targets).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": id,
        "requested_at": rfc3339(*requested_at),
        "completed_at": rfc3339(announced.occurred_at),
        "attempts": attempts,
        "deleted": announced.deleted,
        "missing": announced.missing,
        "targets": targets,
        "acked_by": announced.acked_by,
        "source": source,
        "request_id": request_id,
    })
    .to_string()
}

/// An ack's announcement (`video_del_announce`): the removed rows of one
/// group of a batch, each to be told to every sink wanting
/// `deletion.completed`.
#[derive(Debug, Clone, Queryable)]
pub struct Announcement {
    pub id: i64,
    /// When the ack removed them, epoch ms.
    pub occurred_at: i64,
    pub acked_by: String,
    /// Paths deleted and missing per row, and the per-target counts (JSON).
    pub deleted: i32,
    pub missing: i32,
    pub targets: String,
    /// How many rows `items` holds.
    pub size: i32,
    /// A JSON array of [`AnnouncedItem`]s.
    pub items: String,
}

/// A removed row as announced: id, requested at (epoch ms), attempts
/// (this one included), source, request id.
pub type AnnouncedItem = (String, i64, i32, String, Option<String>);

/// `deletion.failed`'s data: given up after `attempts`, with the last
/// error.
pub(crate) fn failed_data(failure: &Failure, at: i64) -> String {
    serde_json::json!({
        "id": failure.id,
        "failed_at": crate::schedule::rfc3339(at),
        "attempts": failure.attempts,
        "last_error": failure.error,
    })
    .to_string()
}

/// `deletion.cancelled`'s data. `by` names who cancelled once tokens have
/// names; `null` until then.
pub(crate) fn cancelled_data(id: &str, at: i64, by: Option<&str>) -> String {
    serde_json::json!({
        "id": id,
        "cancelled_at": crate::schedule::rfc3339(at),
        "by": by,
    })
    .to_string()
}
