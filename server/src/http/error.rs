//! API errors: a status code and a JSON body `{"error": {"message": "..."}}`, Blynk's shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::WriteError;
use crate::keys::{ApiKey, KeyError, Scope};
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
    /// The key is valid but lacks the scope the call needs.
    #[error("{message}")]
    Forbidden {
        /// The scope the call needs.
        missing: Scope,
        /// What to tell the client.
        message: String,
    },
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
    /// The database cannot be reached for now; the request may be tried again.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyAttempts(_)
            | ApiError::QuotaExceeded(_)
            | ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl ApiError {
    /// A 403 for a key that lacks `missing` to do `action` ("write to device 1 `demo`").
    pub fn missing_scope(missing: Scope, key: &ApiKey, action: &str) -> Self {
        ApiError::Forbidden {
            missing,
            message: format!(
                "missing scope `{}`: the key `{}` (scope `{}`) may not {action}",
                missing.as_str(),
                key.name,
                key.scope.as_str()
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self {
            ApiError::Forbidden { missing, message } => {
                json!({ "error": { "message": message, "missing_scope": missing.as_str() } })
            }
            _ => json!({ "error": { "message": self.to_string() } }),
        };
        (self.status(), Json(body)).into_response()
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::UnknownPin(_) | WriteError::Invalid(_) => {
                ApiError::BadRequest(error.to_string())
            }
            WriteError::Deleted => ApiError::NotFound(error.to_string()),
            WriteError::Store(StoreError::Unavailable(_)) => {
                ApiError::Unavailable(error.to_string())
            }
            WriteError::Store(_) | WriteError::ShuttingDown | WriteError::Unreachable(_) => {
                ApiError::Internal(error.to_string())
            }
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Invalid(_) => ApiError::BadRequest(error.to_string()),
            KeyError::Exists(_) | KeyError::LastAdmin(_) => ApiError::Conflict(error.to_string()),
            KeyError::NotFound(_) => ApiError::NotFound(error.to_string()),
            KeyError::Store(error) => error.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(_) => ApiError::Conflict(error.to_string()),
            StoreError::NotFound(_) => ApiError::NotFound(error.to_string()),
            StoreError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
            StoreError::Database(_) | StoreError::Closed => ApiError::Internal(error.to_string()),
        }
    }
}
