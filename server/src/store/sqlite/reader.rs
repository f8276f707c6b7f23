//! Reads on their own connection and thread, so that they never wait behind the writer's
//! queue: in WAL mode a reader sees every committed transaction and blocks no writer.

use blynk_proto::Pin;
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{
    Device, DeviceId, EventRecord, HistoryPoint, OwnedValue, PendingCommand, PropertyRecord,
    Template, TemplateId,
};
use crate::store::{HistoryRange, Snapshot, push_stored_datastream};

/// The read connection's state.
pub(super) struct Reader {
    pub(super) connection: Connection,
    /// `PRAGMA data_version` when templates and devices were last looked up: it changes only
    /// when another connection (the writer, or another process) has committed since.
    checked_data_version: Option<i64>,
}

impl Reader {
    pub(super) fn new(connection: Connection) -> Self {
        Reader {
            connection,
            checked_data_version: None,
        }
    }

    /// Everything the engine caches, from one consistent read transaction.
    pub(super) fn load(&mut self) -> rusqlite::Result<Snapshot> {
        self.connection.execute_batch("BEGIN")?;
        let snapshot = load(&self.connection);
        let _ = self.connection.execute_batch("COMMIT");
        snapshot
    }

    /// One device's rows (values, properties, pending commands, version), from one read
    /// transaction: what a node reads when it takes a device's session.
    pub(super) fn load_device(&mut self, device: DeviceId) -> rusqlite::Result<Snapshot> {
        self.connection.execute_batch("BEGIN")?;
        let mut snapshot = Snapshot::default();
        let read = device_rows(&self.connection, Some(device), &mut snapshot);
        let _ = self.connection.execute_batch("COMMIT");
        read.map(|()| snapshot)
    }

    /// Templates and devices with ids above the given ones; `None` (and no query at all) when
    /// nothing was committed since the last call.
    pub(super) fn created_since(
        &mut self,
        template_id: TemplateId,
        device_id: DeviceId,
    ) -> rusqlite::Result<Option<(Vec<Template>, Vec<Device>)>> {
        // Read before querying: a commit that lands in between changes it again, so the next
        // call looks once more instead of missing that commit.
        let data_version: i64 = self
            .connection
            .query_row("PRAGMA data_version", [], |row| row.get(0))?;
        if self.checked_data_version == Some(data_version) {
            return Ok(None);
        }
        self.connection.execute_batch("BEGIN")?;
        let found = templates_above(&self.connection, template_id)
            .and_then(|templates| Ok((templates, devices_above(&self.connection, device_id)?)));
        let _ = self.connection.execute_batch("COMMIT");
        let found = found?;
        self.checked_data_version = Some(data_version);
        Ok(Some(found))
    }

    pub(super) fn setting(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.connection
            .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()
    }

    pub(super) fn settings_with_prefix(
        &self,
        prefix: &str,
    ) -> rusqlite::Result<Vec<(String, String)>> {
        // A range on the primary key rather than LIKE, whose wildcards a prefix might contain.
        let mut end = prefix.to_owned();
        end.push(char::MAX);
        self.connection
            .prepare_cached(
                "SELECT key, value FROM settings WHERE key >= ?1 AND key < ?2 ORDER BY key",
            )?
            .query_map([prefix, end.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
    }

    pub(super) fn history(
        &self,
        device_id: DeviceId,
        pin: Pin,
        limit: usize,
    ) -> rusqlite::Result<Vec<HistoryPoint>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT value, version, set_at, origin FROM history WHERE device_id = ?1 AND pin = ?2
             ORDER BY version DESC LIMIT ?3",
        )?;
        let rows = statement.query_map(
            params![
                device_id,
                pin.to_string(),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            history_row,
        )?;
        collect_points(rows)
    }

    /// A page of a pin's history in a time range, oldest first.
    pub(super) fn history_range(
        &self,
        device_id: DeviceId,
        pin: Pin,
        range: HistoryRange,
    ) -> rusqlite::Result<Vec<HistoryPoint>> {
        // Without a point to start after, start before everything in the range.
        let (after_at, after_version) = range
            .after
            .map_or((range.from, -1), |(at, version)| (at, version as i64));
        let mut statement = self.connection.prepare_cached(
            "SELECT value, version, set_at, origin FROM history
             WHERE device_id = ?1 AND pin = ?2 AND set_at >= ?3 AND set_at < ?4
               AND (set_at, version) > (?5, ?6)
             ORDER BY set_at, version LIMIT ?7",
        )?;
        let rows = statement.query_map(
            params![
                device_id,
                pin.to_string(),
                range.from,
                range.to,
                after_at,
                after_version,
                i64::try_from(range.limit).unwrap_or(i64::MAX)
            ],
            history_row,
        )?;
        collect_points(rows)
    }

    pub(super) fn events(
        &self,
        device_id: DeviceId,
        limit: usize,
    ) -> rusqlite::Result<Vec<EventRecord>> {
        self.connection
            .prepare_cached(
                "SELECT code, description, at FROM events WHERE device_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(
                params![device_id, i64::try_from(limit).unwrap_or(i64::MAX)],
                |row| {
                    Ok(EventRecord {
                        code: row.get(0)?,
                        description: row.get(1)?,
                        at: row.get(2)?,
                    })
                },
            )?
            .collect()
    }
}

fn templates_above(connection: &Connection, above: TemplateId) -> rusqlite::Result<Vec<Template>> {
    let mut templates: Vec<Template> = connection
        .prepare_cached("SELECT id, name FROM templates WHERE id > ?1 ORDER BY id")?
        .query_map([above], |row| {
            Ok(Template {
                id: row.get(0)?,
                name: row.get(1)?,
                datastreams: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut statement = connection.prepare_cached(
        "SELECT definition FROM datastreams WHERE template_id = ?1 ORDER BY position",
    )?;
    for template in &mut templates {
        for definition in statement.query_map([template.id], |row| row.get::<_, String>(0))? {
            push_stored_datastream(template, &definition?);
        }
    }
    Ok(templates)
}

fn devices_above(connection: &Connection, above: DeviceId) -> rusqlite::Result<Vec<Device>> {
    connection
        .prepare_cached(
            "SELECT id, name, template_id, token, last_seen FROM devices WHERE id > ?1 ORDER BY id",
        )?
        .query_map([above], |row| {
            Ok(Device {
                id: row.get(0)?,
                name: row.get(1)?,
                template_id: row.get(2)?,
                token: row.get(3)?,
                last_seen: row.get(4)?,
            })
        })?
        .collect()
}

fn load(connection: &Connection) -> rusqlite::Result<Snapshot> {
    let mut snapshot = Snapshot {
        templates: templates_above(connection, TemplateId::MIN)?,
        devices: devices_above(connection, DeviceId::MIN)?,
        ..Snapshot::default()
    };
    device_rows(connection, None, &mut snapshot)?;
    Ok(snapshot)
}

/// The rows kept per device (latest values, properties, pending commands, versions), of every
/// device or of `only` one.
fn device_rows(
    connection: &Connection,
    only: Option<DeviceId>,
    snapshot: &mut Snapshot,
) -> rusqlite::Result<()> {
    let filter = if only.is_some() {
        " WHERE device_id = ?1"
    } else {
        ""
    };
    let only = rusqlite::params_from_iter(only);
    let sql =
        format!("SELECT device_id, pin, value, version, set_at, origin FROM latest_values{filter}");
    for_each_row(connection, &sql, only.clone(), |row| {
        let (device_id, pin, value): (DeviceId, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let (version, set_at, origin): (i64, i64, String) = (row.get(3)?, row.get(4)?, row.get(5)?);
        snapshot.push_stored_row(device_id, (&pin, &value, version, set_at, &origin));
        Ok(())
    })?;
    let sql = format!("SELECT device_id, pin, name, value FROM properties{filter}");
    for_each_row(connection, &sql, only.clone(), |row| {
        let (device_id, pin, name, value): (DeviceId, String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        if let (Ok(pin), Some(value)) = (pin.parse(), OwnedValue::from_store_text(&value)) {
            snapshot
                .properties
                .push((device_id, PropertyRecord { pin, name, value }));
        }
        Ok(())
    })?;
    let sql = format!(
        "SELECT id, device_id, pin, value, version, expires_at FROM pending_commands{filter} \
         ORDER BY id"
    );
    for_each_row(connection, &sql, only.clone(), |row| {
        let (id, device_id, pin, value): (i64, DeviceId, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let (version, expires_at): (i64, i64) = (row.get(4)?, row.get(5)?);
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
        Ok(())
    })?;
    // Kept up to date by every write (see the writer), so this reads one row per device
    // instead of the whole history.
    snapshot.versions = connection
        .prepare(&format!(
            "SELECT device_id, version FROM device_versions{filter}"
        ))?
        .query_map(only, |row| {
            Ok((row.get::<_, DeviceId>(0)?, row.get::<_, i64>(1)? as u64))
        })?
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// Runs `sql` with `params` and hands each row to `on_row`, in order.
fn for_each_row(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut on_row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare(sql)?;
    let mut rows = statement.query(params)?;
    while let Some(row) = rows.next()? {
        on_row(row)?;
    }
    Ok(())
}

type HistoryRow = (String, i64, i64, String);

fn history_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

/// The points of history rows; a row this version cannot read is skipped.
fn collect_points(
    rows: impl Iterator<Item = rusqlite::Result<HistoryRow>>,
) -> rusqlite::Result<Vec<HistoryPoint>> {
    let mut points = Vec::new();
    for row in rows {
        let (value, version, set_at, origin) = row?;
        points.extend(HistoryPoint::from_store_columns(
            &value, version, set_at, &origin,
        ));
    }
    Ok(points)
}
