//! `POST /v1/deletions/retry` and `/v1/deletions/cancel`: the bulk actions,
//! over every request in a state or the given ids, in bounded batches.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::deletions::{storable, MAX_IDS, MAX_RAW_ID};
use super::object::Object;
use super::AppState;
use crate::clock::now_ms;
use crate::db::bulk;
use crate::db::models::State;
use crate::error::{ApiError, ErrorBody};

/// Body of the bulk actions: every request in `state`, or only those of
/// `ids` in that state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkBody {
    /// `failed` (retry, cancel) or `pending` (cancel).
    pub state: String,
    /// At most 10,000 ids (exact text, as stored); all in `state` when
    /// absent.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

/// How many requests a bulk action changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Count {
    pub count: usize,
}

impl BulkBody {
    /// The state, if one of `allowed`, and the ids, bounded.
    fn parse(self, allowed: &[State]) -> Result<(State, Option<Vec<String>>), ApiError> {
        let state = State::parse(&self.state)
            .filter(|s| allowed.contains(s))
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
                ApiError::BadRequest(format!(
                    "state must be {}, not {:?}",
                    names.join(" or "),
                    self.state
                ))
            })?;
        if let Some(ids) = &self.ids {
            if ids.len() > MAX_IDS {
                return Err(ApiError::BadRequest(format!(
                    "at most {MAX_IDS} ids per request, got {}",
                    ids.len()
                )));
            }
            if let Some(i) = ids.iter().position(|id| !storable(id)) {
                return Err(ApiError::InvalidId(format!(
                    "ids[{i}]: between 1 and {MAX_RAW_ID} characters"
                )));
            }
        }
        Ok((state, self.ids))
    }
}

/// `POST /v1/deletions/retry`: every failed request (or those of `ids`)
/// back to pending, due now, in bounded batches. Ids that are not valid
/// video ids are never retried.
#[utoipa::path(post, path = "/v1/deletions/retry", tag = "v1", request_body = BulkBody,
    responses((status = 200, body = Count), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn bulk_retry(
    state: web::Data<AppState>,
    body: web::Json<Object<BulkBody>>,
) -> Result<HttpResponse, ApiError> {
    let (_, ids) = body.into_inner().into_inner().parse(&[State::Failed])?;
    let db = state.db.clone();
    let count = actix_web::rt::task::spawn_blocking(move || bulk::retry(&db, ids, now_ms()))
        .await
        .map_err(|_| ApiError::Internal)??;
    Ok(HttpResponse::Ok().json(Count { count }))
}

/// `POST /v1/deletions/cancel`: cancels every request in `state` (`failed`
/// or `pending`; or only those of `ids`), in bounded batches. Running
/// requests are left alone.
#[utoipa::path(post, path = "/v1/deletions/cancel", tag = "v1", request_body = BulkBody,
    responses((status = 200, body = Count), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn bulk_cancel(
    state: web::Data<AppState>,
    body: web::Json<Object<BulkBody>>,
) -> Result<HttpResponse, ApiError> {
    let (filter, ids) = body
        .into_inner()
        .into_inner()
        .parse(&[State::Failed, State::Pending])?;
    let (db, sinks) = (state.db.clone(), state.sinks.clone());
    let count = actix_web::rt::task::spawn_blocking(move || bulk::cancel(&db, filter, ids, &sinks))
        .await
        .map_err(|_| ApiError::Internal)??;
    Ok(HttpResponse::Ok().json(Count { count }))
}
