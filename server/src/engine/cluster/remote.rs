//! Taking a device when its session connects here (claim, restore from the store, serve the
//! writes other nodes send it) and app writes for devices held by another node or by none.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::RequestErrorKind;
use blynk_proto::Pin;
use futures_util::StreamExt;

use super::wire::{self, WriteReply, WriteRequest};
use super::{Cluster, Outgoing};
use crate::engine::delivery::{Delivery, DeliveryReport};
use crate::engine::writes::AppWrite;
use crate::engine::{DeviceSlot, Engine, events, lock};
use crate::engine::{EngineError, ErrorKind};
use crate::model::{Origin, OwnedValue, StoredValue, now_ms};
use crate::store::{ValueWrite, settle};

/// Attempts at reaching a device's holder before the write fails: a node that has just claimed
/// the device answers "not held" until its session is attached (a few milliseconds).
const WRITE_ATTEMPTS: u64 = 8;

/// What a node knows of a device beyond its own sessions (only with a bus).
#[derive(Default)]
pub(in crate::engine) struct ClusterState {
    /// The other node holding the device's session, if one does.
    pub holder: Option<Arc<str>>,
    /// While this node holds the device: the task answering write requests for it.
    pub writes: Option<tokio::task::AbortHandle>,
    /// Per pin, the highest version another node reported delivered to the device.
    pub delivered: Vec<(Pin, u64)>,
}

impl Engine {
    /// Prepares this node to take a device whose session just logged in: with a bus, claims it
    /// in the store, restores its state from there (what other nodes stored since), and starts
    /// answering the writes other nodes send it. `false` (logged) when the store or the bus
    /// failed: the session is refused and the device tries again. Without a bus, nothing.
    pub async fn prepare_attach(&self, slot: &Arc<DeviceSlot>) -> bool {
        match self.cluster.get() {
            None => true,
            Some(cluster) => self.claim_here(cluster, slot).await,
        }
    }

    /// Claims the device again (this node's lease had run out).
    pub(super) async fn reclaim(&self, slot: &Arc<DeviceSlot>) {
        if let Some(cluster) = self.cluster.get() {
            self.claim_here(cluster, slot).await;
        }
    }

    async fn claim_here(&self, cluster: &Arc<Cluster>, slot: &Arc<DeviceSlot>) -> bool {
        let device = slot.device.id;
        let serving = slot
            .lock()
            .cluster
            .as_ref()
            .is_some_and(|state| state.writes.is_some());
        // Subscribe first: a node that then finds no responder finds this node's claim in the
        // store and asks again.
        let subscriber = if serving {
            None
        } else {
            match cluster.client.subscribe(wire::write_subject(device)).await {
                Ok(subscriber) => Some(subscriber),
                Err(error) => {
                    tracing::error!(device, %error, "bus subscription failed: session refused");
                    return false;
                }
            }
        };
        if let Err(error) = cluster.client.flush().await {
            tracing::error!(device, %error, "bus unreachable: session refused");
            return false;
        }
        let claim = match settle(self.store.claim_device(device, &cluster.node)).await {
            Ok(claim) => claim,
            Err(error) => {
                tracing::error!(device, %error, "could not claim the device in the store: session refused");
                return false;
            }
        };
        let snapshot = match settle(self.store.load()).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::error!(device, %error, "could not read the device from the store: session refused");
                return false;
            }
        };
        let mut state = slot.lock();
        // The store's values, not the cache's: a value another node published but never made
        // durable (it died) is gone (SPEC 3.10).
        state.values = snapshot
            .values
            .into_iter()
            .filter(|row| row.0 == device)
            .map(|(_, pin, stored)| (pin, stored))
            .collect();
        state.properties = snapshot
            .properties
            .into_iter()
            .filter(|row| row.0 == device)
            .map(|(_, property)| property)
            .collect();
        state.pending_commands = snapshot
            .pending_commands
            .into_iter()
            .filter(|command| command.device_id == device)
            .collect();
        if !state.pending_commands.is_empty() {
            lock(&self.with_pending_commands).insert(device);
        }
        let at_least = state.versions.current();
        state.versions = crate::engine::versions::VersionCounter::claimed(
            claim.durable,
            claim.resume_at,
            at_least,
        );
        let cluster_state = state.cluster_mut();
        cluster_state.holder = None;
        if let Some(subscriber) = subscriber {
            let task = tokio::spawn(serve_writes(
                cluster.engine.clone(),
                slot.clone(),
                subscriber,
                cluster.client.clone(),
            ));
            if let Some(previous) = cluster_state.writes.replace(task.abort_handle()) {
                previous.abort();
            }
        }
        true
    }

    /// A held device's session ended here: stop answering for it and release it in the
    /// store, after every write of it already queued. Returns whether the device moved to
    /// another node (its presence then stays online).
    pub(in crate::engine) fn release_here(
        &self,
        state: &mut crate::engine::DeviceState,
        device: i64,
    ) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return false;
        };
        let cluster_state = state.cluster_mut();
        if let Some(writes) = cluster_state.writes.take() {
            writes.abort();
        }
        let moved = cluster_state.holder.is_some();
        drop(
            self.store
                .release_device(device, &cluster.node, state.versions.current()),
        );
        if !moved {
            cluster.send(Outgoing::Presence(device, false, now_ms()));
        }
        moved
    }

    /// An app write for a device whose session is not here: sent to the node holding it, or,
    /// when none does, stored with a version taken under the device's row lock and left for
    /// the sync (SPEC 7).
    pub(in crate::engine) async fn remote_app_write(
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
        let request = WriteRequest {
            pin: pin.to_string(),
            value: value.to_store_text(),
            origin: origin.as_str().to_owned(),
        };
        let body = bytes::Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
        for attempt in 1..=WRITE_ATTEMPTS {
            if !cluster.is_connected() {
                return Err(EngineError::Unavailable(
                    "the bus between nodes is down; try again shortly".into(),
                ));
            }
            match cluster.client.request(subject.clone(), body.clone()).await {
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
                Err(error) if error.kind() == RequestErrorKind::NoResponders => {
                    if let Some(version) =
                        settle(self.store.take_version(device, &cluster.node)).await?
                    {
                        return self
                            .store_unheld_write(slot, pin, value, version, is_command, origin)
                            .await;
                    }
                    // A node with a live lease holds it but is not on the bus yet (or lost it).
                }
                Err(error) => {
                    return Err(EngineError::Unavailable(format!(
                        "the device's node did not answer: {error}"
                    )));
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
            let ticket = self.store.put_value(ValueWrite {
                device_id: slot.device.id,
                pin,
                stored: stored.clone(),
                latest: !is_command,
            });
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

    /// A write another node sent for a device held here.
    async fn serve_write(&self, slot: &Arc<DeviceSlot>, payload: &[u8]) -> WriteReply {
        let failed = |message: &str| WriteReply::Failed {
            message: message.to_owned(),
            error_kind: ErrorKind::Internal,
        };
        let Ok(request) = serde_json::from_slice::<WriteRequest>(payload) else {
            return failed("malformed write request");
        };
        let (Ok(pin), Some(value), Some(origin)) = (
            request.pin.parse::<Pin>(),
            OwnedValue::from_store_text(&request.value),
            Origin::parse(&request.origin),
        ) else {
            return failed("malformed write request");
        };
        let Ok(value) = value.as_value() else {
            return failed("malformed value");
        };
        match self.app_write_here(slot, pin, &value, origin).await {
            Ok(Some(write)) => WriteReply::Stored {
                version: write.version,
                online: write.device_online,
            },
            Ok(None) => WriteReply::NotHeld,
            Err(error) => WriteReply::Failed {
                message: error.to_string(),
                error_kind: error.kind(),
            },
        }
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

/// Answers the writes other nodes send a device held here, one at a time (in version order),
/// until aborted when the session ends.
async fn serve_writes(
    engine: Weak<Engine>,
    slot: Arc<DeviceSlot>,
    mut subscriber: async_nats::Subscriber,
    client: async_nats::Client,
) {
    while let Some(message) = subscriber.next().await {
        let Some(reply) = message.reply else {
            continue;
        };
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let answer = engine.serve_write(&slot, &message.payload).await;
        drop(engine);
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        if let Err(error) = client.publish(reply, body.into()).await {
            tracing::warn!(%error, "could not answer a write over the bus");
        }
    }
}
