//! What travels on the bus between nodes: the subjects (one per device for its events, one per
//! device for writes to its holder) and the JSON messages.

use serde::{Deserialize, Serialize};

use crate::engine::ErrorKind;
use crate::model::DeviceId;

/// Every device's events: a node subscribes once and keeps what concerns its apps.
pub const EVENTS_ALL: &str = "blynk.ev.*";
/// Templates and devices added or removed.
pub const META: &str = "blynk.meta";

/// The subject of a device's events.
pub fn events_subject(device: DeviceId) -> String {
    format!("blynk.ev.{device}")
}

/// The subject on which the node holding a device takes app writes for it.
pub fn write_subject(device: DeviceId) -> String {
    format!("blynk.dev.{device}.write")
}

/// The device of an events subject.
pub fn device_of(subject: &str) -> Option<DeviceId> {
    subject.strip_prefix("blynk.ev.")?.parse().ok()
}

/// An event about one device, published by the node where it happened.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceMessage {
    /// A pin got a new value (stored, or queued to the store).
    Value {
        /// The pin (`V0`).
        pin: String,
        /// The value as the store writes it.
        value: String,
        /// Its version.
        version: u64,
        /// When it was set (ms).
        at: i64,
        /// Who set it.
        origin: String,
    },
    /// The device's session opened or closed on `node`.
    Presence {
        /// The node holding (or no longer holding) the session.
        node: String,
        /// Whether it is online now.
        online: bool,
        /// When (ms).
        at: i64,
        /// Said by another node for `node`, which died: values it published may never have
        /// become durable, so nodes read the device's values from the store again.
        #[serde(default)]
        reaped: bool,
    },
    /// The device set a property.
    Property {
        /// The pin.
        pin: String,
        /// The property name.
        name: String,
        /// Its value, as the store writes it.
        value: String,
    },
    /// The device logged an event.
    Logged {
        /// The event code.
        code: String,
        /// Its description.
        description: Option<String>,
        /// When (ms).
        at: i64,
    },
    /// The device received the value of `pin` at `version` (and every older one).
    Delivered {
        /// The pin.
        pin: String,
        /// The version.
        version: u64,
    },
}

/// Templates and devices changed in the store.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetaMessage {
    /// Templates or devices were added: read the new ones from the store.
    Added,
    /// A device was deleted.
    Deleted {
        /// The device.
        device: DeviceId,
    },
}

/// An app write sent to the node holding the device.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The pin.
    pub pin: String,
    /// The value (already validated by the sender), as the store writes it.
    pub value: String,
    /// Who wrote it.
    pub origin: String,
}

/// The holder's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WriteReply {
    /// Stored (durable) and forwarded to the device.
    Stored {
        /// The version it got.
        version: u64,
        /// Whether the device was online.
        online: bool,
    },
    /// This node no longer holds the device: ask again.
    NotHeld,
    /// The holder refused or failed.
    Failed {
        /// Why.
        message: String,
        /// What kind of error it was, so the writer's client gets the same answer (a store
        /// that is down is "try again" on every node); internal when a node does not say.
        #[serde(default = "internal")]
        error_kind: ErrorKind,
    },
}

fn internal() -> ErrorKind {
    ErrorKind::Internal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_its_kind_across_nodes() {
        let reply = WriteReply::Failed {
            message: "database unavailable: restarting".into(),
            error_kind: ErrorKind::Unavailable,
        };
        let text = serde_json::to_string(&reply).unwrap();
        let Ok(WriteReply::Failed { error_kind, .. }) = serde_json::from_str(&text) else {
            panic!("{text}");
        };
        assert_eq!(error_kind, ErrorKind::Unavailable);
        // From a node that does not say.
        let Ok(WriteReply::Failed { error_kind, .. }) =
            serde_json::from_str(r#"{"kind":"failed","message":"x"}"#)
        else {
            panic!("an older reply");
        };
        assert_eq!(error_kind, ErrorKind::Internal);
    }

    #[test]
    fn subjects_name_the_device() {
        assert_eq!(device_of(&events_subject(42)), Some(42));
        assert_eq!(device_of("blynk.ev.x"), None);
        assert_eq!(write_subject(7), "blynk.dev.7.write");
    }
}
