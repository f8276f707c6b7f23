//! What several nodes share inside the engine: the node's membership of the bus ([`Cluster`]),
//! the messages the engine queues for the other nodes ([`Outgoing`]), and what a node knows of
//! each device beyond its own sessions ([`ClusterState`]). The files of several nodes
//! (`bus.rs`, `remote.rs`, `inbound.rs`, `routing.rs`) and the sessions use these; it uses none
//! of them.

use std::sync::{Arc, Weak};

use blynk_proto::Pin;

use super::cluster::{Bus, wire};
use super::events::AppEvent;
use super::{DeviceState, Engine};
use crate::model::DeviceId;

/// What the engine hands the publisher, in the order it happened (under the device's lock for
/// device events, so per device in version order).
pub(super) enum Outgoing {
    /// A value, property or logged event of a device.
    Event(AppEvent),
    /// The device's session opened or closed here.
    Presence(DeviceId, bool, i64),
    /// Presence of a device whose holder died, said for it.
    Reaped(DeviceId, String, i64),
    /// The device received `pin` at `version`.
    Delivered(DeviceId, Pin, u64),
    /// Templates or devices changed.
    Meta(wire::MetaMessage),
}

/// A node's membership of the bus.
pub(super) struct Cluster {
    /// The connection, with this node's name.
    pub bus: Arc<Bus<Outgoing>>,
    /// The engine, for the tasks the membership starts (serving a device's writes).
    pub engine: Weak<Engine>,
    /// Devices whose values are read again from the store (their holder died), in batches.
    stale: std::sync::Mutex<Vec<DeviceId>>,
    stale_ready: tokio::sync::Notify,
    /// One look in the store for a device this node does not know yet at a time: a flood of
    /// unknown tokens costs the store one query at a time, not one each at once.
    pub store_look: tokio::sync::Mutex<()>,
}

impl Cluster {
    pub fn new(bus: Arc<Bus<Outgoing>>, engine: Weak<Engine>) -> Self {
        Cluster {
            bus,
            engine,
            stale: std::sync::Mutex::default(),
            stale_ready: tokio::sync::Notify::new(),
            store_look: tokio::sync::Mutex::new(()),
        }
    }

    /// This node's name in the store and on the bus.
    pub fn node(&self) -> &Arc<str> {
        &self.bus.node
    }

    /// Queues a message for the bus without waiting.
    pub fn send(&self, outgoing: Outgoing) {
        self.bus.send(outgoing);
    }

    /// Whether the bus is up.
    pub fn is_connected(&self) -> bool {
        self.bus.is_connected()
    }

    /// Queues a device whose values are read again from the store.
    pub fn mark_stale(&self, device: DeviceId) {
        super::lock(&self.stale).push(device);
        self.stale_ready.notify_one();
    }

    /// Waits for devices marked stale, and takes them.
    pub async fn next_stale(&self) -> Vec<DeviceId> {
        self.stale_ready.notified().await;
        std::mem::take(&mut *super::lock(&self.stale))
    }
}

/// What a node knows of a device beyond its own sessions (only with a bus).
#[derive(Default)]
pub(super) struct ClusterState {
    /// The other node holding the device's session, if one does.
    pub holder: Option<Arc<str>>,
    /// While this node holds the device: dropping it stops the task answering write requests
    /// for it (gracefully: see `remote::serve_writes`).
    pub writes: Option<tokio::sync::oneshot::Sender<()>>,
    /// Per pin, the highest version another node reported delivered to the device.
    pub delivered: Vec<(Pin, u64)>,
}

impl Engine {
    /// Queues a message for the other nodes; `message` is made only when there is a bus.
    pub(super) fn tell_other_nodes(&self, message: impl FnOnce() -> Outgoing) {
        if let Some(cluster) = self.cluster.get() {
            cluster.send(message());
        }
    }

    /// Tells the other nodes that templates or devices changed.
    pub(super) fn announce_meta(&self, message: wire::MetaMessage) {
        self.tell_other_nodes(|| Outgoing::Meta(message));
    }
}

impl DeviceState {
    /// What several nodes track of the device, made on first use (never on one node).
    pub(super) fn cluster_mut(&mut self) -> &mut ClusterState {
        self.cluster.get_or_insert_with(Box::default)
    }

    /// Whether the device's session is open here or on another node.
    pub(super) fn is_online(&self) -> bool {
        self.session.is_some()
            || self
                .cluster
                .as_ref()
                .is_some_and(|cluster| cluster.holder.is_some())
    }
}
