//! The bus between nodes (`--bus nats://host:4222`): the connection to NATS, what travels on
//! it (`wire.rs`) and the publisher that sends what the engine queues, in order. A leaf: it
//! knows nothing of the engine, which calls it (`engine/bus.rs` joins the bus and applies what
//! arrives). Without a bus none of this runs and the engine stays in-process.
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

pub(super) mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use tokio::sync::{mpsc, watch};

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
    /// How long a node's lease in the store lasts.
    pub(super) fn lease_ttl(&self) -> Duration {
        self.heartbeat.mul_f64(1.5)
    }

    /// How often a node renews its lease.
    pub(super) fn renew_every(&self) -> Duration {
        (self.heartbeat / 4).max(Duration::from_millis(100))
    }
}

/// Makes a queued message a subject and a body (the engine's messages are its own type).
pub(super) type Encode<M> = fn(&str, M) -> (String, Vec<u8>);

/// A node's connection to the bus. `M` is what the engine queues for the publisher.
pub(super) struct Bus<M> {
    /// This node's name in the store and on the bus: random per start, so a restarted node is
    /// a new one and its old lease simply runs out.
    pub node: Arc<str>,
    client: async_nats::Client,
    outbox: mpsc::UnboundedSender<M>,
    connected: Arc<AtomicBool>,
}

/// What arrives from the bus, for the engine to apply.
pub(super) struct Inbound {
    /// Every device's events (`blynk.ev.*`).
    pub events: async_nats::Subscriber,
    /// Templates and devices added or removed (`blynk.meta`).
    pub meta: async_nats::Subscriber,
    /// One item each time the connection is back after it was lost: what was published
    /// meanwhile is gone, so the engine reads the store again.
    pub reconnected: mpsc::UnboundedReceiver<()>,
}

impl<M: Send + 'static> Bus<M> {
    /// Connects, subscribes to every device's events and to the meta subject, and starts the
    /// publisher, until `shutdown` fires.
    pub async fn connect(
        settings: &BusSettings,
        encode: Encode<M>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, Inbound), BusError> {
        let node: Arc<str> = Arc::from(crate::token::new_token().get(..12).unwrap_or("node"));
        let connect_error = |message: String| BusError::Connect {
            url: settings.url.clone(),
            message,
        };
        let (states, state_changes) = mpsc::unbounded_channel::<bool>();
        let client = async_nats::ConnectOptions::new()
            .name(format!("blynk-server {node}"))
            // A node's own messages never come back to it.
            .no_echo()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(wire::WRITE_TIMEOUT))
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
        let (outbox, outgoing) = mpsc::unbounded_channel();
        let bus = Arc::new(Bus {
            node,
            client,
            outbox,
            connected: Arc::new(AtomicBool::new(true)),
        });
        let (reconnections, reconnected) = mpsc::unbounded_channel();
        tokio::spawn(publish(bus.clone(), encode, outgoing, shutdown.clone()));
        tokio::spawn(track_connection(
            bus.connected.clone(),
            state_changes,
            reconnections,
            shutdown,
        ));
        let inbound = Inbound {
            events,
            meta,
            reconnected,
        };
        Ok((bus, inbound))
    }

    /// Queues a message for the bus without waiting.
    pub fn send(&self, message: M) {
        let _ = self.outbox.send(message);
    }
}

impl<M> Bus<M> {
    /// Whether the connection to NATS is up (as far as this node knows).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.client.connection_state() == State::Connected
    }

    /// The NATS client, for the write subjects (request/reply) of single devices.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Follows the connection's ups and downs: says whether it is up, and tells the engine each
/// time it is back after a loss.
async fn track_connection(
    connected: Arc<AtomicBool>,
    mut state_changes: mpsc::UnboundedReceiver<bool>,
    reconnections: mpsc::UnboundedSender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut was_down = false;
    loop {
        tokio::select! {
            change = state_changes.recv() => match change {
                Some(true) => {
                    connected.store(true, Ordering::Relaxed);
                    if was_down {
                        was_down = false;
                        tracing::info!("bus reconnected: resyncing from the store");
                        let _ = reconnections.send(());
                    }
                }
                Some(false) => {
                    connected.store(false, Ordering::Relaxed);
                    was_down = true;
                    tracing::warn!("bus connection lost: writes to devices held by other nodes fail until it is back");
                }
                None => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Sends what the engine queued, in order. While the bus is away messages are dropped, not
/// kept: every node resyncs from the store when it is back.
async fn publish<M>(
    bus: Arc<Bus<M>>,
    encode: Encode<M>,
    mut outgoing: mpsc::UnboundedReceiver<M>,
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
        if !bus.is_connected() {
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
        let (subject, payload) = encode(&bus.node, message);
        if let Err(error) = bus.client.publish(subject, payload.into()).await {
            tracing::warn!(%error, "bus publish failed");
        }
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
