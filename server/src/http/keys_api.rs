//! The key routes of the app API: the caller's own key (`GET /api/me`, any key, so an app can
//! hide what its key cannot do), and the list, creation and revocation of keys (admin only).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use super::app_api::{Admin, Caller};
use super::{ApiError, AppState};
use crate::keys::{ApiKey, Scope, resolve_targets};

/// The JSON of a key: never its secret or hash.
pub fn key_json(key: &ApiKey) -> Json_ {
    json!({
        "name": key.name,
        "scope": key.scope.as_str(),
        "templates": key.templates,
        "devices": key.devices,
        "created_at": key.created_at,
    })
}

/// `GET /api/me`: the caller's key.
pub async fn me(Caller(key): Caller) -> Json<Json_> {
    Json(key_json(&key))
}

/// `GET /api/keys`.
pub async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<Json_>> {
    Json(state.keys.list().iter().map(key_json).collect())
}

/// The body of `POST /api/keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    scope: Scope,
    /// `control`: templates (names or ids) whose devices the key may write to.
    #[serde(default)]
    templates: Vec<Json_>,
    /// `control`: devices (names or ids) the key may write to.
    #[serde(default)]
    devices: Vec<Json_>,
}

/// A name or id given as a JSON string or number.
fn name_or_id(item: &Json_) -> Result<String, ApiError> {
    match item {
        Json_::String(text) => Ok(text.clone()),
        Json_::Number(number) => Ok(number.to_string()),
        other => Err(ApiError::BadRequest(format!(
            "`{other}`: expected a name or an id"
        ))),
    }
}

/// `POST /api/keys` with `{"name", "scope", "templates", "devices"}`: the key and, this once,
/// its secret (`"key"`).
pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<NewKey>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    let templates = body
        .templates
        .iter()
        .map(name_or_id)
        .collect::<Result<Vec<_>, _>>()?;
    let devices = body
        .devices
        .iter()
        .map(name_or_id)
        .collect::<Result<Vec<_>, _>>()?;
    let (template_ids, device_ids) = resolve_targets(&state.engine, &templates, &devices)?;
    let (key, secret) = state
        .keys
        .create(&body.name, body.scope, template_ids, device_ids)
        .await?;
    let mut reply = key_json(&key);
    reply["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(reply)))
}

/// `DELETE /api/keys/{name}`: the key stops working at once on this server, and within
/// seconds on every other one sharing the store.
pub async fn revoke(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.keys.revoke(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
