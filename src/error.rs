//! Errors of the v1 API and their one mapping to HTTP: `{"error", "code"}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::db::DbError;

/// Seconds a client should wait before retrying after a 503.
pub(crate) const RETRY_AFTER_SECS: u32 = 1;

/// The body of every v1 error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// Stable, for programs: `invalid_id`, `bad_request`,
    /// `payload_too_large`, `request_timeout`, `unauthorized`, `not_found`,
    /// `method_not_allowed`, `conflict`, `unavailable`, `internal`.
    pub code: String,
}

/// An error answered by a v1 route.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    InvalidId(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than 1 MiB")]
    TooLarge,
    #[error("the request was not received in time")]
    RequestTimeout,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// Retrying later may work (the database is down, or not migrated):
    /// the text says which.
    #[error("{0}, retry later")]
    Unavailable(String),
    /// `/readyz`: why this instance should get no traffic now.
    #[error("{0}")]
    NotReady(String),
    /// A fault of the server (a database error that retrying will not fix);
    /// the cause is in the server's log, not in the answer.
    #[error("internal error; the server log has the cause")]
    Internal,
}

impl ApiError {
    /// 404 for a request id that has no request or receipt.
    pub(crate) fn no_request() -> ApiError {
        ApiError::NotFound("no deletion request for this id".into())
    }
}

impl ApiError {
    /// The stable, machine-readable `code` field.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidId(_) => "invalid_id",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge => "payload_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) | ApiError::NotReady(_) => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            // The request did not take effect and may be retried. Outages
            // are logged once by `Db`; per request only at debug level.
            DbError::Unavailable(_) => {
                log::debug!("answered 503: {e}");
                ApiError::Unavailable("database unavailable".into())
            }
            DbError::Busy(_) => {
                log::debug!("answered 503: {e}");
                ApiError::Unavailable("database busy (conflicting writes), retry later".into())
            }
            DbError::NotMigrated => ApiError::Unavailable(e.to_string()),
            DbError::Query(_) | DbError::Migration(_) => {
                log::error!("answered 500: {e}");
                ApiError::Internal
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidId(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable(_) | ApiError::NotReady(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RequestTimeout => {
                response.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.to_string(),
            code: self.code().to_owned(),
        })
    }
}
