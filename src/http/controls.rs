//! `/v1/pause` and `/v1/resume`: the brake. The switch is stored in the
//! database, so it holds for every instance sharing it (each stops at its
//! next claim, within one tick) and across restarts. Batches already
//! running finish and ack; recording goes on.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::router::Routes;
use super::AppState;
use crate::clock::now_ms;
use crate::db::queries::controls;
use crate::error::{ApiError, ErrorBody};

pub(crate) fn routes(routes: &mut Routes) {
    routes.resource("/v1/pause").post(pause);
    routes.resource("/v1/resume").post(resume);
}

/// Whether deletions are paused.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Paused {
    pub paused: bool,
}

/// Sets the switch and says so in the log.
async fn set(state: web::Data<AppState>, paused: bool) -> Result<HttpResponse, ApiError> {
    state
        .db
        .write_async(move |c| controls::set_paused(c, paused, now_ms()))
        .await?;
    log::info!(
        "deletions {} through the API",
        if paused { "paused" } else { "resumed" }
    );
    Ok(HttpResponse::Ok().json(Paused { paused }))
}

/// `POST /v1/pause`: every instance stops claiming within one tick.
#[utoipa::path(post, path = "/v1/pause", tag = "v1",
    responses((status = 200, body = Paused), (status = 503, body = ErrorBody)))]
pub(crate) async fn pause(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    set(state, true).await
}

/// `POST /v1/resume`: claims again.
#[utoipa::path(post, path = "/v1/resume", tag = "v1",
    responses((status = 200, body = Paused), (status = 503, body = ErrorBody)))]
pub(crate) async fn resume(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    set(state, false).await
}
