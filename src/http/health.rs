//! Probes: `/healthz` (the process answers) and `/readyz` (the database is
//! reachable and migrated). Neither needs a token.

use actix_web::{web, HttpResponse};

use super::router::Routes;
use super::AppState;
use crate::error::ApiError;

pub(crate) fn routes(routes: &mut Routes) {
    routes.resource("/healthz").get(healthz);
    routes.resource("/readyz").get(readyz);
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "alive")))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The database is reachable and migrated, and every storage target can be
/// used. The 503's `error` says why not (naming the target when several
/// are configured). A paused instance is ready (it records; it only does
/// not delete): the body says `"paused": true`, and each target's state.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "ready"), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (db, storage) = (state.db.clone(), state.storage.clone());
    let checked = actix_web::rt::task::spawn_blocking(move || {
        db.ready().map_err(|e| match e {
            // Why, in the server's words: this is what an operator reads.
            crate::db::DbError::Unavailable(cause) => format!("database unavailable: {cause}"),
            other => other.to_string(),
        })?;
        storage.check().map_err(|e| e.to_string())?;
        let paused = db
            .read(crate::db::queries::controls::paused)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((paused, storage.health()))
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("readiness check failed: {e}")))?;
    let (paused, targets) = checked.map_err(ApiError::NotReady)?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "status": "ready", "paused": paused, "targets": targets })))
}
