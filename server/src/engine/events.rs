//! What apps see: the events the engine publishes, kept as plain data until a watcher sends them
//! (an event merged away in a slow watcher's queue never costs any JSON), then written as the
//! JSON objects of `docs/api.md`.

use std::sync::Arc;

use blynk_proto::Pin;
use serde::Serialize;

use crate::model::{DeviceId, EventRecord, OwnedScalar, OwnedValue, StoredValue};

/// One app event. Cloning one is cheap (reference counts and a few words), since the engine
/// hands a copy to every watcher of the device.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    /// A pin got a new value.
    Value {
        /// The device.
        device: DeviceId,
        /// The pin.
        pin: Pin,
        /// The value with its version, time and origin.
        stored: StoredValue,
    },
    /// A device went online or offline.
    Presence {
        /// The device.
        device: DeviceId,
        /// Whether it is online now.
        online: bool,
        /// When (ms).
        at: i64,
    },
    /// A device set a widget property.
    Property(Arc<PropertyChange>),
    /// A device logged an event.
    Logged {
        /// The device.
        device: DeviceId,
        /// The event.
        event: Arc<EventRecord>,
    },
    /// A device was added (`exists`) or removed.
    DeviceChanged {
        /// The device.
        device: DeviceId,
        /// Whether it was added.
        exists: bool,
    },
}

/// A property a device set.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyChange {
    /// The device.
    pub device: DeviceId,
    /// The pin the property belongs to.
    pub pin: Pin,
    /// The property name.
    pub name: String,
    /// Its value.
    pub value: OwnedValue,
}

/// A pin got a new value.
pub fn value(device: DeviceId, pin: Pin, stored: &StoredValue) -> AppEvent {
    AppEvent::Value {
        device,
        pin,
        stored: stored.clone(),
    }
}

/// A device went online or offline.
pub fn presence(device: DeviceId, online: bool, at: i64) -> AppEvent {
    AppEvent::Presence { device, online, at }
}

/// A device set a widget property.
pub fn property(device: DeviceId, pin: Pin, name: &str, value: &OwnedValue) -> AppEvent {
    AppEvent::Property(Arc::new(PropertyChange {
        device,
        pin,
        name: name.to_owned(),
        value: value.clone(),
    }))
}

/// A device logged an event.
pub fn logged(device: DeviceId, event: &EventRecord) -> AppEvent {
    AppEvent::Logged {
        device,
        event: Arc::new(event.clone()),
    }
}

/// A device was added or removed.
pub fn device_changed(device: DeviceId, exists: bool) -> AppEvent {
    AppEvent::DeviceChanged { device, exists }
}

impl AppEvent {
    /// The pin whose newest value replaces this event in a watcher that fell behind; `None`
    /// for the events that are never merged away.
    pub fn coalesce_key(&self) -> Option<(DeviceId, Pin)> {
        match self {
            AppEvent::Value { device, pin, .. } => Some((*device, *pin)),
            _ => None,
        }
    }

    /// Appends the event's JSON object to `out`; `coalesced` is how many older values of the
    /// pin it replaced (written only when above zero).
    pub fn write_json(&self, coalesced: u32, out: &mut Vec<u8>) {
        let json = match self {
            AppEvent::Value {
                device,
                pin,
                stored,
            } => EventJson::Value {
                device: *device,
                pin: PinText(*pin),
                value: ValueJson(&stored.value),
                version: stored.version,
                at: stored.set_at,
                origin: stored.origin.as_str(),
                coalesced,
            },
            AppEvent::Presence { device, online, at } => EventJson::Presence {
                device: *device,
                online: *online,
                at: *at,
            },
            AppEvent::Property(change) => EventJson::Property {
                device: change.device,
                pin: PinText(change.pin),
                name: &change.name,
                value: ValueJson(&change.value),
            },
            AppEvent::Logged { device, event } => EventJson::Event {
                device: *device,
                code: &event.code,
                description: event.description.as_deref(),
                at: event.at,
            },
            AppEvent::DeviceChanged {
                device,
                exists: true,
            } => EventJson::DeviceAdded { device: *device },
            AppEvent::DeviceChanged {
                device,
                exists: false,
            } => EventJson::DeviceRemoved { device: *device },
        };
        // Writing into a `Vec` cannot fail and every field serializes.
        let _ = serde_json::to_writer(out, &json);
    }

    /// The event's JSON text.
    pub fn to_json_text(&self) -> String {
        let mut out = Vec::with_capacity(128);
        self.write_json(0, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The wire form of an event, borrowed from it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventJson<'a> {
    Value {
        device: DeviceId,
        pin: PinText,
        value: ValueJson<'a>,
        version: u64,
        at: i64,
        origin: &'static str,
        #[serde(skip_serializing_if = "is_zero")]
        coalesced: u32,
    },
    Presence {
        device: DeviceId,
        online: bool,
        at: i64,
    },
    Property {
        device: DeviceId,
        pin: PinText,
        name: &'a str,
        value: ValueJson<'a>,
    },
    Event {
        device: DeviceId,
        code: &'a str,
        description: Option<&'a str>,
        at: i64,
    },
    DeviceAdded {
        device: DeviceId,
    },
    DeviceRemoved {
        device: DeviceId,
    },
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// A pin as its name (`V0`).
struct PinText(Pin);

impl Serialize for PinText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// A value as [`OwnedValue::to_json`] writes it (one part alone, several as an array), without
/// building a JSON tree first.
struct ValueJson<'a>(&'a OwnedValue);

impl Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.0.as_slice() {
            [one] => ScalarJson(one).serialize(serializer),
            many => serializer.collect_seq(many.iter().map(ScalarJson)),
        }
    }
}

struct ScalarJson<'a>(&'a OwnedScalar);

impl Serialize for ScalarJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            OwnedScalar::Int(int) => serializer.serialize_i64(*int),
            // JSON has no NaN or infinity; `to_json` writes them as null too.
            OwnedScalar::Double(double) if double.is_finite() => serializer.serialize_f64(*double),
            OwnedScalar::Double(_) => serializer.serialize_none(),
            OwnedScalar::Text(text) => serializer.serialize_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;

    #[test]
    fn a_value_event_writes_the_fields_apps_read() {
        let stored = StoredValue {
            value: Arc::new(OwnedValue(vec![
                OwnedScalar::Int(1),
                OwnedScalar::Double(2.5),
                OwnedScalar::Text("a\"b".into()),
            ])),
            version: 7,
            set_at: 1000,
            origin: Origin::Device,
        };
        let event = value(3, Pin::Virtual(4), &stored);
        let json: serde_json::Value = serde_json::from_str(&event.to_json_text()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "value", "device": 3, "pin": "V4", "value": [1, 2.5, "a\"b"],
                "version": 7, "at": 1000, "origin": "device",
            })
        );
        let mut out = Vec::new();
        event.write_json(5, &mut out);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["coalesced"], 5);
        assert_eq!(json["value"], stored.value.to_json());
    }

    #[test]
    fn other_events_keep_their_wire_names() {
        let record = EventRecord {
            code: "hot".into(),
            description: None,
            at: 5,
        };
        let texts = [
            presence(1, true, 9).to_json_text(),
            property(
                1,
                Pin::Virtual(0),
                "color",
                &OwnedValue(vec![OwnedScalar::Int(3)]),
            )
            .to_json_text(),
            logged(1, &record).to_json_text(),
            device_changed(1, true).to_json_text(),
            device_changed(1, false).to_json_text(),
        ];
        let types: Vec<String> = texts
            .iter()
            .map(|text| {
                let json: serde_json::Value = serde_json::from_str(text).unwrap();
                json["type"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            types,
            [
                "presence",
                "property",
                "event",
                "device_added",
                "device_removed"
            ]
        );
        assert!(texts[0].contains(r#""online":true"#));
        assert!(texts[1].contains(r#""value":3"#));
    }
}
