//! The durable store behind one interface, so the sync engine never names a database.
//!
//! Writes return a [`Ticket`] that resolves once the change is durable; a backend batches
//! concurrent writes into one commit so durability does not cap throughput. SQLite is the
//! embedded backend ([`sqlite`], the default); PostgreSQL ([`postgres`]) holds the state of
//! several nodes sharing one database. Both trim the history on one schedule ([`retention`]).

pub mod postgres;
pub mod retention;
pub mod sqlite;
#[cfg(test)]
mod tests;

use blynk_proto::Pin;
use tokio::sync::oneshot;

use crate::model::{
    Device, DeviceId, EventRecord, HistoryPoint, OwnedValue, PendingCommand, PropertyRecord,
    StoredValue, Template, TemplateId,
};

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database refused the operation.
    #[error("database error: {0}")]
    Database(String),
    /// A name is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// Nothing has this id or name.
    #[error("{0} not found")]
    NotFound(String),
    /// The database cannot be reached (a server that is down or restarting); the store keeps
    /// trying to reconnect, so the same request may succeed a moment later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
}

/// Resolves once a write is durable (or failed).
pub type Ticket<T = ()> = oneshot::Receiver<Result<T, StoreError>>;

/// Waits for a ticket.
pub async fn settle<T>(ticket: Ticket<T>) -> Result<T, StoreError> {
    ticket.await.unwrap_or(Err(StoreError::Closed))
}

/// Everything the engine caches, read once at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every template with its datastreams.
    pub templates: Vec<Template>,
    /// Every device.
    pub devices: Vec<Device>,
    /// Latest values by device.
    pub values: Vec<(DeviceId, Pin, StoredValue)>,
    /// Properties by device.
    pub properties: Vec<(DeviceId, PropertyRecord)>,
    /// Commands still waiting for their device.
    pub pending_commands: Vec<PendingCommand>,
    /// The highest value version per device (values, history and commands included).
    pub versions: Vec<(DeviceId, u64)>,
}

/// A new value to store: the latest of its pin, and a point of its history.
#[derive(Debug, Clone)]
pub struct ValueWrite {
    /// The device.
    pub device_id: DeviceId,
    /// The pin.
    pub pin: Pin,
    /// The value, its version, time and origin.
    pub stored: StoredValue,
    /// Whether it becomes the pin's latest value (false: history only, e.g. an offline device
    /// write older than an app write, or a command).
    pub latest: bool,
}

/// The durable store. Every method queues its work and returns at once; the [`Ticket`] tells
/// when it is durable. Writes on one store are applied in the order they were called; reads
/// (`load`, `setting`, `history`, `events`, `created_since`) do not wait behind queued writes
/// and see every write whose ticket has resolved.
pub trait Store: Send + Sync + 'static {
    /// Reads everything the engine caches.
    fn load(&self) -> Ticket<Snapshot>;
    /// Reads a setting.
    fn setting(&self, key: &str) -> Ticket<Option<String>>;
    /// Writes a setting.
    fn set_setting(&self, key: &str, value: &str) -> Ticket;
    /// Stores a new template; returns it with its id.
    fn create_template(&self, template: Template) -> Ticket<Template>;
    /// Stores a new device; returns it with its id.
    fn create_device(&self, name: &str, template_id: TemplateId, token: &str) -> Ticket<Device>;
    /// Deletes a device and everything stored for it.
    fn delete_device(&self, device_id: DeviceId) -> Ticket;
    /// Stores a value.
    fn put_value(&self, write: ValueWrite) -> Ticket;
    /// Stores a property.
    fn put_property(&self, device_id: DeviceId, property: PropertyRecord) -> Ticket;
    /// Appends an event (the oldest beyond the per-device bound are dropped).
    fn append_event(&self, device_id: DeviceId, event: EventRecord) -> Ticket;
    /// Stores a pending command; returns its id.
    fn add_pending_command(&self, command: PendingCommand) -> Ticket<i64>;
    /// Removes a command that was delivered or expired.
    fn remove_pending_command(&self, id: i64) -> Ticket;
    /// Records when a device was last seen.
    fn set_last_seen(&self, device_id: DeviceId, at: i64) -> Ticket;
    /// The most recent values of a pin, newest first.
    fn history(&self, device_id: DeviceId, pin: Pin, limit: usize) -> Ticket<Vec<HistoryPoint>>;
    /// The most recent events of a device, newest first.
    fn events(&self, device_id: DeviceId, limit: usize) -> Ticket<Vec<EventRecord>>;
    /// Templates and devices with ids above the given ones (created by another process, such
    /// as the `device add` command, while the server runs). Cheap when nothing was committed
    /// since the last call, so it can be polled.
    fn created_since(
        &self,
        template_id: TemplateId,
        device_id: DeviceId,
    ) -> Ticket<(Vec<Template>, Vec<Device>)>;
    /// Waits until everything queued so far is durable.
    fn flush(&self) -> Ticket;
}

/// Helper for backends: a value written as the store keeps it.
pub fn value_text(value: &OwnedValue) -> String {
    value.to_store_text()
}
