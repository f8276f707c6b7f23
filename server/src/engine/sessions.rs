//! The registry of live device sessions: attach (newest connection wins), detach, presence, and
//! the delivery bookkeeping that turns "stored" app writes into "delivered" ones.

use std::sync::Arc;

use blynk_proto::Pin;
use tokio::sync::Notify;

use super::delivery::{Delivery, Outbound, OutboundQueue, Protocol, SessionLink};
use super::sync::{SyncItem, SyncSelection};
use super::{DeviceSlot, Engine, events, lock};
use crate::store::settle;

/// A session's side of its registration.
#[derive(Debug)]
pub struct Attached {
    /// The session's id, for [`Engine::detach`].
    pub session_id: u64,
    /// What the engine sends this session.
    pub outbound: OutboundQueue,
    /// The values to send right away (the automatic sync), possibly empty.
    pub sync: Vec<SyncItem>,
    /// Whether an older connection of the same device was closed.
    pub replaced_previous: bool,
    /// Notified when the engine wants the session closed (replaced, too slow, deleted).
    pub kill: Arc<Notify>,
}

impl Engine {
    /// Registers a new session for `slot`, closing any older one (the newer connection wins),
    /// and computes `sync` under the same lock so no write falls between the two.
    ///
    /// Returns `None` when the device was deleted meanwhile.
    pub fn attach(
        &self,
        slot: &Arc<DeviceSlot>,
        protocol: Protocol,
        queue: usize,
        sync: Option<SyncSelection>,
    ) -> Option<Attached> {
        let outbound = OutboundQueue::new(queue);
        let session_id = self.session_id();
        let kill = Arc::new(Notify::new());
        let (replaced_previous, came_online, items) = {
            let mut state = slot.lock();
            if state.deleted {
                return None;
            }
            let link = SessionLink {
                id: session_id,
                outbound: outbound.shared(),
                protocol,
                kill: kill.clone(),
            };
            let previous = state.session.replace(link);
            if let Some(previous) = &previous {
                previous.close();
            }
            let now = self.clock.unix_ms();
            if let Some(link) = &state.session {
                for command in state
                    .pending_commands
                    .iter()
                    .filter(|command| command.expires_at > now)
                {
                    link.forward(Outbound {
                        pin: command.pin,
                        value: command.value.clone(),
                        version: command.version,
                        command: Some(command.id),
                    });
                }
            }
            if self.cluster.get().is_some()
                && state
                    .cluster
                    .as_ref()
                    .is_none_or(|held| held.writes.is_none())
            {
                // An older session of the device here released it between this session's
                // claim and now: claim it again.
                self.reclaim_soon(slot.clone());
            }
            let items = sync
                .map(|selection| super::sync::select(slot, &state, &selection))
                .unwrap_or_default();
            (previous.is_some(), previous.is_none(), items)
        };
        if came_online {
            // Presence goes to every app on the global channel (not also the device's channel,
            // which would show it twice to a client watching the device).
            let now = self.clock.unix_ms();
            let _ = self
                .global
                .send(events::presence(slot.device.id, true, now));
            if let Some(cluster) = self.cluster.get() {
                cluster.send(super::membership::Outgoing::Presence(
                    slot.device.id,
                    true,
                    now,
                ));
            }
        }
        tracing::debug!(
            device = slot.device.id,
            session_id,
            ?protocol,
            replaced_previous,
            "session attached"
        );
        Some(Attached {
            session_id,
            outbound,
            sync: items,
            replaced_previous,
            kill,
        })
    }

    /// Unregisters a session. Presence turns offline only if it was still the device's current
    /// session (a replaced session leaving changes nothing).
    pub fn detach(&self, slot: &DeviceSlot, session_id: u64) {
        let now = self.clock.unix_ms();
        let went_offline = {
            let mut state = slot.lock();
            if state
                .session
                .as_ref()
                .is_some_and(|session| session.id == session_id)
            {
                state.session = None;
                state.last_seen = Some(now);
                // With a bus: a device that moved to another node stays online.
                !(self.cluster.get().is_some() && self.release_here(&mut state, slot.device.id))
            } else {
                false
            }
        };
        if went_offline {
            let _ = self
                .global
                .send(events::presence(slot.device.id, false, now));
            // Last-seen is informational: its write is not waited for.
            drop(self.store.set_last_seen(slot.device.id, now));
        }
    }

    /// Records that the session sent `pin` at `version` to the device, and reports the app
    /// writes it satisfies as delivered.
    pub fn delivered(&self, slot: &DeviceSlot, pin: Pin, version: u64) {
        slot.lock()
            .waiters
            .settle(pin, Delivery::Delivered, |waiting| waiting <= version);
        if let Some(cluster) = self.cluster.get() {
            // The write may have come from an app on another node.
            cluster.send(super::membership::Outgoing::Delivered(
                slot.device.id,
                pin,
                version,
            ));
        }
    }

    /// Takes a pending command out of the store before a session sends it, so that it is
    /// delivered at most once even across a crash. `false`: it expired or another session took it.
    pub async fn claim_command(&self, slot: &DeviceSlot, command_id: i64) -> bool {
        let claimed = {
            let mut state = slot.lock();
            let now = self.clock.unix_ms();
            match state
                .pending_commands
                .iter()
                .position(|c| c.id == command_id && c.expires_at > now)
            {
                Some(index) => {
                    state.pending_commands.remove(index);
                    true
                }
                None => false,
            }
        };
        if !claimed {
            return false;
        }
        if self.cluster.get().is_some() {
            // Another node may have loaded the command too: the store's row decides.
            let claimed = match settle(self.store.claim_command(command_id)).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(%error, command_id, "could not claim a command: not sent");
                    false
                }
            };
            if slot.lock().pending_commands.is_empty() {
                lock(&self.with_pending_commands).remove(&slot.device.id);
            }
            return claimed;
        }
        if let Err(error) = settle(self.store.remove_pending_command(command_id)).await {
            tracing::error!(%error, command_id, "could not remove a delivered command from the store");
        }
        if slot.lock().pending_commands.is_empty() {
            lock(&self.with_pending_commands).remove(&slot.device.id);
        }
        true
    }
}
