//! The engine's side of the bus between nodes, at the top of the files of several nodes: joining
//! the bus, the lease in the store, and reading the store again after a reconnection or a dead
//! node. The connection itself is `cluster/`, which knows nothing of the engine; what the files
//! of several nodes share is in `membership.rs`; `remote.rs` takes devices and serves the writes
//! other nodes send, `routing.rs` sends writes to them, `inbound.rs` applies what they publish.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use super::cluster::{Bus, BusError, BusSettings, Inbound};
use super::membership::{Cluster, Outgoing};
use super::{DeviceSlot, Engine};
use crate::model::{DeviceId, now_ms};
use crate::store::settle;

impl Engine {
    /// Joins the bus: connects, subscribes, takes a lease in the store, and starts the tasks
    /// that carry messages until `shutdown` fires. Call once, right after opening the engine.
    pub async fn join_bus(
        self: &Arc<Self>,
        settings: BusSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), BusError> {
        let (bus, inbound) =
            Bus::connect(&settings, super::inbound::encode, shutdown.clone()).await?;
        let node = bus.node.clone();
        let ttl = settings.lease_ttl();
        settle(self.store.renew_lease(&node, ttl.as_millis() as i64, false))
            .await
            .map_err(|error| BusError::Lease(error.to_string()))?;
        let cluster = Arc::new(Cluster::new(bus, Arc::downgrade(self)));
        if self.cluster.set(cluster.clone()).is_err() {
            return Err(BusError::Connect {
                url: settings.url.clone(),
                message: "this engine is on a bus already".into(),
            });
        }
        tracing::info!(%node, url = %settings.url, "joined the bus");
        self.apply_inbound(inbound, &shutdown);
        let engine = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let devices = tokio::select! {
                    devices = cluster.next_stale() => devices,
                    _ = stop.changed() => return,
                };
                engine.reload_values(&devices).await;
            }
        });
        tokio::spawn(self.clone().run_lease(settings, shutdown));
        Ok(())
    }

    /// Starts the tasks that apply what other nodes publish, and the resync after each
    /// reconnection (the bus dropped messages while it was away: read the truth again).
    fn apply_inbound(self: &Arc<Self>, inbound: Inbound, shutdown: &watch::Receiver<bool>) {
        let Inbound {
            events,
            meta,
            mut reconnected,
        } = inbound;
        let engine = self.clone();
        spawn_consumer(events, shutdown, move |message| {
            engine.on_device_message(&message.subject, &message.payload);
            std::future::ready(())
        });
        let engine = self.clone();
        spawn_consumer(meta, shutdown, move |message| {
            let engine = engine.clone();
            async move { engine.on_meta_message(&message.payload).await }
        });
        let engine = self.clone();
        let reconnected = futures_util::stream::poll_fn(move |cx| reconnected.poll_recv(cx));
        spawn_consumer(reconnected, shutdown, move |()| {
            let engine = engine.clone();
            async move { engine.resync_from_store().await }
        });
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
                    .renew_lease(cluster.node(), ttl.as_millis() as i64, reap),
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
    async fn resync_from_store(&self) {
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
        let node = self.cluster.get().map(|cluster| cluster.node().clone());
        let held: std::collections::HashMap<DeviceId, String> = held.into_iter().collect();
        for slot in self.devices() {
            let holder = held
                .get(&slot.device.id)
                .filter(|holder| Some(holder.as_str()) != node.as_deref());
            self.set_remote_holder(&slot, holder.map(String::as_str));
        }
    }
}

impl DeviceSlot {
    /// Whether this node holds the device's session.
    fn is_held_here(&self) -> bool {
        self.lock().session.is_some()
    }
}

/// Spawns a task that hands each item of `source` to `handle`, one at a time, until the source
/// ends or `shutdown` fires.
fn spawn_consumer<S, F, Fut>(mut source: S, shutdown: &watch::Receiver<bool>, mut handle: F)
where
    S: Stream + Unpin + Send + 'static,
    S::Item: Send,
    F: FnMut(S::Item) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                item = source.next() => match item {
                    Some(item) => handle(item).await,
                    None => return,
                },
                _ = stop.changed() => return,
            }
        }
    });
}
