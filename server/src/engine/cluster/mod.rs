//! Several nodes on one store: the NATS bus (`--bus nats://host:4222`) behind the engine's
//! session registry. Without a bus none of this runs and the engine stays in-process.
//!
//! The bus is a signal, never the source of truth: the store says which node holds each device
//! (claimed under its row locks, see [`crate::store::Claim`]), every node renews a lease there,
//! and a node rebuilds its view from the store after any reconnection to the bus. What travels:
//! - `blynk.dev.<id>.write`, request/reply: an app write for the node holding the device's
//!   session, subscribed only while it holds it, so "no responders" means no node does;
//! - `blynk.ev.<id>`: the device's values, presence, properties, events and deliveries, for the
//!   apps watching it on every node;
//! - `blynk.meta`: templates and devices added or removed.
//!
//! `docs/state-sync.md` ("Several nodes") gives the version rule and its failure cases.

mod inbound;
mod remote;
pub(super) mod wire;

pub(super) use remote::ClusterState;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::events::AppEvent;
use super::{DeviceSlot, Engine};
use crate::model::{DeviceId, now_ms};
use crate::store::settle;
use blynk_proto::Pin;

/// Why the bus could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS server could not be reached or refused a subscription.
    #[error("bus {url}: {message}")]
    Connect {
        /// The configured URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The store refused the node's lease.
    #[error("the store refused this node's lease: {0}")]
    Lease(String),
}

/// How a node joins the bus.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// The NATS server, `nats://host:4222`.
    pub url: String,
    /// The devices' default heartbeat: a node's lease lasts 1.5 of it and is renewed every
    /// quarter, so a node that dies leaves its devices online for at most 1.75 heartbeats
    /// (SPEC 7: offline within 2.3).
    pub heartbeat: Duration,
}

impl BusSettings {
    fn lease_ttl(&self) -> Duration {
        self.heartbeat.mul_f64(1.5)
    }

    fn renew_every(&self) -> Duration {
        (self.heartbeat / 4).max(Duration::from_millis(100))
    }
}

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
    /// This node's name in the store and on the bus: random per start, so a restarted node is
    /// a new one and its old lease simply runs out.
    pub node: Arc<str>,
    client: async_nats::Client,
    outbox: mpsc::UnboundedSender<Outgoing>,
    engine: Weak<Engine>,
    connected: Arc<AtomicBool>,
    /// Devices whose values are read again from the store (their holder died), in batches.
    stale: std::sync::Mutex<Vec<DeviceId>>,
    stale_ready: tokio::sync::Notify,
    /// One look in the store for a device this node does not know yet at a time: a flood of
    /// unknown tokens costs the store one query at a time, not one each at once.
    pub store_look: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// Queues a message for the bus without waiting.
    pub fn send(&self, outgoing: Outgoing) {
        let _ = self.outbox.send(outgoing);
    }

    /// Queues a device whose values are read again from the store.
    pub fn mark_stale(&self, device: DeviceId) {
        crate::engine::lock(&self.stale).push(device);
        self.stale_ready.notify_one();
    }

    /// Claims a device again, in the background.
    pub fn reclaim_soon(&self, slot: Arc<DeviceSlot>) {
        if let Some(engine) = self.engine.upgrade() {
            tokio::spawn(async move { engine.reclaim(&slot).await });
        }
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.client.connection_state() == State::Connected
    }
}

/// Tells the nodes on the bus at `url` that templates or devices were added to the store (the
/// shell commands, which run beside the nodes, call this).
pub async fn announce_added(url: &str) -> Result<(), BusError> {
    let failed = |error: &dyn std::fmt::Display| BusError::Connect {
        url: url.to_owned(),
        message: error.to_string(),
    };
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(|error| failed(&error))?;
    let body = serde_json::to_vec(&wire::MetaMessage::Added).unwrap_or_default();
    client
        .publish(wire::META, body.into())
        .await
        .map_err(|error| failed(&error))?;
    client.flush().await.map_err(|error| failed(&error))
}

impl Engine {
    /// Joins the bus: connects, subscribes, takes a lease in the store, and starts the tasks
    /// that carry messages until `shutdown` fires. Call once, right after opening the engine.
    pub async fn join_bus(
        self: &Arc<Self>,
        settings: BusSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), BusError> {
        let node: Arc<str> = Arc::from(crate::token::new_token().get(..12).unwrap_or("node"));
        let connect_error = |message: String| BusError::Connect {
            url: settings.url.clone(),
            message,
        };
        let (states, mut state_changes) = mpsc::unbounded_channel::<bool>();
        let client = async_nats::ConnectOptions::new()
            .name(format!("blynk-server {node}"))
            // A node's own messages never come back to it.
            .no_echo()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(2)))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).clamp(50, 1_000))
            })
            .event_callback(move |event| {
                let states = states.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => drop(states.send(true)),
                        async_nats::Event::Disconnected => drop(states.send(false)),
                        other => tracing::warn!(%other, "bus"),
                    }
                }
            })
            .connect(settings.url.as_str())
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        let events = client
            .subscribe(wire::EVENTS_ALL)
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        let meta = client
            .subscribe(wire::META)
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        client
            .flush()
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        let ttl = settings.lease_ttl();
        settle(self.store.renew_lease(&node, ttl.as_millis() as i64, false))
            .await
            .map_err(|error| BusError::Lease(error.to_string()))?;
        let (outbox, outgoing) = mpsc::unbounded_channel();
        let connected = Arc::new(AtomicBool::new(true));
        let cluster = Arc::new(Cluster {
            node: node.clone(),
            client: client.clone(),
            outbox,
            engine: Arc::downgrade(self),
            connected: connected.clone(),
            stale: std::sync::Mutex::default(),
            stale_ready: tokio::sync::Notify::new(),
            store_look: tokio::sync::Mutex::new(()),
        });
        if self.cluster.set(cluster.clone()).is_err() {
            return Err(connect_error("this engine is on a bus already".into()));
        }
        tracing::info!(%node, url = %settings.url, "joined the bus");

        tokio::spawn(publish(cluster.clone(), outgoing, shutdown.clone()));
        let engine = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut events = events;
            loop {
                tokio::select! {
                    message = events.next() => match message {
                        Some(message) => engine.on_device_message(&message.subject, &message.payload),
                        None => return,
                    },
                    _ = stop.changed() => return,
                }
            }
        });
        let engine = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut meta = meta;
            loop {
                tokio::select! {
                    message = meta.next() => match message {
                        Some(message) => engine.on_meta_message(&message.payload).await,
                        None => return,
                    },
                    _ = stop.changed() => return,
                }
            }
        });
        let engine = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            // The bus dropped messages while it was away: read the truth again.
            let mut was_down = false;
            loop {
                tokio::select! {
                    change = state_changes.recv() => match change {
                        Some(true) => {
                            connected.store(true, Ordering::Relaxed);
                            if was_down {
                                was_down = false;
                                tracing::info!("bus reconnected: resyncing from the store");
                                engine.resync_from_store().await;
                            }
                        }
                        Some(false) => {
                            connected.store(false, Ordering::Relaxed);
                            was_down = true;
                            tracing::warn!("bus connection lost: writes to devices held by other nodes fail until it is back");
                        }
                        None => return,
                    },
                    _ = stop.changed() => return,
                }
            }
        });
        let engine = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cluster.stale_ready.notified() => {}
                    _ = stop.changed() => return,
                }
                let devices = std::mem::take(&mut *crate::engine::lock(&cluster.stale));
                engine.reload_values(&devices).await;
            }
        });
        tokio::spawn(self.clone().run_lease(settings, shutdown));
        Ok(())
    }

    /// Renews this node's lease; releases the devices of nodes whose lease ran out (their
    /// presence turns offline everywhere), and claims its own devices again if its own lease
    /// ran out meanwhile (the store was unreachable).
    async fn run_lease(
        self: Arc<Self>,
        settings: BusSettings,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(cluster) = self.cluster.get().cloned() else {
            return;
        };
        let ttl = settings.lease_ttl();
        let mut tick = tokio::time::interval(settings.renew_every());
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            // A node that could not renew for a whole lease (the store was down for everyone)
            // does not judge the others until it has renewed once more.
            let reap = renewed.elapsed() < ttl;
            match settle(
                self.store
                    .renew_lease(&cluster.node, ttl.as_millis() as i64, reap),
            )
            .await
            {
                Ok(lease) => {
                    renewed = Instant::now();
                    for (device, dead) in lease.reaped {
                        tracing::info!(device, node = %dead, "its node's lease ran out: offline");
                        let at = now_ms();
                        self.remote_presence(device, &dead, false, at);
                        cluster.send(Outgoing::Reaped(device, dead, at));
                        cluster.mark_stale(device);
                    }
                    if lease.lost {
                        tracing::warn!("this node's lease had run out: claiming its devices again");
                        for slot in self.devices() {
                            if slot.is_held_here() {
                                self.reclaim(&slot).await;
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "could not renew this node's lease"),
            }
        }
    }

    /// Reads the store again after the bus was away: new templates and devices, every value
    /// newer than the cached one (sent on to the devices held here), and who holds what.
    pub(super) async fn resync_from_store(&self) {
        self.pick_up_created().await;
        let (snapshot, held) = match (
            settle(self.store.load()).await,
            settle(self.store.held_devices()).await,
        ) {
            (Ok(snapshot), Ok(held)) => (snapshot, held),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "resync after the bus came back failed; the next reconnection tries again");
                return;
            }
        };
        for (device, pin, stored) in snapshot.values {
            if let Some(slot) = self.device(device) {
                self.apply_remote_value(&slot, pin, stored);
            }
        }
        let node = self.cluster.get().map(|cluster| cluster.node.clone());
        let held: std::collections::HashMap<DeviceId, String> = held.into_iter().collect();
        for slot in self.devices() {
            let holder = held
                .get(&slot.device.id)
                .filter(|holder| Some(holder.as_str()) != node.as_deref());
            self.set_remote_holder(&slot, holder.map(String::as_str));
        }
    }

    /// Tells the other nodes that templates or devices changed.
    pub(super) fn announce_meta(&self, message: wire::MetaMessage) {
        if let Some(cluster) = self.cluster.get() {
            cluster.send(Outgoing::Meta(message));
        }
    }
}

impl DeviceSlot {
    /// Whether this node holds the device's session.
    fn is_held_here(&self) -> bool {
        self.lock().session.is_some()
    }
}

/// Sends what the engine queued, in order. While the bus is away messages are dropped, not
/// kept: every node resyncs from the store when it is back.
async fn publish(
    cluster: Arc<Cluster>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut dropped = 0u64;
    loop {
        let message = tokio::select! {
            message = outgoing.recv() => match message {
                Some(message) => message,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        if !cluster.is_connected() {
            dropped += 1;
            continue;
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "bus messages dropped while it was away (nodes resync from the store)"
            );
            dropped = 0;
        }
        let (subject, payload) = inbound::encode(&cluster.node, message);
        if let Err(error) = cluster.client.publish(subject, payload.into()).await {
            tracing::warn!(%error, "bus publish failed");
        }
    }
}
