//! The app API (REST): templates, devices with presence, values, history, events, properties
//! and writes with their delivery status. Authenticated with the admin key.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use blynk_proto::Pin;
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use super::{ApiError, AppState, PeerAddr};
use crate::engine::{DeviceSlot, Protocol, constant_time_eq};
use crate::model::{Origin, OwnedValue, StoredValue, Template, type_name};

/// Proof that the request carries the admin key (`Authorization: Bearer KEY`, or `?key=KEY`
/// for WebSockets, which browsers open without headers).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map(|info| info.0.0.ip());
        if let Some(peer) = peer {
            state
                .context
                .login_limiter
                .check(peer)
                .map_err(ApiError::TooManyAttempts)?;
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let query = parts
            .uri
            .query()
            .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("key=")));
        match header.or(query) {
            Some(key) if constant_time_eq(key.trim().as_bytes(), state.admin_key.as_bytes()) => {
                Ok(Admin)
            }
            Some(_) => {
                if let Some(peer) = peer {
                    state.context.login_limiter.record_failure(peer);
                }
                Err(ApiError::Unauthorized("wrong admin key".into()))
            }
            None => Err(ApiError::Unauthorized(
                "send the admin key as `Authorization: Bearer KEY`".into(),
            )),
        }
    }
}

fn find_device(state: &AppState, key: &str) -> Result<Arc<DeviceSlot>, ApiError> {
    state
        .engine
        .find_device(key)
        .ok_or_else(|| ApiError::NotFound(format!("device `{key}`")))
}

fn parse_pin(text: &str) -> Result<Pin, ApiError> {
    text.parse()
        .map_err(|error| ApiError::BadRequest(format!("pin `{text}`: {error}")))
}

/// The JSON of a stored value.
pub fn stored_json(stored: &StoredValue) -> Json_ {
    json!({
        "value": stored.value.to_json(),
        "version": stored.version,
        "at": stored.set_at,
        "origin": stored.origin.as_str(),
    })
}

/// The JSON of a template.
pub fn template_json(template: &Template) -> Json_ {
    let datastreams: Vec<Json_> = template
        .datastreams
        .iter()
        .map(|d| {
            json!({
                "pin": d.pin.to_string(),
                "name": d.name,
                "type": type_name(d.value_type),
                "min": d.min,
                "max": d.max,
                "default": d.default.as_ref().map(OwnedValue::to_json),
                "sync": d.sync,
                "kind": if d.is_command() { "command" } else { "state" },
                "ttl": d.is_command().then(|| d.ttl_seconds()),
            })
        })
        .collect();
    json!({ "id": template.id, "name": template.name, "datastreams": datastreams })
}

/// The JSON of a device in lists: no token, with presence.
pub fn device_json(slot: &DeviceSlot) -> Json_ {
    json!({
        "id": slot.device.id,
        "name": slot.device.name,
        "template": slot.template.name,
        "template_id": slot.template.id,
        "online": slot.is_online(),
        "protocol": slot.protocol().map(|protocol| match protocol {
            Protocol::Native => "native",
            Protocol::Classic => "classic",
            Protocol::Mqtt => "mqtt",
        }),
        "last_seen": slot.last_seen(),
    })
}

/// The JSON of one device with everything an app shows.
pub fn device_details_json(slot: &DeviceSlot) -> Json_ {
    let mut details = device_json(slot);
    let values: serde_json::Map<String, Json_> = slot
        .values()
        .iter()
        .map(|(pin, stored)| (pin.to_string(), stored_json(stored)))
        .collect();
    let properties: Vec<Json_> = slot
        .properties()
        .iter()
        .map(|p| json!({ "pin": p.pin.to_string(), "name": p.name, "value": p.value.to_json() }))
        .collect();
    details["token"] = json!(slot.device.token);
    details["datastreams"] = template_json(&slot.template)["datastreams"].clone();
    details["values"] = Json_::Object(values);
    details["properties"] = Json_::Array(properties);
    details["version"] = json!(slot.version());
    details
}

/// `GET /api/templates`.
pub async fn list_templates(_: Admin, State(state): State<AppState>) -> Json<Vec<Json_>> {
    Json(
        state
            .engine
            .templates()
            .iter()
            .map(|t| template_json(t))
            .collect(),
    )
}

/// `POST /api/templates` with a template (`name`, `datastreams`).
pub async fn create_template(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<Json_>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    let mut body = body;
    // Accept `datastreams` (JSON style) as well as `datastream` (the TOML file's table name).
    if let Some(object) = body.as_object_mut()
        && let Some(list) = object.remove("datastreams")
    {
        object.insert("datastream".into(), list);
    }
    let template: Template =
        serde_json::from_value(body).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    template.check().map_err(ApiError::BadRequest)?;
    let stored = state.engine.create_template(template).await?;
    Ok((StatusCode::CREATED, Json(template_json(&stored))))
}

/// `GET /api/devices`.
pub async fn list_devices(_: Admin, State(state): State<AppState>) -> Json<Vec<Json_>> {
    Json(
        state
            .engine
            .devices()
            .iter()
            .map(|slot| device_json(slot))
            .collect(),
    )
}

/// The body of `POST /api/devices`.
#[derive(Deserialize)]
pub struct NewDevice {
    name: String,
    template: String,
}

/// `POST /api/devices` with `{"name": .., "template": name or id}`: the new device and its token.
pub async fn create_device(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<NewDevice>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    let template = state
        .engine
        .find_template(&body.template)
        .ok_or_else(|| ApiError::NotFound(format!("template `{}`", body.template)))?;
    let slot = state
        .engine
        .create_device(&body.name, &template)
        .await
        .map_err(|error| match error {
            crate::store::StoreError::Database(message) => ApiError::BadRequest(message),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(device_details_json(&slot))))
}

/// `GET /api/devices/{id or name}`: with token, datastreams, values and properties.
pub async fn device_details(
    _: Admin,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device)?;
    Ok(Json(device_details_json(&slot)))
}

/// `DELETE /api/devices/{id or name}`.
pub async fn delete_device(
    _: Admin,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<StatusCode, ApiError> {
    let slot = find_device(&state, &device)?;
    state.engine.delete_device(slot.device.id).await?;
    state.device_rates.forget(slot.device.id);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/devices/{device}/values`.
pub async fn values(
    _: Admin,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device)?;
    let values: serde_json::Map<String, Json_> = slot
        .values()
        .iter()
        .map(|(pin, stored)| (pin.to_string(), stored_json(stored)))
        .collect();
    Ok(Json(Json_::Object(values)))
}

/// `GET /api/devices/{device}/values/{pin}`.
pub async fn value(
    _: Admin,
    State(state): State<AppState>,
    Path((device, pin)): Path<(String, String)>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device)?;
    let pin = parse_pin(&pin)?;
    match slot.value(pin) {
        Some(stored) => Ok(Json(stored_json(&stored))),
        None => match slot
            .template
            .datastream(pin)
            .and_then(|d| d.default.clone())
        {
            Some(default) => Ok(Json(
                json!({ "value": default.to_json(), "version": 0, "default": true }),
            )),
            None => Err(ApiError::NotFound(format!("{pin} has no value yet"))),
        },
    }
}

/// The body of a write.
#[derive(Deserialize)]
pub struct WriteBody {
    value: Json_,
    /// How long to wait for the device to receive it before answering "pending" (ms).
    #[serde(default = "default_wait")]
    wait_ms: u64,
}

fn default_wait() -> u64 {
    1000
}

/// `PUT /api/devices/{device}/values/{pin}` with `{"value": ..}`: stored durably, then
/// `delivered` if the device received it within `wait_ms`, else `pending` (or `expired`).
pub async fn write_value(
    _: Admin,
    State(state): State<AppState>,
    Path((device, pin)): Path<(String, String)>,
    Json(body): Json<WriteBody>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device)?;
    let pin = parse_pin(&pin)?;
    let value = OwnedValue::from_json(&body.value).map_err(ApiError::BadRequest)?;
    let value = value
        .as_value()
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let write = state
        .engine
        .app_write(&slot, pin, &value, Origin::App)
        .await?;
    let wait = Duration::from_millis(body.wait_ms.min(30_000));
    let status = match tokio::time::timeout(wait, write.report).await {
        Ok(Ok(delivery)) => delivery.as_str(),
        Ok(Err(_)) | Err(_) => "pending",
    };
    Ok(Json(json!({
        "status": status,
        "version": write.version,
        "device_online": write.device_online,
        "command": write.command,
    })))
}

/// The `limit` query parameter.
#[derive(Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

/// `GET /api/devices/{device}/history/{pin}?limit=N`: newest first.
pub async fn history(
    _: Admin,
    State(state): State<AppState>,
    Path((device, pin)): Path<(String, String)>,
    Query(limit): Query<Limit>,
) -> Result<Json<Vec<Json_>>, ApiError> {
    let slot = find_device(&state, &device)?;
    let pin = parse_pin(&pin)?;
    let limit = limit.limit.unwrap_or(100).min(1000);
    let points =
        crate::store::settle(state.engine.store().history(slot.device.id, pin, limit)).await?;
    Ok(Json(
        points
            .iter()
            .map(|p| json!({ "value": p.value.to_json(), "version": p.version, "at": p.set_at, "origin": p.origin.as_str() }))
            .collect(),
    ))
}

/// `GET /api/devices/{device}/events?limit=N`: newest first.
pub async fn events(
    _: Admin,
    State(state): State<AppState>,
    Path(device): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device)?;
    let limit = limit.limit.unwrap_or(50).min(200);
    let events = crate::store::settle(state.engine.store().events(slot.device.id, limit)).await?;
    Ok(Json(json!(events)))
}

/// `GET /api/devices/{device}/properties`.
pub async fn properties(
    _: Admin,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device)?;
    Ok(Json(device_details_json(&slot)["properties"].clone()))
}
