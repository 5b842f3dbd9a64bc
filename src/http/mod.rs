//! The HTTP API: routes, shared state, authentication, request limits.

pub(crate) mod bulk;
pub(crate) mod controls;
pub(crate) mod dashboard;
pub(crate) mod deletions;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod object;
pub(crate) mod openapi;
pub(crate) mod request_id;
pub(crate) mod router;
pub(crate) mod seed;
pub(crate) mod stats;
pub(crate) mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix::Addr;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PayloadError, QueryPayloadError};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{guard, http::header, web, ResponseError};
use futures_util::Stream;
use subtle::ConstantTimeEq;

use crate::db::Db;
use crate::error::ApiError;
use crate::pipeline::record::RecordActor;
use crate::storage::Storage;

/// Largest request body accepted (413 beyond).
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
pub(crate) struct AppState {
    pub db: Db,
    /// For `/readyz`: whether deleting is safe now.
    pub storage: Arc<Storage>,
    pub record: Addr<RecordActor>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Accepted bearer tokens; empty: no authentication.
    pub tokens: Arc<[String]>,
    /// How long a request body may take to arrive (`client_request_timeout_ms`).
    pub request_timeout: Duration,
    /// How long a record waits for its commit (`record_timeout_ms`).
    pub record_timeout: Duration,
    /// Log one line per request (`access_log`).
    pub access_log: bool,
    /// This process's `locked_by`, shown by the dashboard.
    pub instance: Arc<str>,
    /// The sinks told of cancels (`webhooks`, `purge`).
    pub sinks: Arc<crate::db::queries::events::Sinks>,
}

/// A route answering GET, and HEAD the same way without the body (the
/// HTTP/1 encoder drops it): every GET route is registered with this.
pub(crate) fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Registers every route.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(|e, _| json_error(e).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()));
    declare(&mut router::Routes::new(Some(cfg)));
}

/// `(method, path pattern)` of every route the server answers, as the same
/// declarations register them.
pub fn route_table() -> Vec<(actix_web::http::Method, String)> {
    let mut routes = router::Routes::new(None);
    declare(&mut routes);
    routes.into_table()
}

/// Every resource, in matching order.
fn declare(routes: &mut router::Routes) {
    seed::routes(routes);
    deletions::routes(routes);
    stats::routes(routes);
    controls::routes(routes);
    events::routes(routes);
    dashboard::routes(routes);
    health::routes(routes);
    metrics::routes(routes);
    openapi::routes(routes);
}

fn json_error(e: JsonPayloadError) -> ApiError {
    match e {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::TooLarge
        }
        JsonPayloadError::Payload(PayloadError::Io(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            ApiError::RequestTimeout
        }
        JsonPayloadError::ContentType => {
            ApiError::BadRequest("expected Content-Type: application/json".into())
        }
        other => ApiError::BadRequest(format!("invalid JSON body: {other}")),
    }
}

fn query_error(e: QueryPayloadError) -> ApiError {
    ApiError::BadRequest(format!("invalid query string: {e}"))
}

/// The routes that need no token when `api_tokens` is set: the probes, and
/// the dashboard's page, which holds no data (it asks for the token and
/// sends it with each of its calls; a browser cannot send a bearer token
/// with the page's own request). Everything else, `/openapi.json` too,
/// needs one, as the contract says.
pub const OPEN_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/"];

/// Middleware: when tokens are configured, every route but [`OPEN_ROUTES`]
/// needs `Authorization: Bearer <token>` (the scheme in any case, RFC 7235).
pub(crate) async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = match req.app_data::<web::Data<AppState>>() {
        Some(state) if !state.tokens.is_empty() => {
            OPEN_ROUTES.contains(&req.path())
                || req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(bearer_token)
                    .is_some_and(|token| {
                        // Constant-time per token, so timing does not reveal
                        // how much of a guess was right.
                        let token = token.as_bytes();
                        state
                            .tokens
                            .iter()
                            .fold(false, |ok, t| ok | bool::from(t.as_bytes().ct_eq(token)))
                    })
        }
        _ => true,
    };
    if allowed {
        Ok(next.call(req).await?.map_into_left_body())
    } else {
        let response = ApiError::Unauthorized.error_response();
        Ok(req.into_response(response).map_into_right_body())
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware: a request body must arrive within `client_request_timeout_ms`
/// (actix bounds only the head): a client trickling its body gets 408 and
/// its connection is closed, instead of holding a socket and its buffers.
pub(crate) async fn request_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // A request without a body (most: the seed route's GETs) has nothing
    // to bound; the timer starts when the request arrives, and is only
    // registered once the body keeps the handler waiting.
    if let (Some(timeout), true) = (
        req.app_data::<web::Data<AppState>>()
            .map(|s| s.request_timeout),
        has_body(&req),
    ) {
        let mut payload = actix_web::HttpMessage::take_payload(&mut req);
        let until = actix_web::rt::time::Instant::now() + timeout;
        let mut deadline = None;
        let bounded =
            futures_util::stream::poll_fn(move |cx| match Pin::new(&mut payload).poll_next(cx) {
                Poll::Pending => {
                    let timer = deadline
                        .get_or_insert_with(|| Box::pin(actix_web::rt::time::sleep_until(until)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "the request body was not received in time",
                            )))))
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
                ready => ready,
            });
        req.set_payload(Payload::from(
            Box::pin(bounded) as actix_http::BoxedPayloadStream
        ));
    }
    next.call(req).await
}

/// Whether a request has a body to read: a length above 0, or chunks.
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

/// Middleware: under `/v1`, actix's own empty 404 (no such route) and 405
/// (no such method on a route) become JSON errors like every other v1 error.
pub(crate) async fn json_errors_under_v1(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, actix_web::Error> {
    let v1 = req.path().starts_with("/v1/") || req.path() == "/v1";
    let method = req.method().clone();
    let response = next.call(req).await?;
    let empty = matches!(
        response.response().body().size(),
        actix_web::body::BodySize::Sized(0) | actix_web::body::BodySize::None
    );
    let error = match response.status() {
        StatusCode::NOT_FOUND if v1 && empty => ApiError::NotFound("no such route".into()),
        StatusCode::METHOD_NOT_ALLOWED if v1 && empty => {
            ApiError::MethodNotAllowed(format!("{method} is not allowed on this route"))
        }
        _ => return Ok(response.map_into_left_body()),
    };
    let (req, _) = response.into_parts();
    let mut reply = error.error_response();
    if method == Method::HEAD {
        // The status and headers only, as for any HEAD.
        reply = reply.map_body(|_, _| BoxBody::new(()));
    }
    Ok(ServiceResponse::new(req, reply).map_into_right_body())
}
