//! The server's owned domain records: values, templates, devices and what the store keeps.
//!
//! `blynk-proto` types borrow from frames; these own their data so they can live in the state
//! cache, cross tasks and go to the store.

use std::sync::Arc;

use blynk_proto::{Datastream, DatastreamKind, DatastreamType, Pin, Scalar, Value, ValueError};
use serde::{Deserialize, Serialize};

/// A device's id in the store.
pub type DeviceId = i64;
/// A template's id in the store.
pub type TemplateId = i64;

/// Milliseconds since the Unix epoch, the server's clock for every record.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

/// One owned part of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedScalar {
    /// A whole number.
    Int(i64),
    /// A finite number.
    Double(f64),
    /// Text.
    Text(String),
}

/// An owned value: one or more parts.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedValue(pub Vec<OwnedScalar>);

impl OwnedValue {
    /// Copies a borrowed value.
    pub fn from_value(value: &Value<'_>) -> Self {
        OwnedValue(
            value
                .parts()
                .iter()
                .map(|part| match part {
                    Scalar::Int(int) => OwnedScalar::Int(*int),
                    Scalar::Double(double) => OwnedScalar::Double(*double),
                    Scalar::Text(text) => OwnedScalar::Text(text.as_str().to_owned()),
                })
                .collect(),
        )
    }

    /// Borrows this value as a protocol value (checked against the protocol's bounds).
    pub fn as_value(&self) -> Result<Value<'_>, ValueError> {
        let mut parts = Vec::with_capacity(self.0.len());
        for part in &self.0 {
            parts.push(match part {
                OwnedScalar::Int(int) => Scalar::Int(*int),
                OwnedScalar::Double(double) => Scalar::Double(*double),
                OwnedScalar::Text(text) => Scalar::Text(blynk_proto::value::Text::new(text)?),
            });
        }
        Value::from_parts(&parts)
    }

    /// Reads text parts the way the classic protocol and the HTTP API carry them.
    pub fn from_text_parts<'a, I: IntoIterator<Item = &'a str>>(
        parts: I,
    ) -> Result<Self, ValueError> {
        Value::from_classic_parts(parts).map(|value| OwnedValue::from_value(&value))
    }

    /// The parts as the classic protocol and the plain-text HTTP API print them.
    pub fn text_parts(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|part| match part {
                OwnedScalar::Int(int) => int.to_string(),
                OwnedScalar::Double(double) => double.to_string(),
                OwnedScalar::Text(text) => text.clone(),
            })
            .collect()
    }

    /// A JSON form: a scalar for one part, an array for several.
    pub fn to_json(&self) -> serde_json::Value {
        let part = |scalar: &OwnedScalar| match scalar {
            OwnedScalar::Int(int) => serde_json::Value::from(*int),
            OwnedScalar::Double(double) => serde_json::Value::from(*double),
            OwnedScalar::Text(text) => serde_json::Value::from(text.as_str()),
        };
        match self.0.as_slice() {
            [one] => part(one),
            many => serde_json::Value::Array(many.iter().map(part).collect()),
        }
    }

    /// Reads the JSON form; strings are read like classic text (`"1"` is the integer 1).
    pub fn from_json(json: &serde_json::Value) -> Result<Self, String> {
        fn part(json: &serde_json::Value) -> Result<OwnedScalar, String> {
            match json {
                serde_json::Value::Number(number) => match (number.as_i64(), number.as_f64()) {
                    (Some(int), _) => Ok(OwnedScalar::Int(int)),
                    (None, Some(double)) if double.is_finite() => Ok(OwnedScalar::Double(double)),
                    _ => Err(format!("{number} is not a finite number")),
                },
                serde_json::Value::String(text) => {
                    let value = OwnedValue::from_text_parts([text.as_str()])
                        .map_err(|error| error.to_string())?;
                    value
                        .0
                        .into_iter()
                        .next()
                        .ok_or_else(|| "empty value".to_string())
                }
                serde_json::Value::Bool(flag) => Ok(OwnedScalar::Int(i64::from(*flag))),
                other => Err(format!(
                    "a value part must be a number or a string, not {other}"
                )),
            }
        }
        let parts = match json {
            serde_json::Value::Array(items) => {
                items.iter().map(part).collect::<Result<Vec<_>, _>>()?
            }
            single => vec![part(single)?],
        };
        let value = OwnedValue(parts);
        value.as_value().map_err(|error| error.to_string())?;
        Ok(value)
    }

    /// Serialized for the store (the JSON form).
    pub fn to_store_text(&self) -> String {
        self.to_json().to_string()
    }

    /// Read back from the store; text parts stay text.
    pub fn from_store_text(text: &str) -> Option<Self> {
        let json: serde_json::Value = serde_json::from_str(text).ok()?;
        let part = |json: &serde_json::Value| match json {
            serde_json::Value::Number(number) => match number.as_i64() {
                Some(int) => Some(OwnedScalar::Int(int)),
                None => number.as_f64().map(OwnedScalar::Double),
            },
            serde_json::Value::String(text) => Some(OwnedScalar::Text(text.clone())),
            _ => None,
        };
        let parts = match &json {
            serde_json::Value::Array(items) => {
                items.iter().map(part).collect::<Option<Vec<_>>>()?
            }
            single => vec![part(single)?],
        };
        Some(OwnedValue(parts))
    }
}

impl std::fmt::Display for OwnedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text_parts().join(","))
    }
}

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The native blynk-proto protocol.
    Native,
    /// The classic Blynk protocol (TCP or WebSocket).
    Classic,
    /// The MQTT 3.1.1 device API.
    Mqtt,
}

/// Who set a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The device itself.
    Device,
    /// An app (dashboard, command line) through the app API.
    App,
    /// The HTTP device API.
    Http,
    /// Another device, through a classic BRIDGE channel.
    Bridge,
}

impl Origin {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Device => "device",
            Origin::App => "app",
            Origin::Http => "http",
            Origin::Bridge => "bridge",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "device" => Some(Origin::Device),
            "app" => Some(Origin::App),
            "http" => Some(Origin::Http),
            "bridge" => Some(Origin::Bridge),
            _ => None,
        }
    }
}

/// The latest value of one pin.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredValue {
    /// The value.
    pub value: Arc<OwnedValue>,
    /// The per-device version it got.
    pub version: u64,
    /// When it was set (server time, ms), or when the device made it for offline writes.
    pub set_at: i64,
    /// Who set it.
    pub origin: Origin,
}

/// A latest value has the columns of a history point (see [`HistoryPoint::from_store_columns`]).
impl From<HistoryPoint> for StoredValue {
    fn from(point: HistoryPoint) -> Self {
        StoredValue {
            value: Arc::new(point.value),
            version: point.version,
            set_at: point.set_at,
            origin: point.origin,
        }
    }
}

/// An owned datastream definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatastreamDef {
    /// `V0`, `D13`, `A0`.
    #[serde(with = "pin_text")]
    pub pin: Pin,
    /// A name for people.
    pub name: String,
    /// `integer`, `double`, `string` or `enum`.
    #[serde(rename = "type", with = "type_text")]
    pub value_type: DatastreamType,
    /// Numbers below are raised to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Numbers above are lowered to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// What a sync returns before any value was stored.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_value"
    )]
    pub default: Option<OwnedValue>,
    /// "Sync with latest server value".
    #[serde(default)]
    pub sync: bool,
    /// `state` (default) or `command`.
    #[serde(default, skip_serializing_if = "is_state")]
    pub kind: KindDef,
    /// For commands: seconds an undelivered command stays pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// `state` or `command`, as written in template files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindDef {
    /// The latest value is the truth.
    #[default]
    State,
    /// A momentary action.
    Command,
}

fn is_state(kind: &KindDef) -> bool {
    *kind == KindDef::State
}

/// Default lifetime of a pending command, when the template gives none.
pub const DEFAULT_COMMAND_TTL_SECONDS: u32 = 60;

impl DatastreamDef {
    /// The protocol form, for validation.
    pub fn as_datastream(&self) -> Datastream<'_> {
        Datastream {
            pin: self.pin,
            name: &self.name,
            value_type: self.value_type,
            min: self.min,
            max: self.max,
            default: None,
            sync: self.sync,
            kind: match self.kind {
                KindDef::State => DatastreamKind::State,
                KindDef::Command => DatastreamKind::Command {
                    ttl_seconds: self.ttl_seconds(),
                },
            },
        }
    }

    /// Whether this is a momentary command.
    pub fn is_command(&self) -> bool {
        self.kind == KindDef::Command
    }

    /// The command lifetime.
    pub fn ttl_seconds(&self) -> u32 {
        self.ttl.unwrap_or(DEFAULT_COMMAND_TTL_SECONDS)
    }

    /// Validates a value against the datastream and returns what to store: clamped numbers,
    /// and for string datastreams every part as text.
    pub fn normalize(
        &self,
        value: &Value<'_>,
    ) -> Result<OwnedValue, blynk_proto::datastream::ValidationError> {
        let checked = self.as_datastream().validate(self.pin, value.clone())?;
        let mut owned = OwnedValue::from_value(&checked);
        if self.value_type == DatastreamType::String {
            owned = OwnedValue(
                owned
                    .text_parts()
                    .into_iter()
                    .map(OwnedScalar::Text)
                    .collect(),
            );
        }
        Ok(owned)
    }

    /// Checks the definition itself.
    pub fn check(&self) -> Result<(), String> {
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(format!("{}: min {min} is above max {max}", self.pin));
        }
        if let Some(default) = &self.default {
            let value = default
                .as_value()
                .map_err(|error| format!("{}: default: {error}", self.pin))?;
            self.as_datastream()
                .validate(self.pin, value)
                .map_err(|error| format!("{}: default: {error}", self.pin))?;
        }
        if self.name.is_empty() || self.name.len() > blynk_proto::MAX_NAME_LEN {
            return Err(format!(
                "{}: a name is 1 to {} bytes",
                self.pin,
                blynk_proto::MAX_NAME_LEN
            ));
        }
        Ok(())
    }
}

/// A template: a named set of datastreams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Its id (0 before it is stored).
    #[serde(default)]
    pub id: TemplateId,
    /// Its unique name.
    pub name: String,
    /// Its datastreams.
    #[serde(default, rename = "datastream")]
    pub datastreams: Vec<DatastreamDef>,
}

impl Template {
    /// The datastream bound to `pin`.
    pub fn datastream(&self, pin: Pin) -> Option<&DatastreamDef> {
        self.datastreams
            .iter()
            .find(|datastream| datastream.pin == pin)
    }

    /// Checks names, pins and every datastream.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > blynk_proto::MAX_NAME_LEN {
            return Err(format!(
                "a template name is 1 to {} bytes",
                blynk_proto::MAX_NAME_LEN
            ));
        }
        let mut pins: Vec<Pin> = self.datastreams.iter().map(|d| d.pin).collect();
        pins.sort();
        if let Some(pair) = pins.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("pin {} is bound twice", pair[0]));
        }
        self.datastreams.iter().try_for_each(DatastreamDef::check)
    }
}

/// A device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Its id.
    pub id: DeviceId,
    /// A name for people.
    pub name: String,
    /// Its template.
    pub template_id: TemplateId,
    /// Its secret auth token.
    pub token: String,
    /// When it was last connected (ms), if ever.
    pub last_seen: Option<i64>,
}

/// A widget property set by a device.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyRecord {
    /// The pin.
    pub pin: Pin,
    /// The property name.
    pub name: String,
    /// Its value.
    pub value: OwnedValue,
}

/// An event logged by a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// The event code.
    pub code: String,
    /// The description.
    pub description: Option<String>,
    /// When (ms).
    pub at: i64,
}

/// A past value of a pin.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    /// The value.
    pub value: OwnedValue,
    /// Its version.
    pub version: u64,
    /// When it was set (ms).
    pub set_at: i64,
    /// Who set it.
    pub origin: Origin,
}

impl HistoryPoint {
    /// A stored row's columns read back, a history row's or a latest value's (either store
    /// keeps the value and origin as text and the version as a signed integer); `None` when a
    /// column is unreadable.
    pub fn from_store_columns(
        value: &str,
        version: i64,
        set_at: i64,
        origin: &str,
    ) -> Option<Self> {
        Some(HistoryPoint {
            value: OwnedValue::from_store_text(value)?,
            version: version as u64,
            set_at,
            origin: Origin::parse(origin)?,
        })
    }
}

/// An app write to a command datastream waiting for its device.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCommand {
    /// Its id in the store.
    pub id: i64,
    /// The device.
    pub device_id: DeviceId,
    /// The pin.
    pub pin: Pin,
    /// The value.
    pub value: Arc<OwnedValue>,
    /// The version it got.
    pub version: u64,
    /// When it stops being deliverable (ms).
    pub expires_at: i64,
}

mod pin_text {
    use blynk_proto::Pin;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(pin: &Pin, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(pin)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Pin, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|error| de::Error::custom(format!("pin `{text}`: {error}")))
    }
}

mod type_text {
    use blynk_proto::DatastreamType;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(
        value_type: &DatastreamType,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(super::type_name(*value_type))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DatastreamType, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_type(&text).ok_or_else(|| {
            de::Error::custom(format!(
                "type `{text}`: expected integer, double, string or enum"
            ))
        })
    }
}

mod optional_value {
    use super::OwnedValue;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

    pub fn serialize<S: Serializer>(
        value: &Option<OwnedValue>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value
            .as_ref()
            .map(OwnedValue::to_json)
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OwnedValue>, D::Error> {
        let json = Option::<serde_json::Value>::deserialize(deserializer)?;
        json.map(|json| OwnedValue::from_json(&json).map_err(de::Error::custom))
            .transpose()
    }
}

/// The name of a datastream type in files and the API.
pub fn type_name(value_type: DatastreamType) -> &'static str {
    match value_type {
        DatastreamType::Integer => "integer",
        DatastreamType::Double => "double",
        DatastreamType::String => "string",
        DatastreamType::Enum => "enum",
    }
}

/// Reads a datastream type name.
pub fn parse_type(text: &str) -> Option<DatastreamType> {
    match text {
        "integer" | "int" => Some(DatastreamType::Integer),
        "double" | "float" => Some(DatastreamType::Double),
        "string" | "text" => Some(DatastreamType::String),
        "enum" => Some(DatastreamType::Enum),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_value_survives_the_store_text() {
        let value = OwnedValue::from_text_parts(["1", "2.5", "abc"]).unwrap();
        assert_eq!(
            OwnedValue::from_store_text(&value.to_store_text()),
            Some(value)
        );
    }
}
