//! Reads, each on a connection of the read pool: they never wait behind the writer's queue,
//! and see every committed transaction.

use blynk_proto::Pin;
use deadpool_postgres::ClientWrapper;
use tokio_postgres::Error;
use tokio_postgres::types::ToSql;

use crate::model::{
    Device, DeviceId, EventRecord, HistoryPoint, OwnedValue, PendingCommand, PropertyRecord,
    Template, TemplateId,
};
use crate::store::{Snapshot, push_stored_datastream};

pub(super) async fn setting(client: &ClientWrapper, key: &str) -> Result<Option<String>, Error> {
    let statement = client
        .prepare_cached("SELECT value FROM settings WHERE key = $1")
        .await?;
    match client.query_opt(&statement, &[&key]).await? {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

/// Every setting whose key starts with `prefix`, ordered by key.
pub(super) async fn settings_with_prefix(
    client: &ClientWrapper,
    prefix: &str,
) -> Result<Vec<(String, String)>, Error> {
    let statement = client
        .prepare_cached("SELECT key, value FROM settings WHERE starts_with(key, $1) ORDER BY key")
        .await?;
    let rows = client.query(&statement, &[&prefix]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

pub(super) async fn history(
    client: &ClientWrapper,
    device_id: DeviceId,
    pin: Pin,
    limit: usize,
) -> Result<Vec<HistoryPoint>, Error> {
    let statement = client
        .prepare_cached(
            "SELECT value, version, set_at, origin FROM history WHERE device_id = $1 AND pin = $2
             ORDER BY version DESC LIMIT $3",
        )
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(&statement, &[&device_id, &pin.to_string(), &limit])
        .await?;
    let mut points = Vec::with_capacity(rows.len());
    for row in rows {
        let (value, version, set_at, origin): (String, i64, i64, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        // A row this version cannot read is skipped.
        points.extend(HistoryPoint::from_store_columns(
            &value, version, set_at, &origin,
        ));
    }
    Ok(points)
}

pub(super) async fn events(
    client: &ClientWrapper,
    device_id: DeviceId,
    limit: usize,
) -> Result<Vec<EventRecord>, Error> {
    let statement = client
        .prepare_cached(
            "SELECT code, description, at FROM events WHERE device_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    client
        .query(&statement, &[&device_id, &limit])
        .await?
        .into_iter()
        .map(|row| {
            Ok(EventRecord {
                code: row.try_get(0)?,
                description: row.try_get(1)?,
                at: row.try_get(2)?,
            })
        })
        .collect()
}

/// Templates and devices with ids above the given ones: two lookups on primary keys, cheap
/// when there is nothing new.
pub(super) async fn created_since(
    client: &ClientWrapper,
    template_id: TemplateId,
    device_id: DeviceId,
) -> Result<(Vec<Template>, Vec<Device>), Error> {
    Ok((
        templates_above(client, template_id).await?,
        devices_above(client, device_id).await?,
    ))
}

/// Everything the engine caches, from one consistent snapshot of the database.
pub(super) async fn load(client: &ClientWrapper) -> Result<Snapshot, Error> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let snapshot = load_in_transaction(client).await;
    let ended = client.batch_execute("COMMIT").await;
    let snapshot = snapshot?;
    ended?;
    Ok(snapshot)
}

/// One device's rows (values, properties, pending commands, version), from one consistent
/// snapshot: what a node reads when it takes a device's session.
pub(super) async fn load_device(
    client: &ClientWrapper,
    device: DeviceId,
) -> Result<Snapshot, Error> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let mut snapshot = Snapshot::default();
    let read = device_rows(client, Some(device), &mut snapshot).await;
    let ended = client.batch_execute("COMMIT").await;
    read?;
    ended?;
    Ok(snapshot)
}

async fn load_in_transaction(client: &ClientWrapper) -> Result<Snapshot, Error> {
    let mut snapshot = Snapshot {
        templates: templates_above(client, TemplateId::MIN).await?,
        devices: devices_above(client, DeviceId::MIN).await?,
        ..Snapshot::default()
    };
    device_rows(client, None, &mut snapshot).await?;
    Ok(snapshot)
}

/// The rows kept per device (latest values, properties, pending commands, versions), of every
/// device or of `only` one.
async fn device_rows(
    client: &ClientWrapper,
    only: Option<DeviceId>,
    snapshot: &mut Snapshot,
) -> Result<(), Error> {
    let filter = if only.is_some() {
        " WHERE device_id = $1"
    } else {
        ""
    };
    let only: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match &only {
        Some(device) => vec![device],
        None => Vec::new(),
    };
    let rows = client
        .query(
            &format!(
                "SELECT device_id, pin, value, version, set_at, origin FROM latest_values{filter}"
            ),
            &only,
        )
        .await?;
    for row in rows {
        let device_id: DeviceId = row.try_get(0)?;
        let (pin, value, origin): (String, String, String) =
            (row.try_get(1)?, row.try_get(2)?, row.try_get(5)?);
        let (version, set_at): (i64, i64) = (row.try_get(3)?, row.try_get(4)?);
        snapshot.push_stored_row(device_id, (&pin, &value, version, set_at, &origin));
    }
    let rows = client
        .query(
            &format!("SELECT device_id, pin, name, value FROM properties{filter}"),
            &only,
        )
        .await?;
    for row in rows {
        let (pin, value): (String, String) = (row.try_get(1)?, row.try_get(3)?);
        if let (Ok(pin), Some(value)) = (pin.parse(), OwnedValue::from_store_text(&value)) {
            let name = row.try_get(2)?;
            snapshot
                .properties
                .push((row.try_get(0)?, PropertyRecord { pin, name, value }));
        }
    }
    let rows = client
        .query(
            &format!(
                "SELECT id, device_id, pin, value, version, expires_at FROM pending_commands{filter} \
                 ORDER BY id"
            ),
            &only,
        )
        .await?;
    for row in rows {
        let (pin, value): (String, String) = (row.try_get(2)?, row.try_get(3)?);
        if let (Ok(pin), Some(value)) = (pin.parse(), OwnedValue::from_store_text(&value)) {
            snapshot.pending_commands.push(PendingCommand {
                id: row.try_get(0)?,
                device_id: row.try_get(1)?,
                pin,
                value: value.into(),
                version: row.try_get::<_, i64>(4)? as u64,
                expires_at: row.try_get(5)?,
            });
        }
    }
    // Kept up to date by every write (see the writer), so this reads one row per device
    // instead of the whole history.
    snapshot.versions = client
        .query(
            &format!("SELECT device_id, version FROM device_versions{filter}"),
            &only,
        )
        .await?
        .into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get::<_, i64>(1)? as u64)))
        .collect::<Result<_, Error>>()?;
    Ok(())
}

async fn templates_above(
    client: &ClientWrapper,
    above: TemplateId,
) -> Result<Vec<Template>, Error> {
    let (templates, datastreams) = tokio::try_join!(
        client.prepare_cached("SELECT id, name FROM templates WHERE id > $1 ORDER BY id"),
        client.prepare_cached(
            "SELECT template_id, definition FROM datastreams WHERE template_id > $1
             ORDER BY template_id, position",
        ),
    )?;
    let params: [&(dyn ToSql + Sync); 1] = [&above];
    let (template_rows, datastream_rows) = tokio::try_join!(
        client.query(&templates, &params),
        client.query(&datastreams, &params),
    )?;
    let mut templates = template_rows
        .into_iter()
        .map(|row| {
            Ok(Template {
                id: row.try_get(0)?,
                name: row.try_get(1)?,
                datastreams: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    for row in datastream_rows {
        let (template_id, definition): (TemplateId, String) = (row.try_get(0)?, row.try_get(1)?);
        // A template committed between the two queries has no entry; it is read next time.
        let Some(template) = templates
            .iter_mut()
            .find(|template| template.id == template_id)
        else {
            continue;
        };
        push_stored_datastream(template, &definition);
    }
    Ok(templates)
}

async fn devices_above(client: &ClientWrapper, above: DeviceId) -> Result<Vec<Device>, Error> {
    let statement = client
        .prepare_cached(
            "SELECT id, name, template_id, token, last_seen FROM devices WHERE id > $1 ORDER BY id",
        )
        .await?;
    client
        .query(&statement, &[&above])
        .await?
        .into_iter()
        .map(|row| {
            Ok(Device {
                id: row.try_get(0)?,
                name: row.try_get(1)?,
                template_id: row.try_get(2)?,
                token: row.try_get(3)?,
                last_seen: row.try_get(4)?,
            })
        })
        .collect()
}
