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
use crate::engine::{DeviceSlot, Protocol};
use crate::keys::{ApiKey, Scope};
use crate::login_limiter::Verdict;
use crate::model::{Origin, OwnedValue, StoredValue, Template, type_name};

/// A request's checked key, of any scope: enough to read (values, history, events, watch).
/// REST requests carry it as `Authorization: Bearer KEY`; only the WebSocket, which browsers
/// open without headers, also takes `?key=KEY` (see [`Caller::from_websocket_request`]), so a
/// key never lands in the access logs of REST routes.
pub struct Caller(pub ApiKey);

/// Proof that a request's key has the `admin` scope; any other key gets a 403.
pub struct Admin;

impl Caller {
    /// Checks the key of a request; `accept_query` takes `?key=` too (the WebSocket only).
    async fn authenticate(
        parts: &Parts,
        state: &AppState,
        accept_query: bool,
    ) -> Result<ApiKey, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map(|info| info.0.0.ip());
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let query = || {
            parts
                .uri
                .query()
                .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("key=")))
        };
        let presented = match header {
            Some(key) => Some(key),
            None if accept_query => query(),
            None => None,
        };
        let Some(presented) = presented else {
            let hint = if query().is_some() {
                "send the key as `Authorization: Bearer KEY` (`?key=` is accepted on /api/ws only)"
            } else {
                "send the key as `Authorization: Bearer KEY`"
            };
            return Err(ApiError::Unauthorized(hint.into()));
        };
        match state.keys.authenticate(presented.trim()).await {
            Some(key) => Ok(key),
            None => {
                // The keys' own bucket: bad device tokens do not count here. A right key is let
                // in above whatever this says.
                let verdict =
                    peer.map(|peer| state.context.admin_login_limiter.record_failure(peer));
                match verdict {
                    Some(Verdict::Limited {
                        retry_after_seconds,
                    }) => Err(ApiError::TooManyAttempts(retry_after_seconds)),
                    _ => Err(ApiError::Unauthorized("wrong key".into())),
                }
            }
        }
    }

    /// Checks the key of a WebSocket upgrade, which may come as `?key=KEY`.
    pub async fn from_websocket_request(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::authenticate(parts, state, true).await.map(Caller)
    }
}

/// Refuses with a 403 unless the key may write to this device.
pub fn require_control(key: &ApiKey, slot: &DeviceSlot) -> Result<(), ApiError> {
    if key.can_control(slot) {
        Ok(())
    } else {
        Err(ApiError::missing_scope(
            Scope::Control,
            key,
            &format!("write to device {} `{}`", slot.device.id, slot.device.name),
        ))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Self::authenticate(parts, state, false).await.map(Caller)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Caller(key) = Caller::from_request_parts(parts, state).await?;
        if key.is_admin() {
            Ok(Admin)
        } else {
            Err(ApiError::missing_scope(
                Scope::Admin,
                &key,
                "use this call (templates, devices and keys are for admin keys)",
            ))
        }
    }
}

pub(super) async fn find_device(state: &AppState, key: &str) -> Result<Arc<DeviceSlot>, ApiError> {
    state
        .engine
        .find_device_anywhere(key)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("device `{key}`")))
}

pub(super) fn parse_pin(text: &str) -> Result<Pin, ApiError> {
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

/// [`device_details_json`] as a key may see it: the device's token is for admin keys only.
pub fn device_details_for(slot: &DeviceSlot, key: &ApiKey) -> Json_ {
    let mut details = device_details_json(slot);
    if !key.is_admin()
        && let Some(object) = details.as_object_mut()
    {
        object.remove("token");
    }
    details
}

/// `GET /api/templates`.
pub async fn list_templates(_: Caller, State(state): State<AppState>) -> Json<Vec<Json_>> {
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
    let stored = state.engine.create_template(template).await?;
    Ok((StatusCode::CREATED, Json(template_json(&stored))))
}

/// `GET /api/devices`.
pub async fn list_devices(_: Caller, State(state): State<AppState>) -> Json<Vec<Json_>> {
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
    let slot = state.engine.create_device(&body.name, &template).await?;
    Ok((StatusCode::CREATED, Json(device_details_json(&slot))))
}

/// `GET /api/devices/{id or name}`: with token, datastreams, values and properties.
pub async fn device_details(
    Caller(key): Caller,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device).await?;
    Ok(Json(device_details_for(&slot, &key)))
}

/// `DELETE /api/devices/{id or name}`.
pub async fn delete_device(
    _: Admin,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<StatusCode, ApiError> {
    let slot = find_device(&state, &device).await?;
    state.engine.delete_device(slot.device.id).await?;
    state.device_rates.forget(slot.device.id);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/devices/{device}/values`.
pub async fn values(
    _: Caller,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device).await?;
    let values: serde_json::Map<String, Json_> = slot
        .values()
        .iter()
        .map(|(pin, stored)| (pin.to_string(), stored_json(stored)))
        .collect();
    Ok(Json(Json_::Object(values)))
}

/// `GET /api/devices/{device}/values/{pin}`.
pub async fn value(
    _: Caller,
    State(state): State<AppState>,
    Path((device, pin)): Path<(String, String)>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device).await?;
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
    Caller(key): Caller,
    State(state): State<AppState>,
    Path((device, pin)): Path<(String, String)>,
    Json(body): Json<WriteBody>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device).await?;
    require_control(&key, &slot)?;
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

/// `GET /api/devices/{device}/events?limit=N`: newest first.
pub async fn events(
    _: Caller,
    State(state): State<AppState>,
    Path(device): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device).await?;
    let limit = limit.limit.unwrap_or(50).min(200);
    let events = state.engine.events(slot.device.id, limit).await?;
    Ok(Json(json!(events)))
}

/// `GET /api/devices/{device}/properties`.
pub async fn properties(
    _: Caller,
    State(state): State<AppState>,
    Path(device): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let slot = find_device(&state, &device).await?;
    Ok(Json(device_details_json(&slot)["properties"].clone()))
}
