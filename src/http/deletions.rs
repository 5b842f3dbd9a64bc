//! `/v1/deletions`: record batches, inspect, list, cancel and retry requests.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::db::models::Stats;
use crate::db::models::{Deletion, State};
use crate::db::now_ms;
use crate::db::queries::{self, Change};
use crate::error::{ApiError, ErrorBody};
use crate::pipeline::record::Record;
use crate::pipeline::record::Recorded;
use crate::video_id::VideoId;
use utoipa::{IntoParams, ToSchema};

/// Most ids in one `POST /v1/deletions`.
pub const MAX_IDS: usize = 10_000;
/// Default and largest page of `GET /v1/deletions`.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/deletions")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/v1/deletions/{id}")
            .route(web::get().to(show))
            .route(web::delete().to(cancel)),
    )
    .service(web::resource("/v1/deletions/{id}/retry").route(web::post().to(retry)))
    .service(web::resource("/v1/stats").route(web::get().to(stats)));
}

/// Body of `POST /v1/deletions`. At most one of `delay_secs` and
/// `not_before`; neither means due now.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub ids: Vec<String>,
    #[serde(default)]
    pub delay_secs: Option<u64>,
    /// RFC 3339, e.g. `2026-12-01T00:00:00Z`.
    #[serde(default)]
    pub not_before: Option<String>,
}

/// A request as the API shows it. Times are RFC 3339 UTC.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionView {
    pub id: String,
    pub state: String,
    pub attempts: i32,
    pub created_at: Option<String>,
    /// When it may run: its schedule while pending, its lease expiry while
    /// running, null once failed.
    pub not_before: Option<String>,
    pub last_error: Option<String>,
    /// The instance holding the lease, while running.
    pub locked_by: Option<String>,
    pub locked_until: Option<String>,
}

impl From<Deletion> for DeletionView {
    fn from(row: Deletion) -> Self {
        DeletionView {
            id: row.id,
            state: row.state,
            attempts: row.attempts,
            created_at: rfc3339(Some(row.created_at)),
            not_before: rfc3339(row.not_before),
            last_error: row.last_error,
            locked_by: row.locked_by,
            locked_until: rfc3339(row.locked_until),
        }
    }
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn parse_id(raw: &str) -> Result<VideoId, ApiError> {
    VideoId::parse(raw).map_err(|e| ApiError::InvalidId(e.to_string()))
}

/// Validates a batch body into distinct ids and a `not_before`.
pub fn parse_create(body: CreateBody, now: i64) -> Result<Record, ApiError> {
    if body.ids.len() > MAX_IDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_IDS} ids per request, got {}",
            body.ids.len()
        )));
    }
    let not_before = match (body.delay_secs, body.not_before) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give delay_secs or not_before, not both".into(),
            ))
        }
        (Some(secs), None) => {
            now.saturating_add(secs.saturating_mul(1000).min(i64::MAX as u64) as i64)
        }
        (None, Some(at)) => DateTime::parse_from_rfc3339(&at)
            .map_err(|e| ApiError::BadRequest(format!("not_before: {e} (expected RFC 3339)")))?
            .timestamp_millis(),
        (None, None) => now,
    };
    let ids = body
        .ids
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            VideoId::parse(raw).map_err(|e| ApiError::InvalidId(format!("ids[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Record::new(ids, not_before))
}

/// `POST /v1/deletions`: 202 once every new id is committed.
#[utoipa::path(post, path = "/v1/deletions", tag = "v1", request_body = CreateBody,
    responses((status = 202, description = "committed", body = Recorded),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let record = parse_create(body.into_inner(), now_ms())?;
    let recorded = state
        .record
        .send(record)
        .await
        .map_err(|_| ApiError::Unavailable)??
        .ok_or(ApiError::Unavailable)?;
    Ok(HttpResponse::Accepted().json(recorded))
}

/// `GET /v1/deletions/{id}`.
#[utoipa::path(get, path = "/v1/deletions/{id}", tag = "v1", params(("id" = String, Path, description = "video id")),
    responses((status = 200, body = DeletionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let row = state.db.read_async(move |c| queries::get(c, &id)).await?;
    let row = row.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(DeletionView::from(row)))
}

/// Query of `GET /v1/deletions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending`, `running` or `failed`.
    pub state: Option<String>,
    /// Last id of the previous page.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// A page of requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page {
    pub items: Vec<DeletionView>,
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
    let filter = match query.state.as_deref() {
        None => None,
        Some(s) => Some(State::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state must be pending, running or failed, not {s:?}"
            ))
        })?),
    };
    let after = query.after.as_deref().map(parse_id).transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let rows = state
        .db
        .read_async(move |c| queries::list(c, filter, after.as_ref(), limit))
        .await?;
    let next = (rows.len() == limit).then(|| rows[rows.len() - 1].id.clone());
    Ok(HttpResponse::Ok().json(Page {
        items: rows.into_iter().map(DeletionView::from).collect(),
        next,
    }))
}

/// `DELETE /v1/deletions/{id}`: cancel unless an instance is deleting it.
#[utoipa::path(delete, path = "/v1/deletions/{id}", tag = "v1", params(("id" = String, Path, description = "video id")),
    responses((status = 204, description = "cancelled"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    match state
        .db
        .write_async(move |c| queries::cancel(c, &id, now_ms()))
        .await?
    {
        Change::Done => Ok(HttpResponse::NoContent().finish()),
        Change::NotFound => Err(ApiError::NotFound),
        Change::Conflict(_) => Err(ApiError::Conflict(
            "the request is running; cancel it after its batch is done".into(),
        )),
    }
}

/// `POST /v1/deletions/{id}/retry`: failed -> pending, due now.
#[utoipa::path(post, path = "/v1/deletions/{id}/retry", tag = "v1", params(("id" = String, Path, description = "video id")),
    responses((status = 200, body = DeletionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn retry(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let lookup = id.clone();
    match state
        .db
        .write_async(move |c| queries::retry(c, &id, now_ms()))
        .await?
    {
        Change::Done => {}
        Change::NotFound => return Err(ApiError::NotFound),
        Change::Conflict(s) => {
            return Err(ApiError::Conflict(format!(
                "only failed requests can be retried; this one is {}",
                s.as_str()
            )))
        }
    }
    let lookup_id = lookup.clone();
    let row = state
        .db
        .read_async(move |c| queries::get(c, &lookup_id))
        .await?;
    // The row may already be claimed and even gone: report what is there.
    Ok(match row {
        Some(row) => HttpResponse::Ok().json(DeletionView::from(row)),
        None => HttpResponse::Ok().json(serde_json::json!({ "id": lookup, "state": "done" })),
    })
}

/// `GET /v1/stats`.
#[utoipa::path(get, path = "/v1/stats", tag = "v1", responses((status = 200, body = Stats)))]
pub(crate) async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.db.read_async(|c| queries::stats(c, now_ms())).await?;
    Ok(HttpResponse::Ok().json(stats))
}
