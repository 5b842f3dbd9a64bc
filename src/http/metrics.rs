//! `GET /metrics`: Prometheus text format.

use actix_web::{web, HttpResponse};

use super::router::Routes;
use super::AppState;
use crate::clock::now_ms;
use crate::db::queries;

pub(crate) fn routes(routes: &mut Routes) {
    routes.resource("/metrics").get(metrics);
}

/// How long a scrape waits for the queue's gauges.
const GAUGES_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // The queue's gauges, from the same few index probes as `/v1/stats`; a
    // scrape during an outage still gets the counters (and the last gauges).
    let storage = state.storage.clone();
    let targets = actix_web::rt::task::spawn_blocking(move || storage.health()).await;
    if let Ok(targets) = targets {
        state.metrics.set_targets(&targets);
    }
    state.metrics.set_conflicts(&state.db.conflicts());
    // A scraper gives up after a few seconds: the counters then come
    // without fresh gauges rather than not at all.
    let stats = state.db.read_async(|c| queries::counts::stats(c, now_ms()));
    match actix_web::rt::time::timeout(GAUGES_WITHIN, stats).await {
        Ok(Ok(stats)) => state.metrics.set_queue(&stats),
        Ok(Err(e)) => log::debug!("metrics without fresh queue gauges: {e}"),
        Err(_) => {
            log::debug!("metrics without fresh queue gauges: no answer within {GAUGES_WITHIN:?}")
        }
    }
    if !state.sinks.names.is_empty() {
        let sinks = state.sinks.clone();
        let summary = state
            .db
            .read_async(move |c| queries::events::summary(c, &sinks));
        if let Ok(Ok(summary)) = actix_web::rt::time::timeout(GAUGES_WITHIN, summary).await {
            state
                .metrics
                .events
                .set_outbox(&state.sinks.names, &summary);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
