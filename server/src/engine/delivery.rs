//! What travels between the engine and a live device session: the values the engine sends it
//! ([`Outbound`]), the engine's handle on it ([`SessionLink`]), and the bookkeeping that turns a
//! stored app write into a delivered one ([`Delivery`], [`Waiters`]).
//!
//! Both the write paths (`writes.rs`) and the session registry (`sessions.rs`) use these; neither
//! imports the other.

use std::sync::Arc;

use blynk_proto::Pin;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::model::OwnedValue;

/// Most app writes per device waiting to be reported delivered.
const MAX_WAITERS: usize = 1024;

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The native blynk-proto protocol.
    Native,
    /// The classic Blynk protocol (TCP or WebSocket).
    Classic,
    /// The MQTT 3.1.1 device API.
    Mqtt,
}

/// A value for a session to send to its device: an app write, or a command. Sessions are
/// closed through their kill signal, so this is the only message; it travels boxed, which keeps
/// each idle session's queue small (one pointer a slot).
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The pin.
    pub pin: Pin,
    /// The value.
    pub value: Arc<OwnedValue>,
    /// Its version.
    pub version: u64,
    /// For a command: its pending id, to be claimed before sending.
    pub command: Option<i64>,
}

/// The engine's side of a live session.
pub(super) struct SessionLink {
    pub id: u64,
    pub outbound: mpsc::Sender<Box<Outbound>>,
    pub protocol: Protocol,
    /// Ends the session even when its queue is full.
    pub kill: Arc<Notify>,
}

impl SessionLink {
    /// Asks the session to end; it detaches itself, which updates presence.
    pub fn close(&self) {
        self.kill.notify_one();
    }

    /// Queues a value for the device. A session whose queue is full reads too slowly: it is
    /// closed, and the device gets the value at its next sync. `false` when not queued.
    pub fn forward(&self, outbound: Outbound) -> bool {
        match self.outbound.try_send(Box::new(outbound)) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(
                    session = self.id,
                    "device session reads too slowly; closing it"
                );
                self.close();
                false
            }
        }
    }
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

/// A one-shot delivery report for an app write.
pub type DeliveryReport = oneshot::Receiver<Delivery>;

/// An app write waiting to be reported delivered.
struct Waiter {
    pin: Pin,
    version: u64,
    report: oneshot::Sender<Delivery>,
}

/// The app writes of one device waiting for their fate, oldest first.
#[derive(Default)]
pub(super) struct Waiters(Vec<Waiter>);

impl Waiters {
    /// Registers a write of `pin` at `version`; the receiver resolves with its fate.
    pub fn add(&mut self, pin: Pin, version: u64) -> DeliveryReport {
        let (report, receiver) = oneshot::channel();
        if self.0.len() >= MAX_WAITERS {
            // The oldest waiter's app is told nothing more; the value itself stays stored.
            self.0.remove(0);
        }
        self.0.push(Waiter {
            pin,
            version,
            report,
        });
        receiver
    }

    /// Reports `fate` to the waiters of `pin` that `matches(version)` selects, and forgets them.
    pub fn settle(&mut self, pin: Pin, fate: Delivery, matches: impl Fn(u64) -> bool) {
        if !self.0.iter().any(|waiter| waiter.pin == pin) {
            return;
        }
        let mut kept = Vec::with_capacity(self.0.len());
        for waiter in self.0.drain(..) {
            if waiter.pin == pin && matches(waiter.version) {
                let _ = waiter.report.send(fate);
            } else {
                kept.push(waiter);
            }
        }
        self.0 = kept;
    }
}
