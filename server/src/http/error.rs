//! API errors: a status code and a JSON body `{"error": {"message": "..."}}`, Blynk's shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::{EngineError, ErrorKind};
use crate::keys::{ApiKey, KeyError, Scope};

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
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
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

impl From<EngineError> for ApiError {
    /// The one mapping of engine errors to HTTP statuses: invalid input 400, not found 404,
    /// conflict 409, store down 503 (try again), anything else 500.
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        match error.kind() {
            ErrorKind::Invalid => ApiError::BadRequest(message),
            ErrorKind::NotFound => ApiError::NotFound(message),
            ErrorKind::Conflict => ApiError::Conflict(message),
            ErrorKind::Unavailable => ApiError::Unavailable(message),
            ErrorKind::Internal => ApiError::Internal(message),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Invalid(_) => ApiError::BadRequest(error.to_string()),
            KeyError::Exists(_) | KeyError::LastAdmin(_) => ApiError::Conflict(error.to_string()),
            KeyError::NotFound(_) => ApiError::NotFound(error.to_string()),
            KeyError::Engine(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn status_of(error: EngineError) -> StatusCode {
        ApiError::from(error).status()
    }

    #[test]
    fn each_kind_of_engine_error_has_its_status() {
        let pin = "V1".parse().unwrap();
        assert_eq!(
            status_of(EngineError::UnknownPin(pin)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(EngineError::Invalid("`name`: empty".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(EngineError::NotFound("device 9".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(EngineError::Conflict("device `a` already exists".into())),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status_of(EngineError::shutting_down()),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn a_store_that_is_down_is_503_and_a_database_failure_500_never_400() {
        assert_eq!(
            status_of(StoreError::Unavailable("restarting".into()).into()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(StoreError::Database("disk I/O error".into()).into()),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status_of(StoreError::Closed.into()),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_key_error_from_the_store_keeps_the_store_status() {
        let error = KeyError::Engine(StoreError::Unavailable("restarting".into()).into());
        assert_eq!(
            ApiError::from(error).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
