//! Whether PostgreSQL answers: errors sorted into "unreachable" (retry later) and "refused",
//! and one log line when it goes away and one when it is back, not one per failed request.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::StoreError;

/// Shared by the writer and the reads.
#[derive(Debug, Default)]
pub(super) struct Health {
    down: AtomicBool,
}

impl Health {
    /// Sorts a failure, logging the first of an outage.
    pub(super) fn failed(&self, error: &tokio_postgres::Error) -> StoreError {
        let sorted = sort(error);
        if let StoreError::Unavailable(reason) = &sorted {
            self.went_down(reason);
        }
        sorted
    }

    /// Sorts a failure to get a connection, logging the first of an outage.
    pub(super) fn pool_failed(&self, error: &deadpool_postgres::PoolError) -> StoreError {
        match error {
            deadpool_postgres::PoolError::Backend(error) => self.failed(error),
            other => {
                let reason = other.to_string();
                self.went_down(&reason);
                StoreError::Unavailable(reason)
            }
        }
    }

    /// Notes a success, logging the end of an outage.
    pub(super) fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("PostgreSQL is reachable again");
        }
    }

    fn went_down(&self, reason: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                %reason,
                "PostgreSQL is unreachable: store requests fail until it is back (each request tries to reconnect)"
            );
        }
    }
}

/// Whether a failure means "PostgreSQL is not there" (no connection, or the server shutting
/// down or starting) or that it refused this request.
pub(super) fn sort(error: &tokio_postgres::Error) -> StoreError {
    let unreachable = match error.code() {
        None => error.as_db_error().is_none(),
        // Class 08: connection exceptions; 57P: the server shutting down or starting.
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
    };
    if unreachable {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Database(
            error
                .as_db_error()
                .map_or_else(|| error.to_string(), |db| db.message().to_owned()),
        )
    }
}
