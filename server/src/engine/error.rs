//! What the engine answers when it refuses or fails a request: [`EngineError`], the one error
//! every caller (HTTP API, sessions, shell commands) gets, whatever the store behind it.
//!
//! A caller tells five kinds apart ([`ErrorKind`]): the request was wrong (say which field or
//! pin), the thing asked for is not there, a name is taken, the store is down for a moment (try
//! again), or the server failed. Store errors become engine errors in one place
//! (`From<StoreError>`), so a database failure never looks like a bad request.

use blynk_proto::Pin;
use blynk_proto::datastream::ValidationError;

use crate::properties::PropertyRefusal;
use crate::store::StoreError;

/// Why the engine refused or failed a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Invalid input: the device's template binds no datastream to the pin.
    #[error("no datastream is bound to {0}")]
    UnknownPin(Pin),
    /// Invalid input: the value does not fit the pin's datastream (the message names the pin).
    #[error(transparent)]
    InvalidValue(#[from] ValidationError),
    /// Invalid input: a property the device may not store (the message names the pin and the
    /// property).
    #[error(transparent)]
    Property(#[from] PropertyRefusal),
    /// Invalid input of another kind; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// Nothing has this id or name (or the device was deleted meanwhile).
    #[error("{0}")]
    NotFound(String),
    /// A name is already taken.
    #[error("{0}")]
    Conflict(String),
    /// The store (or, with several nodes, the node holding the device) cannot be reached for
    /// now, or the server is shutting down: the same request may succeed a moment later.
    #[error("{0}")]
    Unavailable(String),
    /// The server failed; the request was not carried out. Logged where it is made.
    #[error("{0}")]
    Internal(String),
}

/// The kinds of [`EngineError`] a caller must tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was wrong; sending it again will not help.
    Invalid,
    /// Nothing has the id or name given.
    NotFound,
    /// A name is already taken.
    Conflict,
    /// Try again shortly.
    Unavailable,
    /// The server failed.
    Internal,
}

impl EngineError {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::UnknownPin(_)
            | EngineError::InvalidValue(_)
            | EngineError::Property(_)
            | EngineError::Invalid(_) => ErrorKind::Invalid,
            EngineError::NotFound(_) => ErrorKind::NotFound,
            EngineError::Conflict(_) => ErrorKind::Conflict,
            EngineError::Unavailable(_) => ErrorKind::Unavailable,
            EngineError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An error of `kind` with `message`, as another node reported it.
    pub(crate) fn of_kind(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::Invalid => EngineError::Invalid(message),
            ErrorKind::NotFound => EngineError::NotFound(message),
            ErrorKind::Conflict => EngineError::Conflict(message),
            ErrorKind::Unavailable => EngineError::Unavailable(message),
            ErrorKind::Internal => EngineError::Internal(message),
        }
    }

    /// The error a write gets while the server shuts down.
    pub(crate) fn shutting_down() -> Self {
        EngineError::Unavailable("the server is shutting down".into())
    }

    /// The error a write gets when its device was deleted meanwhile.
    pub(crate) fn deleted() -> Self {
        EngineError::NotFound("the device was deleted".into())
    }
}

impl From<StoreError> for EngineError {
    /// The one place a store error becomes an engine error. A database that is down is
    /// "unavailable"; anything else the database did wrong is an internal error, logged here,
    /// never reported as the client's mistake.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => EngineError::Unavailable(error.to_string()),
            StoreError::Conflict(_) => EngineError::Conflict(error.to_string()),
            StoreError::NotFound(_) => EngineError::NotFound(error.to_string()),
            StoreError::Database(_) | StoreError::Closed => {
                tracing::error!(%error, "store failure");
                EngineError::Internal(error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_is_down_is_unavailable() {
        let error = EngineError::from(StoreError::Unavailable("connection refused".into()));
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.to_string().contains("connection refused"));
    }

    #[test]
    fn a_database_failure_is_internal_never_invalid_input() {
        for store_error in [
            StoreError::Database("disk I/O error".into()),
            StoreError::Closed,
        ] {
            assert_eq!(EngineError::from(store_error).kind(), ErrorKind::Internal);
        }
    }

    #[test]
    fn store_conflicts_and_missing_rows_keep_their_kind() {
        let conflict = EngineError::from(StoreError::Conflict("device `a`".into()));
        assert_eq!(conflict.kind(), ErrorKind::Conflict);
        assert_eq!(conflict.to_string(), "device `a` already exists");
        let missing = EngineError::from(StoreError::NotFound("device 7".into()));
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert_eq!(missing.to_string(), "device 7 not found");
    }

    #[test]
    fn bad_pins_and_values_are_invalid_input_naming_the_pin() {
        let pin: Pin = "V3".parse().unwrap();
        let error = EngineError::UnknownPin(pin);
        assert_eq!(error.kind(), ErrorKind::Invalid);
        assert!(error.to_string().contains("V3"));
        assert_eq!(EngineError::shutting_down().kind(), ErrorKind::Unavailable);
        assert_eq!(EngineError::deleted().kind(), ErrorKind::NotFound);
    }
}
