//! The timestamped upload of Blynk IoT: `POST /external/api/batch/update?token=T&pin=V1`
//! (or `&dataStreamId=1`) with a JSON body `[[unix_ms, value], ...]`. Each point is a write of
//! the device measured at its time (SPEC 3.14): applied oldest first, a point older than the
//! pin's latest value goes to the history only, with its time. The upload is the device's own
//! data: like a device write, it is not sent back to the device.
//!
//! Limits, each refused with a JSON error before anything is written: [`MAX_POINTS_PER_REQUEST`]
//! points per request (400), [`MAX_POINTS_PER_DAY`] points per device per UTC day (429; counted
//! in memory, from the server's start), timestamps no older than [`MAX_AGE_DAYS`] days and no
//! more than [`MAX_FUTURE_SKEW_MS`] ahead of the server's clock (400).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use blynk_proto::Pin;
use serde_json::Value as Json;

use super::device_api::{device_of, parse_value, pin_param};
use super::{ApiError, AppState, PeerAddr};
use crate::engine::DeviceSlot;
use crate::model::{DeviceId, Origin, OwnedValue};

/// The most points one request may carry.
pub const MAX_POINTS_PER_REQUEST: usize = 1000;
/// The most points one device may upload per UTC day (Blynk IoT's figure).
pub const MAX_POINTS_PER_DAY: u32 = 10_000;
/// The oldest a point may be, in days (Blynk IoT's month).
pub const MAX_AGE_DAYS: i64 = 30;
/// How far ahead of the server's clock a point may be (clock skew).
pub const MAX_FUTURE_SKEW_MS: i64 = 60_000;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Points uploaded per device today.
#[derive(Default)]
pub struct UploadQuota {
    today: Mutex<HashMap<DeviceId, (i64, u32)>>,
}

impl UploadQuota {
    /// Counts `points` against the device's day, or refuses them all.
    fn take(&self, device: DeviceId, points: usize, now: i64) -> Result<(), ApiError> {
        let day = now.div_euclid(DAY_MS);
        let mut today = self
            .today
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Yesterday's counts are of no use any more.
        today.retain(|_, (counted_day, _)| *counted_day == day);
        let used = today.get(&device).map_or(0, |(_, used)| *used);
        let points = u32::try_from(points).unwrap_or(u32::MAX);
        let total = used.saturating_add(points);
        if total > MAX_POINTS_PER_DAY {
            return Err(ApiError::QuotaExceeded(format!(
                "daily upload limit of {MAX_POINTS_PER_DAY} points reached ({used} used today)"
            )));
        }
        today.insert(device, (day, total));
        Ok(())
    }
}

/// `POST /external/api/batch/update?token=T&pin=V1` with `[[unix_ms, value], ...]`.
pub async fn upload(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<(), ApiError> {
    let slot = device_of(&state, peer, super::device_api::token_of(&pairs))?;
    let pin = pin_param(&pairs)?.ok_or_else(|| {
        ApiError::BadRequest("the pin (or dataStreamId) parameter is missing".into())
    })?;
    let now = state.engine.clock().unix_ms();
    let mut points = parse_points(&slot, pin, &body, now)?;
    state.uploads.take(slot.device.id, points.len(), now)?;
    // Oldest first, so each point is ordered against the ones before it; a stable sort keeps
    // the request's order among equal times (the last one wins).
    points.sort_by_key(|(at, _)| *at);
    let mut durable = Vec::with_capacity(points.len());
    for (at, value) in &points {
        let value = value
            .as_value()
            .map_err(|error| ApiError::BadRequest(error.to_string()))?;
        durable.push(
            state
                .engine
                .device_write_at(&slot, pin, &value, Some(*at), Origin::Http)?,
        );
    }
    for write in durable {
        write.await?;
    }
    Ok(())
}

/// Reads and checks every point before anything is written.
fn parse_points(
    slot: &DeviceSlot,
    pin: Pin,
    body: &[u8],
    now: i64,
) -> Result<Vec<(i64, OwnedValue)>, ApiError> {
    let datastream = slot.datastream(pin)?;
    let json: Json = serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!(
            "the body is not JSON `[[unix_ms, value], ...]`: {error}"
        ))
    })?;
    let Json::Array(items) = json else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON array of [unix_ms, value] pairs".into(),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest("no point to upload".into()));
    }
    if items.len() > MAX_POINTS_PER_REQUEST {
        return Err(ApiError::BadRequest(format!(
            "{} points in one request; the limit is {MAX_POINTS_PER_REQUEST}",
            items.len()
        )));
    }
    let oldest = now - MAX_AGE_DAYS * DAY_MS;
    let newest = now + MAX_FUTURE_SKEW_MS;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let bad = |why: &str| ApiError::BadRequest(format!("point {index}: {why}"));
            let Some([at, value]) = item.as_array().map(Vec::as_slice) else {
                return Err(bad("expected [unix_ms, value]"));
            };
            let at = at
                .as_i64()
                .ok_or_else(|| bad("the time is not an integer of milliseconds"))?;
            if at < oldest {
                return Err(bad(&format!(
                    "the time is more than {MAX_AGE_DAYS} days old"
                )));
            }
            if at > newest {
                return Err(bad("the time is in the future"));
            }
            let text = match value {
                Json::String(text) => text.clone(),
                Json::Number(number) => number.to_string(),
                _ => return Err(bad("the value is not a number or a string")),
            };
            let value = parse_value([text.as_str()]).map_err(|error| bad(&error.to_string()))?;
            {
                let checked = value.as_value().map_err(|error| bad(&error.to_string()))?;
                datastream
                    .normalize(&checked)
                    .map_err(|error| bad(&error.to_string()))?;
            }
            Ok((at, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_quota_refuses_a_request_that_would_pass_it_and_resets_the_next_day() {
        let quota = UploadQuota::default();
        let day = 20_000 * DAY_MS;
        assert!(quota.take(1, 9_000, day).is_ok());
        assert!(matches!(
            quota.take(1, 1_001, day + 10),
            Err(ApiError::QuotaExceeded(_))
        ));
        assert!(quota.take(2, 1_000, day).is_ok(), "per device");
        assert!(quota.take(1, 1_000, day + 20).is_ok(), "exactly the limit");
        assert!(quota.take(1, 1, day + 30).is_err());
        assert!(quota.take(1, 1_000, day + DAY_MS).is_ok(), "a new day");
    }
}
