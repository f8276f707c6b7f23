//! What apps see: events serialized to JSON once, then shared by every watcher.

use std::sync::Arc;

use blynk_proto::Pin;
use serde_json::json;

use crate::model::{DeviceId, EventRecord, OwnedValue, StoredValue};

/// An app event, as the JSON text sent on app WebSockets.
pub type AppEvent = Arc<str>;

fn to_event(json: serde_json::Value) -> AppEvent {
    Arc::from(json.to_string())
}

/// A pin got a new value.
pub fn value(device: DeviceId, pin: Pin, stored: &StoredValue) -> AppEvent {
    to_event(json!({
        "type": "value",
        "device": device,
        "pin": pin.to_string(),
        "value": stored.value.to_json(),
        "version": stored.version,
        "at": stored.set_at,
        "origin": stored.origin.as_str(),
    }))
}

/// A device went online or offline.
pub fn presence(device: DeviceId, online: bool, at: i64) -> AppEvent {
    to_event(json!({ "type": "presence", "device": device, "online": online, "at": at }))
}

/// A device set a widget property.
pub fn property(device: DeviceId, pin: Pin, name: &str, value: &OwnedValue) -> AppEvent {
    to_event(json!({
        "type": "property",
        "device": device,
        "pin": pin.to_string(),
        "name": name,
        "value": value.to_json(),
    }))
}

/// A device logged an event.
pub fn logged(device: DeviceId, event: &EventRecord) -> AppEvent {
    to_event(json!({
        "type": "event",
        "device": device,
        "code": event.code,
        "description": event.description,
        "at": event.at,
    }))
}

/// A device was added or removed.
pub fn device_changed(device: DeviceId, exists: bool) -> AppEvent {
    to_event(
        json!({ "type": if exists { "device_added" } else { "device_removed" }, "device": device }),
    )
}
