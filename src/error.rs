//! Errors of the v1 API and their one mapping to HTTP: `{"error", "code"}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::db::DbError;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The body of every v1 error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// Stable, for programs: `invalid_id`, `bad_request`,
    /// `payload_too_large`, `unauthorized`, `not_found`, `conflict`,
    /// `unavailable`.
    pub code: String,
}

/// An error answered by a v1 route.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidId(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than 1 MiB")]
    TooLarge,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("no deletion request for this id")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("database unavailable, retry later")]
    Unavailable,
}

impl ApiError {
    /// The stable, machine-readable `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidId(_) => "invalid_id",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge => "payload_too_large",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable => "unavailable",
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        // Any database failure is reported as unavailable: the request did
        // not take effect and may be retried. Outages are logged once by the
        // pipeline; per request only at debug level.
        log::debug!("database error answered as 503: {e}");
        ApiError::Unavailable
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidId(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.to_string(),
            code: self.code().to_owned(),
        })
    }
}
