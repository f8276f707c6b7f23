//! Writes from devices and from apps, the ordering rule for offline device writes, and
//! momentary commands.

use std::sync::Arc;
use std::time::Duration;

use blynk_proto::datastream::ValidationError;
use blynk_proto::{Pin, Value};
use tokio::sync::oneshot;

use super::sessions::Outbound;
use super::{DeliveryReport, DeviceSlot, DeviceState, Engine, MAX_WAITERS, events, lock};
use crate::model::{Origin, PendingCommand, StoredValue, now_ms};
use crate::store::{StoreError, ValueWrite, settle};

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The device's template binds no datastream to the pin.
    #[error("no datastream is bound to {0}")]
    UnknownPin(Pin),
    /// The value does not fit the datastream.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store failed; the write was not acknowledged.
    #[error("the write could not be stored: {0}")]
    Store(#[from] StoreError),
    /// The device was deleted.
    #[error("the device was deleted")]
    Deleted,
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

/// The fate of an app write, reported after "stored".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The device received the value (or a newer one of the same pin).
    Delivered,
    /// A command whose ttl passed before its device connected.
    Expired,
    /// The device itself wrote the pin again before receiving this value.
    Superseded,
}

impl Delivery {
    /// The name used by the app API.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Expired => "expired",
            Delivery::Superseded => "superseded",
        }
    }
}

/// A stored app write.
#[derive(Debug)]
pub struct AppWrite {
    /// The version it got.
    pub version: u64,
    /// Whether the device was online when the write was stored.
    pub device_online: bool,
    /// Whether the datastream is a command.
    pub command: bool,
    /// Resolves when the device receives it (or the command expires).
    pub report: DeliveryReport,
}

/// An app write waiting to be reported delivered.
pub(super) struct DeliveryWaiter {
    pub pin: Pin,
    pub version: u64,
    pub report: oneshot::Sender<Delivery>,
}

impl DeviceState {
    fn add_waiter(&mut self, pin: Pin, version: u64) -> DeliveryReport {
        let (report, receiver) = oneshot::channel();
        if self.waiters.len() >= MAX_WAITERS {
            // The oldest waiter's app is told nothing more; the value itself stays stored.
            self.waiters.remove(0);
        }
        self.waiters.push(DeliveryWaiter {
            pin,
            version,
            report,
        });
        receiver
    }

    /// Sends a value to the current session. A session whose queue is full reads too slowly:
    /// it is closed, and the device gets the value at its next sync.
    fn forward(&mut self, outbound: Outbound) -> bool {
        let Some(session) = &self.session else {
            return false;
        };
        match session.outbound.try_send(Box::new(outbound)) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(
                    session = session.id,
                    "device session reads too slowly; closing it"
                );
                session.close();
                false
            }
        }
    }
}

impl Engine {
    /// A device writes a pin (SPEC 3.1, 3.8).
    ///
    /// A write queued offline carries its age; it is ordered by when it was made: if the pin's
    /// latest value was set after that moment (an app write made while the device was away),
    /// the device's write goes to the history only and the caller sends the device the latest
    /// value. See `docs/state-sync.md`.
    ///
    /// Returns a future that resolves once the write is durable (the moment to acknowledge it).
    pub fn device_write(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        value: &Value<'_>,
        age_ms: Option<u32>,
    ) -> Result<
        impl Future<Output = Result<DeviceWriteOutcome, WriteError>> + Send + 'static,
        WriteError,
    > {
        let datastream = slot
            .template
            .datastream(pin)
            .ok_or(WriteError::UnknownPin(pin))?;
        let normalized = Arc::new(datastream.normalize(value)?);
        let now = now_ms();
        let made_at = now - i64::from(age_ms.unwrap_or(0));
        let (ticket, outcome, stored, latest) = {
            let mut state = slot.lock();
            if state.deleted {
                return Err(WriteError::Deleted);
            }
            state.version += 1;
            let version = state.version;
            let current = state.values.get(&pin);
            let superseded =
                age_ms.is_some() && current.is_some_and(|current| current.set_at > made_at);
            let stored = StoredValue {
                value: normalized,
                version,
                set_at: made_at,
                origin: Origin::Device,
            };
            let latest = !superseded && !datastream.is_command();
            let outcome = match current {
                Some(current) if superseded => DeviceWriteOutcome::Superseded {
                    current: current.clone(),
                },
                _ => DeviceWriteOutcome::Stored { version },
            };
            if latest {
                state.values.insert(pin, stored.clone());
                // The device holds this value now: older app writes must not overwrite it.
                let forwarded = state.forwarded.entry(pin).or_default();
                *forwarded = (*forwarded).max(version);
                let waiters = std::mem::take(&mut state.waiters);
                for waiter in waiters {
                    if waiter.pin == pin && waiter.version < version {
                        let _ = waiter.report.send(Delivery::Superseded);
                    } else {
                        state.waiters.push(waiter);
                    }
                }
            }
            let write = ValueWrite {
                device_id: slot.device.id,
                pin,
                stored: stored.clone(),
                latest,
            };
            (self.store.put_value(write), outcome, stored, latest)
        };
        let slot = slot.clone();
        // The version is taken and the store write queued before this returns, so a session can
        // pipeline many writes and still have them stored in the order they were sent.
        Ok(async move {
            settle(ticket).await?;
            if latest {
                slot.publish(events::value(slot.device.id, pin, &stored));
            }
            Ok(outcome)
        })
    }

    /// An app or the HTTP API writes a pin of a device (SPEC 3.2, 3.12): validated, stored,
    /// then forwarded if the device is online. A command of an offline device waits, durably,
    /// until the device connects or its ttl passes.
    pub async fn app_write(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        value: &Value<'_>,
        origin: Origin,
    ) -> Result<AppWrite, WriteError> {
        let datastream = slot
            .template
            .datastream(pin)
            .ok_or(WriteError::UnknownPin(pin))?;
        let normalized = Arc::new(datastream.normalize(value)?);
        let is_command = datastream.is_command();
        let (ticket, stored) = {
            let mut state = slot.lock();
            if state.deleted {
                return Err(WriteError::Deleted);
            }
            state.version += 1;
            let stored = StoredValue {
                value: normalized,
                version: state.version,
                set_at: now_ms(),
                origin,
            };
            if !is_command {
                state.values.insert(pin, stored.clone());
            }
            let write = ValueWrite {
                device_id: slot.device.id,
                pin,
                stored: stored.clone(),
                latest: !is_command,
            };
            (self.store.put_value(write), stored)
        };
        settle(ticket).await?;
        if !is_command {
            slot.publish(events::value(slot.device.id, pin, &stored));
        }
        let version = stored.version;
        let outbound = Outbound {
            pin,
            value: stored.value.clone(),
            version,
            command: None,
        };
        let (report, device_online) = {
            let mut state = slot.lock();
            let newer_sent = state
                .forwarded
                .get(&pin)
                .is_some_and(|sent| *sent >= version);
            let online = state.session.is_some();
            let report = if newer_sent {
                // A sync sent this value (or a newer one) while the write was being stored.
                let (report, receiver) = oneshot::channel();
                let _ = report.send(Delivery::Delivered);
                receiver
            } else {
                let report = state.add_waiter(pin, version);
                state.forward(outbound);
                report
            };
            (report, online)
        };
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

    /// Keeps a command for an offline device until it connects or the ttl passes.
    async fn park_command(
        &self,
        slot: &Arc<DeviceSlot>,
        pin: Pin,
        stored: StoredValue,
    ) -> Result<(), StoreError> {
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
        if state.session.is_some() {
            // The device connected while the command was being stored.
            state.forward(Outbound {
                pin,
                value: command.value.clone(),
                version: command.version,
                command: Some(command.id),
            });
        }
        state.pending_commands.push(command);
        lock(&self.with_pending_commands).insert(slot.device.id);
        Ok(())
    }

    /// Drops the commands whose ttl passed and reports them expired.
    pub async fn expire_commands(&self) {
        let now = now_ms();
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
                let waiters = std::mem::take(&mut state.waiters);
                for waiter in waiters {
                    let is_expired = expired.iter().any(|c: &PendingCommand| {
                        c.pin == waiter.pin && c.version == waiter.version
                    });
                    if is_expired {
                        let _ = waiter.report.send(Delivery::Expired);
                    } else {
                        state.waiters.push(waiter);
                    }
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

    /// Expires commands twice a second until `shutdown` fires.
    pub async fn run_command_expiry(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => self.expire_commands().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
