//! What the API shows of a request: the live row (`DeletionView`), or once
//! done its receipt (`ReceiptView`), both RFC 3339 and JSON.

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::models::{Deletion, Priority, Receipt};
use crate::erasure::TargetErased;
use crate::schedule;

/// A request as the API shows it. Times are RFC 3339 UTC.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeletionView {
    pub id: String,
    pub state: String,
    pub attempts: i32,
    pub created_at: String,
    /// When it may run: its schedule while pending, its lease expiry while
    /// running; null only once failed.
    pub not_before: Option<String>,
    pub last_error: Option<String>,
    /// The instance holding the lease, while running.
    pub locked_by: Option<String>,
    pub locked_until: Option<String>,
    /// `seed`, `v1` or `cli`.
    pub source: String,
    /// The `X-Request-Id` of the request that recorded it.
    pub request_id: Option<String>,
    /// Paths its request named besides the templates (`items[].paths`).
    pub paths: Vec<String>,
    /// `urgent` or `normal`: claims take urgent due requests first.
    pub priority: Priority,
}

/// A completed request, while its receipt is kept (`state` is `done`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReceiptView {
    pub id: String,
    /// Always `done`.
    pub state: &'static str,
    /// When the request was recorded.
    pub requested_at: String,
    /// When its files were gone and its row removed.
    pub completed_at: String,
    /// Attempts, the successful one included.
    pub attempts: i32,
    /// Paths (keys, prefixes) removed, and already gone.
    pub deleted: i32,
    pub missing: i32,
    /// Times the request was claimed, the completing claim included: more
    /// than 1 means an earlier claim (one that failed, was given back, or
    /// lost its lease: an instance cut off or slow, its ack lost) may have
    /// deleted files this one then found missing. 0 for receipts written
    /// before claims were counted.
    pub claims: i32,
    /// The instance that completed it.
    pub acked_by: String,
    /// `seed`, `v1` or `cli`.
    pub source: String,
    /// The `X-Request-Id` of the request that recorded it.
    pub request_id: Option<String>,
    /// What was erased on each storage target (empty for receipts written
    /// before targets were recorded).
    pub targets: Vec<TargetErased>,
}

impl From<Receipt> for ReceiptView {
    fn from(receipt: Receipt) -> Self {
        ReceiptView {
            id: receipt.id,
            state: "done",
            requested_at: schedule::rfc3339(receipt.requested_at),
            completed_at: schedule::rfc3339(receipt.completed_at),
            attempts: receipt.attempts,
            deleted: receipt.deleted,
            missing: receipt.missing,
            claims: receipt.claims,
            acked_by: receipt.acked_by,
            source: receipt.source,
            request_id: receipt.request_id,
            targets: receipt
                .targets
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
        }
    }
}

/// What `GET /v1/deletions/{id}` shows: the live request, or its receipt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum RequestView {
    Live(DeletionView),
    Done(ReceiptView),
}

impl From<Deletion> for DeletionView {
    fn from(row: Deletion) -> Self {
        // A row that is not failed always has a time it may run; one written
        // without (by hand) is due since it was created.
        let not_before = match (row.not_before, row.state.as_str()) {
            (Some(ms), _) => Some(schedule::rfc3339(ms)),
            (None, "failed") => None,
            (None, _) => Some(schedule::rfc3339(row.created_at)),
        };
        DeletionView {
            id: row.id,
            state: row.state,
            attempts: row.attempts,
            created_at: schedule::rfc3339(row.created_at),
            not_before,
            last_error: row.last_error,
            locked_by: row.locked_by,
            locked_until: row.locked_until.map(schedule::rfc3339),
            source: row.source,
            request_id: row.request_id,
            paths: row
                .paths
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
            priority: Priority::from_stored(row.priority),
        }
    }
}
