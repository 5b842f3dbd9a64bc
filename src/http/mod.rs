//! The HTTP API: routes, shared state, authentication, request limits.

pub mod deletions;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod seed;

use std::sync::Arc;

use actix::Addr;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::middleware::Next;
use actix_web::{http::header, web, ResponseError};
use subtle::ConstantTimeEq;

use crate::db::Db;
use crate::error::ApiError;
use crate::pipeline::record::RecordActor;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
pub struct AppState {
    pub db: Db,
    pub record: Addr<RecordActor>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Accepted bearer tokens; empty: no authentication.
    pub tokens: Arc<[String]>,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(|e, _| json_error(e).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()))
    .configure(seed::routes)
    .configure(deletions::routes)
    .configure(health::routes)
    .configure(metrics::routes)
    .configure(openapi::routes);
}

fn json_error(e: JsonPayloadError) -> ApiError {
    match e {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::TooLarge
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

/// Middleware: when tokens are configured, every route but the probes needs
/// `Authorization: Bearer <token>`.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = match req.app_data::<web::Data<AppState>>() {
        Some(state) if !state.tokens.is_empty() => {
            matches!(req.path(), "/healthz" | "/readyz")
                || req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .is_some_and(|token| {
                        // Constant-time per token, so timing does not reveal
                        // how much of a guess was right.
                        let token = token.trim().as_bytes();
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
