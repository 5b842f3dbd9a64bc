//! `GET /v1/stats`: the counts of the whole database (kept counts and a
//! few index probes, never a scan), and this instance's storage targets.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::router::Routes;
use super::AppState;
use crate::clock::now_ms;
use crate::db::models::Stats;
use crate::db::queries;
use crate::error::ApiError;
use crate::storage::TargetHealth;

pub(crate) fn routes(routes: &mut Routes) {
    routes.resource("/v1/stats").get(stats);
}

/// `GET /v1/stats`: the counts of the whole database, and this instance's
/// storage targets.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatsView {
    #[serde(flatten)]
    pub stats: Stats,
    /// Each storage target's state, as this instance sees it.
    pub targets: Vec<TargetHealth>,
}

/// `GET /v1/stats`.
#[utoipa::path(get, path = "/v1/stats", tag = "v1", responses((status = 200, body = StatsView)))]
pub(crate) async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let storage = state.storage.clone();
    let view = state
        .db
        .read_async(move |c| {
            Ok(StatsView {
                stats: queries::counts::stats(c, now_ms())?,
                targets: storage.health(),
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}
