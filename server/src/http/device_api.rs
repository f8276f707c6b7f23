//! The HTTP device API: Blynk IoT's `/external/api/...` forms and the classic `/{token}/...`
//! forms. A write answers 200 only once it is durable.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use blynk_proto::Pin;
use serde_json::json;

use super::{ApiError, AppState, PeerAddr};
use crate::engine::DeviceSlot;
use crate::login_limiter::Verdict;
use crate::model::{Origin, OwnedValue, PropertyRecord};

type Pairs = Query<Vec<(String, String)>>;

/// Finds the device of a token, counting a wrong one as a failed login of the caller's address
/// (a right one is never refused, whatever others did from there) and requests against the
/// token's rate limit.
pub(super) fn device_of(
    state: &AppState,
    peer: SocketAddr,
    token: Option<&str>,
) -> Result<Arc<DeviceSlot>, ApiError> {
    let token =
        token.ok_or_else(|| ApiError::BadRequest("the token parameter is missing".into()))?;
    let slot = state.engine.authenticate(token).ok_or_else(|| {
        match state.context.login_limiter.record_failure(peer.ip()) {
            Verdict::Counted => ApiError::Unauthorized("Invalid token.".into()),
            Verdict::Limited {
                retry_after_seconds,
            } => ApiError::TooManyAttempts(retry_after_seconds),
        }
    })?;
    state
        .device_rates
        .allow(slot.device.id)
        .map_err(ApiError::RateLimited)?;
    Ok(slot)
}

/// A request of the query form, let in by its `token` parameter (see [`device_of`]): the
/// device, and the query's pairs.
pub struct TokenQuery {
    slot: Arc<DeviceSlot>,
    pairs: Vec<(String, String)>,
}

impl FromRequestParts<AppState> for TokenQuery {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let ConnectInfo(PeerAddr(peer)) = ConnectInfo::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(pairs) = Pairs::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let slot = device_of(state, peer, token_of(&pairs)).map_err(IntoResponse::into_response)?;
        Ok(TokenQuery { slot, pairs })
    }
}

pub(super) fn token_of(pairs: &[(String, String)]) -> Option<&str> {
    param(pairs, "token")
}

/// The first value of the query parameter `name`.
fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn parse_pin(text: &str) -> Result<Pin, ApiError> {
    text.parse()
        .map_err(|error| ApiError::BadRequest(format!("pin `{text}`: {error}")))
}

pub(super) fn parse_value<'a>(
    parts: impl IntoIterator<Item = &'a str>,
) -> Result<OwnedValue, ApiError> {
    OwnedValue::from_text_parts(parts)
        .map_err(|error| ApiError::BadRequest(format!("value: {error}")))
}

/// Blynk IoT's numeric datastream id, here the number of the virtual pin: `dataStreamId=5` is
/// `V5`.
fn datastream_id_pin(text: &str) -> Result<Pin, ApiError> {
    text.parse::<u8>()
        .ok()
        .and_then(|number| Pin::virtual_pin(u32::from(number)).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "dataStreamId `{text}`: expected the number of a virtual pin, 0 to 255"
            ))
        })
}

/// The pin named by `pin=V1` or `dataStreamId=1`, if either is given.
pub(super) fn pin_param(pairs: &[(String, String)]) -> Result<Option<Pin>, ApiError> {
    if let Some(pin) = param(pairs, "pin") {
        return parse_pin(pin).map(Some);
    }
    param(pairs, "dataStreamId")
        .map(datastream_id_pin)
        .transpose()
}

/// The `pin=value` pairs of a query (`v1=100`), with repeated keys as parts of one value.
fn pin_values(pairs: &[(String, String)]) -> Result<Vec<(Pin, OwnedValue)>, ApiError> {
    let mut writes: Vec<(Pin, Vec<&str>)> = Vec::new();
    for (key, value) in pairs {
        if key == "token" {
            continue;
        }
        let pin = parse_pin(key)?;
        match writes.iter_mut().find(|(existing, _)| *existing == pin) {
            Some((_, parts)) => parts.push(value),
            None => writes.push((pin, vec![value])),
        }
    }
    writes
        .into_iter()
        .map(|(pin, parts)| Ok((pin, parse_value(parts)?)))
        .collect()
}

async fn write_all(
    state: &AppState,
    slot: &Arc<DeviceSlot>,
    writes: Vec<(Pin, OwnedValue)>,
) -> Result<(), ApiError> {
    if writes.is_empty() {
        return Err(ApiError::BadRequest(
            "no pin to update; use e.g. v1=100 or pin=V1&value=100".into(),
        ));
    }
    for (pin, value) in writes {
        let value = value
            .as_value()
            .map_err(|error| ApiError::BadRequest(error.to_string()))?;
        state
            .engine
            .app_write(slot, pin, &value, Origin::Http)
            .await?;
    }
    Ok(())
}

/// `GET /external/api/update?token=T&v1=100`, or `&pin=V1&value=100[&value=..]`, or
/// `&dataStreamId=1&value=100`.
pub async fn update(
    State(state): State<AppState>,
    TokenQuery { slot, pairs }: TokenQuery,
) -> Result<(), ApiError> {
    let writes = match pin_param(&pairs)? {
        Some(pin) => {
            let parts = pairs
                .iter()
                .filter(|(key, _)| key == "value")
                .map(|(_, value)| value.as_str());
            vec![(pin, parse_value(parts)?)]
        }
        None => pin_values(&pairs)?,
    };
    write_all(&state, &slot, writes).await
}

/// `GET /external/api/batch/update?token=T&v1=1&v2=2`.
pub async fn batch_update(
    State(state): State<AppState>,
    TokenQuery { slot, pairs }: TokenQuery,
) -> Result<(), ApiError> {
    write_all(&state, &slot, pin_values(&pairs)?).await
}

/// The value a pin reads as: its latest, or its datastream's default.
fn read_pin(slot: &DeviceSlot, pin: Pin) -> Result<OwnedValue, ApiError> {
    let datastream = slot.datastream(pin)?;
    if let Some(stored) = slot.value(pin) {
        return Ok((*stored.value).clone());
    }
    datastream
        .default
        .clone()
        .ok_or_else(|| ApiError::NotFound(format!("{pin} has no value yet")))
}

/// `GET /external/api/get?token=T&v1` (or `&dataStreamId=1`): plain text for one pin, a JSON
/// object for several.
pub async fn get(TokenQuery { slot, pairs }: TokenQuery) -> Result<Response, ApiError> {
    let pins: Vec<(String, Pin)> = pairs
        .iter()
        .filter(|(key, _)| key != "token")
        .map(|(key, value)| {
            if key == "dataStreamId" {
                return datastream_id_pin(value).map(|pin| (pin.to_string(), pin));
            }
            let name = if key == "pin" {
                value.as_str()
            } else {
                key.as_str()
            };
            parse_pin(name).map(|pin| (name.to_owned(), pin))
        })
        .collect::<Result<_, _>>()?;
    match pins.as_slice() {
        [] => Err(ApiError::BadRequest("no pin to read; use e.g. &v1".into())),
        [(_, pin)] => {
            let value = read_pin(&slot, *pin)?;
            Ok(match value.0.len() {
                1 => value.to_string().into_response(),
                _ => Json(value.text_parts()).into_response(),
            })
        }
        many => {
            let mut object = serde_json::Map::new();
            for (name, pin) in many {
                let value = read_pin(&slot, *pin)?;
                let text = value.text_parts();
                let json = if text.len() == 1 {
                    json!(text[0])
                } else {
                    json!(text)
                };
                object.insert(name.clone(), json);
            }
            Ok(Json(object).into_response())
        }
    }
}

/// `GET /external/api/isHardwareConnected?token=T`: `true` or `false`.
pub async fn is_connected(TokenQuery { slot, .. }: TokenQuery) -> Result<String, ApiError> {
    Ok(slot.is_online().to_string())
}

/// `GET /external/api/update/property?token=T&pin=V1&label=x[&color=..]`.
pub async fn update_property(
    State(state): State<AppState>,
    TokenQuery { slot, pairs }: TokenQuery,
) -> Result<(), ApiError> {
    let pin = param(&pairs, "pin");
    let pin =
        parse_pin(pin.ok_or_else(|| ApiError::BadRequest("the pin parameter is missing".into()))?)?;
    let mut set = 0;
    for (name, value) in pairs
        .iter()
        .filter(|(key, _)| key != "token" && key != "pin")
    {
        if name.is_empty() || name.len() > blynk_proto::MAX_NAME_LEN {
            return Err(ApiError::BadRequest(
                "a property name is 1 to 64 bytes".into(),
            ));
        }
        let record = PropertyRecord {
            pin,
            name: name.clone(),
            value: parse_value([value.as_str()])?,
        };
        state.engine.set_property(&slot, record)?.await?;
        set += 1;
    }
    if set == 0 {
        return Err(ApiError::BadRequest(
            "no property given; use e.g. &label=Kitchen".into(),
        ));
    }
    Ok(())
}

/// `GET /{token}/update/V1?value=X[&value=Y]` (classic).
pub async fn classic_update(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Path((token, pin)): Path<(String, String)>,
    Query(pairs): Pairs,
) -> Result<(), ApiError> {
    let slot = device_of(&state, peer, Some(&token))?;
    let parts = pairs
        .iter()
        .filter(|(key, _)| key == "value")
        .map(|(_, value)| value.as_str());
    write_all(&state, &slot, vec![(parse_pin(&pin)?, parse_value(parts)?)]).await
}

/// `PUT /{token}/update/V1` with a JSON array body `["X"]` (classic).
pub async fn classic_put(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Path((token, pin)): Path<(String, String)>,
    Json(parts): Json<Vec<serde_json::Value>>,
) -> Result<(), ApiError> {
    let slot = device_of(&state, peer, Some(&token))?;
    let texts: Vec<String> = parts
        .iter()
        .map(|part| match part {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect();
    let value = parse_value(texts.iter().map(String::as_str))?;
    write_all(&state, &slot, vec![(parse_pin(&pin)?, value)]).await
}

/// `GET /{token}/get/V1` -> `["42"]` (classic).
pub async fn classic_get(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Path((token, pin)): Path<(String, String)>,
) -> Result<Json<Vec<String>>, ApiError> {
    let slot = device_of(&state, peer, Some(&token))?;
    Ok(Json(read_pin(&slot, parse_pin(&pin)?)?.text_parts()))
}

/// `GET /{token}/isHardwareConnected` -> `true`/`false` (classic).
pub async fn classic_is_connected(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Path(token): Path<String>,
) -> Result<Json<bool>, ApiError> {
    let slot = device_of(&state, peer, Some(&token))?;
    Ok(Json(slot.is_online()))
}
