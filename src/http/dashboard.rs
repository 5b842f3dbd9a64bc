//! The dashboard: `GET /` serves one HTML page (CSS and JavaScript inline,
//! compiled into the binary: no build step, no CDN, works offline), which
//! talks to the v1 API with the operator's token. `GET /v1/activity` gives
//! it this instance's deletions per 10 s over the last 15 minutes.
//!
//! The page itself holds no data, so it is served without a token; every
//! call it makes needs one when `api_tokens` is set.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::router::Routes;
use super::AppState;
use crate::activity::{Bucket, BUCKET_MS};

/// The page, embedded at compile time.
const PAGE: &str = include_str!("dashboard/index.html");

pub(crate) fn routes(routes: &mut Routes) {
    routes.resource("/").get(page);
    routes.resource("/v1/activity").get(activity);
}

/// The dashboard page.
#[utoipa::path(get, path = "/", tag = "ops",
    responses((status = 200, description = "the dashboard (HTML)", content_type = "text/html")))]
pub(crate) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ))
        .body(PAGE)
}

/// This instance's recent activity.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActivityView {
    /// The instance (its `locked_by`): the counts are this instance's.
    pub instance: String,
    /// Width of a bucket in seconds.
    pub bucket_secs: i64,
    /// Oldest first, 90 buckets: the last 15 minutes.
    pub buckets: Vec<Bucket>,
}

/// `GET /v1/activity`: deletions per 10 s on this instance, last 15 minutes.
#[utoipa::path(get, path = "/v1/activity", tag = "v1", responses((status = 200, body = ActivityView)))]
pub(crate) async fn activity(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(ActivityView {
        instance: state.instance.to_string(),
        bucket_secs: BUCKET_MS / 1000,
        buckets: state.metrics.activity.last_15_minutes(),
    })
}
