//! API errors: a status code and a JSON body `{"error": {"message": "..."}}`, Blynk's shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::WriteError;
use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The token or key is wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// Nothing is there.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    Conflict(String),
    /// A quota is used up.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The device token sends faster than its rate limit.
    #[error("{0}")]
    RateLimited(String),
    /// Too many failed attempts from this address.
    #[error("too many failed attempts; retry in {0} s")]
    TooManyAttempts(u16),
    /// The server failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyAttempts(_)
            | ApiError::QuotaExceeded(_)
            | ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(json!({ "error": { "message": self.to_string() } })),
        )
            .into_response()
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::UnknownPin(_) | WriteError::Invalid(_) => {
                ApiError::BadRequest(error.to_string())
            }
            WriteError::Deleted => ApiError::NotFound(error.to_string()),
            WriteError::Store(_) | WriteError::ShuttingDown => {
                ApiError::Internal(error.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(_) => ApiError::Conflict(error.to_string()),
            StoreError::NotFound(_) => ApiError::NotFound(error.to_string()),
            StoreError::Database(_) | StoreError::Closed => ApiError::Internal(error.to_string()),
        }
    }
}
