//! The durable store behind one interface, so the sync engine never names a database.
//!
//! Writes return a [`Ticket`] that resolves once the change is durable; a backend batches
//! concurrent writes into one commit so durability does not cap throughput. SQLite is the
//! embedded backend ([`sqlite`], the default); PostgreSQL ([`postgres`]) holds the state of
//! several nodes sharing one database. Both trim the history on one schedule ([`retention`]).
//! The trait also says which node holds a device when several share the store.

pub mod postgres;
pub mod retention;
pub mod sqlite;
#[cfg(test)]
mod tests;

use blynk_proto::Pin;
use tokio::sync::oneshot;

use crate::model::{
    DatastreamDef, Device, DeviceId, EventRecord, HistoryPoint, OwnedValue, PendingCommand,
    PropertyRecord, StoredValue, Template, TemplateId,
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
    /// The database cannot be reached (a server that is down or restarting, a SQLite file
    /// another process keeps locked); the same request may succeed a moment later.
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

impl Snapshot {
    /// Adds a `latest_values` row as either store reads it back (pin, value and origin as
    /// text); an unreadable row is logged and skipped, so one bad row does not stop a start.
    pub(crate) fn push_stored_row(
        &mut self,
        device_id: DeviceId,
        (pin, value, version, set_at, origin): (&str, &str, i64, i64, &str),
    ) {
        let (Ok(pin), Some(stored)) = (
            pin.parse::<Pin>(),
            HistoryPoint::from_store_columns(value, version, set_at, origin).map(StoredValue::from),
        ) else {
            tracing::error!(device_id, "unreadable stored value skipped");
            return;
        };
        self.values.push((device_id, pin, stored));
    }
}

/// Adds a datastream definition as either store keeps it (JSON) to its template; an unreadable
/// one is logged and skipped, so one bad row does not stop a start.
pub(crate) fn push_stored_datastream(template: &mut Template, definition: &str) {
    match serde_json::from_str::<DatastreamDef>(definition) {
        Ok(datastream) => template.datastreams.push(datastream),
        Err(error) => {
            tracing::error!(template = %template.name, %error, "unreadable datastream skipped")
        }
    }
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

/// A page of a pin's history in a time range, oldest first: what an export reads, page after
/// page, so that it never holds the whole range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRange {
    /// The earliest time (ms since the epoch), included.
    pub from: i64,
    /// The latest time (ms since the epoch), excluded.
    pub to: i64,
    /// Only points after this one (its time and version): the last point of the page before.
    pub after: Option<(i64, u64)>,
    /// The most points in the page.
    pub limit: usize,
}

impl HistoryRange {
    /// Whether a point belongs to the page (before the limit is applied).
    pub fn holds(&self, point: &HistoryPoint) -> bool {
        point.set_at >= self.from
            && point.set_at < self.to
            && self
                .after
                .is_none_or(|after| (point.set_at, point.version) > after)
    }
}

/// What a node learns when it takes over a device's session (several nodes; see
/// `docs/state-sync.md`, "Several nodes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The highest version the store holds for the device.
    pub durable: u64,
    /// Where the new holder's counter resumes: above every version any earlier holder may have
    /// handed out. Above `durable` when the previous holder did not release the device (it
    /// died, or it is being replaced): versions in between may have been seen and lost.
    pub resume_at: u64,
}

/// What renewing a node's lease found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    /// Devices held by nodes whose lease ran out, now released: `(device, dead node)`.
    pub reaped: Vec<(DeviceId, String)>,
    /// Whether this node's own lease had run out (and was reaped) before this renewal: the
    /// node must claim its devices again.
    pub lost: bool,
}

/// How far a device's counter jumps when its holder did not release it: more versions than a
/// holder can have handed out beyond what the store holds (its queue of uncommitted writes).
pub const TAKEOVER_GAP: u64 = 1 << 24;

/// The durable store. Every method queues its work and returns at once; the [`Ticket`] tells
/// when it is durable. Writes on one store are applied in the order they were called; reads
/// (`load`, `setting`, `settings_with_prefix`, `history`, `events`, `created_since`) do not wait behind queued writes
/// and see every write whose ticket has resolved.
pub trait Store: Send + Sync + 'static {
    /// Reads everything the engine caches.
    fn load(&self) -> Ticket<Snapshot>;
    /// One device's rows only (its latest values, properties, pending commands and version;
    /// no templates or devices), as [`Store::load`] would give them: what a node reads when it
    /// takes a device's session, without reading every other device's.
    fn load_device(&self, device_id: DeviceId) -> Ticket<Snapshot>;
    /// Reads a setting.
    fn setting(&self, key: &str) -> Ticket<Option<String>>;
    /// Writes a setting.
    fn set_setting(&self, key: &str, value: &str) -> Ticket;
    /// Every setting whose key starts with `prefix`, ordered by key (the API keys are kept as
    /// one setting each, so creating or revoking one never rewrites another).
    fn settings_with_prefix(&self, prefix: &str) -> Ticket<Vec<(String, String)>>;
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
    /// A page of a pin's history in a time range, oldest first (by time, then version).
    ///
    /// The default reads the pin's whole history for each page; a backend should answer it
    /// with one ranged query instead.
    fn history_range(
        &self,
        device_id: DeviceId,
        pin: Pin,
        range: HistoryRange,
    ) -> Ticket<Vec<HistoryPoint>> {
        let whole = self.history(device_id, pin, usize::MAX);
        let (reply, ticket) = oneshot::channel();
        tokio::spawn(async move {
            let page = settle(whole).await.map(|mut points| {
                points.retain(|point| range.holds(point));
                points.sort_by_key(|point| (point.set_at, point.version));
                points.truncate(range.limit);
                points
            });
            let _ = reply.send(page);
        });
        ticket
    }
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
    /// What the store reports about its commits for the metrics, if anything.
    fn metrics(&self) -> Option<std::sync::Arc<crate::metrics::StoreMetrics>> {
        None
    }

    // Several nodes (`--bus`): who holds each device, under the store's row locks.

    /// `node` takes the device (its session connected there), whatever node held it before.
    fn claim_device(&self, device_id: DeviceId, node: &str) -> Ticket<Claim>;
    /// `node` lets the device go (its session ended), having handed out versions up to
    /// `version`; nothing happens if another node holds it now.
    fn release_device(&self, device_id: DeviceId, node: &str, version: u64) -> Ticket;
    /// A version for a write made by a node that does not hold the device, taken under the
    /// device's row lock; `None` while a node with a live lease holds it (ask that node).
    fn take_version(&self, device_id: DeviceId, node: &str) -> Ticket<Option<u64>>;
    /// Renews `node`'s lease for `ttl_ms` and, if `reap`, releases the devices of nodes whose
    /// lease ran out.
    fn renew_lease(&self, node: &str, ttl_ms: i64, reap: bool) -> Ticket<Lease>;
    /// The devices held by a node with a live lease: `(device, node)`.
    fn held_devices(&self) -> Ticket<Vec<(DeviceId, String)>>;
    /// Removes a pending command; `true` only for the one caller that removed it, so that a
    /// command is delivered at most once whichever node its device connects to.
    fn claim_command(&self, id: i64) -> Ticket<bool>;
}

/// Helper for backends: a value written as the store keeps it.
pub fn value_text(value: &OwnedValue) -> String {
    value.to_store_text()
}
