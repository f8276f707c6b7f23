//! The embedded SQLite store. Writes go to one writer thread that applies them in call order
//! and commits them in batches (group commit, see [`writer`]); reads go to a reader thread with
//! its own connection, so they never wait behind writes (WAL); history is trimmed off the write
//! path in bounded steps (see [`retention`]).

pub mod backup;
mod cluster;
mod reader;
mod retention;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use blynk_proto::Pin;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use self::reader::Reader;
use self::writer::{Job, Op, Writer};
use super::{Claim, HistoryRange, Lease, Snapshot, Store, StoreError, Ticket, ValueWrite};
use crate::metrics::StoreMetrics;
use crate::model::{
    Device, DeviceId, EventRecord, HistoryPoint, PendingCommand, PropertyRecord, Template,
    TemplateId,
};
pub use crate::store::retention::Retention;

/// Events kept per device.
pub const EVENTS_PER_DEVICE: i64 = 200;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is fsynced: survives a power cut (the default).
    Full,
    /// Commits reach the operating system: survives a crash of the server process, not of the
    /// machine.
    Process,
}

type ReadJob = Box<dyn FnOnce(&mut Reader) + Send>;

/// How often the checkpoint thread copies the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The log's size (in pages) at which the writer checkpoints by itself, in case the checkpoint
/// thread falls behind (SQLite's default is 1,000).
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// The SQLite store handle; cheap to share behind an `Arc`.
pub struct SqliteStore {
    writes: mpsc::Sender<Op>,
    reads: mpsc::Sender<ReadJob>,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpoints: mpsc::Sender<()>,
    metrics: Arc<StoreMetrics>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database file at `path`, with the default retention.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with_retention(path, durability, Retention::default())
    }

    /// Opens (creating and migrating) the database file at `path`.
    pub fn open_with_retention(
        path: &Path,
        durability: Durability,
        retention: Retention,
    ) -> Result<Self, StoreError> {
        // Before SQLite creates anything: it gives its side files the database's mode.
        crate::private_files::secure_database(path)
            .map_err(|error| StoreError::Database(format!("{}: {error}", path.display())))?;
        let connection = Connection::open(path).map_err(database)?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Process => "NORMAL",
        };
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;
                 PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
            ))
            .map_err(database)?;
        schema::migrate(&connection)?;
        let read_connection = Connection::open(path).map_err(database)?;
        read_connection
            .execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -32768;")
            .map_err(database)?;

        let (writes, write_queue) = mpsc::channel::<Op>();
        let metrics = Arc::new(StoreMetrics::default());
        let writer_metrics = metrics.clone();
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || Writer::new(connection, retention, writer_metrics).run(write_queue))
            .map_err(|error| StoreError::Database(error.to_string()))?;
        let (reads, read_queue) = mpsc::channel::<ReadJob>();
        thread::Builder::new()
            .name("sqlite-reader".into())
            .spawn(move || {
                let mut reader = Reader::new(read_connection);
                while let Ok(job) = read_queue.recv() {
                    job(&mut reader);
                }
            })
            .map_err(|error| StoreError::Database(error.to_string()))?;
        let checkpoint_connection = Connection::open(path).map_err(database)?;
        let (checkpoints, checkpoint_timer) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint(&checkpoint_connection, &checkpoint_timer))
            .map_err(|error| StoreError::Database(error.to_string()))?;
        Ok(SqliteStore {
            writes,
            reads,
            _checkpoints: checkpoints,
            metrics,
        })
    }

    /// Runs a full retention pass now, in bounded steps, after everything queued before it;
    /// resolves with the number of history rows removed. (The writer runs the same steps by
    /// itself in the background; this is for maintenance and tests.)
    pub fn trim_history(&self) -> Ticket<u64> {
        let (reply, ticket) = oneshot::channel();
        self.send(Op::TrimHistory(reply));
        ticket
    }

    /// Queues an operation on the writer, counted until its batch is done.
    fn send(&self, op: Op) {
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        if self.writes.send(op).is_err() {
            // The writer is gone: nothing will count it done.
            self.metrics.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Holds the writer until the returned sender is dropped, so that everything queued
    /// meanwhile lands in one batch.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> (oneshot::Sender<()>, Ticket) {
        let (release, held) = oneshot::channel::<()>();
        let ticket = self.submit(move |_| {
            let _ = held.blocking_recv();
            Ok(())
        });
        (release, ticket)
    }

    /// Queues `work` on the writer; its result is sent once the batch holding it has committed.
    fn submit<T, F>(&self, work: F) -> Ticket<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, ticket) = oneshot::channel();
        let job: Job = Box::new(move |writer: Result<&mut Writer, &StoreError>| {
            let result = match writer {
                Ok(writer) => work(writer),
                Err(error) => Err(error.clone()),
            };
            Box::new(move |commit_error: Option<&StoreError>| {
                let outcome = match (commit_error, result) {
                    (Some(error), _) => Err(error.clone()),
                    (None, result) => result,
                };
                let _ = reply.send(outcome);
            })
        });
        // When the writer thread is gone the job is dropped with its reply sender, so the
        // ticket resolves at once to `StoreError::Closed` instead of hanging.
        self.send(Op::Job(job));
        ticket
    }

    /// Queues `work` on the reader; it sees everything committed before it runs.
    fn read<T, F>(&self, work: F) -> Ticket<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Reader) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, ticket) = oneshot::channel();
        let _ = self.reads.send(Box::new(move |reader: &mut Reader| {
            let _ = reply.send(work(reader).map_err(database));
        }));
        ticket
    }
}

/// Appends `per_pin` values to the history of each of `pins` of every device in the database
/// at `path`, with versions above what each device holds, in one SQL statement: for load tests
/// and benchmarks that need a large history fast. No server may have the file open. Returns
/// the rows added.
pub fn fill_history(path: &Path, pins: &[Pin], per_pin: u32) -> Result<u64, StoreError> {
    let connection = Connection::open(path).map_err(database)?;
    schema::migrate(&connection)?;
    let pin_rows = pins
        .iter()
        .enumerate()
        .map(|(index, pin)| format!("({index}, '{pin}')"))
        .collect::<Vec<_>>()
        .join(", ");
    if pin_rows.is_empty() {
        return Ok(0);
    }
    let fill = format!(
        "WITH RECURSIVE
           step(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM step WHERE n < ?1),
           pin(position, name) AS (VALUES {pin_rows}),
           device(id, base) AS (
             SELECT devices.id, COALESCE(device_versions.version, 0) FROM devices
             LEFT JOIN device_versions ON device_versions.device_id = devices.id)
         INSERT INTO history (device_id, pin, version, value, set_at, origin)
         SELECT device.id, pin.name, device.base + (step.n - 1) * ?2 + pin.position + 1, step.n,
                ?3 - (?1 - step.n) * 1000, 'device'
         FROM device, pin, step WHERE true
         ON CONFLICT DO NOTHING;
         "
    );
    connection.execute_batch("BEGIN").map_err(database)?;
    let filled = connection
        .execute(
            &fill,
            params![per_pin, pins.len() as i64, crate::model::now_ms()],
        )
        .and_then(|added| {
            connection.execute(
                "INSERT INTO device_versions (device_id, version)
                 SELECT device_id, MAX(version) FROM history WHERE true GROUP BY device_id
                 ON CONFLICT (device_id) DO UPDATE SET version = max(version, excluded.version)",
                [],
            )?;
            Ok(added as u64)
        })
        .map_err(database);
    match filled {
        Ok(added) => {
            connection.execute_batch("COMMIT").map_err(database)?;
            Ok(added)
        }
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

/// Copies the write-ahead log into the database file every [`CHECKPOINT_EVERY`] until the
/// store is dropped. Left to the writer, a checkpoint (random writes all over a large file,
/// then an fsync) would stall the commit that triggers it; a passive checkpoint on another
/// connection runs beside the writer and never blocks it.
fn checkpoint(connection: &Connection, timer: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = timer.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "checkpoint failed; it is tried again later");
        }
    }
}

/// A SQLite error as a store error: a database another process keeps locked past the busy
/// timeout (a shell command's long transaction, a backup) is unavailable for now, not broken.
fn database(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Database(error.to_string()),
    }
}

impl Writer {
    fn create_template(&mut self, mut template: Template) -> Result<Template, StoreError> {
        let exists: Option<i64> = self
            .connection
            .query_row(
                "SELECT id FROM templates WHERE name = ?1",
                [&template.name],
                |row| row.get(0),
            )
            .optional()
            .map_err(database)?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "template `{}`",
                template.name
            )));
        }
        self.connection
            .execute(
                "INSERT INTO templates (name, created_at) VALUES (?1, ?2)",
                params![template.name, crate::model::now_ms()],
            )
            .map_err(database)?;
        template.id = self.connection.last_insert_rowid();
        for (position, datastream) in template.datastreams.iter().enumerate() {
            let definition = serde_json::to_string(datastream)
                .map_err(|error| StoreError::Database(error.to_string()))?;
            self.connection
                .execute(
                    "INSERT INTO datastreams (template_id, position, definition) VALUES (?1, ?2, ?3)",
                    params![template.id, position as i64, definition],
                )
                .map_err(database)?;
        }
        Ok(template)
    }

    fn create_device(
        &mut self,
        name: &str,
        template_id: TemplateId,
        token: &str,
    ) -> Result<Device, StoreError> {
        let template: Option<i64> = self
            .connection
            .query_row(
                "SELECT id FROM templates WHERE id = ?1",
                [template_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(database)?;
        if template.is_none() {
            return Err(StoreError::NotFound(format!("template {template_id}")));
        }
        self.connection
            .execute(
                "INSERT INTO devices (name, template_id, token, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, template_id, token, crate::model::now_ms()],
            )
            .map_err(database)?;
        let id = self.connection.last_insert_rowid();
        Ok(Device {
            id,
            name: name.to_owned(),
            template_id,
            token: token.to_owned(),
            last_seen: None,
        })
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Ticket<Snapshot> {
        self.read(|reader| reader.load())
    }

    fn setting(&self, key: &str) -> Ticket<Option<String>> {
        let key = key.to_owned();
        self.read(move |reader| reader.setting(&key))
    }

    fn set_setting(&self, key: &str, value: &str) -> Ticket {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.submit(move |writer| {
            writer
                .connection
                .execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )
                .map(drop)
                .map_err(database)
        })
    }

    fn settings_with_prefix(&self, prefix: &str) -> Ticket<Vec<(String, String)>> {
        let prefix = prefix.to_owned();
        self.read(move |reader| reader.settings_with_prefix(&prefix))
    }

    fn create_template(&self, template: Template) -> Ticket<Template> {
        self.submit(move |writer| writer.create_template(template))
    }

    fn create_device(&self, name: &str, template_id: TemplateId, token: &str) -> Ticket<Device> {
        let (name, token) = (name.to_owned(), token.to_owned());
        self.submit(move |writer| writer.create_device(&name, template_id, &token))
    }

    fn delete_device(&self, device_id: DeviceId) -> Ticket {
        self.submit(move |writer| writer.delete_device(device_id).map_err(database))
    }

    fn put_value(&self, write: ValueWrite) -> Ticket {
        let (reply, ticket) = oneshot::channel();
        self.send(Op::Value(write, reply));
        ticket
    }

    fn put_property(&self, device_id: DeviceId, property: PropertyRecord) -> Ticket {
        self.submit(move |writer| {
            writer
                .connection
                .prepare_cached(
                    "INSERT INTO properties (device_id, pin, name, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (device_id, pin, name) DO UPDATE SET value = excluded.value",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        device_id,
                        property.pin.to_string(),
                        property.name,
                        property.value.to_store_text()
                    ])
                })
                .map(drop)
                .map_err(database)
        })
    }

    fn append_event(&self, device_id: DeviceId, event: EventRecord) -> Ticket {
        self.submit(move |writer| {
            let connection = &writer.connection;
            connection
                .prepare_cached("INSERT INTO events (device_id, code, description, at) VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut statement| statement.execute(params![device_id, event.code, event.description, event.at]))
                .and_then(|_| {
                    connection.prepare_cached(
                        "DELETE FROM events WHERE device_id = ?1 AND id <= (
                           SELECT id FROM events WHERE device_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                    )
                })
                .and_then(|mut statement| statement.execute(params![device_id, EVENTS_PER_DEVICE]))
                .map(drop)
                .map_err(database)
        })
    }

    fn add_pending_command(&self, command: PendingCommand) -> Ticket<i64> {
        self.submit(move |writer| {
            writer
                .connection
                .execute(
                    "INSERT INTO pending_commands (device_id, pin, value, version, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        command.device_id,
                        command.pin.to_string(),
                        command.value.to_store_text(),
                        command.version as i64,
                        command.expires_at
                    ],
                )
                .map_err(database)?;
            let id = writer.connection.last_insert_rowid();
            writer
                .raise_version(command.device_id, command.version)
                .map_err(database)?;
            Ok(id)
        })
    }

    fn remove_pending_command(&self, id: i64) -> Ticket {
        self.submit(move |writer| {
            writer
                .connection
                .execute("DELETE FROM pending_commands WHERE id = ?1", [id])
                .map(drop)
                .map_err(database)
        })
    }

    fn set_last_seen(&self, device_id: DeviceId, at: i64) -> Ticket {
        self.submit(move |writer| {
            writer
                .connection
                .prepare_cached("UPDATE devices SET last_seen = ?2 WHERE id = ?1")
                .and_then(|mut statement| statement.execute(params![device_id, at]))
                .map(drop)
                .map_err(database)
        })
    }

    fn history(&self, device_id: DeviceId, pin: Pin, limit: usize) -> Ticket<Vec<HistoryPoint>> {
        self.read(move |reader| reader.history(device_id, pin, limit))
    }

    fn history_range(
        &self,
        device_id: DeviceId,
        pin: Pin,
        range: HistoryRange,
    ) -> Ticket<Vec<HistoryPoint>> {
        self.read(move |reader| reader.history_range(device_id, pin, range))
    }

    fn events(&self, device_id: DeviceId, limit: usize) -> Ticket<Vec<EventRecord>> {
        self.read(move |reader| reader.events(device_id, limit))
    }

    fn created_since(
        &self,
        template_id: TemplateId,
        device_id: DeviceId,
    ) -> Ticket<(Vec<Template>, Vec<Device>)> {
        self.read(move |reader| {
            Ok(reader
                .created_since(template_id, device_id)?
                .unwrap_or_default())
        })
    }

    fn metrics(&self) -> Option<Arc<StoreMetrics>> {
        Some(self.metrics.clone())
    }

    fn flush(&self) -> Ticket {
        self.submit(|_| Ok(()))
    }

    fn claim_device(&self, device_id: DeviceId, node: &str) -> Ticket<Claim> {
        let node = node.to_owned();
        self.submit(move |writer| {
            cluster::claim(&writer.connection, device_id, &node).map_err(database)
        })
    }

    fn release_device(&self, device_id: DeviceId, node: &str, version: u64) -> Ticket {
        let node = node.to_owned();
        self.submit(move |writer| {
            cluster::release(&writer.connection, device_id, &node, version).map_err(database)
        })
    }

    fn take_version(&self, device_id: DeviceId, node: &str) -> Ticket<Option<u64>> {
        let node = node.to_owned();
        self.submit(move |writer| {
            cluster::take_version(&writer.connection, device_id, &node, crate::model::now_ms())
                .map_err(database)
        })
    }

    fn renew_lease(&self, node: &str, ttl_ms: i64, reap: bool) -> Ticket<Lease> {
        let node = node.to_owned();
        self.submit(move |writer| {
            cluster::renew_lease(
                &writer.connection,
                &node,
                ttl_ms,
                reap,
                crate::model::now_ms(),
            )
            .map_err(database)
        })
    }

    fn held_devices(&self) -> Ticket<Vec<(DeviceId, String)>> {
        self.read(|reader| cluster::held_devices(&reader.connection, crate::model::now_ms()))
    }

    fn claim_command(&self, id: i64) -> Ticket<bool> {
        self.submit(move |writer| cluster::claim_command(&writer.connection, id).map_err(database))
    }
}
