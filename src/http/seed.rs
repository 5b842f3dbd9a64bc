//! The seed's route, answered exactly as the Go scheduler did:
//! `GET|POST|DELETE /video-delete-record/{vid}` -> 200 with an empty body,
//! 400 with a plain-text reason.

use actix_web::http::{header, Method};
use actix_web::{web, HttpResponse};

use super::request_id::RequestId;
use super::router::Routes;
use super::AppState;
use crate::clock::now_ms;
use crate::db::models::Source;
use crate::error::RETRY_AFTER_SECS;
use crate::pipeline::record::Record;
use crate::video_id::{InvalidId, VideoId};

pub(crate) fn routes(routes: &mut Routes) {
    // `{vid:.*}`: an id with a `/` in it is still this route, and a 400.
    // GET is registered as a method of its own: a HEAD must not record.
    routes
        .resource("/video-delete-record/{vid:.*}")
        .route(Method::GET, record)
        .post(record)
        .delete(record)
        .otherwise(not_allowed);
    for path in ["/video-delete-record", "/video-delete-record/"] {
        routes
            .resource(path)
            .route(Method::GET, empty)
            .post(empty)
            .delete(empty)
            .otherwise(not_allowed);
    }
}

/// Any other method, HEAD included: a HEAD must not record a deletion.
async fn not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, "GET, POST, DELETE"))
        .finish()
}

/// Records one id, due now; answers after the row is committed. HEAD is not
/// answered here (405): it must not change anything, and this GET does.
#[utoipa::path(method(get, post, delete), path = "/video-delete-record/{vid}", tag = "seed",
    params(("vid" = String, Path, description = "video id")),
    responses((status = 200, description = "committed (empty body)"),
        (status = 400, description = "`video id should not be empty` or `invalid video id` (text)"),
        (status = 500, description = "`internal error` (text): a database error retrying will not fix; logged with its cause"),
        (status = 503, description = "`database unavailable` (text), with Retry-After; also when the commit did not return within `record_timeout_ms` (it may still commit)")))]
pub(crate) async fn record(
    state: web::Data<AppState>,
    vid: web::Path<String>,
    request_id: RequestId,
) -> HttpResponse {
    let id = match VideoId::parse(&vid) {
        Ok(id) => id,
        Err(InvalidId::Empty) => return empty().await,
        Err(_) => return text(HttpResponse::BadRequest(), "invalid video id"),
    };
    let answer = state
        .record
        .send(Record::uncounted(vec![id], now_ms()).from(Source::Seed, Some(request_id.0)))
        .timeout(state.record_timeout)
        .await;
    match &answer {
        Ok(Ok(_)) => HttpResponse::Ok().finish(),
        Ok(Err(e)) if !e.is_unavailable() => {
            log::error!("answered 500: {e}");
            text(HttpResponse::InternalServerError(), "internal error")
        }
        Ok(Err(_)) | Err(_) => {
            if let Err(actix::MailboxError::Timeout) = answer {
                state.db.no_answer("a record", state.record_timeout, true);
            }
            text(
                HttpResponse::ServiceUnavailable()
                    .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS))
                    .take(),
                "database unavailable",
            )
        }
    }
}

/// The seed's answer to an empty id.
#[utoipa::path(method(get, post, delete), path = "/video-delete-record", tag = "seed",
    responses((status = 400, description = "`video id should not be empty` (text)")))]
pub(crate) async fn empty() -> HttpResponse {
    text(HttpResponse::BadRequest(), "video id should not be empty")
}

/// A plain-text answer, as the Go scheduler's `http.Error` gave.
fn text(mut response: actix_web::HttpResponseBuilder, body: &'static str) -> HttpResponse {
    response
        .content_type("text/plain; charset=utf-8")
        .body(body)
}
