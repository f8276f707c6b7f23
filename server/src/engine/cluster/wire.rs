//! What travels on the bus between nodes: the subjects (one per device for its events, one per
//! device for writes to its holder) and the JSON messages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::error::ErrorKind;
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

/// How long a node waits for the holder's answer to a write (the bus client's request timeout).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after it was sent the holder still serves a write request: half the sender's
/// [`WRITE_TIMEOUT`], so that nodes whose clocks differ by up to a second never apply a write
/// its sender has already reported failed.
pub const SERVE_WITHIN: Duration = Duration::from_secs(1);

/// An app write sent to the node holding the device.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The pin.
    pub pin: String,
    /// The value (already validated by the sender), as the store writes it.
    pub value: String,
    /// Who wrote it.
    pub origin: String,
    /// When the holder stops serving it (ms since the epoch, the sender's clock). The NATS
    /// client keeps what it is asked to send while the bus is away and sends it once the bus is
    /// back, seconds after its sender gave up and answered the app with an error. `None` from a
    /// node of an earlier release: served whenever it arrives.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl WriteRequest {
    /// A request sent at `now` (ms since the epoch).
    pub fn new(pin: String, value: String, origin: String, now: i64) -> Self {
        WriteRequest {
            pin,
            value,
            origin,
            expires_at: Some(now + SERVE_WITHIN.as_millis() as i64),
        }
    }

    /// Whether its sender has given up on it by `now` (ms since the epoch).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|deadline| now > deadline)
    }
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

    #[test]
    fn a_write_request_expires_before_its_sender_gives_up() {
        let request = WriteRequest::new("V1".into(), "3".into(), "app".into(), 10_000);
        assert!(!request.is_expired(10_000 + SERVE_WITHIN.as_millis() as i64));
        assert!(request.is_expired(10_001 + SERVE_WITHIN.as_millis() as i64));
        assert!(
            SERVE_WITHIN < WRITE_TIMEOUT,
            "refused before the sender stops waiting"
        );
        let from_an_earlier_release: WriteRequest =
            serde_json::from_str(r#"{"pin":"V1","value":"3","origin":"app"}"#).unwrap();
        assert!(!from_an_earlier_release.is_expired(i64::MAX));
    }
}
