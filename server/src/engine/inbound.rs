//! With several nodes, messages between the bus and the engine: what this node publishes
//! ([`encode`], which the bus's publisher calls) and what it does with what other nodes publish (values, presence, properties, events, deliveries,
//! templates and devices added or removed). What arrives here is only shown to this node's apps
//! and sessions, never published again.

use std::sync::Arc;

use blynk_proto::Pin;

use super::cluster::wire::{self, DeviceMessage, MetaMessage};
use super::delivery::{Delivery, Outbound};
use super::events::{self, AppEvent};
use super::membership::Outgoing;
use super::{DeviceSlot, Engine, lock};
use crate::model::{EventRecord, Origin, OwnedValue, PropertyRecord, StoredValue};
use crate::store::settle;

/// The subject and body of a message for the bus.
pub(super) fn encode(node: &str, message: Outgoing) -> (String, Vec<u8>) {
    let (subject, body) = match message {
        Outgoing::Event(AppEvent::Value {
            device,
            pin,
            stored,
        }) => (
            wire::events_subject(device),
            device_body(DeviceMessage::Value {
                pin: pin.to_string(),
                value: stored.value.to_store_text(),
                version: stored.version,
                at: stored.set_at,
                origin: stored.origin.as_str().to_owned(),
            }),
        ),
        Outgoing::Event(AppEvent::Property(change)) => (
            wire::events_subject(change.device),
            device_body(DeviceMessage::Property {
                pin: change.pin.to_string(),
                name: change.name.clone(),
                value: change.value.to_store_text(),
            }),
        ),
        Outgoing::Event(AppEvent::Logged { device, event }) => (
            wire::events_subject(device),
            device_body(DeviceMessage::Logged {
                code: event.code.clone(),
                description: event.description.clone(),
                at: event.at,
            }),
        ),
        Outgoing::Event(AppEvent::Presence { device, online, at })
        | Outgoing::Presence(device, online, at) => (
            wire::events_subject(device),
            device_body(DeviceMessage::Presence {
                node: node.to_owned(),
                online,
                at,
                reaped: false,
            }),
        ),
        Outgoing::Reaped(device, dead, at) => (
            wire::events_subject(device),
            device_body(DeviceMessage::Presence {
                node: dead,
                online: false,
                at,
                reaped: true,
            }),
        ),
        Outgoing::Delivered(device, pin, version) => (
            wire::events_subject(device),
            device_body(DeviceMessage::Delivered {
                pin: pin.to_string(),
                version,
            }),
        ),
        Outgoing::Event(AppEvent::DeviceChanged { .. }) => {
            (wire::META.to_owned(), meta_body(MetaMessage::Added))
        }
        Outgoing::Meta(message) => (wire::META.to_owned(), meta_body(message)),
    };
    (subject, body)
}

fn device_body(message: DeviceMessage) -> Vec<u8> {
    serde_json::to_vec(&message).unwrap_or_default()
}

fn meta_body(message: MetaMessage) -> Vec<u8> {
    serde_json::to_vec(&message).unwrap_or_default()
}

impl Engine {
    /// A message another node published about a device.
    pub(super) fn on_device_message(&self, subject: &str, payload: &[u8]) {
        let Some(device) = wire::device_of(subject) else {
            return;
        };
        let message = match serde_json::from_slice::<DeviceMessage>(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(subject, %error, "malformed bus message ignored");
                return;
            }
        };
        let Some(slot) = self.device(device) else {
            // A device this node does not know yet: the added-device notice brings it, with
            // its values from the store.
            return;
        };
        match message {
            DeviceMessage::Value {
                pin,
                value,
                version,
                at,
                origin,
            } => {
                let (Ok(pin), Some(value), Some(origin)) = (
                    pin.parse::<Pin>(),
                    OwnedValue::from_store_text(&value),
                    Origin::parse(&origin),
                ) else {
                    tracing::warn!(
                        subject,
                        "bus value with a malformed pin, value or origin ignored"
                    );
                    return;
                };
                let stored = StoredValue {
                    value: Arc::new(value),
                    version,
                    set_at: at,
                    origin,
                };
                self.apply_remote_value(&slot, pin, stored);
            }
            DeviceMessage::Presence {
                node,
                online,
                at,
                reaped,
            } => {
                self.remote_presence(device, &node, online, at);
                if reaped && let Some(cluster) = self.cluster.get() {
                    cluster.mark_stale(device);
                }
            }
            DeviceMessage::Property { pin, name, value } => {
                let (Ok(pin), Some(value)) =
                    (pin.parse::<Pin>(), OwnedValue::from_store_text(&value))
                else {
                    return;
                };
                let mut state = slot.lock();
                slot.publish(events::property(device, pin, &name, &value));
                match state
                    .properties
                    .iter_mut()
                    .find(|p| p.pin == pin && p.name == name)
                {
                    Some(existing) => existing.value = value,
                    None => state.properties.push(PropertyRecord { pin, name, value }),
                }
            }
            DeviceMessage::Logged {
                code,
                description,
                at,
            } => {
                let _state = slot.lock();
                slot.publish(events::logged(
                    device,
                    &EventRecord {
                        code,
                        description,
                        at,
                    },
                ));
            }
            DeviceMessage::Delivered { pin, version } => {
                let Ok(pin) = pin.parse::<Pin>() else {
                    return;
                };
                let mut state = slot.lock();
                state
                    .waiters
                    .settle(pin, Delivery::Delivered, |waiting| waiting <= version);
                let delivered = &mut state.cluster_mut().delivered;
                match delivered.iter_mut().find(|(known, _)| *known == pin) {
                    Some((_, highest)) => *highest = (*highest).max(version),
                    None => delivered.push((pin, version)),
                }
            }
        }
    }

    /// A value stored elsewhere: cached and shown if newer than the cached one, and sent on to
    /// the device if its session is here (a write stored by a node that found no holder while
    /// this one was taking the device).
    pub(super) fn apply_remote_value(&self, slot: &DeviceSlot, pin: Pin, stored: StoredValue) {
        let mut state = slot.lock();
        if stored.origin == Origin::Device {
            // The device wrote the pin: older app writes will not reach it.
            state.waiters.settle(pin, Delivery::Superseded, |waiting| {
                waiting < stored.version
            });
        }
        if state
            .values
            .get(&pin)
            .is_some_and(|current| current.version >= stored.version)
        {
            return;
        }
        state.versions.observe(stored.version);
        if let Some(session) = &state.session
            && stored.origin != Origin::Device
        {
            session.forward(Outbound {
                pin,
                value: stored.value.clone(),
                version: stored.version,
                command: None,
            });
        }
        slot.publish(events::value(slot.device.id, pin, &stored));
        state.values.insert(pin, stored);
    }

    /// A device's session opened (`online`) or closed on `node`. A device that opened a
    /// session elsewhere while one is still open here has moved: the one here is closed.
    pub(super) fn remote_presence(&self, device: i64, node: &str, online: bool, at: i64) {
        let Some(slot) = self.device(device) else {
            return;
        };
        let changed = {
            let mut state = slot.lock();
            let held_here = state.session.is_some();
            if online {
                if let Some(session) = &state.session {
                    tracing::info!(
                        device,
                        node,
                        "device connected to another node: closing its session here"
                    );
                    session.close();
                }
                let previous = state.cluster_mut().holder.replace(Arc::from(node));
                previous.is_none() && !held_here
            } else if state.cluster_mut().holder.as_deref() == Some(node) {
                state.cluster_mut().holder = None;
                state.last_seen = Some(at);
                !held_here
            } else {
                false
            }
        };
        if changed {
            let _ = self.global.send(events::presence(device, online, at));
        }
    }

    /// Replaces the cached values of `devices` with the store's (their holder died: what it
    /// published and never made durable is gone), showing the apps every value that changes.
    pub(super) async fn reload_values(&self, devices: &[i64]) {
        let snapshot = match settle(self.store.load()).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::error!(%error, "could not read values again from the store");
                return;
            }
        };
        let mut by_device: std::collections::HashMap<i64, Vec<(Pin, StoredValue)>> =
            std::collections::HashMap::new();
        for (device, pin, stored) in snapshot.values {
            if devices.contains(&device) {
                by_device.entry(device).or_default().push((pin, stored));
            }
        }
        for device in devices {
            let Some(slot) = self.device(*device) else {
                continue;
            };
            let mut state = slot.lock();
            if state.session.is_some() {
                // Held here now: the claim read the store.
                continue;
            }
            for (pin, stored) in by_device.remove(device).unwrap_or_default() {
                if state
                    .values
                    .get(&pin)
                    .is_none_or(|cached| cached.version != stored.version)
                {
                    slot.publish(events::value(*device, pin, &stored));
                    state.values.insert(pin, stored);
                }
            }
        }
    }

    /// Sets which other node holds the device (after a resync), telling the apps if that
    /// changes whether it is online.
    pub(super) fn set_remote_holder(&self, slot: &DeviceSlot, holder: Option<&str>) {
        let (before, after) = {
            let mut state = slot.lock();
            let before = state.is_online();
            state.cluster_mut().holder = holder.map(Arc::from);
            (before, state.is_online())
        };
        if before != after {
            let at = crate::model::now_ms();
            let _ = self
                .global
                .send(events::presence(slot.device.id, after, at));
        }
    }

    /// Templates or devices added or removed on another node.
    pub(super) async fn on_meta_message(&self, payload: &[u8]) {
        match serde_json::from_slice::<MetaMessage>(payload) {
            Ok(MetaMessage::Added) => self.pick_up_created().await,
            Ok(MetaMessage::Deleted { device }) => self.forget_device(device),
            Err(error) => tracing::warn!(%error, "malformed bus message ignored"),
        }
    }

    /// Drops a device deleted on another node (the store has already forgotten it).
    fn forget_device(&self, id: i64) {
        if self.unindex(id).is_none() {
            return;
        }
        lock(&self.with_pending_commands).remove(&id);
        let _ = self.global.send(events::device_changed(id, false));
    }
}
