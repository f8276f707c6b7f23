//! The HTTP side of the shared port: the web dashboard, the Blynk-compatible device API, the app
//! API (REST and a WebSocket per client), and classic hardware over WebSocket at `/websockets`.

mod app_api;
mod app_ws;
mod classic_ws;
mod dashboard;
mod device_api;
mod device_rate;
mod error;
mod history;
mod keys_api;
mod metrics;
mod timed_upload;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, put};

pub use device_rate::DeviceRates;
pub use error::ApiError;

use crate::engine::Engine;
use crate::keys::KeyRing;
use crate::session::Context;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The session context (limits, login limiter), for classic WebSocket sessions.
    pub context: Arc<Context>,
    /// The keys apps authenticate with.
    pub keys: Arc<KeyRing>,
    /// Points uploaded per device today (the timestamped upload's daily limit).
    pub uploads: Arc<timed_upload::UploadQuota>,
    /// The token that opens `/metrics` besides the admin key, if one is configured.
    pub metrics_token: Option<Arc<str>>,
    /// Requests per device token on the device API.
    pub device_rates: Arc<DeviceRates>,
}

/// The address of an HTTP client, as handlers see it: the peer, or behind a trusted proxy the
/// client it forwarded for (with port 0).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Every route of the shared port.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::script))
        .route("/assets/app.css", get(dashboard::style))
        .route("/assets/history.js", get(dashboard::history_script))
        .route(
            "/assets/vendor/uPlot.iife.min.js",
            get(dashboard::uplot_script),
        )
        .route("/assets/vendor/uPlot.min.css", get(dashboard::uplot_style))
        .route("/external/api/update", get(device_api::update))
        .route(
            "/external/api/batch/update",
            get(device_api::batch_update).post(timed_upload::upload),
        )
        .route("/external/api/get", get(device_api::get))
        .route(
            "/external/api/isHardwareConnected",
            get(device_api::is_connected),
        )
        .route(
            "/external/api/update/property",
            get(device_api::update_property),
        )
        .route(
            "/{token}/update/{pin}",
            get(device_api::classic_update).put(device_api::classic_put),
        )
        .route("/{token}/get/{pin}", get(device_api::classic_get))
        .route(
            "/{token}/isHardwareConnected",
            get(device_api::classic_is_connected),
        )
        .route(
            "/api/templates",
            get(app_api::list_templates).post(app_api::create_template),
        )
        .route(
            "/api/devices",
            get(app_api::list_devices).post(app_api::create_device),
        )
        .route(
            "/api/devices/{device}",
            get(app_api::device_details).delete(app_api::delete_device),
        )
        .route("/api/devices/{device}/values", get(app_api::values))
        .route(
            "/api/devices/{device}/values/{pin}",
            put(app_api::write_value).get(app_api::value),
        )
        .route("/api/devices/{device}/history/{pin}", get(history::history))
        .route("/api/devices/{device}/events", get(app_api::events))
        .route("/api/devices/{device}/properties", get(app_api::properties))
        .route("/api/me", get(keys_api::me))
        .route("/api/keys", get(keys_api::list).post(keys_api::create))
        .route("/api/keys/{name}", delete(keys_api::revoke))
        .route("/api/ws", get(app_ws::upgrade))
        .route("/metrics", get(metrics::scrape))
        .route("/websockets", get(classic_ws::upgrade))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
}
