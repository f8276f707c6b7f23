//! The queued operations of the PostgreSQL store: what the store's methods put on the writer's
//! queue (`Op`, `Work`), where each outcome goes (`Reply`) and what a write produced (`Done`).
//! The store, the writer and the SQL of each operation all use these; none of them owns them.

use tokio::sync::oneshot;

use crate::model::{
    Device, DeviceId, EventRecord, PendingCommand, PropertyRecord, Template, TemplateId,
};
use crate::store::{StoreError, ValueWrite};

/// Where an operation's outcome goes.
pub(crate) type Sender<T> = oneshot::Sender<Result<T, StoreError>>;

/// One queued operation.
pub(super) enum Op {
    /// A write, applied in its place in the queue.
    Write(Work, Reply),
    /// A full retention pass, run after the batch that holds it; replies with the rows removed.
    TrimHistory(Sender<u64>),
}

/// What a write does.
pub(super) enum Work {
    Value(ValueWrite),
    SetSetting(String, String),
    CreateTemplate(Template),
    CreateDevice {
        name: String,
        template_id: TemplateId,
        token: String,
    },
    DeleteDevice(DeviceId),
    PutProperty(DeviceId, PropertyRecord),
    AppendEvent(DeviceId, EventRecord),
    AddPendingCommand(PendingCommand),
    RemovePendingCommand(i64),
    SetLastSeen(DeviceId, i64),
    Flush,
    /// Keeps the writer inside its transaction until the sender is dropped (tests: whatever
    /// is queued meanwhile lands in one batch).
    #[cfg(test)]
    Hold(std::sync::Mutex<Option<oneshot::Receiver<()>>>),
}

/// The ticket a write resolves.
pub(super) enum Reply {
    Unit(Sender<()>),
    Template(Sender<Template>),
    Device(Sender<Device>),
    Id(Sender<i64>),
}

/// What a write produced.
pub(super) enum Done {
    Unit,
    Template(Template),
    Device(Device),
    Id(i64),
}

impl Reply {
    pub(super) fn send(self, outcome: Result<Done, StoreError>) {
        let mismatch = || StoreError::Database("the store answered with the wrong kind".into());
        match self {
            Reply::Unit(sender) => {
                let _ = sender.send(outcome.map(drop));
            }
            Reply::Template(sender) => {
                let _ = sender.send(outcome.and_then(|done| match done {
                    Done::Template(template) => Ok(template),
                    _ => Err(mismatch()),
                }));
            }
            Reply::Device(sender) => {
                let _ = sender.send(outcome.and_then(|done| match done {
                    Done::Device(device) => Ok(device),
                    _ => Err(mismatch()),
                }));
            }
            Reply::Id(sender) => {
                let _ = sender.send(outcome.and_then(|done| match done {
                    Done::Id(id) => Ok(id),
                    _ => Err(mismatch()),
                }));
            }
        }
    }
}
