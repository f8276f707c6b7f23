//! The shared device object the firmware calls from any task: `virtual_write`, `sync_all`,
//! `sync_virtual`, `set_property`, `log_event`, and the connection status.
//!
//! Every call only queues and wakes the [`Runner`](crate::Runner), which owns the connection; so
//! calls never block on the network and work the same online and offline. The state sits in an
//! `embassy-sync` blocking mutex over a caller-chosen [`RawMutex`] (a critical section on a
//! board, a thread-mode or no-op mutex where that fits), held only for a few copies.

use blynk_proto::Pin;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::Instant;

use crate::error::QueueError;
use crate::outbox::Outbox;
use crate::runner::{Config, Runner};
use crate::shared::{Link, Shared, Status};
use crate::value::IntoValue;

/// The device's handle on the platform, shared between the runner and the firmware's tasks
/// (put it in a `static`, or a `StaticCell`).
///
/// `SLOTS` and `BYTES` size the outgoing queue: how many messages (distinct pins, properties,
/// events) may wait, and how many bytes their encoded values may take together. An integer
/// takes 3 to 12 bytes, a text its length plus 3.
pub struct Blynk<M: RawMutex, const SLOTS: usize = 16, const BYTES: usize = 256> {
    link: Link<M, SLOTS, BYTES>,
}

impl<M: RawMutex, const SLOTS: usize, const BYTES: usize> Default for Blynk<M, SLOTS, BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: RawMutex, const SLOTS: usize, const BYTES: usize> Blynk<M, SLOTS, BYTES> {
    /// A device object with an empty queue; `const`, so it can initialise a `static`.
    pub const fn new() -> Self {
        Blynk { link: Link::new() }
    }

    /// The runner that connects this device, over caller-supplied buffers: `rx` receives
    /// frames (its length is announced to the server, which never sends a larger frame; 256
    /// bytes hold any value of a few short parts), `tx` holds outgoing frames (at least the
    /// largest message the firmware writes; 128 bytes is plenty for numbers).
    pub fn runner<'a>(
        &'a self,
        config: Config<'a>,
        rx: &'a mut [u8],
        tx: &'a mut [u8],
    ) -> Runner<'a, M, SLOTS, BYTES> {
        Runner::new(&self.link, config, rx, tx)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Shared<SLOTS, BYTES>) -> R) -> R {
        self.link.with(f)
    }

    fn queue(
        &self,
        f: impl FnOnce(&mut Outbox<SLOTS, BYTES>, Instant) -> Result<(), QueueError>,
    ) -> Result<(), QueueError> {
        let now = Instant::now();
        self.with(|shared| f(&mut shared.outbox, now))?;
        self.link.wake().signal(());
        Ok(())
    }

    /// Writes a value to virtual pin `pin` (`Blynk.virtualWrite(V1, 255)`): the server stores
    /// it and pushes it to the apps. Queued and sent by the runner; while offline it waits, and
    /// only the latest value of each pin is kept (SPEC 3.8).
    ///
    /// `value` is a number, a bool, a text, or a tuple of those for a multi-part write:
    /// `virtual_write(2, (1, 2.5, "abc"))`.
    pub fn virtual_write<'v>(&self, pin: u8, value: impl IntoValue<'v>) -> Result<(), QueueError> {
        let value = value.into_value()?;
        self.queue(|outbox, now| outbox.write(Pin::Virtual(pin), &value, now))
    }

    /// Asks for the latest value of every datastream flagged `sync` (`Blynk.syncAll()`); each
    /// arrives through its handler, then [`Firmware::sync_complete`](crate::Firmware::sync_complete).
    /// Repeated calls before the answer merge into one request.
    pub fn sync_all(&self) {
        self.with(|shared| shared.outbox.request_all());
        self.link.wake().signal(());
    }

    /// Asks for the latest values of these virtual pins, flagged `sync` or not
    /// (`Blynk.syncVirtual(V0, V1)`).
    pub fn sync_virtual(&self, pins: &[u8]) {
        self.with(|shared| {
            for pin in pins {
                shared.outbox.request_pin(Pin::Virtual(*pin));
            }
        });
        self.link.wake().signal(());
    }

    /// Sets a widget property of virtual pin `pin`, e.g. `set_property(1, "color", "#FF0000")`.
    /// A property waiting to be sent is replaced by a newer one of the same pin and name.
    pub fn set_property<'v>(
        &self,
        pin: u8,
        name: &str,
        value: impl IntoValue<'v>,
    ) -> Result<(), QueueError> {
        let value = value.into_value()?;
        self.queue(|outbox, now| outbox.property(Pin::Virtual(pin), name, &value, now))
    }

    /// Logs an event for the apps, e.g. `log_event("overheat", Some("too hot"))`.
    pub fn log_event(&self, code: &str, description: Option<&str>) -> Result<(), QueueError> {
        self.queue(|outbox, now| outbox.event(code, description, now))
    }

    /// The connection status.
    pub fn status(&self) -> Status {
        self.with(|shared| shared.status)
    }

    /// Whether the device is logged in now.
    pub fn is_connected(&self) -> bool {
        self.with(|shared| shared.status.connected)
    }

    /// How many messages were refused because the queue was full (SPEC 3.8: counted, never
    /// silent).
    pub fn overflow_count(&self) -> u32 {
        self.with(|shared| shared.outbox.overflows())
    }

    /// How many messages the server refused (a value of the wrong type, a pin without a
    /// datastream) or that did not fit the transmit buffer.
    pub fn refused_count(&self) -> u32 {
        self.with(|shared| shared.outbox.refused_count())
    }

    /// How many messages wait to be sent or acknowledged.
    pub fn queued(&self) -> usize {
        self.with(|shared| shared.outbox.len())
    }
}
