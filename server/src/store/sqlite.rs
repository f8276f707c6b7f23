//! The embedded SQLite store: one writer thread that applies queued operations in order and
//! commits them in batches (group commit), so a thousand concurrent writes cost one fsync.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use blynk_proto::Pin;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{Snapshot, Store, StoreError, Ticket, ValueWrite};
use crate::model::{
    DatastreamDef, Device, DeviceId, EventRecord, HistoryPoint, Origin, OwnedValue, PendingCommand,
    PropertyRecord, StoredValue, Template, TemplateId,
};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 4096;
/// Values kept per pin in the history.
pub const HISTORY_PER_PIN: i64 = 1000;
/// Events kept per device.
pub const EVENTS_PER_DEVICE: i64 = 200;
/// History inserts on one pin between two prunings of it.
const PRUNE_EVERY: u32 = 100;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is fsynced: survives a power cut (the default).
    Full,
    /// Commits reach the operating system: survives a crash of the server process, not of the
    /// machine.
    Process,
}

/// The schema, one migration per entry; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE datastreams (
    template_id INTEGER NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (template_id, position)
);
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    template_id INTEGER NOT NULL REFERENCES templates(id),
    token TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_seen INTEGER
);
CREATE TABLE latest_values (
    device_id INTEGER NOT NULL,
    pin TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    set_at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (device_id, pin)
) WITHOUT ROWID;
CREATE TABLE history (
    device_id INTEGER NOT NULL,
    pin TEXT NOT NULL,
    version INTEGER NOT NULL,
    value TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (device_id, pin, version)
) WITHOUT ROWID;
CREATE TABLE properties (
    device_id INTEGER NOT NULL,
    pin TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (device_id, pin, name)
) WITHOUT ROWID;
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    code TEXT NOT NULL,
    description TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX events_by_device ON events (device_id, id);
CREATE TABLE pending_commands (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    pin TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#];

type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut Writer) -> Reply + Send>;

/// The SQLite store handle; cheap to share behind an `Arc`.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database file at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(database)?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Process => "NORMAL",
        };
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;"
            ))
            .map_err(database)?;
        migrate(&connection)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("sqlite-store".into())
            .spawn(move || {
                Writer {
                    connection,
                    pruning: HashMap::new(),
                }
                .run(queue)
            })
            .map_err(|error| StoreError::Database(error.to_string()))?;
        Ok(SqliteStore { jobs })
    }

    /// Queues `work`; its result is sent once the batch holding it has committed.
    fn submit<T, F>(&self, work: F) -> Ticket<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, ticket) = oneshot::channel();
        let job: Job = Box::new(move |writer: &mut Writer| {
            let result = work(writer);
            Box::new(move |commit_error: Option<&StoreError>| {
                let outcome = match (commit_error, result) {
                    (Some(error), _) => Err(StoreError::Database(error.to_string())),
                    (None, result) => result,
                };
                let _ = reply.send(outcome);
            })
        });
        // When the writer thread is gone the job is dropped with its reply sender, so the
        // ticket resolves at once to `StoreError::Closed` instead of hanging.
        let _ = self.jobs.send(job);
        ticket
    }
}

fn database(error: rusqlite::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

fn migrate(connection: &Connection) -> Result<(), StoreError> {
    let applied: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(database)?;
    for (index, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(applied).unwrap_or(0))
    {
        connection
            .execute_batch(&format!(
                "BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;",
                index + 1
            ))
            .map_err(database)?;
    }
    Ok(())
}

/// The writer thread's state.
struct Writer {
    connection: Connection,
    /// History inserts per pin since it was last pruned.
    pruning: HashMap<(DeviceId, Pin), u32>,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let began = self
                .connection
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(database);
            let replies: Vec<Reply> = batch.into_iter().map(|job| job(&mut self)).collect();
            let committed =
                began.and_then(|()| self.connection.execute_batch("COMMIT").map_err(database));
            if let Err(error) = &committed {
                tracing::error!(%error, "store commit failed; the batch is reported as failed");
                let _ = self.connection.execute_batch("ROLLBACK");
            }
            for reply in replies {
                reply(committed.as_ref().err());
            }
        }
    }

    fn put_value(&mut self, write: &ValueWrite) -> rusqlite::Result<()> {
        let pin = write.pin.to_string();
        let value = write.stored.value.to_store_text();
        let version = write.stored.version as i64;
        let origin = write.stored.origin.as_str();
        if write.latest {
            self.connection
                .prepare_cached(
                    "INSERT INTO latest_values (device_id, pin, value, version, set_at, origin)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (device_id, pin) DO UPDATE SET
                       value = excluded.value, version = excluded.version,
                       set_at = excluded.set_at, origin = excluded.origin",
                )?
                .execute(params![
                    write.device_id,
                    pin,
                    value,
                    version,
                    write.stored.set_at,
                    origin
                ])?;
        }
        self.connection
            .prepare_cached(
                "INSERT OR REPLACE INTO history (device_id, pin, version, value, set_at, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                write.device_id,
                pin,
                version,
                value,
                write.stored.set_at,
                origin
            ])?;
        let inserts = self
            .pruning
            .entry((write.device_id, write.pin))
            .or_default();
        *inserts += 1;
        if *inserts >= PRUNE_EVERY {
            *inserts = 0;
            self.connection
                .prepare_cached(
                    "DELETE FROM history WHERE device_id = ?1 AND pin = ?2 AND version <= (
                       SELECT version FROM history WHERE device_id = ?1 AND pin = ?2
                       ORDER BY version DESC LIMIT 1 OFFSET ?3)",
                )?
                .execute(params![write.device_id, pin, HISTORY_PER_PIN])?;
        }
        Ok(())
    }

    fn load(&mut self) -> rusqlite::Result<Snapshot> {
        let connection = &self.connection;
        let mut snapshot = Snapshot::default();
        let mut templates: Vec<Template> = connection
            .prepare("SELECT id, name FROM templates ORDER BY id")?
            .query_map([], |row| {
                Ok(Template {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    datastreams: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut statement = connection.prepare(
            "SELECT definition FROM datastreams WHERE template_id = ?1 ORDER BY position",
        )?;
        for template in &mut templates {
            for definition in statement.query_map([template.id], |row| row.get::<_, String>(0))? {
                let definition = definition?;
                match serde_json::from_str::<DatastreamDef>(&definition) {
                    Ok(datastream) => template.datastreams.push(datastream),
                    Err(error) => {
                        tracing::error!(template = %template.name, %error, "unreadable datastream skipped")
                    }
                }
            }
        }
        snapshot.templates = templates;
        snapshot.devices = connection
            .prepare("SELECT id, name, template_id, token, last_seen FROM devices ORDER BY id")?
            .query_map([], |row| {
                Ok(Device {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    template_id: row.get(2)?,
                    token: row.get(3)?,
                    last_seen: row.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let rows = connection
            .prepare("SELECT device_id, pin, value, version, set_at, origin FROM latest_values")?
            .query_map([], |row| {
                Ok((
                    row.get::<_, DeviceId>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (device_id, pin, value, version, set_at, origin) in rows {
            let (Ok(pin), Some(value), Some(origin)) = (
                pin.parse::<Pin>(),
                OwnedValue::from_store_text(&value),
                Origin::parse(&origin),
            ) else {
                tracing::error!(device_id, "unreadable stored value skipped");
                continue;
            };
            let stored = StoredValue {
                value: value.into(),
                version: version as u64,
                set_at,
                origin,
            };
            snapshot.values.push((device_id, pin, stored));
        }
        let rows = connection
            .prepare("SELECT device_id, pin, name, value FROM properties")?
            .query_map([], |row| {
                Ok((
                    row.get::<_, DeviceId>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (device_id, pin, name, value) in rows {
            if let (Ok(pin), Some(value)) = (pin.parse(), OwnedValue::from_store_text(&value)) {
                snapshot
                    .properties
                    .push((device_id, PropertyRecord { pin, name, value }));
            }
        }
        let rows = connection
            .prepare("SELECT id, device_id, pin, value, version, expires_at FROM pending_commands ORDER BY id")?
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, DeviceId>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (id, device_id, pin, value, version, expires_at) in rows {
            if let (Ok(pin), Some(value)) = (pin.parse(), OwnedValue::from_store_text(&value)) {
                snapshot.pending_commands.push(PendingCommand {
                    id,
                    device_id,
                    pin,
                    value: value.into(),
                    version: version as u64,
                    expires_at,
                });
            }
        }
        snapshot.versions = connection
            .prepare(
                "SELECT device_id, MAX(version) FROM (
                   SELECT device_id, version FROM history
                   UNION ALL SELECT device_id, version FROM latest_values
                   UNION ALL SELECT device_id, version FROM pending_commands)
                 GROUP BY device_id",
            )?
            .query_map([], |row| {
                Ok((row.get::<_, DeviceId>(0)?, row.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<_, _>>()?;
        Ok(snapshot)
    }

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

    fn delete_device(&mut self, device_id: DeviceId) -> rusqlite::Result<()> {
        for table in [
            "latest_values",
            "history",
            "properties",
            "events",
            "pending_commands",
        ] {
            self.connection.execute(
                &format!("DELETE FROM {table} WHERE device_id = ?1"),
                [device_id],
            )?;
        }
        self.connection
            .execute("DELETE FROM devices WHERE id = ?1", [device_id])?;
        Ok(())
    }

    fn history(
        &mut self,
        device_id: DeviceId,
        pin: Pin,
        limit: usize,
    ) -> rusqlite::Result<Vec<HistoryPoint>> {
        let rows = self
            .connection
            .prepare_cached(
                "SELECT value, version, set_at, origin FROM history WHERE device_id = ?1 AND pin = ?2
                 ORDER BY version DESC LIMIT ?3",
            )?
            .query_map(params![device_id, pin.to_string(), limit as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(value, version, set_at, origin)| {
                Some(HistoryPoint {
                    value: OwnedValue::from_store_text(&value)?,
                    version: version as u64,
                    set_at,
                    origin: Origin::parse(&origin)?,
                })
            })
            .collect())
    }

    fn events(&mut self, device_id: DeviceId, limit: usize) -> rusqlite::Result<Vec<EventRecord>> {
        self.connection
            .prepare_cached(
                "SELECT code, description, at FROM events WHERE device_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![device_id, limit as i64], |row| {
                Ok(EventRecord { code: row.get(0)?, description: row.get(1)?, at: row.get(2)? })
            })?
            .collect()
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Ticket<Snapshot> {
        self.submit(|writer| writer.load().map_err(database))
    }

    fn setting(&self, key: &str) -> Ticket<Option<String>> {
        let key = key.to_owned();
        self.submit(move |writer| {
            writer
                .connection
                .query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(database)
        })
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
        self.submit(move |writer| writer.put_value(&write).map_err(database))
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
            Ok(writer.connection.last_insert_rowid())
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
        self.submit(move |writer| writer.history(device_id, pin, limit).map_err(database))
    }

    fn events(&self, device_id: DeviceId, limit: usize) -> Ticket<Vec<EventRecord>> {
        self.submit(move |writer| writer.events(device_id, limit).map_err(database))
    }

    fn created_since(
        &self,
        template_id: TemplateId,
        device_id: DeviceId,
    ) -> Ticket<(Vec<Template>, Vec<Device>)> {
        self.submit(move |writer| {
            let snapshot = writer.load().map_err(database)?;
            let templates = snapshot
                .templates
                .into_iter()
                .filter(|t| t.id > template_id)
                .collect();
            let devices = snapshot
                .devices
                .into_iter()
                .filter(|d| d.id > device_id)
                .collect();
            Ok((templates, devices))
        })
    }

    fn flush(&self) -> Ticket {
        self.submit(|_| Ok(()))
    }
}
