//! Probes: `/healthz` (the process answers) and `/readyz` (the database is
//! reachable and migrated). Neither needs a token.

use actix_web::{web, HttpResponse};

use super::router::Routes;
use super::AppState;
use crate::error::ApiError;

/// How long `/readyz` waits for its checks before it answers 503.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(900);

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
    let probe = actix_web::rt::task::spawn_blocking(move || {
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
    });
    // An orchestrator's probe gives up after 1 s by default: answer before,
    // with the outage's known cause, rather than wait out the pool's
    // connection timeout (the probe goes on and ends by itself).
    let checked = match actix_web::rt::time::timeout(READY_WITHIN, probe).await {
        Ok(joined) => {
            joined.map_err(|e| ApiError::Unavailable(format!("readiness check failed: {e}")))?
        }
        Err(_) => Err(match state.db.outage_cause() {
            Some(cause) => format!("database unavailable: {cause}"),
            None => format!(
                "database unavailable: no answer within {} ms",
                READY_WITHIN.as_millis()
            ),
        }),
    };
    let (paused, targets) = checked.map_err(ApiError::NotReady)?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "status": "ready", "paused": paused, "targets": targets })))
}
