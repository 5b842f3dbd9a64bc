//! `X-Request-Id`: taken from the request when it is a sane id (1 to 64
//! characters of `[A-Za-z0-9._:-]`, what load balancers and tracing
//! systems send), otherwise generated (a UUID), and echoed in the answer.
//! Handlers read it with the [`RequestId`] extractor and store it with the
//! requests they record; with `access_log` on, the access line carries it.

use std::future::{ready, Ready};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::router::RoutePattern;
use super::AppState;

/// The header, in and out.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id accepted from a client.
pub(crate) const MAX_LEN: usize = 64;

/// The id of the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(pub String);

impl RequestId {
    /// The client's id if it is acceptable, else a new one.
    fn of(req: &ServiceRequest) -> RequestId {
        let given = req
            .headers()
            .get(&HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable(v));
        match given {
            Some(id) => RequestId(id.to_owned()),
            None => RequestId::generate(),
        }
    }

    /// A new id: a random (version 4) UUID. Its randomness only has to
    /// make ids distinct, not unguessable, so it comes from a fast
    /// thread-local generator rather than a system call per request.
    pub(crate) fn generate() -> RequestId {
        let bytes = fastrand::u128(..).to_le_bytes();
        RequestId(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string(),
        )
    }
}

/// 1 to 64 characters of `[A-Za-z0-9._:-]`: safe in a log line, a header
/// and a column, whatever a client sends.
pub(crate) fn acceptable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl FromRequest for RequestId {
    type Error = std::convert::Infallible;
    type Future = Ready<Result<RequestId, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Set by the middleware for every request; a fresh one otherwise.
        let id = req.extensions().get::<RequestId>().cloned();
        ready(Ok(id.unwrap_or_else(RequestId::generate)))
    }
}

/// Middleware: assigns the request id, echoes it, counts the request in
/// the HTTP metrics (by route template, so ids do not make labels), and
/// writes the access line (target `access`, when `access_log` is on).
pub(crate) async fn assign(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = RequestId::of(&req);
    req.extensions_mut().insert(id.clone());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let mut response = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(HEADER, value);
    }
    let Some(state) = state else {
        return Ok(response);
    };
    let route = response
        .request()
        .app_data::<RoutePattern>()
        .map_or("unmatched", |pattern| pattern.0);
    let status = response.status();
    state
        .metrics
        .http_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    state
        .metrics
        .http_seconds
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    if state.access_log {
        let request = response.request();
        log::info!(
            target: "access",
            "{} \"{} {}\" {} {:.3}ms request_id={}",
            request
                .peer_addr()
                .map_or_else(|| "-".to_owned(), |p| p.ip().to_string()),
            request.method(),
            request.path(),
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0,
            id.0,
        );
    }
    Ok(response)
}
