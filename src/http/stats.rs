//! `GET /v1/stats`: the counts of the whole database (kept counts and a
//! few index probes, never a scan), and this instance's storage targets.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::router::Routes;
use super::AppState;
use crate::clock::now_ms;
use crate::db::models::{Replication, Stats};
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
    /// What the database's replication promises, as this instance last
    /// read it (every minute): `{"kind": "none"}`, a PostgreSQL primary's
    /// standbys, or a Galera node's cluster.
    pub replication: Replication,
}

/// `GET /v1/stats`.
#[utoipa::path(get, path = "/v1/stats", tag = "v1", responses((status = 200, body = StatsView)))]
pub(crate) async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let storage = state.storage.clone();
    let replication = state.db.replication();
    let view = state
        .db
        .read_async(move |c| {
            Ok(StatsView {
                stats: queries::counts::stats(c, now_ms())?,
                targets: storage.health(),
                replication,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}
