//! State messages: writes in both directions, sync requests and their answers, acks.

use serde::{Deserialize, Serialize};

use crate::MAX_SYNC_PINS;
use crate::pin::Pin;
use crate::value::Value;

/// A device writes a pin (`virtual_write`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write<'a> {
    /// Echoed in the [`Ack`] once the value is durable.
    pub id: u16,
    /// The pin written.
    pub pin: Pin,
    /// The value.
    #[serde(borrow)]
    pub value: Value<'a>,
    /// For a write queued while the device was offline: how long ago it was made, in
    /// milliseconds, so the server can order it against app writes (SPEC 3.8).
    pub age_ms: Option<u32>,
}

/// The server forwards an app or HTTP write to the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update<'a> {
    /// The pin written.
    pub pin: Pin,
    /// The stored value.
    #[serde(borrow)]
    pub value: Value<'a>,
    /// The value's version; the device keeps the highest for delta resync.
    pub version: u64,
}

/// Which pins a sync asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncPins {
    /// `sync_all()`: every datastream flagged `sync`.
    All,
    /// `sync_virtual(&[..])`: these pins, flagged `sync` or not.
    Only(heapless::Vec<Pin, MAX_SYNC_PINS>),
}

/// The device asks for stored values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Echoed in every answer.
    pub id: u16,
    /// Which pins.
    pub pins: SyncPins,
}

/// One stored value, in answer to a sync (or pushed after login, with id 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncedValue<'a> {
    /// The sync request's id; 0 for the automatic sync after login.
    pub id: u16,
    /// The pin.
    pub pin: Pin,
    /// Its stored value, or its default when none was stored.
    #[serde(borrow)]
    pub value: Value<'a>,
    /// The value's version (0 for a default).
    pub version: u64,
}

/// The end of a sync: every value asked for has been sent (SPEC 3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncComplete {
    /// The sync request's id; 0 for the automatic sync after login.
    pub id: u16,
    /// How many [`SyncedValue`]s were sent.
    pub count: u16,
    /// The highest value version stored for the device.
    pub version: u64,
}

/// The server stored what the device sent: it survives a crash from now on (SPEC 3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The id of the acknowledged message.
    pub id: u16,
    /// The version the write got, when it was a write.
    pub version: Option<u64>,
}
