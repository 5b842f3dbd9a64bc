//! `GET /metrics`: Prometheus text format.

use actix_web::{web, HttpResponse};

use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", super::get().to(metrics));
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
