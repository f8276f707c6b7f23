//! Where an app write goes (SPEC 3.2, 7): to the session here (`writes.rs`), or, with several
//! nodes, over the bus to the node holding the device's session; when no node holds it, it is
//! stored here with a version taken under the device's row lock and waits for the device's sync.

use std::sync::Arc;
use std::time::Duration;

use async_nats::RequestErrorKind;
use blynk_proto::{Pin, Value};

use super::cluster::wire::{self, WriteReply, WriteRequest};
use super::delivery::{Delivery, DeliveryReport};
use super::membership::Outgoing;
use super::writes::AppWrite;
use super::{DeviceSlot, Engine, EngineError, events};
use crate::model::{Origin, OwnedValue, StoredValue, now_ms};
use crate::store::settle;

/// Attempts at reaching a device's holder before the write fails: a node that has just claimed
/// the device answers "not held" until its session is attached (a few milliseconds).
const WRITE_ATTEMPTS: u64 = 8;

impl Engine {
    /// An app or the HTTP API writes a pin of a device (SPEC 3.2, 3.12): validated, versioned,
    /// queued to the store, forwarded to the device if it is online and published to the
    /// watching apps, all in one step; the returned write is acknowledged once durable. A
    /// command of an offline device waits, durably, until the device connects or its ttl passes.
    pub async fn app_write(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        value: &Value<'_>,
        origin: Origin,
    ) -> Result<AppWrite, EngineError> {
        let datastream = slot.datastream(pin)?;
        let normalized = Arc::new(datastream.normalize(value)?);
        let is_command = datastream.is_command();
        match self.app_write_stored(slot, pin, normalized, is_command, origin, false)? {
            Ok(pending) => self.finish_app_write(slot, pin, is_command, pending).await,
            // With a bus, and the session is not here.
            Err(normalized) => {
                self.remote_app_write(slot, pin, normalized, is_command, origin)
                    .await
            }
        }
    }

    /// An app write for a device whose session is not here: sent to the node holding it, or,
    /// when none does, stored with a version taken under the device's row lock and left for
    /// the sync (SPEC 7).
    pub(super) async fn remote_app_write(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        value: Arc<OwnedValue>,
        is_command: bool,
        origin: Origin,
    ) -> Result<AppWrite, EngineError> {
        let Some(cluster) = self.cluster.get() else {
            return Err(EngineError::Internal("no bus".into()));
        };
        let device = slot.device.id;
        let subject = wire::write_subject(device);
        let text = value.to_store_text();
        for attempt in 1..=WRITE_ATTEMPTS {
            if !cluster.is_connected() {
                return Err(EngineError::Unavailable(
                    "the bus between nodes is down; try again shortly".into(),
                ));
            }
            let request = WriteRequest::new(
                pin.to_string(),
                text.clone(),
                origin.as_str().to_owned(),
                now_ms(),
            );
            let body = bytes::Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
            match cluster.bus.client().request(subject.clone(), body).await {
                Ok(message) => match serde_json::from_slice::<WriteReply>(&message.payload) {
                    Ok(WriteReply::Stored { version, online }) => {
                        return Ok(AppWrite {
                            version,
                            device_online: online,
                            command: is_command,
                            report: remote_waiter(slot, pin, version),
                        });
                    }
                    Ok(WriteReply::NotHeld) => {}
                    Ok(WriteReply::Failed {
                        message,
                        error_kind,
                    }) => {
                        return Err(EngineError::of_kind(error_kind, message));
                    }
                    Err(error) => {
                        return Err(EngineError::Unavailable(format!(
                            "malformed answer from the device's node: {error}"
                        )));
                    }
                },
                Err(error) => {
                    // No responders: no node serves the device on the bus. Timed out: NATS
                    // drops a request it routed to a subscription just being removed (the
                    // holder left as it was sent). Either way the write is stored here when the
                    // store shows the device released (a holder answers every write it serves).
                    let no_responders = error.kind() == RequestErrorKind::NoResponders;
                    if (no_responders || error.kind() == RequestErrorKind::TimedOut)
                        && let Some(version) =
                            settle(self.store.take_version(device, cluster.node())).await?
                    {
                        return self
                            .store_unheld_write(slot, pin, value, version, is_command, origin)
                            .await;
                    }
                    // Any other error: sent, and perhaps stored before the answer was lost; or
                    // held by the bus client, and then refused by the holder when it arrives
                    // (expired).
                    if !no_responders {
                        return Err(EngineError::Unavailable(format!(
                            "the device's node did not answer: {error} (the write may have been \
                             applied before its answer was lost)"
                        )));
                    }
                    // A node with a live lease holds it but is not on the bus yet (or lost it).
                }
            }
            tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
        }
        Err(EngineError::Unavailable(
            "the node holding the device does not answer".into(),
        ))
    }

    /// Stores a write for a device no node holds, at `version` (taken in the store).
    async fn store_unheld_write(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        value: Arc<OwnedValue>,
        version: u64,
        is_command: bool,
        origin: Origin,
    ) -> Result<AppWrite, EngineError> {
        let (ticket, stored, report, gone) = {
            let mut state = slot.lock();
            self.check_open(&state)?;
            // The store found no live holder: one this node still counts as holding it died.
            let gone = state.cluster_mut().holder.take();
            if gone.is_some() {
                state.last_seen = Some(now_ms());
            }
            let stored = StoredValue {
                value,
                version,
                set_at: now_ms(),
                origin,
            };
            let ticket = self.queue_value(slot, pin, &stored, !is_command);
            if !is_command {
                let event = events::value(slot.device.id, pin, &stored);
                // Always on the bus: a node taking the device right now sends it on.
                if let Some(cluster) = self.cluster.get() {
                    cluster.send(Outgoing::Event(event.clone()));
                }
                let newer = state
                    .values
                    .get(&pin)
                    .is_none_or(|current| current.version < version);
                if newer {
                    state.versions.observe(version);
                    slot.publish(event);
                    state.values.insert(pin, stored.clone());
                }
            }
            let report = state.waiters.add(pin, version);
            (ticket, stored, report, gone)
        };
        let durable = settle(ticket).await;
        if let Some(dead) = gone {
            let at = now_ms();
            let _ = self
                .global
                .send(events::presence(slot.device.id, false, at));
            if let Some(cluster) = self.cluster.get() {
                cluster.send(Outgoing::Reaped(slot.device.id, dead.to_string(), at));
                // Once this write is durable, so the reload keeps it.
                cluster.mark_stale(slot.device.id);
            }
        }
        durable?;
        if is_command {
            self.park_command(slot, pin, stored).await?;
        }
        Ok(AppWrite {
            version,
            device_online: false,
            command: is_command,
            report,
        })
    }
}

/// Registers an app write stored by the device's holder, to be told its fate by the holder's
/// messages; a delivery or a device write that already came through settles it at once.
fn remote_waiter(slot: &DeviceSlot, pin: Pin, version: u64) -> DeliveryReport {
    let mut state = slot.lock();
    let delivered = state
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.delivered.iter().find(|(known, _)| *known == pin))
        .is_some_and(|(_, highest)| *highest >= version);
    let superseded = state
        .values
        .get(&pin)
        .is_some_and(|current| current.origin == Origin::Device && current.version > version);
    let report = state.waiters.add(pin, version);
    if delivered {
        state
            .waiters
            .settle(pin, Delivery::Delivered, |waiting| waiting == version);
    } else if superseded {
        state
            .waiters
            .settle(pin, Delivery::Superseded, |waiting| waiting == version);
    }
    report
}
