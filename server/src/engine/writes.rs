//! Writes from devices and from apps, the ordering rule for offline device writes, and
//! momentary commands.
//!
//! Every write takes its version under the device's lock and, in that same step, is queued to
//! the store, forwarded to the device (an app write) and published to the watching apps: so
//! version order, store order and publication order agree, and a write reaches the apps
//! whatever becomes of the connection that made it. Only the acknowledgement waits for the
//! commit (SPEC 3.2, 3.10, 3.13).

use std::sync::Arc;
use std::time::Duration;

use blynk_proto::{Pin, Value};

use super::delivery::{Delivery, DeliveryReport, Outbound};
use super::{DeviceSlot, Engine, EngineError, events, lock};
use crate::model::{Origin, OwnedValue, PendingCommand, StoredValue};
use crate::store::{Ticket, ValueWrite, settle};

/// An app write queued to the store, not yet durable.
pub(super) struct PendingAppWrite {
    ticket: crate::store::Ticket,
    stored: StoredValue,
    report: DeliveryReport,
    device_online: bool,
}

/// What became of a device write.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceWriteOutcome {
    /// It is the pin's latest value now.
    Stored {
        /// The version it got.
        version: u64,
    },
    /// It was made offline before a newer app write to the same pin, so it went to the history
    /// only; the device should be sent `current`.
    Superseded {
        /// The pin's latest value.
        current: StoredValue,
    },
}

/// A stored app write.
#[derive(Debug)]
pub struct AppWrite {
    /// The version it got.
    pub version: u64,
    /// Whether the device was online when the write was made.
    pub device_online: bool,
    /// Whether the datastream is a command.
    pub command: bool,
    /// Resolves when the device receives it (or the command expires).
    pub report: DeliveryReport,
}

impl Engine {
    /// A device writes a pin (SPEC 3.1, 3.8).
    ///
    /// A write queued offline carries its age; it is ordered by when it was made: if the pin's
    /// latest value was set after that moment (an app write made while the device was away),
    /// the device's write goes to the history only and the caller sends the device the latest
    /// value. See `docs/state-sync.md`.
    ///
    /// The write is published to the watching apps before this returns; the returned future
    /// only resolves once it is durable (the moment to acknowledge it), and dropping it loses
    /// nothing.
    pub fn device_write(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        value: &Value<'_>,
        age_ms: Option<u32>,
    ) -> Result<
        impl Future<Output = Result<DeviceWriteOutcome, EngineError>> + Send + 'static,
        EngineError,
    > {
        let made_at = age_ms.map(|age| self.clock.unix_ms() - i64::from(age));
        self.device_write_at(slot, pin, value, made_at, Origin::Device)
    }

    /// A device's write measured at `made_at` (ms since the epoch; `None`: now), the same rule
    /// as [`Engine::device_write`] with an explicit time (SPEC 3.14): a classic timestamped
    /// `GROUP`, the HTTP timestamped upload. A time ahead of the server's clock counts as now.
    pub fn device_write_at(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        value: &Value<'_>,
        made_at: Option<i64>,
        origin: Origin,
    ) -> Result<
        impl Future<Output = Result<DeviceWriteOutcome, EngineError>> + Send + 'static,
        EngineError,
    > {
        let datastream = slot.datastream(pin)?;
        let normalized = Arc::new(datastream.normalize(value)?);
        let timed = made_at.is_some();
        let now = self.clock.unix_ms();
        let made_at = made_at.map_or(now, |at| at.min(now));
        let (ticket, outcome) = {
            let mut state = slot.lock();
            self.check_open(&state)?;
            let version = state.next_version();
            self.metrics.write(origin);
            let current = state.values.get(&pin);
            let superseded = timed && current.is_some_and(|current| current.set_at > made_at);
            let stored = StoredValue {
                value: normalized,
                version,
                set_at: made_at,
                origin,
            };
            let latest = !superseded && !datastream.is_command();
            let outcome = match current {
                Some(current) if superseded => DeviceWriteOutcome::Superseded {
                    current: current.clone(),
                },
                _ => DeviceWriteOutcome::Stored { version },
            };
            let ticket = self.queue_value(slot, pin, &stored, latest);
            if latest {
                // The device holds this value now: older app writes will not reach it.
                state
                    .waiters
                    .settle(pin, Delivery::Superseded, |waiting| waiting < version);
                self.publish(slot, events::value(slot.device.id, pin, &stored));
                state.values.insert(pin, stored);
            }
            (ticket, outcome)
        };
        Ok(async move {
            settle(ticket).await?;
            Ok(outcome)
        })
    }

    /// An app write another node sent for a device whose session is here; `None` when it is
    /// not here any more.
    pub(super) async fn app_write_here(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        value: &Value<'_>,
        origin: Origin,
    ) -> Result<Option<AppWrite>, EngineError> {
        let datastream = slot.datastream(pin)?;
        let normalized = Arc::new(datastream.normalize(value)?);
        let is_command = datastream.is_command();
        match self.app_write_stored(slot, pin, normalized, is_command, origin, true)? {
            Ok(pending) => Ok(Some(
                self.finish_app_write(slot, pin, is_command, pending)
                    .await?,
            )),
            Err(_) => Ok(None),
        }
    }

    /// The locked step of an app write: version, queue to the store, publish, forward. With a
    /// bus (or `held_only`) and no session here, nothing is done and the value comes back: the
    /// node holding the session takes the write, with its own counter.
    pub(super) fn app_write_stored(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        normalized: Arc<OwnedValue>,
        is_command: bool,
        origin: Origin,
        held_only: bool,
    ) -> Result<Result<PendingAppWrite, Arc<OwnedValue>>, EngineError> {
        let mut state = slot.lock();
        self.check_open(&state)?;
        if state.session.is_none() && (held_only || self.cluster.get().is_some()) {
            return Ok(Err(normalized));
        }
        let version = state.next_version();
        self.metrics.write(origin);
        let stored = StoredValue {
            value: normalized,
            version,
            set_at: self.clock.unix_ms(),
            origin,
        };
        let ticket = self.queue_value(slot, pin, &stored, !is_command);
        if !is_command {
            self.publish(slot, events::value(slot.device.id, pin, &stored));
            state.values.insert(pin, stored.clone());
        }
        let report = state.waiters.add(pin, version);
        // Forward, then commit: the device does not wait for the disk (SPEC 3.2).
        let device_online = match &state.session {
            Some(session) => {
                session.forward(Outbound {
                    pin,
                    value: stored.value.clone(),
                    version,
                    command: None,
                });
                true
            }
            None => false,
        };
        Ok(Ok(PendingAppWrite {
            ticket,
            stored,
            report,
            device_online,
        }))
    }

    /// Queues a pin's value to the store: `latest`, as the pin's latest value, else to the
    /// history only (a superseded device write, a command). The ticket resolves once durable.
    pub(super) fn queue_value(
        &self,
        slot: &DeviceSlot,
        pin: Pin,
        stored: &StoredValue,
        latest: bool,
    ) -> Ticket {
        self.store.put_value(ValueWrite {
            device_id: slot.device.id,
            pin,
            stored: stored.clone(),
            latest,
        })
    }

    /// Waits for an app write to be durable, and parks a command of an offline device.
    pub(super) async fn finish_app_write(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        is_command: bool,
        pending: PendingAppWrite,
    ) -> Result<AppWrite, EngineError> {
        let PendingAppWrite {
            ticket,
            stored,
            report,
            device_online,
        } = pending;
        settle(ticket).await?;
        let version = stored.version;
        if is_command && !device_online {
            self.park_command(slot, pin, stored).await?;
        }
        Ok(AppWrite {
            version,
            device_online,
            command: is_command,
            report,
        })
    }

    /// Keeps a command for an offline device until it connects or the ttl passes. The latest
    /// command of a pin wins (SPEC 6): an older one still pending for the pin is dropped and
    /// reported superseded, so a device that was away gets one command per pin, not a burst.
    pub(super) async fn park_command(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        stored: StoredValue,
    ) -> Result<(), EngineError> {
        let ttl = slot
            .template
            .datastream(pin)
            .map(|d| d.ttl_seconds())
            .unwrap_or_default();
        let mut command = PendingCommand {
            id: 0,
            device_id: slot.device.id,
            pin,
            value: stored.value,
            version: stored.version,
            expires_at: stored.set_at + i64::from(ttl) * 1000,
        };
        command.id = settle(self.store.add_pending_command(command.clone())).await?;
        let mut state = slot.lock();
        if let Some(session) = &state.session {
            // The device connected while the command was being stored.
            session.forward(Outbound {
                pin,
                value: command.value.clone(),
                version: command.version,
                command: Some(command.id),
            });
        }
        // Two parks of the same pin may finish in either order: the higher version stays.
        let newer_pending = state
            .pending_commands
            .iter()
            .any(|other| other.pin == pin && other.version > command.version);
        let (replaced, kept): (Vec<PendingCommand>, Vec<PendingCommand>) =
            std::mem::take(&mut state.pending_commands)
                .into_iter()
                .partition(|other| other.pin == pin && other.version < command.version);
        state.pending_commands = kept;
        let superseded: Vec<PendingCommand> = if newer_pending {
            vec![command]
        } else {
            state.pending_commands.push(command);
            replaced
        };
        for old in &superseded {
            state
                .waiters
                .settle(pin, Delivery::Superseded, |version| version == old.version);
        }
        lock(&self.with_pending_commands).insert(slot.device.id);
        drop(state);
        for old in superseded {
            drop(self.store.remove_pending_command(old.id));
        }
        Ok(())
    }

    /// Drops the commands whose ttl passed and reports them expired.
    pub async fn expire_commands(&self) {
        let now = self.clock.unix_ms();
        let devices: Vec<_> = lock(&self.with_pending_commands).iter().copied().collect();
        for device_id in devices {
            let Some(slot) = self.device(device_id) else {
                lock(&self.with_pending_commands).remove(&device_id);
                continue;
            };
            let expired: Vec<PendingCommand> = {
                let mut state = slot.lock();
                let (expired, alive) = std::mem::take(&mut state.pending_commands)
                    .into_iter()
                    .partition(|command| command.expires_at <= now);
                state.pending_commands = alive;
                for command in &expired {
                    state
                        .waiters
                        .settle(command.pin, Delivery::Expired, |version| {
                            version == command.version
                        });
                }
                if state.pending_commands.is_empty() {
                    lock(&self.with_pending_commands).remove(&device_id);
                }
                expired
            };
            for command in expired {
                tracing::info!(device = device_id, pin = %command.pin, "command expired before its device connected");
                drop(self.store.remove_pending_command(command.id));
            }
        }
    }

    /// Expires commands twice a second, and at once when a test moves the clock, until
    /// `shutdown` fires.
    pub async fn run_command_expiry(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut advances = self.clock.advances();
        loop {
            tokio::select! {
                _ = tick.tick() => self.expire_commands().await,
                () = advances.next() => self.expire_commands().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
