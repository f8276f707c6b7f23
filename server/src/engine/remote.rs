//! With several nodes: taking a device when its session connects here (claim, restore from the
//! store), serving the writes other nodes send it, and letting it go when the session ends.

use std::sync::{Arc, Weak};

use blynk_proto::Pin;
use futures_util::StreamExt;

use super::cluster::wire::{self, WriteReply, WriteRequest};
use super::membership::{Cluster, Outgoing};
use super::{DeviceSlot, DeviceState, Engine, ErrorKind, lock};
use crate::model::{Origin, OwnedValue, now_ms};
use crate::store::settle;

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

    /// Claims the device again, in the background.
    pub(super) fn reclaim_soon(&self, slot: Arc<DeviceSlot>) {
        if let Some(engine) = self
            .cluster
            .get()
            .and_then(|cluster| cluster.engine.upgrade())
        {
            tokio::spawn(async move { engine.reclaim(&slot).await });
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
            match cluster
                .bus
                .client()
                .subscribe(wire::write_subject(device))
                .await
            {
                Ok(subscriber) => Some(subscriber),
                Err(error) => {
                    tracing::error!(device, %error, "bus subscription failed: session refused");
                    return false;
                }
            }
        };
        if let Err(error) = cluster.bus.client().flush().await {
            tracing::error!(device, %error, "bus unreachable: session refused");
            return false;
        }
        let claim = match settle(self.store.claim_device(device, cluster.node())).await {
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
        state.versions =
            super::versions::VersionCounter::claimed(claim.durable, claim.resume_at, at_least);
        let cluster_state = state.cluster_mut();
        cluster_state.holder = None;
        if let Some(subscriber) = subscriber {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            tokio::spawn(serve_writes(
                cluster.engine.clone(),
                slot.clone(),
                subscriber,
                cluster.bus.client().clone(),
                stopped,
            ));
            // Dropping the previous task's sender stops it.
            cluster_state.writes = Some(stop);
        }
        true
    }

    /// A held device's session ended here: stop answering for it and release it in the
    /// store, after every write of it already queued. Returns whether the device moved to
    /// another node (its presence then stays online).
    pub(super) fn release_here(&self, state: &mut DeviceState, device: i64) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return false;
        };
        let cluster_state = state.cluster_mut();
        // Its sender dropped, the task answering writes stops.
        cluster_state.writes = None;
        let moved = cluster_state.holder.is_some();
        drop(
            self.store
                .release_device(device, cluster.node(), state.versions.current()),
        );
        if !moved {
            cluster.send(Outgoing::Presence(device, false, now_ms()));
        }
        moved
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
        if request.is_expired(now_ms()) {
            // Its sender already answered the app with an error: applying it now would
            // overwrite newer values with one the user was told failed.
            tracing::warn!(
                device = slot.device.id,
                pin = %request.pin,
                "a write from another node arrived after its sender gave up: refused"
            );
            return failed("the write arrived after its sender gave up on it");
        }
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

/// Answers the writes other nodes send a device held here, one at a time (in version order),
/// until `stop` fires (its sender dropped) when the session ends. It is never aborted, so a
/// write being served is always answered (its sender must not store it a second time). A
/// request that reaches this node as it leaves the subject is not answered: another session of
/// the device here may already serve it; its sender times out and stores the write itself
/// once the store shows the device released (`routing.rs`).
async fn serve_writes(
    engine: Weak<Engine>,
    slot: Arc<DeviceSlot>,
    mut subscriber: async_nats::Subscriber,
    client: async_nats::Client,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stop => break,
            message = subscriber.next() => message,
        };
        let Some(message) = message else {
            return;
        };
        if !answer_write(&engine, &slot, &client, message).await {
            return;
        }
    }
    if let Err(error) = subscriber.unsubscribe().await {
        tracing::warn!(%error, "could not leave a released device's write subject");
    }
}

/// Serves one write request and publishes the answer; `false` once the engine is gone.
async fn answer_write(
    engine: &Weak<Engine>,
    slot: &Arc<DeviceSlot>,
    client: &async_nats::Client,
    message: async_nats::Message,
) -> bool {
    let Some(reply) = message.reply else {
        return true;
    };
    let Some(engine) = engine.upgrade() else {
        return false;
    };
    let answer = engine.serve_write(slot, &message.payload).await;
    drop(engine);
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    if let Err(error) = client.publish(reply, body.into()).await {
        tracing::warn!(%error, "could not answer a write over the bus");
    }
    true
}
