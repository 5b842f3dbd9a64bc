//! Probes: `/healthz` (the process answers) and `/readyz` (the database is
//! reachable and migrated). Neither needs a token.

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::error::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    actix_web::rt::task::spawn_blocking(move || db.ready())
        .await
        .map_err(|_| ApiError::Unavailable)??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}
