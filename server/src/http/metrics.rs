//! `GET /metrics`: the server's metrics in the Prometheus text format, for the admin key or the
//! configured metrics token (so a scraper need not hold the admin key).

use axum::extract::{FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::IntoResponse;

use super::app_api::Admin;
use super::{ApiError, AppState};
use crate::engine::constant_time_eq;

/// Proof that the request carries the metrics token or the admin key.
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if let (Some(token), Some(sent)) = (&state.metrics_token, bearer)
            && constant_time_eq(sent.trim().as_bytes(), token.as_bytes())
        {
            return Ok(MetricsReader);
        }
        // Anything else is checked (and its failures limited) as an admin key.
        Admin::from_request_parts(parts, state).await?;
        Ok(MetricsReader)
    }
}

/// `GET /metrics`.
pub async fn scrape(_: MetricsReader, State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.engine.render_metrics(),
    )
}
