//! `/v1/deletions`: record batches, inspect, list, cancel and retry requests.
//!
//! Ids in paths are video ids. A row whose id is not a valid id (left by the
//! Go scheduler, which did not check) can still be inspected and cancelled
//! by its exact text, percent-encoded (`/v1/deletions/..%2Fx`): such a raw
//! id only ever matches an existing row, never records anything, and is
//! never retried. Anything else invalid is a 400.
//!
//! A completed request is shown from its receipt (`state: "done"`) while
//! the receipt is kept; `?state=done` lists receipts. What is shown is in
//! [`super::views`]; the bulk actions are in [`super::bulk`].

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::object::Object;
use super::request_id::RequestId;
use super::router::Routes;
use super::views::{DeletionView, RequestView};
use super::AppState;
use crate::clock::now_ms;
use crate::db::models::{Priority, Source, State};
use crate::db::queries::{self, manage::Change, receipts};
use crate::error::{ApiError, ErrorBody};
use crate::paths::PathSpec;
use crate::paths::MAX_REQUEST_PATHS;
use crate::pipeline::record::{Record, RecordWithPaths, Recorded};
use crate::schedule;
use crate::video_id::VideoId;
use utoipa::{IntoParams, ToSchema};

/// Most `ids` in one `POST /v1/deletions`.
pub(crate) const MAX_IDS: usize = 10_000;
/// Most `items` (ids with paths of their own) in one `POST /v1/deletions`.
pub(crate) const MAX_ITEMS: usize = 1_000;
/// Default and largest page of `GET /v1/deletions`.
pub(crate) const DEFAULT_LIMIT: usize = 100;
pub(crate) const MAX_LIMIT: usize = 1000;
/// Longest raw id or `after` cursor accepted, in characters: what the
/// `id` column holds.
pub(crate) const MAX_RAW_ID: usize = 64;

/// Whether `text` could be an id stored in the table (1 to 64 characters).
pub(super) fn storable(text: &str) -> bool {
    !text.is_empty() && text.chars().count() <= MAX_RAW_ID
}

pub(crate) fn routes(routes: &mut Routes) {
    routes.resource("/v1/deletions").post(create).get(list);
    // The bulk actions. `retry` and `cancel` are also valid video ids: GET
    // and DELETE of these paths still mean the request of that id.
    routes
        .resource("/v1/deletions/{id:retry}")
        .post(super::bulk::bulk_retry)
        .get(show)
        .delete(cancel);
    routes
        .resource("/v1/deletions/{id:cancel}")
        .post(super::bulk::bulk_cancel)
        .get(show)
        .delete(cancel);
    routes
        .resource("/v1/deletions/{id}")
        .get(show)
        .delete(cancel);
    routes.resource("/v1/deletions/{id}/retry").post(retry);
}

/// Body of `POST /v1/deletions`. At most one of `delay_secs` and
/// `not_before`; neither means due now. `ids` and `items` may be mixed
/// (at most 10,000 `ids` and 1,000 `items`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    #[serde(default)]
    pub ids: Vec<String>,
    /// Ids with paths of their own: files the templates cannot name.
    #[serde(default, deserialize_with = "super::object::objects")]
    pub items: Vec<ItemBody>,
    /// Seconds from now; the result must not pass 9999-12-31T23:59:59Z.
    /// A whole number (`60` or `60.0`).
    #[serde(default, deserialize_with = "whole_seconds")]
    pub delay_secs: Option<u64>,
    /// RFC 3339, e.g. `2026-12-01T00:00:00Z`; a time in the past means now.
    #[serde(default)]
    pub not_before: Option<String>,
    /// Of every id and item that does not say its own: `urgent` is claimed
    /// before every normal request and passes `max_deletions_per_sec`.
    #[serde(default)]
    pub priority: Priority,
}

/// An id with paths of its own (`{"id": "v1", "paths": ["web/3f2a-720.mp4", "hls/3f2a/"]}`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemBody {
    pub id: String,
    /// Deleted on every storage target besides its templates, relative to
    /// the root or bucket; a trailing `/` names a directory (prefix). At
    /// most 256, each at most 1,024 bytes: relative, no `.`, `..` or empty
    /// component, no NUL, backslash or control character.
    #[serde(default)]
    pub paths: Vec<String>,
    /// This item's priority; the body's `priority` when absent.
    #[serde(default)]
    pub priority: Option<Priority>,
}

/// `delay_secs`: a whole number of seconds, 0 or more. JSON does not tell
/// `60` from `60.0` (both are the integer 60 for JSON Schema), so both are
/// accepted.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(secs) = number.as_u64() {
        return Ok(Some(secs));
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=1e18).contains(&f) => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "delay_secs: {number} is not a whole number of seconds, 0 or more"
        ))),
    }
}

/// An id from a path: a video id, or the exact text of an existing row
/// whose id is not valid.
enum PathId {
    Valid(VideoId),
    /// Not a valid id; usable only to find an existing row.
    Raw(String, ApiError),
}

impl PathId {
    fn parse(raw: &str) -> Result<PathId, ApiError> {
        match VideoId::parse(raw) {
            Ok(id) => Ok(PathId::Valid(id)),
            Err(_) if !storable(raw) => Err(ApiError::InvalidId(format!(
                "invalid video id: longer than {MAX_RAW_ID} characters"
            ))),
            Err(e) => Ok(PathId::Raw(
                raw.to_owned(),
                ApiError::InvalidId(e.to_string()),
            )),
        }
    }

    fn text(&self) -> String {
        match self {
            PathId::Valid(id) => id.as_str().to_owned(),
            PathId::Raw(raw, _) => raw.clone(),
        }
    }

    /// The answer when no row matched: 404 for a valid id, the 400 of the
    /// invalid id otherwise (a raw id only names existing rows).
    fn not_found(self) -> ApiError {
        match self {
            PathId::Valid(_) => ApiError::no_request(),
            PathId::Raw(_, invalid) => invalid,
        }
    }
}

/// A validated `POST /v1/deletions`.
pub(crate) struct Create {
    /// Each id with the paths its item named (none for `ids`).
    pub items: Vec<(VideoId, Vec<String>)>,
    pub not_before: i64,
    /// The ids whose request is urgent.
    pub urgent: Vec<VideoId>,
    /// Some item named paths, or some ids are urgent and others not:
    /// recorded with [`RecordWithPaths`] (one statement per id).
    pub named_paths: bool,
}

/// Validates a batch body: every id, every path, the schedule. One bad
/// value anywhere refuses the whole body, naming where it is
/// (`items[2].paths[0]: ...`).
pub(crate) fn parse_create(body: CreateBody, now: i64) -> Result<Create, ApiError> {
    // Two bounds, each on its own list, so that the OpenAPI document can
    // state them exactly (JSON Schema cannot bound a sum of two lists).
    if body.ids.len() > MAX_IDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_IDS} ids per request, got {}",
            body.ids.len()
        )));
    }
    if body.items.len() > MAX_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_ITEMS} items per request, got {}",
            body.items.len()
        )));
    }
    let total = body.ids.len() + body.items.len();
    let not_before = schedule::not_before_ms(now, body.delay_secs, body.not_before.as_deref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut items = Vec::with_capacity(total);
    let mut urgent = Vec::new();
    for (i, raw) in body.ids.iter().enumerate() {
        let id = VideoId::parse(raw).map_err(|e| ApiError::InvalidId(format!("ids[{i}]: {e}")))?;
        if body.priority == Priority::Urgent {
            urgent.push(id.clone());
        }
        items.push((id, Vec::new()));
    }
    let mut named_paths = false;
    for (i, item) in body.items.into_iter().enumerate() {
        let id = VideoId::parse(&item.id)
            .map_err(|e| ApiError::InvalidId(format!("items[{i}].id: {e}")))?;
        if item.paths.len() > MAX_REQUEST_PATHS {
            return Err(ApiError::BadRequest(format!(
                "items[{i}].paths: at most {MAX_REQUEST_PATHS} paths, got {}",
                item.paths.len()
            )));
        }
        for (j, path) in item.paths.iter().enumerate() {
            PathSpec::parse_request(path)
                .map_err(|e| ApiError::BadRequest(format!("items[{i}].paths[{j}]: {e}")))?;
        }
        named_paths |= !item.paths.is_empty();
        if item.priority.unwrap_or(body.priority) == Priority::Urgent {
            urgent.push(id.clone());
        }
        items.push((id, item.paths));
    }
    // Ids given twice with two priorities are urgent; ids all of one
    // priority go in the group commit, as one request.
    urgent.sort_unstable();
    urgent.dedup();
    let mut distinct: Vec<&VideoId> = items.iter().map(|(id, _)| id).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let mixed = !urgent.is_empty() && urgent.len() < distinct.len();
    Ok(Create {
        items,
        not_before,
        urgent,
        named_paths: named_paths || mixed,
    })
}

/// `POST /v1/deletions`: 202 once every new id is committed.
#[utoipa::path(post, path = "/v1/deletions", tag = "v1", request_body = CreateBody,
    responses((status = 202, description = "committed", body = Recorded),
        (status = 400, body = ErrorBody), (status = 408, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    body: web::Json<Object<CreateBody>>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let create = parse_create(body.into_inner().into_inner(), now_ms())?;
    let timeout = state.record_timeout;
    let stopped = |e| match e {
        actix::MailboxError::Timeout => {
            state.db.no_answer("a record", timeout, true);
            ApiError::Unavailable(format!(
                "not committed within record_timeout_ms ({} ms); it may still commit: \
                 a retry answers already_queued for what did",
                timeout.as_millis()
            ))
        }
        actix::MailboxError::Closed => ApiError::Unavailable("the recorder stopped".into()),
    };
    let recorded = if create.named_paths {
        let record = RecordWithPaths::new(
            create.items,
            create.not_before,
            Source::V1,
            Some(request_id.0),
        )
        .urgent(create.urgent);
        state
            .record
            .send(record)
            .timeout(timeout)
            .await
            .map_err(stopped)??
            .map_err(ApiError::BadRequest)?
    } else {
        let priority = match create.urgent.is_empty() {
            true => Priority::Normal,
            false => Priority::Urgent,
        };
        let ids = create.items.into_iter().map(|(id, _)| id).collect();
        let record = Record::new(ids, create.not_before)
            .from(Source::V1, Some(request_id.0))
            .priority(priority);
        state
            .record
            .send(record)
            .timeout(timeout)
            .await
            .map_err(stopped)??
            .ok_or(ApiError::Internal)?
    };
    Ok(HttpResponse::Accepted().json(recorded))
}

/// `GET /v1/deletions/{id}`: the live request, or else its receipt
/// (`state: "done"`) while it is kept.
#[utoipa::path(get, path = "/v1/deletions/{id}", tag = "v1", params(("id" = String, Path, description = "video id (or the percent-encoded text of an existing row whose id is not valid)")),
    responses((status = 200, body = RequestView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = PathId::parse(&id)?;
    let text = id.text();
    let found = state
        .db
        .read_async(move |c| {
            Ok(match queries::manage::get(c, &text)? {
                Some(row) => Some(RequestView::Live(row.into())),
                None => receipts::get(c, &text)?.map(|r| RequestView::Done(r.into())),
            })
        })
        .await?;
    match found {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(id.not_found()),
    }
}

/// Query of `GET /v1/deletions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// `pending`, `running`, `failed`, or `done` (receipts); all live
    /// requests when absent.
    pub state: Option<String>,
    /// The `next` of the previous page (any text: it may be a row's id that
    /// is not a valid video id).
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// A page of requests (or, for `state=done`, of receipts).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Page {
    pub items: Vec<RequestView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// `GET /v1/deletions?state=&after=&limit=`: keyset pagination by id.
#[utoipa::path(get, path = "/v1/deletions", tag = "v1", params(ListQuery),
    responses((status = 200, body = Page), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let done = query.state.as_deref() == Some("done");
    let filter = match query.state.as_deref() {
        None | Some("done") => None,
        Some(s) => Some(State::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state must be pending, running, failed or done, not {s:?}"
            ))
        })?),
    };
    if query
        .after
        .as_ref()
        .is_some_and(|a| a.chars().count() > MAX_RAW_ID)
    {
        return Err(ApiError::BadRequest(format!(
            "after: at most {MAX_RAW_ID} characters"
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let after = query.after;
    let items: Vec<(String, RequestView)> = state
        .db
        .read_async(move |c| {
            Ok(if done {
                receipts::list(c, after.as_deref(), limit)?
                    .into_iter()
                    .map(|r| (r.id.clone(), RequestView::Done(r.into())))
                    .collect()
            } else {
                queries::manage::list(c, filter, after.as_deref(), limit)?
                    .into_iter()
                    .map(|r| (r.id.clone(), RequestView::Live(r.into())))
                    .collect()
            })
        })
        .await?;
    let next = (items.len() == limit).then(|| items[items.len() - 1].0.clone());
    Ok(HttpResponse::Ok().json(Page {
        items: items.into_iter().map(|(_, view)| view).collect(),
        next,
    }))
}

/// `DELETE /v1/deletions/{id}`: cancel unless an instance is deleting it.
#[utoipa::path(delete, path = "/v1/deletions/{id}", tag = "v1", params(("id" = String, Path, description = "video id (or the percent-encoded text of an existing row whose id is not valid)")),
    responses((status = 204, description = "cancelled"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = PathId::parse(&id)?;
    let text = id.text();
    let sinks = state.sinks.clone();
    match state
        .db
        .write_async(move |c| queries::manage::cancel(c, &text, now_ms(), &sinks))
        .await?
    {
        Change::Done => Ok(HttpResponse::NoContent().finish()),
        Change::NotFound => Err(id.not_found()),
        Change::Conflict(_) => Err(ApiError::Conflict(
            "the request is running; cancel it after its batch is done".into(),
        )),
    }
}

/// `POST /v1/deletions/{id}/retry`: failed -> pending, due now.
#[utoipa::path(post, path = "/v1/deletions/{id}/retry", tag = "v1", params(("id" = String, Path, description = "video id")),
    responses((status = 200, body = DeletionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn retry(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = match PathId::parse(&id)? {
        PathId::Valid(id) => id,
        raw @ PathId::Raw(..) => {
            let text = raw.text();
            let row = state
                .db
                .read_async(move |c| queries::manage::get(c, &text))
                .await?;
            return Err(match row {
                Some(_) => ApiError::Conflict(
                    "not a valid video id: it is never deleted or retried; cancel it".into(),
                ),
                None => raw.not_found(),
            });
        }
    };
    match state
        .db
        .write_async(move |c| queries::manage::retry(c, &id, now_ms()))
        .await?
    {
        (Change::Done, Some(row)) => Ok(HttpResponse::Ok().json(DeletionView::from(row))),
        (Change::NotFound | Change::Done, _) => Err(ApiError::no_request()),
        (Change::Conflict(s), _) => Err(ApiError::Conflict(format!(
            "only failed requests can be retried; this one is {}",
            s.as_str()
        ))),
    }
}
